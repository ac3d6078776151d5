#!/usr/bin/env bash
# The production layout of a network of HA groups (ActiveMQ's "networks of master/slave
# groups"), on loopback, in one command: three replicated groups of three brokers each
# (broker.name = group1, group2, group3; ha.mode = "replicated", replicas = 3,
# sync = "quorum_disk"), their masters joined into a network by ZooKeeper discovery (each
# master bridges to every other master it discovers, duplex = false).
#
#   scripts/cluster.sh up                 start the nine (those not running), wait until every
#                                         group has a master and the bridges are connected
#   scripts/cluster.sh status [--json]    role, epoch and bridges of every broker
#   scripts/cluster.sh masters            the current master of each group (host:port)
#   scripts/cluster.sh urls               the client URL of each group
#   scripts/cluster.sh kill G M [SIGNAL]  signal (default KILL) member M of group G; `up`
#                                         restarts it
#   scripts/cluster.sh down [--purge]     SIGTERM all, bounded wait, then SIGKILL leftovers;
#                                         --purge also removes the data
#
# Ports (BASE = FERROMQ_CLUSTER_BASE, default 62000; group g and member m in 1..3):
#   STOMP BASE+10g+m (62011..62033), admin BASE+1000+10g+m (63011..63033),
#   replication BASE+2000+10g+m (64011..64033).
#
# Environment:
#   FERROMQ_CLUSTER_DIR   state: configs, data, logs, pids (default ~/.cache/ferromq/cluster)
#   FERROMQ_CLUSTER_BASE  port base (default 62000), to run a second cluster beside the first
#   FERROMQ_CLUSTER_ZK    ZooKeeper servers (default the ensemble of scripts/services.sh,
#                         127.0.0.1:2191,127.0.0.1:2192,127.0.0.1:2193, which `up` starts)
#   FERROMQ_CLUSTER_WAIT  seconds `up` waits for masters and bridges (default 60)
#   FERROMQ_BIN           the ferromq binary to run; default: the release build in
#                         CARGO_TARGET_DIR (default ~/.cache/ferromq/target), built if missing
#
# ZooKeeper paths are /ferromq-cluster/<id>/ha (elections) and /ferromq-cluster/<id>/net
# (discovery), <id> made at the first `up` and kept in the state directory: the groups' state
# in ZooKeeper (epoch, in-sync replicas by member id) belongs to the data directories, so
# `down --purge` drops the id with the data and the next `up` starts on fresh paths.
set -u
cd "$(dirname "$0")/.."

DIR=${FERROMQ_CLUSTER_DIR:-$HOME/.cache/ferromq/cluster}
BASE=${FERROMQ_CLUSTER_BASE:-62000}
ZK_DEFAULT=127.0.0.1:2191,127.0.0.1:2192,127.0.0.1:2193
ZK=${FERROMQ_CLUSTER_ZK:-$ZK_DEFAULT}
WAIT=${FERROMQ_CLUSTER_WAIT:-60}
NG=3 # groups
NM=3 # members per group
STOP_WAIT=20 # seconds `down` waits after SIGTERM before SIGKILL

die() { echo "cluster: $*" >&2; exit 1; }
say() { echo "cluster: $*"; }

case $BASE in '' | *[!0-9]*) die "FERROMQ_CLUSTER_BASE=$BASE is not a number" ;; esac
[ "$BASE" -ge 1024 ] && [ "$BASE" -le 63500 ] || die "FERROMQ_CLUSTER_BASE must be in 1024..63500"
case $WAIT in '' | *[!0-9]*) die "FERROMQ_CLUSTER_WAIT=$WAIT is not a number of seconds" ;; esac

stomp_port() { echo $((BASE + 10 * $1 + $2)); }
admin_port() { echo $((BASE + 1000 + 10 * $1 + $2)); }
repl_port() { echo $((BASE + 2000 + 10 * $1 + $2)); }
name() { echo "group$1-$2"; }
conf_of() { echo "$DIR/conf/$(name "$1" "$2").toml"; }
log_of() { echo "$DIR/logs/$(name "$1" "$2").log"; }
pidfile_of() { echo "$DIR/pids/$(name "$1" "$2").pid"; }

group_url() { # g: the failover URL clients of group g use
  local g=$1 m list=""
  for m in $(seq 1 $NM); do list+="${list:+,}tcp://127.0.0.1:$(stomp_port "$g" "$m")"; done
  echo "failover:($list)"
}

# The pid of member (g, m) if it runs: the pid file's process, and only if its command line
# names this member's config (a recycled pid is someone else's process, never ours to signal).
pid_of() {
  local f p
  f=$(pidfile_of "$1" "$2")
  [ -f "$f" ] || return 1
  p=$(cat "$f" 2>/dev/null)
  case $p in '' | *[!0-9]*) return 1 ;; esac
  [ -r "/proc/$p/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$(conf_of "$1" "$2")" || return 1
  echo "$p"
}

# The binary: FERROMQ_BIN; else, while members of the cluster run, the binary that started them
# (one group never mixes builds); else the release build, built when missing or older than the
# sources (a stale binary may not know the configuration this script writes). Remembered in
# the state directory for status/down and later `up`s.
resolve_bin() {
  if [ -n "${FERROMQ_BIN:-}" ]; then
    BIN=$FERROMQ_BIN
    [ -x "$BIN" ] || die "FERROMQ_BIN=$BIN is not an executable"
  elif [ "${1:-0}" -gt 0 ] && [ -f "$DIR/bin" ] && [ -x "$(cat "$DIR/bin")" ]; then
    BIN=$(cat "$DIR/bin")
  else
    local t=${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}
    BIN=$t/release/ferromq
    if [ ! -x "$BIN" ] || [ -n "$(find crates Cargo.toml Cargo.lock -newer "$BIN" -print -quit 2>/dev/null)" ]; then
      say "building $BIN (cargo build --release --locked -p ferromq --bin ferromq)"
      CARGO_TARGET_DIR=$t cargo build --release --locked -p ferromq --bin ferromq || die "build failed"
    fi
  fi
  BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
}

# The binary used to query admin endpoints (the one that started the cluster, if known).
status_bin() {
  if [ -n "${FERROMQ_BIN:-}" ] && [ -x "$FERROMQ_BIN" ]; then echo "$FERROMQ_BIN"; return; fi
  if [ -f "$DIR/bin" ] && [ -x "$(cat "$DIR/bin")" ]; then cat "$DIR/bin"; return; fi
  local t=${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}
  [ -x "$t/release/ferromq" ] && echo "$t/release/ferromq"
}

# One line of JSON from member (g, m)'s admin endpoint, or nothing. `ferromq status` bounds its
# own connect and read (5 s each); `timeout` bounds the whole.
fetch_status() {
  local addr="127.0.0.1:$(admin_port "$1" "$2")" out
  if [ -n "$SBIN" ]; then
    out=$(timeout 8 "$SBIN" status --admin "$addr" 2>/dev/null) || return 1
  elif command -v curl >/dev/null; then
    out=$(curl -s --max-time 5 "http://$addr/status") || return 1
  else
    return 1
  fi
  printf '%s\n' "$out" | tr -d '\n'
}

cluster_id() {
  if [ ! -s "$DIR/cluster-id" ]; then
    mkdir -p "$DIR"
    echo "c$(date +%Y%m%d%H%M%S)-$$" >"$DIR/cluster-id"
  fi
  cat "$DIR/cluster-id"
}

write_config() { # g m id
  local g=$1 m=$2 id=$3 disc
  disc="zookeeper://$ZK/ferromq-cluster/$id/net"
  cat >"$(conf_of "$g" "$m")" <<EOC
# Written by scripts/cluster.sh: group $g, member $m (rewritten at every \`up\`).
[broker]
name = "group$g"
data_dir = "$DIR/data/$(name "$g" "$m")"

[transports]
stomp = "127.0.0.1:$(stomp_port "$g" "$m")"
admin = "127.0.0.1:$(admin_port "$g" "$m")"
# While master, publish the STOMP address at <path>/group$g (ephemeral; a new master of the
# group replaces it at once).
discovery = "$disc"

[store]
backend = "journal"
sync = "always"

[ha]
mode = "replicated"
replicas = 3
sync = "quorum_disk"
zk_address = "$ZK"
zk_path = "/ferromq-cluster/$id/ha"
bind = "tcp://127.0.0.1:$(repl_port "$g" "$m")"
update_cluster_clients = true

# One bridge from this master to every other master discovery lists: queues forwarded on
# demand, topics to remote subscribers. Each direction is its own bridge (duplex = false).
[[network_connectors]]
name = "mesh"
uri = "$disc"
duplex = false
EOC
}

start_member() { # g m
  local g=$1 m=$2 log pid
  log=$(log_of "$g" "$m")
  echo "=== $(date '+%F %T') cluster.sh: starting $(name "$g" "$m") ($BIN) ===" >>"$log"
  # setsid: the brokers outlive this script and a Ctrl-C in its terminal. NO_COLOR and a
  # file as stderr keep ANSI codes out of the log.
  NO_COLOR=1 setsid "$BIN" --log info serve --config "$(conf_of "$g" "$m")" </dev/null >>"$log" 2>&1 &
  pid=$!
  echo "$pid" >"$(pidfile_of "$g" "$m")"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Counts bridges with "connected":true in a status document.
connected_bridges() { grep -o '"connected":true' <<<"$1" | wc -l; }

# 0 when every group has a master accepting STOMP whose bridges to the other groups are all
# connected; prints what is missing otherwise.
ready() {
  local g m s missing=""
  for g in $(seq 1 $NG); do
    local ok=""
    for m in $(seq 1 $NM); do
      s=$(fetch_status "$g" "$m") || continue
      grep -q '"role":"master"' <<<"$s" || continue
      port_busy "$(stomp_port "$g" "$m")" || continue
      if [ "$(connected_bridges "$s")" -ge $((NG - 1)) ]; then ok=1; else ok=bridges; fi
      break
    done
    case $ok in
      1) ;;
      bridges) missing+=" group$g:bridges" ;;
      *) missing+=" group$g:master" ;;
    esac
  done
  [ -z "$missing" ] && return 0
  echo "$missing"
  return 1
}

cmd_up() {
  mkdir -p "$DIR/conf" "$DIR/data" "$DIR/logs" "$DIR/pids"
  local g m running=0 total=$((NG * NM))
  for g in $(seq 1 $NG); do for m in $(seq 1 $NM); do
    pid_of "$g" "$m" >/dev/null && running=$((running + 1))
  done; done
  if [ "$running" -eq "$total" ]; then
    say "already up ($total brokers running, state in $DIR): nothing to do"
    SBIN=$(status_bin)
    cmd_status
    print_urls
    return 0
  fi
  resolve_bin "$running"
  echo "$BIN" >"$DIR/bin"
  SBIN=$BIN
  if [ -z "${FERROMQ_CLUSTER_ZK:-}" ] || [ "$ZK" = "$ZK_DEFAULT" ]; then
    local out
    out=$(bash scripts/services.sh start 2>&1) || {
      echo "$out" >&2
      die "scripts/services.sh start failed (the ZooKeeper ensemble is needed)"
    }
  fi
  local id
  id=$(cluster_id)
  # Our own ports must be free, except for members of ours that already run.
  for g in $(seq 1 $NG); do for m in $(seq 1 $NM); do
    pid_of "$g" "$m" >/dev/null && continue
    for p in $(stomp_port "$g" "$m") $(admin_port "$g" "$m") $(repl_port "$g" "$m"); do
      port_busy "$p" && die "port $p is in use by another process (another cluster? set FERROMQ_CLUSTER_BASE)"
    done
  done; done
  say "starting $((total - running)) of $total brokers (binary $BIN, state $DIR, ZooKeeper $ZK, cluster id $id)"
  for g in $(seq 1 $NG); do for m in $(seq 1 $NM); do
    write_config "$g" "$m" "$id"
    pid_of "$g" "$m" >/dev/null && continue
    start_member "$g" "$m"
  done; done
  # Bounded: at most WAIT seconds, polled twice a second. A member that exits (a bad
  # configuration, a port taken meanwhile) fails the start at once, with its log.
  local deadline=$((SECONDS + WAIT)) missing="starting" i
  for ((i = 0; i < WAIT * 2 + 1; i++)); do
    sleep 0.5
    check_alive
    missing=$(ready) && break
    [ $SECONDS -ge $deadline ] && break
  done
  # Ready may come before a slow member fails: look once more after a moment.
  sleep 1
  check_alive
  if [ -n "$missing" ]; then
    cmd_status
    die "not ready after ${WAIT} s, missing:$missing (logs in $DIR/logs)"
  fi
  say "up: every group has a master, every master's bridges are connected"
  cmd_status
  print_urls
}

# The last start's lines of member (g, m)'s log, less backtrace frames (RUST_BACKTRACE).
show_log_end() {
  local log from
  log=$(log_of "$1" "$2")
  echo "cluster: $(name "$1" "$2") is not running; the end of $log:" >&2
  from=$(grep -n '^=== ' "$log" 2>/dev/null | tail -n 1 | cut -d: -f1)
  sed -n "${from:-1},\$p" "$log" | grep -vE '^ +([0-9]+: | +at |at )' | tail -n 15 >&2
}

# Dies, showing its log's end, if a member of the cluster is not running.
check_alive() {
  local g m
  for g in $(seq 1 $NG); do for m in $(seq 1 $NM); do
    if ! pid_of "$g" "$m" >/dev/null; then
      show_log_end "$g" "$m"
      die "start failed (\`scripts/cluster.sh down\` stops the others)"
    fi
  done; done
}

print_urls() {
  echo
  echo "Client URLs:"
  local g
  for g in $(seq 1 $NG); do echo "  group$g  $(group_url "$g")"; done
}

cmd_down() {
  local purge=${1:-}
  [ -z "$purge" ] || [ "$purge" = "--purge" ] || die "down takes only --purge"
  local g m p pids=() names=()
  for g in $(seq 1 $NG); do for m in $(seq 1 $NM); do
    if p=$(pid_of "$g" "$m"); then pids+=("$p"); names+=("$(name "$g" "$m")"); fi
  done; done
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping ${#pids[@]} broker(s): ${names[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null
    local i alive
    for ((i = 0; i < STOP_WAIT * 10; i++)); do
      alive=()
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
      [ ${#alive[@]} -eq 0 ] && break
      sleep 0.1
    done
    alive=()
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    if [ ${#alive[@]} -gt 0 ]; then
      say "still running after ${STOP_WAIT} s, SIGKILL: ${alive[*]}"
      kill -KILL "${alive[@]}" 2>/dev/null
    fi
  else
    say "no broker running (state in $DIR)"
  fi
  rm -f "$DIR"/pids/*.pid 2>/dev/null
  if [ "$purge" = "--purge" ]; then
    # The id goes with the data: ZooKeeper's record of the groups (epochs, in-sync member ids)
    # describes these data directories, and new members would not be electable under it.
    rm -rf "$DIR/data" "$DIR/cluster-id"
    say "data removed ($DIR/data); configs and logs kept"
  fi
}

cmd_kill() { # g m [signal]
  local g=${1:-} m=${2:-} sig=${3:-KILL} p
  case "$g$m" in [1-9][1-9]) ;; *) die "usage: cluster.sh kill GROUP MEMBER [SIGNAL] (GROUP, MEMBER in 1..3)" ;; esac
  [ "$g" -le $NG ] && [ "$m" -le $NM ] || die "GROUP and MEMBER are 1..3"
  p=$(pid_of "$g" "$m") || die "$(name "$g" "$m") is not running"
  kill "-$sig" "$p" || die "kill -$sig $p failed"
  say "sent SIG$sig to $(name "$g" "$m") (pid $p); \`scripts/cluster.sh up\` starts it again"
}

cmd_masters() {
  SBIN=$(status_bin)
  local g m s found
  for g in $(seq 1 $NG); do
    found=-
    for m in $(seq 1 $NM); do
      s=$(fetch_status "$g" "$m") || continue
      if grep -q '"role":"master"' <<<"$s"; then found="127.0.0.1:$(stomp_port "$g" "$m")"; break; fi
    done
    echo "group$g $found"
  done
}

cmd_status() {
  [ -n "${SBIN:-}" ] || SBIN=$(status_bin)
  if [ "${1:-}" = "--json" ]; then
    # One JSON document per broker per line, as its admin endpoint serves it.
    local g m s
    for g in $(seq 1 $NG); do for m in $(seq 1 $NM); do
      s=$(fetch_status "$g" "$m") && echo "$s"
    done; done
    return 0
  fi
  [ -n "$SBIN" ] || die "no ferromq binary to ask the brokers with (set FERROMQ_BIN, or run up)"
  # `ferromq status` over every admin endpoint draws the topology: group, role, epoch, STOMP
  # address of each broker, and each master's bridges with their traffic.
  local g m addrs=""
  for g in $(seq 1 $NG); do for m in $(seq 1 $NM); do
    addrs="$addrs${addrs:+,}127.0.0.1:$(admin_port "$g" "$m")"
  done; done
  "$SBIN" status --table --admin "$addrs"
}

SBIN=""
case ${1:-} in
  up) cmd_up ;;
  down) shift; cmd_down "$@" ;;
  status) shift; cmd_status "$@" ;;
  masters) cmd_masters ;;
  urls) print_urls ;;
  kill) shift; cmd_kill "$@" ;;
  *) sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
