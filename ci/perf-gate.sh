#!/usr/bin/env bash
# The CI performance gate. Counts the instructions (valgrind --tool=callgrind) of a fixed,
# deterministic workload (ci/perf-gate: STOMP codec + broker send/dispatch/ack with a selector)
# and fails when the count exceeds the baseline in bench-results/perf-gate-baseline.txt by more
# than its tolerance. Instruction counts do not depend on what else the machine is doing, so a
# noisy shared CI machine cannot trip the gate; the measured spread between runs is 0.0002 %.
#
#   ci/perf-gate.sh            # check (called by scripts/test.sh)
#   ci/perf-gate.sh --update   # accept the current count as the new baseline, on purpose:
#                              # commit bench-results/perf-gate-baseline.txt with a reason
#
# A change that makes the workload legitimately more expensive (a new feature on the hot path)
# fails the gate until the baseline is updated in the same commit; the commit message should say
# what the extra instructions buy.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
baseline_file=bench-results/perf-gate-baseline.txt

if ! command -v valgrind >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
cargo build --release --locked -q -p ferromq-perf-gate
bin="$target/release/ferromq-perf-gate"

count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" 2>&1 |
    awk '/I[ ]+refs:/ { gsub(",", "", $NF); print $NF }'
}

ir=$(count)
[ -n "$ir" ] || { echo "perf-gate: could not read the instruction count" >&2; exit 1; }

if [ "${1:-}" = "--update" ]; then
  printf 'instructions=%s\ntolerance_percent=5\n' "$ir" > "$baseline_file"
  echo "perf-gate: baseline updated to $ir instructions ($baseline_file)"
  exit 0
fi

base=$(sed -n 's/^instructions=//p' "$baseline_file")
tol=$(sed -n 's/^tolerance_percent=//p' "$baseline_file")
limit=$(( base + base * tol / 100 ))
ratio=$(awk -v a="$ir" -v b="$base" 'BEGIN { printf "%.4f", a / b }')
echo "perf-gate: $ir instructions, baseline $base, ratio $ratio (fails above $(( 100 + tol ))%)"
if [ "$ir" -gt "$limit" ]; then
  echo "perf-gate: FAIL: the workload costs more than ${tol}% over the baseline." >&2
  echo "perf-gate: profile with: valgrind --tool=callgrind $bin && callgrind_annotate callgrind.out.*" >&2
  echo "perf-gate: if the cost is intended, run ci/perf-gate.sh --update and commit the baseline." >&2
  exit 1
fi
if [ "$ir" -lt $(( base - base * tol / 100 )) ]; then
  echo "perf-gate: note: more than ${tol}% cheaper than the baseline; consider ci/perf-gate.sh --update"
fi

# Self-check: the same gate must catch a deliberate 20% regression.
slow=$(FERROMQ_PERF_GATE_SLOWDOWN_PERCENT=20 count)
if [ "$slow" -le "$limit" ]; then
  echo "perf-gate: FAIL: self-check: a deliberate 20% slowdown ($slow instructions) was not caught" >&2
  exit 1
fi
echo "perf-gate: self-check: a deliberate 20% slowdown ($slow instructions, ratio $(awk -v a="$slow" -v b="$base" 'BEGIN { printf "%.4f", a / b }')) is caught"
echo "perf-gate: PASS"
