#!/usr/bin/env bash
# Durable writes on the data disk with 1, 4 and 16 in flight (issue 19): each thread's own
# write + fdatasync (appending, and overwriting a preallocated file), O_DIRECT | O_DSYNC on a
# preallocated zero-filled file, and the group-commit probe for reference; 1 KiB and 4 KiB
# records. Runs are interleaved (for each repeat: every size, mode and depth once) so a slow
# patch of a shared VM hits every configuration alike. Device flushes and writes of the whole
# disk (/proc/diskstats fields 19 and 8, disk-wide) are counted around every run.
#
#   scripts/bench-durable-writes.sh            # 3 repeats x 24 runs x 6 s: ~8 min
#
# Environment: CARGO_TARGET_DIR (default $HOME/.cache/ferromq/target), DW_DIR (default
# /var/tmp: must be the data disk, not tmpfs), DW_DURATION=6, DW_REPEATS=3, DW_OUT (raw JSON;
# default $DW_DIR/durable-writes-<date>). The summary (medians, min-max) goes to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}"
DIR="${DW_DIR:-/var/tmp}"
DURATION="${DW_DURATION:-6}"
REPEATS="${DW_REPEATS:-3}"
OUT="${DW_OUT:-$DIR/durable-writes-$(date -u +%Y%m%dT%H%M%SZ)}"
BENCH="$CARGO_TARGET_DIR/release/ferromq-bench"
[ -x "$BENCH" ] || cargo build --release --locked -p ferromq-bench
mkdir -p "$OUT"

DISK=$(basename "$(readlink -f "$(df -P "$DIR" | awk 'NR==2 {print $1}')")")
if [ -e "/sys/class/block/$DISK/partition" ]; then
  DISK=$(basename "$(readlink -f "/sys/class/block/$DISK/..")")
fi
counters() { awk -v d="$DISK" '$3 == d { print $19, $8 }' /proc/diskstats; }

for rep in $(seq 1 "$REPEATS"); do
  for size in 1024 4096; do
    for mode in fdatasync fdatasync-prealloc direct-dsync group-commit; do
      for t in 1 4 16; do
        args=(--mode "${mode%-prealloc}" --threads "$t" --size "$size" --duration "$DURATION" --dir "$DIR" --json)
        [ "$mode" = fdatasync-prealloc ] && args+=(--preallocate)
        f="$OUT/$mode-$size-$t.$rep.json"
        printf '%s rep %s: %s %s B x%s\n' "$(date -u +%H:%M:%S)" "$rep" "$mode" "$size" "$t" >&2
        read -r flush0 wr0 < <(counters || echo "0 0")
        cpu0=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat)
        "$BENCH" fsync-probe "${args[@]}" >"$f.tmp"
        cpu1=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat)
        read -r flush1 wr1 < <(counters || echo "0 0")
        python3 - "$f.tmp" "$f" "$((flush1 - flush0))" "$((wr1 - wr0))" "$cpu0" "$cpu1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["device_flushes"] = int(sys.argv[3]); r["device_writes"] = int(sys.argv[4])
# Busy share of all CPUs during the run (the probe's own included): other load on a shared VM
# shows up here; a 1-in-flight run is very sensitive to it (wake-up latency).
(b0, i0), (b1, i1) = (map(int, a.split()) for a in sys.argv[5:7])
r["machine_cpu_busy"] = round((b1 - b0) / max(1, (b1 - b0) + (i1 - i0)), 3)
json.dump(r, open(sys.argv[2], "w"), indent=1)
PY
        rm -f "$f.tmp"
      done
    done
  done
done

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
rows = {}
for f in glob.glob(os.path.join(out, "*.json")):
    mode, size, t = os.path.basename(f).split(".")[0].rsplit("-", 2)
    r = json.load(open(f))
    w = r.get("writes", r.get("records"))
    rate = r.get("writes_per_s", r.get("records_per_s"))
    p50 = (r.get("latency") or {}).get("p50_us")
    rows.setdefault((mode, int(size), int(t)), []).append(
        (rate, rate * int(size) / 1e6, r["device_flushes"] / max(w, 1), p50, r.get("machine_cpu_busy", 0)))
print(f"raw JSON: {out}")
print("| mode | record | in flight | writes/s median (min–max) | MB/s median | device flushes/write | p50 µs | CPU busy (max) | runs |")
print("|---|---|---|---|---|---|---|---|---|")
order = ["fdatasync", "fdatasync-prealloc", "direct-dsync", "group-commit"]
for (mode, size, t) in sorted(rows, key=lambda k: (k[1], order.index(k[0]), k[2])):
    v = rows[(mode, size, t)]
    rates = sorted(x[0] for x in v)
    print(f"| {mode} | {size} B | {t} | {statistics.median(rates):,.0f} ({rates[0]:,.0f}–{rates[-1]:,.0f}) "
          f"| {statistics.median(x[1] for x in v):.2f} | {statistics.median(x[2] for x in v):.2f} "
          f"| {statistics.median(x[3] for x in v if x[3] is not None):.0f} | {max(x[4] for x in v):.0%} | {len(v)} |")
PY
