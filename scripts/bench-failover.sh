#!/usr/bin/env bash
# Failover-latency suite: for each HA mode — shared-file, shared-db with the lease locker
# (2 s lease) and the row locker on PostgreSQL and MariaDB, and replicated (three brokers, the
# ZooKeeper ensemble; fast failover with master_timeout 500 ms under a 2 s and a 10 s session,
# and the session path alone with a 2 s session) — kill -9 and SIGTERM the master
# ROUNDS times under a steady persistent load and append p50 / p99 / max of "signal → new
# master accepting" and "signal → first receipted message" to bench-results/failover.md.
# Loopback only; every round is bounded (60 s).
#
#   scripts/bench-failover.sh [ROUNDS] [MODES]    # default 20, "shared-file shared-db replicated"
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-20}"
modes="${2:-shared-file shared-db replicated}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -q -p ferromq --bin ferromq --example failover_bench
bench="$target/release/examples/failover_bench"
bin="$target/release/ferromq"
table="| mode | trigger | rounds | to accepting p50 / p99 / max (ms) | to first receipt p50 / p99 / max (ms) |"$'\n'"|---|---|---|---|---|"$'\n'
for mode in $modes; do
  case "$mode" in
    shared-file)
      table+=$("$bench" "$bin" "$rounds" shared-file | tail -n +3)$'\n'
      ;;
    shared-db)
      bash scripts/services.sh start
      eval "$(bash scripts/services.sh env)"
      for db in "$FERROMQ_TEST_PG_URL" "$FERROMQ_TEST_MYSQL_URL"; do
        for locker in lease row; do
          table+=$("$bench" "$bin" "$rounds" shared-db "$db" "$locker" 2000 | tail -n +3)$'\n'
        done
      done
      ;;
    replicated)
      bash scripts/services.sh start
      eval "$(bash scripts/services.sh env)"
      # Fast failover (master_timeout 500 ms) with a short and a production-like session
      # timeout, then the ZooKeeper-session path alone (master_timeout 0) for comparison.
      for sm in "2000 500" "10000 500" "2000 0"; do
        set -- $sm
        table+=$("$bench" "$bin" "$rounds" replicated "$FERROMQ_TEST_ZK_ENSEMBLE" "$1" "$2" | tail -n +3)$'\n'
      done
      ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
done
{
  printf '\n## Run of %s (scripts/bench-failover.sh %s "%s")\n\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$rounds" "$modes"
  printf 'Machine: %s, %s CPUs, %s; %s.\n\n' "$(uname -sr)" "$(nproc)" \
    "$(awk '/MemTotal/ {printf "%d GiB RAM", $2/1048576}' /proc/meminfo)" "$(rustc --version)"
  printf '%s' "$table"
} >> bench-results/failover.md
printf '%s' "$table"
