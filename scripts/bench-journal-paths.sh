#!/usr/bin/env bash
# The journal's two write paths against the disk's limits, in one run (issue 19,
# bench-results/io-uring.md). For each repeat, interleaved: the raw probes (`ferromq-bench
# fsync-probe`: per-thread write + fdatasync with 1 and 16 in flight, the 16-thread group-commit
# probe, O_DIRECT|O_DSYNC writes with 1, 4 and 16 in flight), then the journal itself on the
# portable and the direct io_uring path with 1, 4 and 16 receipted producers (example
# `journal_paths`: each producer waits for every confirmation) at each depth of JP_DEPTHS
# (default "1 4": synchronous direct writes, and 4 in flight through the ring). 1 KiB records
# and messages.
# Device flushes of the whole disk (/proc/diskstats field 19) are counted around every run.
#
#   scripts/bench-journal-paths.sh          # 3 repeats x 12 runs x (5 s + start-up): ~5 min
#
# Environment: CARGO_TARGET_DIR (default $HOME/.cache/ferromq/target), JP_DIR (default
# /var/tmp: the data disk, not tmpfs), JP_DURATION=5, JP_REPEATS=3, JP_DEPTHS, JP_HOGS (busy
# loops beside the journal cells), JP_PROBES=0 (skip the probes), JP_OUT (raw JSON; default $JP_DIR/journal-paths-<date>).
# The summary (median of the repeats, min-max) goes to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}"
DIR="${JP_DIR:-/var/tmp}"
DURATION="${JP_DURATION:-5}"
REPEATS="${JP_REPEATS:-3}"
OUT="${JP_OUT:-$DIR/journal-paths-$(date -u +%Y%m%dT%H%M%SZ)}"
cargo build --release --locked -p ferromq-bench
cargo build --release --locked -p ferromq-store --features io-uring --example journal_paths
BENCH="$CARGO_TARGET_DIR/release/ferromq-bench"
PATHS="$CARGO_TARGET_DIR/release/examples/journal_paths"
mkdir -p "$OUT"

DISK=$(basename "$(readlink -f "$(df -P "$DIR" | awk 'NR==2 {print $1}')")")
if [ -e "/sys/class/block/$DISK/partition" ]; then
  DISK=$(basename "$(readlink -f "/sys/class/block/$DISK/..")")
fi
flushes() { awk -v d="$DISK" '$3 == d { print $19 }' /proc/diskstats || echo 0; }

# run NAME COMMAND...: runs one cell, adds the disk-wide flush count to its JSON.
run() {
  local name=$1; shift
  local f0 f1
  printf '%s rep %s: %s\n' "$(date -u +%H:%M:%S)" "$rep" "$name" >&2
  f0=$(flushes)
  "$@" >"$OUT/$name.$rep.tmp"
  f1=$(flushes)
  python3 - "$OUT/$name.$rep.tmp" "$OUT/$name.$rep.json" "$((f1 - f0))" <<'PY'
import json, sys
text = open(sys.argv[1]).read().strip()
# The probe prints one pretty-printed object, the example one line after cargo's output.
r = json.loads(text[text.index("{"):])
r["device_flushes"] = int(sys.argv[3])
json.dump(r, open(sys.argv[2], "w"))
PY
  rm -f "$OUT/$name.$rep.tmp"
}

DEPTHS="${JP_DEPTHS:-1 4}"
HOG_PIDS=()
stop_hogs() { for p in "${HOG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_hogs EXIT
# JP_HOGS=N: N busy loops run beside every cell (CPU contention, as a loaded broker's own
# threads make it); the probes are skipped then (JP_PROBES=0 skips them anyway).
for _ in $(seq 1 "${JP_HOGS:-0}"); do
  timeout 3600 sh -c 'while :; do :; done' &
  HOG_PIDS+=("$!")
done
PROBES="${JP_PROBES:-1}"
[ "${JP_HOGS:-0}" -gt 0 ] && PROBES=0

for rep in $(seq 1 "$REPEATS"); do
  [ "$PROBES" = 1 ] && for t in 1 16; do
    run "probe-fdatasync-$t" "$BENCH" fsync-probe --mode fdatasync --threads "$t" --size 1024 --duration "$DURATION" --dir "$DIR" --json
  done
  [ "$PROBES" = 1 ] && run "probe-group-commit-16" "$BENCH" fsync-probe --mode group-commit --threads 16 --size 1024 --duration "$DURATION" --dir "$DIR" --json
  [ "$PROBES" = 1 ] && for t in 1 4 16; do
    run "probe-direct-dsync-$t" "$BENCH" fsync-probe --mode direct-dsync --threads "$t" --size 1024 --duration "$DURATION" --dir "$DIR" --json
  done
  # Alternate which path goes first, so neither always runs in the other's wake.
  order="portable $(for d in $DEPTHS; do printf 'io-uring:%s ' "$d"; done)"
  [ $((rep % 2)) -eq 0 ] && order="$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')"
  for t in 1 4 16; do
    for p in $order; do
      case $p in
        io-uring:*) run "journal-io-uring-d${p#io-uring:}-$t" "$PATHS" io-uring "$t" 1024 "$DURATION" "$DIR" "${p#io-uring:}" ;;
        *) run "journal-$p-$t" "$PATHS" "$p" "$t" 1024 "$DURATION" "$DIR" ;;
      esac
    done
  done
done

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
rows = {}
for f in glob.glob(os.path.join(out, "*.json")):
    name = os.path.basename(f).split(".")[0]
    r = json.load(open(f))
    rate = r.get("per_second", r.get("writes_per_s", r.get("records_per_s")))
    n = r.get("messages", r.get("writes", r.get("records", 1)))
    rows.setdefault(name, []).append((rate, r["device_flushes"] / max(n, 1)))
print(f"raw JSON: {out}")
print("| cell | per second, median (min–max) | device flushes per write/message | runs |")
print("|---|---|---|---|")
for name in sorted(rows, key=lambda n: (n.startswith("journal"), n.rsplit("-", 1)[0], int(n.rsplit("-", 1)[1]))):
    v = rows[name]
    rates = sorted(x[0] for x in v)
    print(f"| {name} | {statistics.median(rates):,.0f} ({rates[0]:,.0f}–{rates[-1]:,.0f}) "
          f"| {statistics.median(x[1] for x in v):.2f} | {len(v)} |")
def med(n):
    return statistics.median(x[0] for x in rows[n]) if n in rows else None
depths = sorted({n.split("-d")[1].split("-")[0] for n in rows if n.startswith("journal-io-uring-d")}, key=int)
for t in (1, 4, 16):
    for d in depths:
        p, u = med(f"journal-portable-{t}"), med(f"journal-io-uring-d{d}-{t}")
        if p and u:
            print(f"journal, {t} producer(s): direct, depth {d} / portable = {u / p:.2f}x")
PY
