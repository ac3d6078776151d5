#!/usr/bin/env bash
# ferromq's OpenWire connector beside ActiveMQ 5.17, both driven by the real ActiveMQ 5.17 JMS
# client (tests/jms/src/JmsLoad.java through scripts/jms-test.sh load), issue 15 item 6.
# Writes JSON lines to a results dir and bench-results/openwire.md.
#
#   scripts/bench-openwire.sh            # ~15-20 min on 2 cores with the release build cached
#
# Every run gets a freshly started broker with an empty store (ferromq: new data dir;
# ActiveMQ: scripts/activemq-local.sh start, which wipes its KahaDB), one JmsLoad process, then
# the broker is stopped. Runs are interleaved (case → repeat → broker) so that slow drifts of
# the shared VM hit both brokers alike. Loopback only; every broker started is stopped on exit.
#
# Environment (all optional):
#   CARGO_TARGET_DIR        build dir (default $HOME/.cache/ferromq/target); the release binary
#                           must exist or is built (bounded by OWB_BUILD_TIMEOUT, 3600 s)
#   OWB_RUNS=3              repeats per broker and case
#   OWB_CASES="a b c d dp"  cases (see the table below)
#   OWB_BROKERS="ferromq activemq"
#   OWB_MSGS_a=20000 OWB_MSGS_b=150000 OWB_MSGS_c=300000 OWB_MSGS_d=100000 OWB_MSGS_dp=20000
#                           total messages sent per run (same for both brokers)
#   OWB_RUN_TIMEOUT=120     JmsLoad --timeout-s (the process is killed 30 s later)
#   OWB_PORT_BASE=61750     ferromq OpenWire = base, STOMP = base+1; ActiveMQ base+2, base+3
#   OWB_WORK=/var/tmp/ferromq-owbench/<date>   raw results, logs, data dirs
#   OWB_OUT=bench-results   where openwire.md goes
#   OWB_FERROMQ_LOG=warn    ferromq --log level
#   FERROMQ_JMS_BUILD       where jms-test.sh compiles the classes (default: $OWB_WORK/../jms)
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}"
RUNS="${OWB_RUNS:-3}"
CASES="${OWB_CASES:-a b c d dp}"
BROKERS="${OWB_BROKERS:-ferromq activemq}"
RUN_TIMEOUT="${OWB_RUN_TIMEOUT:-120}"
BASE="${OWB_PORT_BASE:-61750}"
OUT="${OWB_OUT:-bench-results}"
FLOG="${OWB_FERROMQ_LOG:-warn}"
root="${OWB_ROOT:-/var/tmp/ferromq-owbench}"
work="${OWB_WORK:-$root/$(date -u +%Y%m%dT%H%M%SZ)}"
export FERROMQ_JMS_BUILD="${FERROMQ_JMS_BUILD:-$root/jms}"
export FERROMQ_JMS_NICE="${FERROMQ_JMS_NICE:-0}" # load tool at the broker's priority
FERROMQ_OW=$BASE FERROMQ_ST=$((BASE + 1)) AMQ_OW=$((BASE + 2)) AMQ_ST=$((BASE + 3))

declare -A MSGS=(
  [a]="${OWB_MSGS_a:-20000}" [b]="${OWB_MSGS_b:-150000}" [c]="${OWB_MSGS_c:-300000}"
  [d]="${OWB_MSGS_d:-100000}" [dp]="${OWB_MSGS_dp:-20000}"
)
# case -> JmsLoad arguments (besides --url and --messages)
declare -A ARGS=(
  [a]="--queue owb.a --producers 1 --consumers 1 --persistent true"
  [b]="--queue owb.b --producers 16 --consumers 4 --persistent true"
  [c]="--queue owb.c --producers 4 --consumers 4 --persistent false"
  [d]="--topic owb.d --producers 1 --subscribers 10 --persistent false"
  [dp]="--topic owb.dp --producers 1 --subscribers 10 --persistent true"
)
declare -A DESC=(
  [a]="a. persistent queue, 1 producer thread → 1 consumer"
  [b]="b. persistent queue, 16 producer threads → 4 consumers"
  [c]="c. non-persistent queue, 4 producers → 4 consumers"
  [d]="d. non-persistent topic, 1 producer → 10 subscribers"
  [dp]="d'. persistent topic (non-durable subscribers), 1 producer → 10 subscribers"
)

step() { printf '\n==> %s\n' "$*" >&2; }
die() { echo "bench-openwire: error: $*" >&2; exit 1; }
for t in python3 timeout java; do command -v "$t" >/dev/null 2>&1 || die "$t not found"; done
for c in $CASES; do [ -n "${ARGS[$c]:-}" ] || die "unknown case $c (known: ${!ARGS[*]})"; done

FERROMQ="$CARGO_TARGET_DIR/release/ferromq"
if [ ! -x "$FERROMQ" ]; then
  step "build (release): ferromq"
  timeout "${OWB_BUILD_TIMEOUT:-3600}" cargo build --release --locked -p ferromq || die "cargo build failed"
fi
[ -x "$FERROMQ" ] || die "$FERROMQ missing"

mkdir -p "$work/logs" "$OUT" "$FERROMQ_JMS_BUILD"
results="$work/results.jsonl"
: >"$results"
ferromq_pid=""
amq_dir=""
stop_ferromq() {
  if [ -n "$ferromq_pid" ] && kill -0 "$ferromq_pid" 2>/dev/null; then
    kill -TERM "$ferromq_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$ferromq_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$ferromq_pid" 2>/dev/null || true
    wait "$ferromq_pid" 2>/dev/null || true
  fi
  ferromq_pid=""
}
stop_amq() {
  if [ -n "$amq_dir" ]; then timeout 40 bash scripts/activemq-local.sh stop "$amq_dir" >&2 || true; fi
  amq_dir=""
}
cleanup() {
  local rc=$?
  stop_ferromq
  stop_amq
  rm -rf "$work"/data-* "$work"/amq-*/data
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $FERROMQ_OW $FERROMQ_ST $AMQ_OW $AMQ_ST; do port_free "$p" || die "127.0.0.1:$p is taken (set OWB_PORT_BASE)"; done

# compile the JMS classes once, outside any measured run
step "compile JmsLoad (FERROMQ_JMS_BUILD=$FERROMQ_JMS_BUILD)"
timeout 300 bash scripts/jms-test.sh load --help >/dev/null 2>&1 || true
[ -f "$FERROMQ_JMS_BUILD/classes/JmsLoad.class" ] || die "JmsLoad did not compile"

# start_broker NAME TAG: fresh store, waits for the OpenWire port; sets $url (runs in this shell,
# not a subshell, so that the pid / dir it records is what the trap stops)
start_broker() {
  local b=$1 tag=$2
  case "$b" in
    ferromq)
      local d="$work/data-$tag"
      rm -rf "$d"; mkdir -p "$d"
      cat >"$work/ferromq-$tag.toml" <<EOF
[broker]
data_dir = "$d"

[transports]
stomp = "127.0.0.1:$FERROMQ_ST"
openwire = "tcp://127.0.0.1:$FERROMQ_OW"

[store]
backend = "journal"
sync = "always"
EOF
      "$FERROMQ" --log "$FLOG" serve --config "$work/ferromq-$tag.toml" </dev/null >"$work/logs/ferromq-$tag.log" 2>&1 &
      ferromq_pid=$!
      for _ in $(seq 1 300); do
        port_free "$FERROMQ_OW" || { url="tcp://127.0.0.1:$FERROMQ_OW"; return 0; }
        kill -0 "$ferromq_pid" 2>/dev/null || break
        sleep 0.1
      done
      echo "ferromq did not listen: $(tail -n 3 "$work/logs/ferromq-$tag.log" | tr '\n' ' ')" >&2
      stop_ferromq
      return 1
      ;;
    activemq)
      amq_dir="$work/amq-$tag"
      if ! timeout 60 bash scripts/activemq-local.sh start "$amq_dir" "$AMQ_OW" "$AMQ_ST" >&2; then
        stop_amq
        return 1
      fi
      url="tcp://127.0.0.1:$AMQ_OW"
      ;;
  esac
}
stop_broker() {
  case "$1" in
    ferromq) stop_ferromq; rm -rf "$work/data-$2" ;;
    activemq)
      cp "$amq_dir/activemq.log" "$work/logs/activemq-$2.log" 2>/dev/null || true
      [ -f "$work/activemq.xml" ] || cp "$amq_dir/conf/activemq.xml" "$work/activemq.xml" 2>/dev/null || true
      stop_amq; rm -rf "$work/amq-$2"
      ;;
  esac
}

# record CASE BROKER RUN RC WALL_S JSON_FILE: one JSON line per run into results.jsonl
record() {
  python3 - "$@" >>"$results" <<'PY'
import json, sys
case, broker, run, rc, wall, path = sys.argv[1:7]
try:
    lines = [l for l in open(path).read().splitlines() if l.startswith("{")]
    load = json.loads(lines[-1]) if lines else None
except Exception:
    load = None
print(json.dumps({"case": case, "broker": broker, "run": int(run), "rc": int(rc),
                  "wall_s": float(wall), "load": load}))
PY
}

{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "kernel=$(uname -sr)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) online CPUs)"
  echo "memory=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "virt=$(grep -qw hypervisor /proc/cpuinfo && echo 'virtual machine (cpuinfo hypervisor flag)' || echo 'no hypervisor flag')"
  echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "disk=$(df -PT "$work" | awk 'NR==2 {print $1 " (" $2 "), mounted on " $7}')"
  echo "work=$work"
  echo "ferromq_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || echo ' + uncommitted changes in crates/')"
  echo "ferromq_version=$("$FERROMQ" --version 2>/dev/null)"
  echo "rustc=$(rustc -V 2>/dev/null || echo unknown)"
  echo "activemq_pkg=$(dpkg-query -W -f='${Version}' activemq 2>/dev/null || echo 'not installed')"
  echo "client_pkg=$(dpkg-query -W -f='${Version}' libactivemq-java 2>/dev/null || echo 'not installed')"
  echo "java=$(java -version 2>&1 | head -n 1)"
  echo "runs=$RUNS"
  echo "cases=$CASES"
  echo "brokers=$BROKERS"
  for c in $CASES; do echo "msgs_$c=${MSGS[$c]}"; echo "args_$c=${ARGS[$c]}"; echo "desc_$c=${DESC[$c]}"; done
  echo "run_timeout=$RUN_TIMEOUT"
  echo "activemq_heap=${ACTIVEMQ_HEAP:-256m}"
  echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$work/meta.env"
cat "$work/meta.env" >&2

for c in $CASES; do
  for i in $(seq 1 "$RUNS"); do
    for b in $BROKERS; do
      tag="$c-$i-$b"
      step "${DESC[$c]}: $b, run $i/$RUNS, ${MSGS[$c]} messages"
      url=""
      for p in $FERROMQ_OW $AMQ_OW; do port_free "$p" || die "127.0.0.1:$p still taken before $tag (a broker was not stopped?)"; done
      if ! start_broker "$b" "$tag"; then
        echo "{\"case\":\"$c\",\"broker\":\"$b\",\"run\":$i,\"rc\":-1,\"wall_s\":0,\"load\":null,\"error\":\"broker did not start\"}" >>"$results"
        continue
      fi
      t0=$(date +%s%N)
      rc=0
      # shellcheck disable=SC2086
      timeout -k 5 $((RUN_TIMEOUT + 30)) bash scripts/jms-test.sh load --url "$url" ${ARGS[$c]} \
        --messages "${MSGS[$c]}" --size 1024 --timeout-s "$RUN_TIMEOUT" \
        >"$work/logs/load-$tag.json" 2>"$work/logs/load-$tag.err" </dev/null || rc=$?
      t1=$(date +%s%N)
      wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
      record "$c" "$b" "$i" "$rc" "$wall" "$work/logs/load-$tag.json"
      tail -n 1 "$work/logs/load-$tag.json" >&2 || true
      [ "$rc" = 0 ] || { echo "bench-openwire: run $tag exit $rc: $(tail -n 3 "$work/logs/load-$tag.err" | tr '\n' ' ')" >&2; }
      stop_broker "$b" "$tag"
      sleep 1
    done
  done
done
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/meta.env"

step "report: $OUT/openwire.md"
python3 scripts/bench-openwire-report.py "$work" "$OUT/openwire.md"
echo "bench-openwire: raw results in $results" >&2
