#!/usr/bin/env bash
# Installs and starts, on loopback only, the real components that ferromq's tests need, and
# stops them again. Idempotent: running `start` twice is harmless.
#
#   scripts/services.sh start   # install (Debian packages) and start what the tests need
#   scripts/services.sh stop    # stop what `start` started
#
# Today the test suite needs no external server: the STOMP broker core and its stores run
# embedded. ZooKeeper, PostgreSQL and MariaDB (replicated and shared-database HA, SQL store) and
# ActiveMQ and RabbitMQ (benchmark peers) are added here by the issues that need them.
set -euo pipefail
cmd="${1:-start}"
case "$cmd" in
  start|stop|status) ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
# Python's venv module is needed for the interop tests; Debian splits it out on some images.
if [ "$cmd" = start ] && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
  fi
fi
echo "services: nothing to $cmd for the current test suite"
