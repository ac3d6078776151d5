#!/usr/bin/env bash
# The README's 3×3 walkthrough, checked: scripts/cluster.sh up, produce 20 persistent messages
# to group1, consume the same 20 from group2 (they cross a bridge on demand), the topology from
# `status`, then kill -9 group1's master and produce/consume again through the new master and
# the re-formed bridges, and `down --purge`. Bounded: every step has a timeout.
#
#   FERROMQ_BIN=path/to/ferromq scripts/cluster-smoke.sh    # scripts/test.sh runs it so
set -euo pipefail
cd "$(dirname "$0")/.."
: "${FERROMQ_BIN:?set FERROMQ_BIN to a ferromq binary}"
export FERROMQ_BIN
own_dir=""
if [ -z "${FERROMQ_CLUSTER_DIR:-}" ]; then
  own_dir=$(mktemp -d /tmp/ferromq-cluster-smoke.XXXX)
  FERROMQ_CLUSTER_DIR=$own_dir
fi
export FERROMQ_CLUSTER_DIR
export FERROMQ_CLUSTER_BASE=${FERROMQ_CLUSTER_BASE:-15000}
B=$FERROMQ_CLUSTER_BASE
url() { echo "failover:(tcp://127.0.0.1:$((B + 10 * $1 + 1)),tcp://127.0.0.1:$((B + 10 * $1 + 2)),tcp://127.0.0.1:$((B + 10 * $1 + 3)))"; }
cleanup() {
  timeout 60 bash scripts/cluster.sh down --purge >/dev/null 2>&1 || true
  [ -z "$own_dir" ] || rm -rf "$own_dir"
}
trap cleanup EXIT

timeout 180 bash scripts/cluster.sh up
timeout 30 bash scripts/cluster.sh status

round() { # label
  local got
  timeout 60 "$FERROMQ_BIN" --log warn produce --url "$(url 1)" -d /queue/smoke -n 20 \
    --persistent --receipt --message "$1 {n}" >/dev/null
  got=$(timeout 60 "$FERROMQ_BIN" --log warn consume --url "$(url 2)" -d /queue/smoke -n 20 \
    --idle-timeout-secs 30 --ack client-individual | grep -c "^$1 " || true)
  [ "$got" = 20 ] || { echo "cluster smoke: $1: group2 received $got of 20" >&2; exit 1; }
  echo "cluster smoke: $1: 20 produced on group1, 20 consumed on group2"
}
round before
addr=$(timeout 30 bash scripts/cluster.sh masters | awk '$1 == "group1" {print $2}')
case $addr in 127.0.0.1:*) ;; *) echo "cluster smoke: no group1 master" >&2; exit 1 ;; esac
member=$(( ${addr#127.0.0.1:} - B - 10 ))
timeout 30 bash scripts/cluster.sh kill 1 "$member"
round after-failover
timeout 30 bash scripts/cluster.sh status
echo "cluster smoke: passed"
