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
# Test services (`start` with no target; what scripts/test.sh calls), each a throwaway instance
# under $FERROMQ_SERVICES_DIR (/var/tmp/ferromq-services), listening on 127.0.0.1 only:
#   PostgreSQL 15 (`postgresql`)      127.0.0.1:$FERROMQ_PG_PORT (5433), user postgres (trust),
#                                     database ferromq_test
#   MariaDB 10.11 (`mariadb-server`)  127.0.0.1:$FERROMQ_MYSQL_PORT (3307), user root (no password),
#                                     database ferromq_test
#   ZooKeeper 3.8 (`zookeeper`)       standalone 127.0.0.1:$FERROMQ_ZK_PORT (2181), and a three-node
#                                     ensemble on 127.0.0.1:2191,2192,2193 (quorum 2898-2900/3898-3900)
# plus build and test packages: libclang-dev and librocksdb-dev (the `lsm` store backend links
# Debian's RocksDB instead of compiling its own for 15 minutes), iproute2 and iptables (network
# namespaces for partition tests), python3-venv (interop tests).
# `env` prints the FERROMQ_TEST_* variables that point the tests at them.
# The benchmark peers are a separate target, because installing them takes ~20 s and starting
# RabbitMQ ~7 s: the plain `start` never installs or starts them.
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
usage() { echo "usage: $0 start|stop|status|env [peers]" >&2; exit 2; }
case "$cmd" in
  start|stop|status|env) ;;
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
SVC_DIR="${FERROMQ_SERVICES_DIR:-/var/tmp/ferromq-services}"
PG_PORT="${FERROMQ_PG_PORT:-5433}"
MYSQL_PORT="${FERROMQ_MYSQL_PORT:-3307}"
ZK_PORT="${FERROMQ_ZK_PORT:-2181}"
ZK_ENSEMBLE_PORTS="2191 2192 2193"
PG_BIN=""

print_env() {
  echo "export FERROMQ_TEST_PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/ferromq_test"
  echo "export FERROMQ_TEST_MYSQL_URL=mysql://root@127.0.0.1:$MYSQL_PORT/ferromq_test"
  echo "export FERROMQ_TEST_ZK=127.0.0.1:$ZK_PORT"
  echo "export FERROMQ_TEST_ZK_ENSEMBLE=127.0.0.1:2191,127.0.0.1:2192,127.0.0.1:2193"
  echo "export FERROMQ_SERVICES_DIR=$SVC_DIR"
}

# Installs the Debian packages that are missing (one apt-get update, only when needed).
tests_install() {
  # libactivemq-java + a JDK: the OpenWire JMS suite (scripts/jms-test.sh).
  local want=(python3-venv libclang-dev librocksdb-dev postgresql mariadb-server zookeeper iproute2 iptables fuse3 libactivemq-java)
  local missing=()
  for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done
  command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get"
  log "installing ${missing[*]}"
  as_root timeout "$APT_TIMEOUT_S" apt-get update -qq
  # policy-rc.d on these images keeps postinst scripts from starting the packaged services;
  # this script starts its own throwaway instances.
  as_root env DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT_S" \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

wait_until() { # wait_until SECONDS WHAT COMMAND...
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not become ready within ${limit}s"
    sleep 0.1
  done
}

pg_bin() {
  if [ -z "$PG_BIN" ]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  fi
  [ -n "$PG_BIN" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
  echo "$PG_BIN"
}

pg_ready() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

pg_start() {
  if pg_ready; then log "PostgreSQL already up on 127.0.0.1:$PG_PORT"; return 0; fi
  local dir="$SVC_DIR/pg" bin
  bin=$(pg_bin)
  mkdir -p "$dir"
  chown postgres:postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    rm -rf "$dir/data"
    su postgres -s /bin/sh -c "$bin/initdb -D $dir/data -A trust -U postgres --no-sync" >"$dir/initdb.log" 2>&1 \
      || die "initdb failed: $(tail -5 "$dir/initdb.log")"
  fi
  # fsync stays on: the shared-database tests rely on a committed row surviving a restart.
  su postgres -s /bin/sh -c "$bin/pg_ctl -D $dir/data -l $dir/log -w -t 60 \
    -o '-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300' start" >/dev/null \
    || die "PostgreSQL did not start: $(tail -5 "$dir/log")"
  wait_until 30 PostgreSQL pg_ready
  "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='ferromq_test'" 2>/dev/null | grep -q 1 \
    || "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE ferromq_test" >/dev/null \
    || die "cannot create the PostgreSQL test database"
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') up on 127.0.0.1:$PG_PORT"
}

pg_stop() {
  local dir="$SVC_DIR/pg"
  [ -f "$dir/data/postmaster.pid" ] || return 0
  su postgres -s /bin/sh -c "$(pg_bin)/pg_ctl -D $dir/data -m fast -w stop" >/dev/null 2>&1 || true
}

mysql_cli() { mariadb --protocol=tcp -h127.0.0.1 -P"$MYSQL_PORT" -uroot "$@"; }
mysql_ready() { mariadb-admin --protocol=tcp -h127.0.0.1 -P"$MYSQL_PORT" -uroot ping; }

mysql_start() {
  if mysql_ready >/dev/null 2>&1; then log "MariaDB already up on 127.0.0.1:$MYSQL_PORT"; return 0; fi
  local dir="$SVC_DIR/mariadb"
  mkdir -p "$dir"
  chown mysql:mysql "$dir"
  if [ ! -d "$dir/data/mysql" ]; then
    rm -rf "$dir/data"
    mariadb-install-db --user=mysql --datadir="$dir/data" --auth-root-authentication-method=normal \
      --skip-test-db >"$dir/install.log" 2>&1 || die "mariadb-install-db failed: $(tail -5 "$dir/install.log")"
  fi
  start-stop-daemon --start --background --make-pidfile --pidfile "$dir/mariadbd.pid" --exec /usr/sbin/mariadbd -- \
    --no-defaults --user=mysql --datadir="$dir/data" --socket="$dir/mysqld.sock" --pid-file="$dir/data/mariadbd.pid" \
    --bind-address=127.0.0.1 --port="$MYSQL_PORT" --log-error="$dir/error.log" --max-connections=300 \
    --innodb-flush-log-at-trx-commit=1 --skip-name-resolve >/dev/null
  wait_until 60 MariaDB mysql_ready
  mysql_cli -e "CREATE DATABASE IF NOT EXISTS ferromq_test" || die "cannot create the MariaDB test database"
  log "MariaDB $(mysql_cli -N -e 'select version()') up on 127.0.0.1:$MYSQL_PORT"
}

mysql_stop() {
  local dir="$SVC_DIR/mariadb"
  [ -f "$dir/mariadbd.pid" ] || return 0
  start-stop-daemon --stop --pidfile "$dir/mariadbd.pid" --retry TERM/30/KILL/5 >/dev/null 2>&1 || true
  rm -f "$dir/mariadbd.pid"
}

zk_mode() { # zk_mode PORT: prints the server's Mode (standalone, leader, follower) when serving
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.settimeout(1)
s.sendall(b"srvr")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
for line in data.decode(errors="replace").splitlines():
    if line.startswith("Mode:"):
        print(line.split(":", 1)[1].strip())
        sys.exit(0)
sys.exit(1)
PY
}
zk_serving() { [ -n "$(zk_mode "$1")" ]; }

# zk_launch NAME CLIENT_PORT [SERVER_LINES MYID]: one ZooKeeper server under $SVC_DIR/zk/NAME.
zk_launch() {
  local name=$1 port=$2 servers=${3:-} myid=${4:-}
  local dir="$SVC_DIR/zk/$name"
  mkdir -p "$dir/data"
  [ -z "$myid" ] || echo "$myid" >"$dir/data/myid"
  {
    echo "tickTime=500"
    echo "initLimit=20"
    echo "syncLimit=10"
    echo "dataDir=$dir/data"
    echo "clientPort=$port"
    echo "clientPortAddress=127.0.0.1"
    echo "maxSessionTimeout=60000"
    echo "4lw.commands.whitelist=ruok,stat,srvr,mntr,conf"
    echo "admin.enableServer=false"
    [ -z "$servers" ] || printf '%s\n' $servers
  } >"$dir/zoo.cfg"
  {
    echo "log4j.rootLogger=INFO, FILE"
    echo "log4j.appender.FILE=org.apache.log4j.FileAppender"
    echo "log4j.appender.FILE.File=$dir/zk.log"
    echo "log4j.appender.FILE.layout=org.apache.log4j.PatternLayout"
    echo "log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n"
  } >"$dir/log4j.properties"
  rm -f "$dir/zk.pid"
  start-stop-daemon --start --background --make-pidfile --pidfile "$dir/zk.pid" --exec "$(command -v java)" -- \
    -Xmx128m -XX:+UseSerialGC -Dlog4j.configuration="file:$dir/log4j.properties" \
    -cp "$dir:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" >/dev/null
}

zk_start() {
  command -v java >/dev/null 2>&1 || die "ZooKeeper needs java"
  if zk_serving "$ZK_PORT"; then
    log "ZooKeeper standalone already up on 127.0.0.1:$ZK_PORT"
  else
    zk_launch standalone "$ZK_PORT"
  fi
  local i=1 port servers="server.1=127.0.0.1:2898:3898 server.2=127.0.0.1:2899:3899 server.3=127.0.0.1:2900:3900"
  for port in $ZK_ENSEMBLE_PORTS; do
    # A node that is not serving is (re)started; the other two keep their quorum meanwhile.
    if ! zk_serving "$port" && ! pgrep -f "$SVC_DIR/zk/ens$i/zoo.cfg" >/dev/null; then
      zk_launch "ens$i" "$port" "$servers" "$i"
    fi
    i=$((i + 1))
  done
  wait_until 60 "ZooKeeper standalone" zk_serving "$ZK_PORT"
  for port in $ZK_ENSEMBLE_PORTS; do wait_until 60 "ZooKeeper ensemble node :$port" zk_serving "$port"; done
  log "ZooKeeper up: standalone 127.0.0.1:$ZK_PORT, ensemble 127.0.0.1:{2191,2192,2193}"
}

zk_stop() {
  local d
  for d in "$SVC_DIR"/zk/*/; do
    [ -f "$d/zk.pid" ] || continue
    start-stop-daemon --stop --pidfile "$d/zk.pid" --retry TERM/10/KILL/5 >/dev/null 2>&1 || true
    rm -f "$d/zk.pid"
  done
}

case "$cmd" in
  env)
    print_env
    ;;
  start)
    tests_install
    mkdir -p "$SVC_DIR"
    chmod 755 "$SVC_DIR"
    # Each in a subshell: one failing to start does not keep the others from starting.
    failed=""
    ( pg_start ) || failed="$failed PostgreSQL"
    ( mysql_start ) || failed="$failed MariaDB"
    ( zk_start ) || failed="$failed ZooKeeper"
    [ -z "$failed" ] || die "could not start:$failed (see the messages above)"
    ;;
  stop)
    zk_stop
    mysql_stop
    pg_stop
    log "test services stopped"
    ;;
  status)
    rc=0
    if pg_ready 2>/dev/null; then echo "PostgreSQL: up (127.0.0.1:$PG_PORT)"; else echo "PostgreSQL: down"; rc=3; fi
    if mysql_ready >/dev/null 2>&1; then echo "MariaDB: up (127.0.0.1:$MYSQL_PORT)"; else echo "MariaDB: down"; rc=3; fi
    for port in $ZK_PORT $ZK_ENSEMBLE_PORTS; do
      m=$(zk_mode "$port" || true)
      if [ -n "$m" ]; then echo "ZooKeeper :$port: $m"; else echo "ZooKeeper :$port: down"; rc=3; fi
    done
    exit $rc
    ;;
esac
