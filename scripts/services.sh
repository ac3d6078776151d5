#!/usr/bin/env bash
# Installs and starts, on loopback only, the real components that ferromq's tests need, and
# stops them again. Idempotent: running `start` twice is harmless.
#
#   scripts/services.sh start         # install (Debian packages) and start what the tests need
#   scripts/services.sh stop          # stop what `start` started
#   scripts/services.sh status
#   scripts/services.sh start peers   # benchmark peers: ActiveMQ 5.17 and RabbitMQ (issue 8)
#   scripts/services.sh stop peers
#   scripts/services.sh status peers
#
# Today the test suite needs no external server: the STOMP broker core and its stores run
# embedded. ZooKeeper, PostgreSQL and MariaDB (replicated and shared-database HA, SQL store) are
# added here by the issues that need them. The benchmark peers are a separate target, because
# installing them takes ~20 s and starting RabbitMQ ~7 s: the plain `start` (what
# scripts/test.sh calls) never installs or starts them.
#
# Peers (`peers` target; Debian 12 packages, needs root or passwordless sudo):
#   ActiveMQ Classic 5.17 (`activemq`): KahaDB, journalDiskSyncStrategy=always,
#     STOMP (tcpNoDelay) on 127.0.0.1:$FERROMQ_AMQ_STOMP_PORT (61623), OpenWire on 127.0.0.1:61626.
#   RabbitMQ 3.10 (`rabbitmq-server`) with rabbitmq_stomp: STOMP on
#     127.0.0.1:$FERROMQ_RABBIT_STOMP_PORT (61633), AMQP on 127.0.0.1:5682, Erlang
#     distribution on 127.0.0.1:25682, epmd on 127.0.0.1 (if this script starts it).
#     STOMP /queue/ destinations are durable queues; login guest/guest, vhost "/".
# State (configs, logs, KahaDB, Mnesia) lives in $FERROMQ_PEERS_DIR (/var/tmp/ferromq-peers),
# on the same disk as ferromq's benchmark data. Every `start` of a stopped peer begins with an
# empty store (these are benchmark brokers; nothing in them is kept).
set -euo pipefail
cmd="${1:-start}"
target="${2:-tests}"
usage() { echo "usage: $0 start|stop|status [peers]" >&2; exit 2; }
case "$cmd" in
  start|stop|status) ;;
  *) usage ;;
esac
case "$target" in
  tests|peers) ;;
  *) usage ;;
esac

die() { echo "services: error: $*" >&2; exit 1; }
log() { echo "services: $*" >&2; }

# ---------------------------------------------------------------------------------------------
# Benchmark peers
# ---------------------------------------------------------------------------------------------
PEERS_DIR="${FERROMQ_PEERS_DIR:-/var/tmp/ferromq-peers}"
AMQ_STOMP_PORT="${FERROMQ_AMQ_STOMP_PORT:-61623}"
AMQ_OPENWIRE_PORT="${FERROMQ_AMQ_OPENWIRE_PORT:-61626}"
AMQ_HEAP="${FERROMQ_AMQ_HEAP:-512m}" # what Debian's activemq-options sets
RABBIT_STOMP_PORT="${FERROMQ_RABBIT_STOMP_PORT:-61633}"
RABBIT_AMQP_PORT="${FERROMQ_RABBIT_AMQP_PORT:-5682}"
RABBIT_DIST_PORT="${FERROMQ_RABBIT_DIST_PORT:-25682}"
RABBIT_NODE="ferromqbench@localhost"
START_TIMEOUT_S="${FERROMQ_PEERS_START_TIMEOUT:-90}"
APT_TIMEOUT_S="${FERROMQ_PEERS_APT_TIMEOUT:-600}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@" || die "needs root (or passwordless sudo) for: $*"; fi
}

# stomp_ready PORT [LOGIN PASSCODE VHOST]: a STOMP 1.2 CONNECT answered by CONNECTED.
stomp_ready() {
  python3 - "$@" <<'PY' 2>/dev/null
import socket, sys
port = int(sys.argv[1])
args = sys.argv[2:] + [None, None, None]
login, passcode, host = args[0], args[1], args[2] or "localhost"
frame = "CONNECT\naccept-version:1.2\nhost:%s\n" % host
if login:
    frame += "login:%s\npasscode:%s\n" % (login, passcode)
frame += "\n\x00"
s = socket.create_connection(("127.0.0.1", port), timeout=2)
s.settimeout(2)
s.sendall(frame.encode())
data = b""
while b"\x00" not in data:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
s.sendall(b"DISCONNECT\n\n\x00")
s.close()
sys.exit(0 if data.lstrip(b"\r\n").startswith(b"CONNECTED") else 1)
PY
}

# wait_stomp NAME PID PORT LOG [LOGIN PASSCODE VHOST]
wait_stomp() {
  local name=$1 pid=$2 port=$3 logf=$4; shift 4
  local deadline=$((SECONDS + START_TIMEOUT_S))
  while [ $SECONDS -lt $deadline ]; do
    if stomp_ready "$port" "$@"; then
      log "$name accepts STOMP on 127.0.0.1:$port"
      return 0
    fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logf" >&2 || true
      die "$name (pid $pid) exited before accepting STOMP on 127.0.0.1:$port; log: $logf"
    fi
    sleep 0.3
  done
  tail -n 30 "$logf" >&2 || true
  die "$name did not accept STOMP on 127.0.0.1:$port within ${START_TIMEOUT_S}s; log: $logf"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

peers_install() {
  command -v dpkg-query >/dev/null 2>&1 || die "the peers need Debian packages (dpkg/apt-get not found)"
  if installed activemq && installed rabbitmq-server; then return 0; fi
  log "installing activemq and rabbitmq-server (apt-get, up to ${APT_TIMEOUT_S}s)"
  as_root timeout "$APT_TIMEOUT_S" apt-get update -qq || die "apt-get update failed or timed out"
  as_root env DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT_S" \
    apt-get install -y -qq --no-install-recommends activemq rabbitmq-server \
    || die "apt-get install activemq rabbitmq-server failed or timed out"
  installed activemq || die "package activemq did not install"
  installed rabbitmq-server || die "package rabbitmq-server did not install"
}

# --- ActiveMQ --------------------------------------------------------------------------------
amq_dir="$PEERS_DIR/activemq"
amq_pidfile="$amq_dir/activemq.pid"

amq_pid() {
  local pid
  pid=$(cat "$amq_pidfile" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

amq_start() {
  [ -f /usr/share/activemq/bin/activemq.jar ] || die "/usr/share/activemq/bin/activemq.jar missing (package activemq)"
  command -v java >/dev/null 2>&1 || die "java not found (ActiveMQ needs a JRE)"
  local pid
  if pid=$(amq_pid); then
    wait_stomp ActiveMQ "$pid" "$AMQ_STOMP_PORT" "$amq_dir/activemq.log"
    return 0
  fi
  port_in_use "$AMQ_STOMP_PORT" && die "127.0.0.1:$AMQ_STOMP_PORT is taken by another process (set FERROMQ_AMQ_STOMP_PORT)"
  rm -rf "$amq_dir"
  mkdir -p "$amq_dir/conf" "$amq_dir/data" "$amq_dir/tmp"
  cat >"$amq_dir/conf/activemq.xml" <<EOF
<beans xmlns="http://www.springframework.org/schema/beans" xmlns:amq="http://activemq.apache.org/schema/core"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" persistent="true"
          brokerName="ferromq-bench-peer" dataDirectory="\${activemq.data}">
    <persistenceAdapter>
      <!-- KahaDB defaults, sync strategy spelled out: fsync every journal write batch -->
      <kahaDB directory="\${activemq.data}/kahadb" journalDiskSyncStrategy="always"/>
    </persistenceAdapter>
    <transportConnectors>
      <transportConnector name="openwire" uri="tcp://127.0.0.1:$AMQ_OPENWIRE_PORT"/>
      <!-- TCP_NODELAY as ferromq and RabbitMQ (default there): without it Nagle's algorithm
           adds ~5 ms to ActiveMQ's delivery latency at moderate rates -->
      <transportConnector name="stomp" uri="stomp://127.0.0.1:$AMQ_STOMP_PORT?transport.tcpNoDelay=true"/>
    </transportConnectors>
  </broker>
</beans>
EOF
  cat >"$amq_dir/conf/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, logfile
log4j.appender.logfile=org.apache.log4j.ConsoleAppender
log4j.appender.logfile.layout=org.apache.log4j.PatternLayout
log4j.appender.logfile.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n
EOF
  log "starting ActiveMQ (heap $AMQ_HEAP, state in $amq_dir)"
  (
    cd "$amq_dir"
    exec setsid java -Xms"$AMQ_HEAP" -Xmx"$AMQ_HEAP" -Djava.awt.headless=true \
      -Djava.io.tmpdir="$amq_dir/tmp" -Dactivemq.classpath="$amq_dir/conf" \
      -Dactivemq.home=/usr/share/activemq -Dactivemq.base="$amq_dir" \
      -Dactivemq.conf="$amq_dir/conf" -Dactivemq.data="$amq_dir/data" \
      -Dlog4j.configuration="file:$amq_dir/conf/log4j.properties" \
      -jar /usr/share/activemq/bin/activemq.jar start "xbean:file:$amq_dir/conf/activemq.xml"
  ) </dev/null >"$amq_dir/activemq.log" 2>&1 &
  echo $! >"$amq_pidfile"
  wait_stomp ActiveMQ "$!" "$AMQ_STOMP_PORT" "$amq_dir/activemq.log"
}

amq_stop() {
  local pid i
  if ! pid=$(amq_pid); then
    log "ActiveMQ: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "ActiveMQ (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$amq_pidfile"
  log "ActiveMQ stopped"
}

# --- RabbitMQ --------------------------------------------------------------------------------
# Runs as the `rabbitmq` user (its Erlang cookie in /var/lib/rabbitmq), with every path pointing
# into $PEERS_DIR/rabbitmq so that /etc/rabbitmq and /var/lib/rabbitmq/mnesia stay untouched.
rmq_dir="$PEERS_DIR/rabbitmq"
rmq_as_user() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u rabbitmq -- "$@"
  else
    sudo -n -u rabbitmq "$@" || die "needs sudo to run as user rabbitmq: $*"
  fi
}

rmq_pid() {
  local pid
  pid=$(cat "$rmq_dir/rabbitmq.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

rmq_start() {
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || die "/usr/lib/rabbitmq/bin/rabbitmq-server missing (package rabbitmq-server)"
  id rabbitmq >/dev/null 2>&1 || die "user rabbitmq missing (package rabbitmq-server)"
  local pid
  if pid=$(rmq_pid); then
    wait_stomp RabbitMQ "$pid" "$RABBIT_STOMP_PORT" "$rmq_dir/server.log" guest guest /
    return 0
  fi
  port_in_use "$RABBIT_STOMP_PORT" && die "127.0.0.1:$RABBIT_STOMP_PORT is taken by another process (set FERROMQ_RABBIT_STOMP_PORT)"
  if ! port_in_use 4369; then touch "$PEERS_DIR/.epmd-ours"; fi
  as_root rm -rf "$rmq_dir"
  mkdir -p "$rmq_dir/mnesia" "$rmq_dir/log"
  cat >"$rmq_dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$RABBIT_AMQP_PORT
stomp.listeners.tcp.1 = 127.0.0.1:$RABBIT_STOMP_PORT
loopback_users.guest = true
stomp.default_user = guest
stomp.default_pass = guest
EOF
  # Erlang distribution on loopback only.
  cat >"$rmq_dir/advanced.config" <<'EOF'
[{kernel, [{inet_dist_use_interface, {127,0,0,1}}]}].
EOF
  echo '[rabbitmq_stomp].' >"$rmq_dir/enabled_plugins"
  : >"$rmq_dir/rabbitmq-env.conf"
  as_root chown -R rabbitmq:rabbitmq "$rmq_dir"
  chmod 755 "$PEERS_DIR"
  log "starting RabbitMQ node $RABBIT_NODE (state in $rmq_dir)"
  # The Debian wrapper /usr/sbin/rabbitmq-server would su to rabbitmq and drop our environment;
  # call the real script as that user instead. Foreground in a new session, output to a log.
  (
    cd "$rmq_dir"
    exec setsid runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq \
      RABBITMQ_NODENAME="$RABBIT_NODE" \
      RABBITMQ_CONFIG_FILE="$rmq_dir/rabbitmq" \
      RABBITMQ_ADVANCED_CONFIG_FILE="$rmq_dir/advanced.config" \
      RABBITMQ_ENABLED_PLUGINS_FILE="$rmq_dir/enabled_plugins" \
      RABBITMQ_MNESIA_BASE="$rmq_dir/mnesia" \
      RABBITMQ_LOG_BASE="$rmq_dir/log" \
      RABBITMQ_PID_FILE="$rmq_dir/rabbitmq.pid" \
      RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT" \
      RABBITMQ_CONF_ENV_FILE="$rmq_dir/rabbitmq-env.conf" \
      ERL_EPMD_ADDRESS=127.0.0.1 \
      /usr/lib/rabbitmq/bin/rabbitmq-server
  ) </dev/null >"$rmq_dir/server.log" 2>&1 &
  local launcher=$!
  echo "$launcher" >"$PEERS_DIR/rabbitmq.launcher.pid"
  wait_stomp RabbitMQ "$launcher" "$RABBIT_STOMP_PORT" "$rmq_dir/server.log" guest guest /
}

rmq_stop() {
  local launcher pid i
  launcher=$(cat "$PEERS_DIR/rabbitmq.launcher.pid" 2>/dev/null || true)
  pid=$(rmq_pid || true)
  if [ -z "$pid" ] && { [ -z "$launcher" ] || ! kill -0 "$launcher" 2>/dev/null; }; then
    log "RabbitMQ: not running"
  else
    if [ -x /usr/lib/rabbitmq/bin/rabbitmqctl ]; then
      rmq_as_user env HOME=/var/lib/rabbitmq ERL_EPMD_ADDRESS=127.0.0.1 \
        timeout 30 /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBIT_NODE" stop >/dev/null 2>&1 \
        || log "rabbitmqctl stop failed; signalling the node"
    fi
    for i in $(seq 1 100); do
      { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; } || { [ -n "$launcher" ] && kill -0 "$launcher" 2>/dev/null; } || break
      [ "$i" = 50 ] && { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; [ -n "$launcher" ] && kill -TERM "$launcher" 2>/dev/null; } || true
      sleep 0.2
    done
    for p in $pid $launcher; do
      if kill -0 "$p" 2>/dev/null; then
        log "RabbitMQ process $p still alive after 20 s; sending SIGKILL"
        kill -KILL "$p" 2>/dev/null || true
      fi
    done
    log "RabbitMQ stopped"
  fi
  rm -f "$PEERS_DIR/rabbitmq.launcher.pid"
  # epmd outlives the node; stop it only if this script's node started it.
  if [ -f "$PEERS_DIR/.epmd-ours" ]; then
    command -v epmd >/dev/null 2>&1 && epmd -kill >/dev/null 2>&1 || true
    rm -f "$PEERS_DIR/.epmd-ours"
  fi
}

peers() {
  case "$cmd" in
    start)
      peers_install
      as_root mkdir -p "$PEERS_DIR"
      [ -w "$PEERS_DIR" ] || die "$PEERS_DIR is not writable"
      # Each peer in a subshell: one failing to start does not keep the other from starting.
      local failed=""
      ( amq_start ) || failed="$failed ActiveMQ"
      ( rmq_start ) || failed="$failed RabbitMQ"
      [ -z "$failed" ] || die "could not start:$failed (see the messages above)"
      log "peers up: ActiveMQ $(dpkg-query -W -f='${Version}' activemq) stomp://127.0.0.1:$AMQ_STOMP_PORT," \
        "RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server) stomp://127.0.0.1:$RABBIT_STOMP_PORT (guest/guest, vhost /)"
      ;;
    stop)
      amq_stop
      rmq_stop
      ;;
    status)
      local rc=0
      if stomp_ready "$AMQ_STOMP_PORT"; then echo "ActiveMQ: up (STOMP 127.0.0.1:$AMQ_STOMP_PORT)"; else echo "ActiveMQ: down"; rc=3; fi
      if stomp_ready "$RABBIT_STOMP_PORT" guest guest /; then echo "RabbitMQ: up (STOMP 127.0.0.1:$RABBIT_STOMP_PORT)"; else echo "RabbitMQ: down"; rc=3; fi
      return $rc
      ;;
  esac
}

if [ "$target" = peers ]; then
  peers
  exit $?
fi

# ---------------------------------------------------------------------------------------------
# What the test suite needs
# ---------------------------------------------------------------------------------------------
# Python's venv module is needed for the interop tests; Debian splits it out on some images.
if [ "$cmd" = start ] && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
  fi
fi
echo "services: nothing to $cmd for the current test suite"
