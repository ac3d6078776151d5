#!/usr/bin/env bash
# Starts/stops a private ActiveMQ Classic 5.17 (Debian package `activemq`) on loopback, for the
# JMS oracle runs (scripts/jms-test.sh) and benchmarks.
#
#   scripts/activemq-local.sh start <dir> <openwire-port> <stomp-port>
#   scripts/activemq-local.sh stop  <dir>
#
# <dir> holds conf/, data/ (KahaDB), tmp/, activemq.log and activemq.pid. `start` wipes data/
# (empty store every time), waits at most 30 s for "Connector openwire started" and fails with
# the log tail otherwise. `stop` sends SIGTERM, waits at most 20 s, then SIGKILL.
# Broker: useJmx=false, persistent KahaDB, heap $ACTIVEMQ_HEAP (256m), schedulerSupport off.
set -euo pipefail

die() { echo "activemq-local: $*" >&2; exit 1; }
usage() { echo "usage: $0 start <dir> <openwire-port> <stomp-port> | stop <dir>" >&2; exit 2; }

cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || usage
HEAP="${ACTIVEMQ_HEAP:-256m}"

alive_pid() { # prints the pid if the recorded broker still runs
  [ -f "$dir/activemq.pid" ] || return 1
  local p
  p=$(cat "$dir/activemq.pid")
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}

case "$cmd" in
  start)
    [ $# -eq 4 ] || usage
    ow="$3"; st="$4"
    [ -f /usr/share/activemq/bin/activemq.jar ] || die "/usr/share/activemq/bin/activemq.jar missing (apt-get install activemq)"
    command -v java >/dev/null 2>&1 || die "java not found (apt-get install default-jdk-headless)"
    if pid=$(alive_pid); then die "already running (pid $pid) in $dir; stop it first"; fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    rm -rf "$dir/data" "$dir/tmp" "$dir/conf"
    mkdir -p "$dir/conf" "$dir/data" "$dir/tmp"
    cat >"$dir/conf/activemq.xml" <<EOF
<beans xmlns="http://www.springframework.org/schema/beans" xmlns:amq="http://activemq.apache.org/schema/core"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" persistent="true"
          brokerName="ferromq-oracle" dataDirectory="\${activemq.data}">
    <persistenceAdapter><kahaDB directory="\${activemq.data}/kahadb"/></persistenceAdapter>
    <transportConnectors>
      <transportConnector name="openwire" uri="tcp://127.0.0.1:$ow"/>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:$st?transport.tcpNoDelay=true"/>
    </transportConnectors>
  </broker>
</beans>
EOF
    cat >"$dir/conf/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, out
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n
EOF
    (
      cd "$dir"
      nohup java -Xms"$HEAP" -Xmx"$HEAP" -Djava.awt.headless=true -Djava.io.tmpdir="$dir/tmp" \
        -Dactivemq.classpath="$dir/conf" -Dactivemq.home=/usr/share/activemq -Dactivemq.base="$dir" \
        -Dactivemq.conf="$dir/conf" -Dactivemq.data="$dir/data" \
        -jar /usr/share/activemq/bin/activemq.jar start "xbean:file:$dir/conf/activemq.xml" \
        >"$dir/activemq.log" 2>&1 </dev/null &
      echo $! >"$dir/activemq.pid"
    )
    pid=$(cat "$dir/activemq.pid")
    for _ in $(seq 1 300); do # 30 s
      if grep -q "Connector openwire started" "$dir/activemq.log" 2>/dev/null; then
        echo "activemq-local: ActiveMQ up (pid $pid) openwire tcp://127.0.0.1:$ow stomp 127.0.0.1:$st, dir $dir"
        exit 0
      fi
      kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/activemq.log" >&2; die "ActiveMQ exited during start"; }
      sleep 0.1
    done
    tail -20 "$dir/activemq.log" >&2
    kill "$pid" 2>/dev/null || true
    die "no 'Connector openwire started' within 30 s (stopped it)"
    ;;
  stop)
    if ! pid=$(alive_pid); then echo "activemq-local: not running ($dir)"; rm -f "$dir/activemq.pid"; exit 0; fi
    kill "$pid"
    for _ in $(seq 1 200); do # 20 s
      kill -0 "$pid" 2>/dev/null || { rm -f "$dir/activemq.pid"; echo "activemq-local: stopped (pid $pid)"; exit 0; }
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/activemq.pid"
    echo "activemq-local: SIGKILLed pid $pid after 20 s"
    ;;
  *) usage ;;
esac
