#!/usr/bin/env bash
# Scale of one broker (issue 16, item 5): memory per idle and per active STOMP connection,
# 10,000 connections that each get a message, throughput beside 10,000 idle connections, and
# memory per empty destination with 100,000 queues. Writes bench-results/scale.md.
#
#   scripts/bench-scale.sh        # ~3 min on 2 cores with the release build cached
#
# Environment (optional): SCALE_CONNECTIONS=10000 SCALE_DESTINATIONS=100000 SCALE_REPEATS=3
# SCALE_DURATION=8 SCALE_OUT=bench-results SCALE_PORT=61697, CARGO_TARGET_DIR as test.sh.
# Needs an open-file limit above the connection count for this shell (the hard limit is used).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}"
N="${SCALE_CONNECTIONS:-10000}"
DESTS="${SCALE_DESTINATIONS:-100000}"
REPEATS="${SCALE_REPEATS:-3}"
DURATION="${SCALE_DURATION:-8}"
OUT="${SCALE_OUT:-bench-results}"
PORT="${SCALE_PORT:-61697}"

die() { echo "bench-scale: error: $*" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $((N + 200)) ] || die "open-file limit $(ulimit -n) is too low for $N connections"

timeout 3600 cargo build --release --locked -p ferromq -p ferromq-bench >&2 || die "release build failed"
FERROMQ="$CARGO_TARGET_DIR/release/ferromq"
BENCH="$CARGO_TARGET_DIR/release/ferromq-bench"
PROBE="python3 scripts/scale-probe.py"

work=$(mktemp -d /var/tmp/ferromq-scale.XXXXXX)
pid=""
probe_pid=""
cleanup() {
  rm -f "$work"/hold*
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

start_broker() {
  rm -rf "$work/data"
  FERROMQ__BROKER__DATA_DIR="$work/data" FERROMQ__TRANSPORTS__STOMP="127.0.0.1:$PORT" \
    FERROMQ__TRANSPORTS__OPENWIRE="" FERROMQ__STOMP__MAX_CONNECTIONS=$((N + 100)) \
    "$FERROMQ" --log warn serve </dev/null >"$work/broker.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  die "broker did not start: $(tail -n 3 "$work/broker.log")"
}
stop_broker() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=""; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }

# hold NAME ARGS...: opens connections in the background; returns once they are all ready.
hold() {
  local name=$1; shift
  touch "$work/hold.$name"; : >"$work/ready.$name"
  $PROBE connect --addr "127.0.0.1:$PORT" --hold-file "$work/hold.$name" \
    --ready-file "$work/ready.$name" --timeout 300 "$@" >"$work/probe.$name.log" 2>&1 &
  probe_pid=$!
  for _ in $(seq 1 3000); do
    grep -q '^ready' "$work/ready.$name" && return 0
    grep -qi 'timeout\|error\|closed' "$work/probe.$name.log" && break
    sleep 0.1
  done
  die "connections $name: $(tail -n 2 "$work/probe.$name.log")"
}
release() { rm -f "$work/hold.$1"; wait "$probe_pid" 2>/dev/null || true; }

# throughput LABEL: REPEATS runs of the non-persistent 1 -> 1 queue workload, msg/s each.
throughput() {
  local label=$1 r
  for r in $(seq 1 "$REPEATS"); do
    timeout $((DURATION + 120)) "$BENCH" run --url "127.0.0.1:$PORT" -d "/queue/scale.tp.$label.$r" \
      -p 1 -c 1 --ack client-individual --size 1024 --warmup 2 --duration "$DURATION" \
      --json --quiet </dev/null >"$work/tp.$label.$r.json" 2>"$work/tp.$label.$r.log" \
      || die "throughput run $label.$r failed: $(tail -n 2 "$work/tp.$label.$r.log")"
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["delivered"]["msgs_per_s"]))' \
      "$work/tp.$label.$r.json"
  done
}

echo "==> idle and active connections" >&2
start_broker
sleep 1
rss0=$(rss_kb)
hold idle --count "$N"
sleep 1
rss_idle=$(rss_kb)
idle_open_s=$(awk '/^ready/ {print $3}' "$work/ready.idle")
release idle
stop_broker

start_broker
sleep 1
rss0b=$(rss_kb)
hold active --count "$N" --subscribe --queues 100 --prefix act
sleep 1
rss_active=$(rss_kb)
# One message per connection: N persistent-free sends over 100 queues, then wait for the
# probe to report that every connection got exactly one.
python3 - "$PORT" "$N" <<'EOF'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
buf = b""
while b"\0" not in buf:
    buf += s.recv(4096)
out = bytearray()
for i in range(n):
    out += b"SEND\ndestination:/queue/act.%d\n\nhello\0" % (i % 100)
out += b"SEND\ndestination:/queue/act.marker\nreceipt:done\n\nx\0"
s.sendall(out)
buf = b""
while b"RECEIPT" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        raise SystemExit("producer: connection closed")
    buf += chunk
EOF
echo deliver >"$work/hold.active"
for _ in $(seq 1 1200); do grep -q '^delivered' "$work/ready.active" && break; sleep 0.1; done
delivered_line=$(grep '^delivered' "$work/ready.active" || die "active connections: $(tail -n 2 "$work/probe.active.log")")
rss_active_after=$(rss_kb)
release active
stop_broker

echo "==> throughput beside $N idle connections" >&2
start_broker
base=$(throughput base | tr '\n' ' ')
hold idle2 --count "$N"
beside=$(throughput idle | tr '\n' ' ')
release idle2
stop_broker

echo "==> $DESTS destinations" >&2
start_broker
sleep 1
rss_d0=$(rss_kb)
$PROBE destinations --addr "127.0.0.1:$PORT" --count "$DESTS" --ready-file "$work/ready.dest" \
  >"$work/probe.dest.log" 2>&1 || die "destinations: $(tail -n 2 "$work/probe.dest.log")"
sleep 1
rss_d1=$(rss_kb)
dest_line=$(cat "$work/ready.dest")
stop_broker

mkdir -p "$OUT"
python3 - "$OUT/scale.md" <<EOF
import statistics, sys
def nums(s): return [int(x) for x in s.split()]
base, beside = nums("$base"), nums("$beside")
mb, mi = statistics.median(base), statistics.median(beside)
n, dests = $N, $DESTS
idle_per = ($rss_idle - $rss0) * 1024 / n
active_per = ($rss_active - $rss0b) * 1024 / n
dest_per = ($rss_d1 - $rss_d0) * 1024 / dests
lines = [
 "# One broker with many connections and destinations (issue 16, item 5)",
 "",
 "Generated by \`scripts/bench-scale.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), git $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' + uncommitted changes').",
 "Machine: $(nproc) vCPU, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); broker (release, journal store) and",
 "load tools on the same machine over loopback. RSS is the broker's VmRSS.",
 "",
 "| measure | value |",
 "|---|---|",
 f"| {n:,} idle STOMP connections (CONNECT, heart-beat 0,0): broker RSS | {$rss0/1024:.0f} MiB → {$rss_idle/1024:.0f} MiB, **{idle_per/1024:.1f} KiB per connection**; all open in $idle_open_s s |",
 f"| {n:,} connections each subscribed (client-individual) to one of 100 queues | {$rss0b/1024:.0f} MiB → {$rss_active/1024:.0f} MiB, **{active_per/1024:.1f} KiB per connection** |",
 f"| {n:,} messages sent to those queues (one per connection expected) | \`$delivered_line\` (count, seconds, messages beyond one per connection); RSS after: {$rss_active_after/1024:.0f} MiB |",
 f"| non-persistent queue 1 → 1, 1 KiB, client-individual, delivered msg/s ($REPEATS × ${DURATION} s) | alone: {mb:,.0f} ({min(base):,}–{max(base):,}); beside {n:,} idle connections: {mi:,.0f} ({min(beside):,}–{max(beside):,}); **{100*mi/mb:.0f} %** |",
 f"| {dests:,} queues created (SUBSCRIBE + UNSUBSCRIBE each, over 4 connections) | \`$dest_line\` (count, seconds); RSS {$rss_d0/1024:.0f} MiB → {$rss_d1/1024:.0f} MiB, **{dest_per:.0f} B per empty queue** |",
 "",
 "Goal (issue 16): 10,000 concurrent connections, 100,000 destinations, memory per idle",
 "connection and per empty destination reported, and at least 90 % of the single-connection",
 "throughput beside 10,000 idle connections.",
]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
