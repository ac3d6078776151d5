#!/usr/bin/env bash
# What acks without a receipt cost (issue 16, item 1): ferromq on the journal with
# `store.sync = "always"`, consumers acking every message with `client-individual` (no receipt
# on the ACK, as most STOMP clients do), once with `store.ack_sync_delay_ms = 0` (every ack
# flushed on its own, the behaviour before) and once with the default 100 ms (acks ride on the
# next flush). For each setting and workload: REPEATS runs on a fresh broker and data dir,
# reporting delivered msg/s and device flushes per delivered message (from /proc/diskstats of
# the data dir's disk: the whole disk, so other processes' flushes count too).
#
#   scripts/bench-acks.sh                 # 3 repeats, 2 s warm-up + 8 s per run
#   ACKS_REPEATS=1 ACKS_DURATION=4 scripts/bench-acks.sh
#
# Prints one line per run and a median summary (markdown) on stdout. Bounded: every run is
# limited by `timeout`, at most 2 settings × 2 workloads × REPEATS runs.
set -euo pipefail
cd "$(dirname "$0")/.."

REPEATS="${ACKS_REPEATS:-3}"
WARMUP="${ACKS_WARMUP:-2}"
DURATION="${ACKS_DURATION:-8}"
PORT="${ACKS_PORT:-61690}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}"
cargo build --release -q -p ferromq -p ferromq-bench
FERROMQ="$CARGO_TARGET_DIR/release/ferromq"
BENCH="$CARGO_TARGET_DIR/release/ferromq-bench"
work="$(mktemp -d /var/tmp/ferromq-acks.XXXXXX)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

disk="$(basename "$(df -P "$work" | awk 'NR==2 {print $1}')")"
# Field 19 of /proc/diskstats (kernel ≥ 5.5): flush requests completed.
flushes() { awk -v d="$disk" '$3 == d {print $19}' /proc/diskstats; }

start_broker() {
  local delay=$1
  rm -rf "$work/data" && mkdir -p "$work/data"
  FERROMQ__BROKER__DATA_DIR="$work/data" FERROMQ__TRANSPORTS__STOMP="127.0.0.1:$PORT" \
    FERROMQ__STORE__BACKEND=journal FERROMQ__STORE__SYNC=always \
    FERROMQ__STORE__ACK_SYNC_DELAY_MS="$delay" \
    "$FERROMQ" --log warn serve </dev/null >"$work/broker.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench-acks: broker did not start: $(tail -n 3 "$work/broker.log")" >&2
  exit 1
}

stop_broker() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
}

echo "# bench-acks: $(date -u '+%Y-%m-%d %H:%M UTC'), git $(git rev-parse --short HEAD), disk $disk, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
results="$work/results.tsv"
: >"$results"
for workload in "a1:1" "a16:16"; do
  name=${workload%%:*}
  producers=${workload##*:}
  for run in $(seq 1 "$REPEATS"); do
    for delay in 0 100; do
      start_broker "$delay"
      f0=$(flushes)
      json=$(timeout $((WARMUP + DURATION + 60)) "$BENCH" run --url "127.0.0.1:$PORT" \
        -d "/queue/acks.$name" --persistent --receipt --window 1 -p "$producers" -c 1 \
        --ack client-individual --size 1024 --warmup "$WARMUP" --duration "$DURATION" \
        --json --quiet </dev/null)
      f1=$(flushes)
      stop_broker
      python3 - "$name" "$delay" "$run" "$((f1 - f0))" "$json" >>"$results" <<'EOF'
import json, sys
name, delay, run, flushes, raw = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
r = json.loads(raw)
rate = r["delivered"]["msgs_per_s"]
# Flushes are counted over the whole run (warm-up included), so divide by every delivery.
total = r["delivered_total"]
print(f"{name}\t{delay}\t{run}\t{rate}\t{total}\t{flushes}")
EOF
      tail -n 1 "$results" >&2
    done
  done
done

python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
print("| workload | ack_sync_delay_ms | delivered msg/s median (min–max) | device flushes per delivered message (median) |")
print("|---|---|---|---|")
for name in ("a1", "a16"):
    for delay in ("0", "100"):
        rs = [r for r in rows if r[0] == name and r[1] == delay]
        if not rs:
            continue
        rates = [float(r[3]) for r in rs if r[3] != "None"]
        per = [int(r[5]) / float(r[4]) for r in rs if r[4] not in ("None", "0")]
        med = statistics.median(rates) if rates else float("nan")
        print(f"| {name} | {delay} | {med:,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) | {statistics.median(per):.2f} |")
EOF
