#!/bin/bash
# Broker memory with a deep queue, and the restart with it (issue 20).
#
#   scripts/bench-deep-queue.sh BIN SECONDS SIZE [LABEL]
#
# Starts BIN (`ferromq serve`, journal store, sync = always) on a fresh data directory under
# /var/tmp, fills /queue/deep for SECONDS with 4 producers (persistent, receipts, window 64,
# SIZE-byte bodies, no consumer), then reports the queue depth, the broker's resident memory
# (VmRSS) and its peak (VmHWM) after 10 s at rest, then kills it (kill -9), starts it again and
# reports the time until it accepts connections and its memory then; then the same after a
# clean stop (SIGTERM). Bounded: SECONDS <= 900;
# every wait has a deadline. The data directory is removed at the end.
set -euo pipefail
BIN=${1:?BIN}; SECS=${2:?SECONDS}; SIZE=${3:?SIZE}; LABEL=${4:-$(basename "$BIN")}
[ "$SECS" -le 900 ] || { echo "SECONDS must be <= 900" >&2; exit 2; }
BENCH=${FERROMQ_BENCH:-$HOME/.cache/ferromq/target/release/ferromq-bench}
PORT=61698; ADMIN=127.0.0.1:8198
D=$(mktemp -d /var/tmp/deepq.XXXX)
trap 'kill $P 2>/dev/null || true; rm -rf "$D"' EXIT
start() {
  FERROMQ__BROKER__DATA_DIR=$D FERROMQ__TRANSPORTS__STOMP=127.0.0.1:$PORT \
  FERROMQ__TRANSPORTS__ADMIN=$ADMIN FERROMQ__STORE__BACKEND=journal FERROMQ__STORE__SYNC=always \
    "$BIN" --log warn serve </dev/null >>"$D/log" 2>&1 &
  P=$!
  local t0; t0=$(date +%s.%N)
  for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
  UP=$(echo "$(date +%s.%N) - $t0" | bc)
}
mem() { awk '/^VmRSS|^VmHWM/{printf "%s %.0f MiB ", $1, $2/1024}' /proc/$P/status; }
depth() { "$BIN" dstat queues --admin $ADMIN 2>/dev/null | awk '$1 ~ /deep/ {print $2}'; }
start
"$BENCH" run --url 127.0.0.1:$PORT -d /queue/deep --persistent --receipt --window 64 -p 4 -c 0 \
  --size "$SIZE" --warmup 0 --duration "$SECS" --timeout 60 --quiet >/dev/null 2>&1 || true
sleep 10
if ! kill -0 $P 2>/dev/null; then
  echo "$LABEL: the broker exited during the fill; its last log lines:"; tail -20 "$D/log"; exit 1
fi
echo "$LABEL size=$SIZE filled for ${SECS}s: depth $(depth); at rest: $(mem)"
kill -KILL $P; for _ in $(seq 1 600); do kill -0 $P 2>/dev/null || break; sleep 0.1; done
start
sleep 2
echo "$LABEL restart after kill -9: accepting after ${UP}s; depth $(depth); $(mem)"
kill -TERM $P; for _ in $(seq 1 600); do kill -0 $P 2>/dev/null || break; sleep 0.1; done
start
sleep 2
echo "$LABEL restart after SIGTERM: accepting after ${UP}s; depth $(depth); $(mem)"
