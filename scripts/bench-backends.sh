#!/usr/bin/env bash
# Store backends side by side: runs the criterion bench `crates/store/benches/backends.rs` on
# every backend this build has (memory, journal portable and io_uring, lsm, sql on SQLite,
# PostgreSQL and MariaDB), then writes bench-results/backends.md and bench-results/backends.svg.
#
#   scripts/bench-backends.sh                      # everything, 1,000,000 messages recovered
#   FERROMQ_BENCH_RECOVERY_MESSAGES=100000 scripts/bench-backends.sh
#   FERROMQ_BENCH_BACKENDS=journal,journal-portable scripts/bench-backends.sh
#
# The databases are the throwaway instances of scripts/services.sh (fsync on; PostgreSQL
# synchronous_commit on, MariaDB innodb_flush_log_at_trx_commit=1), on the same disk.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}"
bash scripts/services.sh start
eval "$(bash scripts/services.sh env)"
export ROCKSDB_LIB_DIR="${ROCKSDB_LIB_DIR:-$(dirname "$(ls /usr/lib/*/librocksdb.so* 2>/dev/null | head -1)")}"
export SNAPPY_LIB_DIR="${SNAPPY_LIB_DIR:-$ROCKSDB_LIB_DIR}"
work=$(mktemp -d "${TMPDIR:-/tmp}/ferromq-bench-backends.XXXXXX")
trap 'rm -rf "$work"' EXIT
export FERROMQ_BENCH_SUMMARY="$work/summary.json"
export FERROMQ_BENCH_DIR="${FERROMQ_BENCH_DIR:-$(pwd)}"
started=$(date -u +%Y-%m-%dT%H:%MZ)
cargo bench -p ferromq-store --all-features --locked --bench backends 2>&1 | tee "$work/bench.log"
{
  echo "started=$started"
  echo "kernel=$(uname -sr)"
  echo "cpus=$(nproc)"
  echo "mem=$(awk '/MemTotal/ {printf "%d GiB", $2/1048576}' /proc/meminfo)"
  echo "rustc=$(rustc --version)"
  echo "disk=$(df -h --output=source,fstype "$FERROMQ_BENCH_DIR" | tail -1 | tr -s ' ')"
  echo "postgres=$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || echo '?')"
  echo "mariadb=$(dpkg-query -W -f='${Version}' mariadb-server 2>/dev/null || echo '?')"
  echo "rocksdb=$(dpkg-query -W -f='${Version}' librocksdb-dev 2>/dev/null || echo '?')"
  echo "recovery_messages=${FERROMQ_BENCH_RECOVERY_MESSAGES:-1000000}"
} >"$work/meta.env"
python3 scripts/bench-backends-report.py "$work" bench-results
echo "wrote bench-results/backends.md and bench-results/backends.svg"
