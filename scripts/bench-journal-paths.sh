#!/usr/bin/env bash
# The journal's two write paths against the disk's limits, in one run (issue 19,
# bench-results/io-uring.md). For each repeat, interleaved: the raw probes (`ferromq-bench
# fsync-probe`: per-thread write + fdatasync with 1 and 16 in flight, the 16-thread group-commit
# probe, O_DIRECT|O_DSYNC writes with 1, 4 and 16 in flight), then the journal itself on the
# portable and the direct io_uring path with 1, 4 and 16 receipted producers (example
# `journal_paths`: each producer waits for every confirmation). 1 KiB records and messages.
# Device flushes of the whole disk (/proc/diskstats field 19) are counted around every run.
#
#   scripts/bench-journal-paths.sh          # 3 repeats x 12 runs x (5 s + start-up): ~5 min
#
# Environment: CARGO_TARGET_DIR (default $HOME/.cache/ferromq/target), JP_DIR (default
# /var/tmp: the data disk, not tmpfs), JP_DURATION=5, JP_REPEATS=3, JP_DEPTH (the direct
# path's io_depth; default the store's), JP_OUT (raw JSON; default $JP_DIR/journal-paths-<date>).
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

for rep in $(seq 1 "$REPEATS"); do
  for t in 1 16; do
    run "probe-fdatasync-$t" "$BENCH" fsync-probe --mode fdatasync --threads "$t" --size 1024 --duration "$DURATION" --dir "$DIR" --json
  done
  run "probe-group-commit-16" "$BENCH" fsync-probe --mode group-commit --threads 16 --size 1024 --duration "$DURATION" --dir "$DIR" --json
  for t in 1 4 16; do
    run "probe-direct-dsync-$t" "$BENCH" fsync-probe --mode direct-dsync --threads "$t" --size 1024 --duration "$DURATION" --dir "$DIR" --json
  done
  # Alternate which path goes first, so neither always runs in the other's wake.
  order="portable io-uring"
  [ $((rep % 2)) -eq 0 ] && order="io-uring portable"
  for t in 1 4 16; do
    for p in $order; do
      run "journal-$p-$t" "$PATHS" "$p" "$t" 1024 "$DURATION" "$DIR" ${JP_DEPTH:+"$JP_DEPTH"}
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
for t in (1, 4, 16):
    p, u = med(f"journal-portable-{t}"), med(f"journal-io-uring-{t}")
    if p and u:
        print(f"journal, {t} producer(s): io_uring / portable = {u / p:.2f}x")
PY
