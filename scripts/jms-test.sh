#!/usr/bin/env bash
# Compiles and runs the OpenWire JMS suite (tests/jms) with the real ActiveMQ 5.x JMS client.
#
#   scripts/jms-test.sh --url tcp://127.0.0.1:61616 [--stomp 127.0.0.1:61613] [--only a,b] [--list]
#   scripts/jms-test.sh load --url tcp://127.0.0.1:61616 --queue NAME ...   (JmsLoad, see its --help)
#
# Classes are compiled into ${FERROMQ_JMS_BUILD:-$HOME/.cache/ferromq/jms} and only recompiled
# when a source file changed. Needs a JDK (Debian: default-jdk-headless) and the ActiveMQ client
# jars (Debian: libactivemq-java); scripts/services.sh start installs both. java runs under
# nice -n ${FERROMQ_JMS_NICE:-15} (set 0 for benchmarks on an idle machine).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$here/tests/jms/src"
build="${FERROMQ_JMS_BUILD:-$HOME/.cache/ferromq/jms}"
jars=/usr/share/java

die() { echo "jms-test: $*" >&2; exit 2; }

command -v java >/dev/null 2>&1 || die "java not found (apt-get install default-jdk-headless)"
command -v javac >/dev/null 2>&1 || die "javac not found (apt-get install default-jdk-headless)"
cp=""
for j in activemq-client geronimo-jms_1.1_spec hawtbuf slf4j-api geronimo-j2ee-management-1.1-spec; do
  [ -f "$jars/$j.jar" ] || die "$jars/$j.jar missing (apt-get install libactivemq-java)"
  cp="$cp${cp:+:}$jars/$j.jar"
done
# silence slf4j's "no binding" warning when a NOP binding is installed (package libslf4j-java)
[ -f "$jars/slf4j-nop.jar" ] && cp="$cp:$jars/slf4j-nop.jar"

mkdir -p "$build"
stamp="$build/.sources.sha256"
sum=$(cd "$src" && cat ./*.java | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ] || [ ! -f "$build/classes/JmsTests.class" ]; then
  rm -rf "$build/classes"
  mkdir -p "$build/classes"
  echo "jms-test: compiling tests/jms/src into $build/classes" >&2
  nice -n 15 javac -nowarn -encoding UTF-8 -cp "$cp" -d "$build/classes" "$src"/*.java
  echo "$sum" >"$stamp"
fi

main=JmsTests
if [ "${1:-}" = "load" ]; then
  main=JmsLoad
  shift
fi
exec nice -n "${FERROMQ_JMS_NICE:-15}" java -Xmx512m -cp "$build/classes:$cp" "$main" "$@"
