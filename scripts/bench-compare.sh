#!/usr/bin/env bash
# ferromq beside ActiveMQ 5.17 and RabbitMQ on this machine, in one run, with the same load tool
# (ferromq-bench) and the same workloads, plus the raw append + fdatasync reference on the same
# disk (issue 8, items 2 and 3; issue 16, item 7). Writes bench-results/compare.md and
# bench-results/compare.svg.
#
#   scripts/bench-compare.sh            # ~20-25 min on 2 cores with the release build cached
#                                       # (3 repeats; + ~5 min for the release build, ~1 min for
#                                       # the first apt-get install of the peers)
#
# Every consumer ACKs every message (`--ack client-individual`, no receipt on the ACK), as real
# STOMP consumers do. Every workload runs COMPARE_REPEATS times, interleaved: for each workload,
# for each repeat, every broker once, so a slow patch of the shared VM hits all brokers alike;
# the report gives medians with min–max. For the persistent workloads the device flushes of
# the data disk (/proc/diskstats field 19, disk-wide) are counted around every run.
#
# Needs root (or passwordless sudo) the first time: scripts/services.sh installs the peers with
# apt-get. Environment (all optional):
#   CARGO_TARGET_DIR         build directory (default: $HOME/.cache/ferromq/target, as test.sh).
#                            A target dir that another checkout (git worktree) also builds into
#                            can hold that checkout's workspace crates: cargo judges them fresh by
#                            mtime. Measure with a target dir of this checkout's own.
#   COMPARE_WARMUP=2 COMPARE_DURATION=8   seconds per run
#   COMPARE_REPEATS=3        runs per broker and workload (and fsync probes per thread count)
#   COMPARE_BROKERS="ferromq activemq rabbitmq"
#   COMPARE_OUT=bench-results  where compare.md / compare.svg go
#   COMPARE_KEEP_PEERS=1     leave ActiveMQ and RabbitMQ running afterwards
#   COMPARE_FERROMQ_PORT=61643, FERROMQ_AMQ_STOMP_PORT=61623, FERROMQ_RABBIT_STOMP_PORT=61633
#   FERROMQ_PEERS_DIR=/var/tmp/ferromq-peers  peers' state, ferromq's data dir and the fsync
#                            probe's file all live here, so all are on the same disk
# Raw JSON reports and logs stay in $FERROMQ_PEERS_DIR/compare-<date>/ (path printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export FERROMQ_PEERS_DIR="${FERROMQ_PEERS_DIR:-/var/tmp/ferromq-peers}"
export FERROMQ_AMQ_STOMP_PORT="${FERROMQ_AMQ_STOMP_PORT:-61623}"
export FERROMQ_RABBIT_STOMP_PORT="${FERROMQ_RABBIT_STOMP_PORT:-61633}"
WARMUP="${COMPARE_WARMUP:-2}"
DURATION="${COMPARE_DURATION:-8}"
REPEATS="${COMPARE_REPEATS:-3}"
BROKERS="${COMPARE_BROKERS:-ferromq activemq rabbitmq}"
OUT="${COMPARE_OUT:-bench-results}"
FERROMQ_PORT="${COMPARE_FERROMQ_PORT:-61643}"
BUILD_TIMEOUT_S="${COMPARE_BUILD_TIMEOUT:-3600}"
OP_TIMEOUT_S=20 # ferromq-bench --timeout: one broker operation / drain without progress

is_seconds() { [[ "$1" =~ ^[0-9]+([.][0-9]+)?$ ]]; }
is_seconds "$WARMUP" || { echo "bench-compare: COMPARE_WARMUP=$WARMUP is not a number of seconds" >&2; exit 2; }
if ! is_seconds "$DURATION" || [ "$DURATION" = 0 ]; then
  echo "bench-compare: COMPARE_DURATION=$DURATION is not a positive number of seconds" >&2; exit 2
fi
[[ "$REPEATS" =~ ^[1-9][0-9]?$ ]] || { echo "bench-compare: COMPARE_REPEATS=$REPEATS is not a number of repeats (1-99)" >&2; exit 2; }
# Outer wall-clock limit of one run and of one probe (whole seconds, for timeout(1)).
RUN_LIMIT_S=$(awk -v w="$WARMUP" -v d="$DURATION" -v t="$OP_TIMEOUT_S" 'BEGIN { printf "%d", w + d + 4 * t + 61 }')
PROBE_LIMIT_S=$(awk -v d="$DURATION" 'BEGIN { printf "%d", d + 61 }')

step() { printf '\n==> %s\n' "$*" >&2; }
die() { echo "bench-compare: error: $*" >&2; exit 1; }
for tool in python3 timeout; do command -v "$tool" >/dev/null 2>&1 || die "$tool not found"; done

step "build (release): ferromq, ferromq-bench"
timeout "$BUILD_TIMEOUT_S" cargo build --release --locked -p ferromq -p ferromq-bench \
  || die "cargo build --release failed or took longer than ${BUILD_TIMEOUT_S}s"
FERROMQ="$CARGO_TARGET_DIR/release/ferromq"
BENCH="$CARGO_TARGET_DIR/release/ferromq-bench"
if [ ! -x "$FERROMQ" ] || [ ! -x "$BENCH" ]; then die "built binaries not found in $CARGO_TARGET_DIR/release"; fi

mkdir -p "$FERROMQ_PEERS_DIR" "$OUT"
work="$FERROMQ_PEERS_DIR/compare-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$work/raw"

# Device flushes: flush requests completed (/proc/diskstats field 19, kernel >= 5.5) of the whole
# disk holding $FERROMQ_PEERS_DIR (a partition's flushes reach its disk). The counter is
# disk-wide: every process writing to that disk with fsync counts too. Empty output = no counter
# (older kernel, or the filesystem is not on a block device listed there): the report says n/a.
FLUSH_DISK=$(basename "$(readlink -f "$(df -P "$FERROMQ_PEERS_DIR" | awk 'NR==2 {print $1}')" 2>/dev/null || true)")
if [ -e "/sys/class/block/$FLUSH_DISK/partition" ]; then
  FLUSH_DISK=$(basename "$(readlink -f "/sys/class/block/$FLUSH_DISK/..")")
fi
flushes() { awk -v d="$FLUSH_DISK" '$3 == d && $19 ~ /^[0-9]+$/ {print $19; exit}' /proc/diskstats 2>/dev/null || true; }
# flush_delta F0 OUT: writes the flushes since F0 to OUT.flushes (nothing without a counter).
flush_delta() {
  local f1
  f1=$(flushes)
  if [ -n "$1" ] && [ -n "$f1" ]; then echo $((f1 - $1)) >"$2.flushes"; fi
}
ferromq_pid=""
peers_started=0
cleanup() {
  local rc=$?
  if [ -n "$ferromq_pid" ] && kill -0 "$ferromq_pid" 2>/dev/null; then
    kill -TERM "$ferromq_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$ferromq_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$ferromq_pid" 2>/dev/null || true
  fi
  rm -rf "$work/ferromq-data"
  if [ "$peers_started" = 1 ] && [ "${COMPARE_KEEP_PEERS:-0}" != 1 ]; then
    bash scripts/services.sh stop peers || true
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wants() { case " $BROKERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# --- brokers ---------------------------------------------------------------------------------
# One line per broker: name, url, its SUBSCRIBE header for a prefetch window of 1000 (used by
# the backlog drain), extra ferromq-bench arguments (last: may be empty).
: >"$work/brokers.tsv"
: >"$work/failures.tsv"
fail() { printf '%s\t%s\n' "$1" "$2" >>"$work/failures.tsv"; echo "bench-compare: FAILED $1: $2" >&2; }
# why LOG: a failed run's error in one line: its "Error: ..." line and causes (not the backtrace
# that RUST_BACKTRACE=1 appends), else the log's last 3 lines.
why() {
  local msg
  msg=$(awk '/^Stack backtrace:/ {exit} /^Error:/ {on = 1} on && NF {printf "%s ", $0}' "$1" 2>/dev/null || true)
  [ -n "$msg" ] || msg=$(tail -n 3 "$1" 2>/dev/null | tr '\n' ' ')
  printf '%s' "$msg"
}

if wants activemq || wants rabbitmq; then
  step "peers: scripts/services.sh start peers"
  peers_started=1
  if ! timeout 900 bash scripts/services.sh start peers 2>&1 | tee "$work/peers-start.log" >&2; then
    echo "bench-compare: services.sh start peers reported a failure; continuing with what runs" >&2
  fi
  status=$(bash scripts/services.sh status peers 2>/dev/null || true)
  if wants activemq; then
    if grep -q '^ActiveMQ: up' <<<"$status"; then
      printf 'activemq\t127.0.0.1:%s\tactivemq.prefetchSize:1000\t\n' "$FERROMQ_AMQ_STOMP_PORT" >>"$work/brokers.tsv"
    else
      fail activemq "did not start: $(grep -iE "error.*(activemq|:$FERROMQ_AMQ_STOMP_PORT)" "$work/peers-start.log" | head -n 2 | tr '\n' ' ')"
    fi
  fi
  if wants rabbitmq; then
    if grep -q '^RabbitMQ: up' <<<"$status"; then
      printf 'rabbitmq\t127.0.0.1:%s\tprefetch-count:1000\t--host / --login guest --passcode guest\n' "$FERROMQ_RABBIT_STOMP_PORT" >>"$work/brokers.tsv"
    else
      fail rabbitmq "did not start: $(grep -iE "error.*(rabbit|:$FERROMQ_RABBIT_STOMP_PORT)" "$work/peers-start.log" | head -n 2 | tr '\n' ' ')"
    fi
  fi
fi

if wants ferromq; then
  step "ferromq serve (journal, sync=always) on 127.0.0.1:$FERROMQ_PORT"
  (exec 3<>"/dev/tcp/127.0.0.1/$FERROMQ_PORT") 2>/dev/null && die "127.0.0.1:$FERROMQ_PORT is taken (set COMPARE_FERROMQ_PORT)"
  mkdir -p "$work/ferromq-data"
  FERROMQ__BROKER__DATA_DIR="$work/ferromq-data" \
    FERROMQ__TRANSPORTS__STOMP="127.0.0.1:$FERROMQ_PORT" \
    FERROMQ__STORE__BACKEND=journal FERROMQ__STORE__SYNC=always \
    "$FERROMQ" --log warn serve </dev/null >"$work/ferromq.log" 2>&1 &
  ferromq_pid=$!
  up=0
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$FERROMQ_PORT") 2>/dev/null; then up=1; break; fi
    kill -0 "$ferromq_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$up" = 1 ]; then
    # ferromq first in the file: the report orders brokers as listed.
    { printf 'ferromq\t127.0.0.1:%s\tactivemq.prefetchSize:1000\t\n' "$FERROMQ_PORT"; cat "$work/brokers.tsv"; } >"$work/brokers.tsv.new"
    mv "$work/brokers.tsv.new" "$work/brokers.tsv"
  else
    fail ferromq "did not listen on 127.0.0.1:$FERROMQ_PORT within 30 s: $(tail -n 3 "$work/ferromq.log" | tr '\n' ' ')"
  fi
fi
[ -s "$work/brokers.tsv" ] || die "no broker is up; see $work"

# --- machine and versions --------------------------------------------------------------------
step "machine and versions"
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "kernel=$(uname -sr)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) online CPUs)"
  echo "memory=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "virt=$(grep -qw hypervisor /proc/cpuinfo && echo 'virtual machine (cpuinfo hypervisor flag)' || echo 'no hypervisor flag')"
  # shellcheck disable=SC1091 # the machine's own file
  echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "disk=$(df -PT "$work" | awk 'NR==2 {print $1 " (" $2 "), mounted on " $7}')"
  echo "data_dir=$work"
  echo "ferromq_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
  echo "ferromq_version=$("$FERROMQ" --version 2>/dev/null)"
  echo "bench_version=$("$BENCH" --version 2>/dev/null)"
  echo "rustc=$(rustc -V 2>/dev/null || echo unknown)"
  echo "activemq_pkg=$(dpkg-query -W -f='${Version}' activemq 2>/dev/null || echo 'not installed')"
  echo "rabbitmq_pkg=$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo 'not installed')"
  echo "erlang_pkg=$(dpkg-query -W -f='${Version}' erlang-base 2>/dev/null || echo 'not installed')"
  echo "java=$(java -version 2>&1 | head -n 1)"
  echo "warmup=$WARMUP"
  echo "duration=$DURATION"
  echo "repeats=$REPEATS"
  echo "ack=client-individual"
  echo "flush_disk=$FLUSH_DISK"
  echo "flush_counter=$([ -n "$(flushes)" ] && echo yes || echo no)"
  echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "amq_config=$FERROMQ_PEERS_DIR/activemq/conf/activemq.xml"
  echo "rabbit_config=$FERROMQ_PEERS_DIR/rabbitmq/rabbitmq.conf"
} >"$work/meta.env"
cat "$work/meta.env" >&2

# idle NAME: device flushes with every broker up and idle for DURATION s (the background that
# the disk-wide counter adds to every run), to meta.env.
idle() {
  local f0 f1
  f0=$(flushes)
  sleep "$DURATION"
  f1=$(flushes)
  if [ -n "$f0" ] && [ -n "$f1" ]; then
    printf '%s_flushes=%s\n%s_s=%s\n' "$1" $((f1 - f0)) "$1" "$DURATION" >>"$work/meta.env"
  fi
}
step "background flushes with the brokers idle (${DURATION} s)"
idle idle_before

# --- the physical reference ------------------------------------------------------------------
# probe T REP: `fsync-probe --threads T` on the data disk, JSON to raw/fsync-T.REP.json. It runs
# once per repeat, interleaved like a broker: the 1-thread probe just before the brokers' a1 runs
# of the same repeat, the 16-thread probe before a16's, so probe and brokers see the same patch
# of the VM.
probe() {
  local t=$1 rep=$2 out="$work/raw/fsync-$1.$2" f0
  step "fsync-probe --threads $t (on $work), repeat $rep/$REPEATS"
  f0=$(flushes)
  if timeout "$PROBE_LIMIT_S" "$BENCH" fsync-probe --threads "$t" --size 1024 \
    --duration "$DURATION" --dir "$work" --json </dev/null >"$out.json" 2>"$out.log"; then
    flush_delta "$f0" "$out"
  else
    fail "fsync-$t.$rep" "$(why "$out.log")"
    rm -f "$out.json"
  fi
}

# --- workloads -------------------------------------------------------------------------------
# name | description | ferromq-bench run arguments (besides url/broker arguments); `{rep}` in
# a destination becomes the repeat number, so every repeat starts on an empty destination. The
# order matters: the runs without consumers leave their messages in the brokers, so they come
# last. Every consumer acks each message (client-individual), as real consumers do.
W="--size 1024 --warmup $WARMUP --duration $DURATION --timeout $OP_TIMEOUT_S"
ACK="--ack client-individual"
cat >"$work/workloads.tsv" <<EOF
a1	a. persistent queue, receipt window 1, 1 producer → 1 consumer	-d /queue/cmp.a1.{rep} --persistent --receipt --window 1 -p 1 -c 1 $ACK $W
a16	a. persistent queue, receipt window 1, 16 producers → 1 consumer	-d /queue/cmp.a16.{rep} --persistent --receipt --window 1 -p 16 -c 1 $ACK $W
b64	b. persistent queue, receipt window 64, 4 producers → 1 consumer	-d /queue/cmp.b64.{rep} --persistent --receipt --window 64 -p 4 -c 1 $ACK $W
c	c. non-persistent queue, 1 producer → 1 consumer, as fast as possible	-d /queue/cmp.c.{rep} -p 1 -c 1 $ACK $W
c_rate	c'. non-persistent queue, 1 → 1 at a fixed 5,000 msg/s (latency)	-d /queue/cmp.cr.{rep} -p 1 -c 1 --rate 5000 $ACK $W
d	d. non-persistent topic, 1 producer → 10 subscribers, as fast as possible	-d /topic/cmp.d.{rep} -p 1 -c 10 $ACK $W
d_rate	d'. non-persistent topic, 1 → 10 at a fixed 1,000 msg/s (latency)	-d /topic/cmp.dr.{rep} -p 1 -c 10 --rate 1000 $ACK $W
e	e. backlog of 10,000 persistent messages drained by 1 consumer	(fill, then drain; see below)
a1_nc	a0. persistent queue, receipt window 1, 1 producer, no consumer (receipt = on disk for every broker)	-d /queue/cmp.a1nc.{rep} --persistent --receipt --window 1 -p 1 -c 0 $W
a16_nc	a0. persistent queue, receipt window 1, 16 producers, no consumer (receipt = on disk for every broker)	-d /queue/cmp.a16nc.{rep} --persistent --receipt --window 1 -p 16 -c 0 $W
EOF

# bench NAME BROKER REP URL EXTRA... -- ARGS: one bounded ferromq-bench run, JSON to
# raw/NAME.BROKER.REP.json, its wall time to .wall_ns and the disk's flushes during it to .flushes.
bench() {
  local name=$1 broker=$2 rep=$3 url=$4 extra=$5; shift 5
  local out="$work/raw/$name.$broker.$rep" t0 t1 f0
  f0=$(flushes)
  t0=$(date +%s%N)
  # The tool bounds every operation by --timeout; this outer limit only catches the unexpected.
  # shellcheck disable=SC2086 # $extra is a list of arguments
  if timeout "$RUN_LIMIT_S" "$BENCH" run --url "$url" $extra "$@" \
    --json --quiet </dev/null >"$out.json" 2>"$out.log"; then
    t1=$(date +%s%N)
    flush_delta "$f0" "$out"
    echo $((t1 - t0)) >"$out.wall_ns"
    return 0
  fi
  fail "$name.$broker.$rep" "$(why "$out.log")"
  rm -f "$out.json"
  return 1
}

# The backlog workload e folds its cycles into the repeats: one cycle (fill, drain, base) per
# repeat and broker, interleaved like every other workload. (Before the repeats it ran three
# cycles per broker in a row; with the default 3 repeats that is still three cycles each.) A
# broker whose cycle failed is skipped for the later ones: its queue may hold a partial backlog
# that would be counted in the next drain.
declare -A e_broken=()
while IFS=$'\t' read -r name desc args; do
  for rep in $(seq 1 "$REPEATS"); do
    case "$name" in
      a1) probe 1 "$rep" ;;
      a16) probe 16 "$rep" ;;
    esac
    while IFS=$'\t' read -r broker url prefetch extra; do
      step "$name on $broker, repeat $rep/$REPEATS: $desc"
      if [ "$name" = e ]; then
        [ -z "${e_broken[$broker]:-}" ] || { echo "bench-compare: skipped (an earlier cycle failed)" >&2; continue; }
        # ferromq-bench has no fill-then-drain mode, so per cycle: (1) fill: 10,000 persistent
        # messages with receipts (window 64) at a fixed 2,500 msg/s for 4 s, no consumer;
        # (2) drain: a run whose consumer subscribes to the backlog and whose producer then sends
        # one marker; the backlog arrives as `stale_ignored` (it belongs to the fill run) and the
        # marker's end-to-end latency is the drain time. The consumer ACKs every message
        # (client-individual) with a prefetch window of 1000, so at most 1000 messages can reach
        # it before the tool's clock starts (after the producer connected). (3) the same run on
        # the now empty queue: wall time of (2) - wall time of (3) is a cross-check of the drain
        # time (it removes process start and connects; ±10 ms, the tool's drain poll interval).
        if bench e_fill "$broker" "$rep" "$url" "$extra" -d /queue/cmp.e --persistent --receipt --window 64 \
          -p 1 -c 0 --rate 2500 --warmup 0 --duration 4 --size 1024 --timeout "$OP_TIMEOUT_S"; then
          sleep 1
          for phase in drain base; do
            bench "e_$phase" "$broker" "$rep" "$url" "$extra" -d /queue/cmp.e --persistent -p 1 -c 1 \
              --ack client-individual --subscribe-header "$prefetch" \
              --rate 1 --warmup 0 --duration 1 --size 1024 --timeout 60 || { e_broken[$broker]=1; break; }
          done
        else
          e_broken[$broker]=1
        fi
      else
        # shellcheck disable=SC2086 # $args is a list of arguments
        bench "$name" "$broker" "$rep" "$url" "$extra" ${args//\{rep\}/$rep} || true
      fi
      sleep 1
    done <"$work/brokers.tsv"
  done
done <"$work/workloads.tsv"

step "background flushes with the brokers idle (${DURATION} s)"
idle idle_after
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/meta.env"
cp "$FERROMQ_PEERS_DIR/activemq/conf/activemq.xml" "$work/activemq.xml" 2>/dev/null || true
cp "$FERROMQ_PEERS_DIR/rabbitmq/rabbitmq.conf" "$work/rabbitmq.conf" 2>/dev/null || true

step "report: $OUT/compare.md, $OUT/compare.svg"
python3 scripts/bench-compare-report.py "$work" "$OUT"
echo "bench-compare: raw reports in $work" >&2
if [ -s "$work/failures.tsv" ]; then
  echo "bench-compare: some brokers or runs failed (listed under Failures in $OUT/compare.md)" >&2
  exit 1
fi
