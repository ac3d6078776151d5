#!/usr/bin/env bash
# Failover-latency suite: for every HA mode that exists (today: shared-file), kill -9 and
# SIGTERM the master ROUNDS times under a steady persistent load and append p50 / p99 / max of
# "signal → new master accepting" and "signal → first receipted message" to
# bench-results/failover.md. Loopback only; every round is bounded (60 s).
#
#   scripts/bench-failover.sh [ROUNDS]     # default 20
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-20}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -q -p ferromq --bin ferromq --example failover_bench
table=$("$target/release/examples/failover_bench" "$target/release/ferromq" "$rounds")
{
  printf '\n## Run of %s (scripts/bench-failover.sh %s)\n\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$rounds"
  printf 'Machine: %s, %s CPUs, %s; %s.\n\n' "$(uname -sr)" "$(nproc)" \
    "$(awk '/MemTotal/ {printf "%d GiB RAM", $2/1048576}' /proc/meminfo)" "$(rustc --version)"
  printf '%s\n' "$table"
} >> bench-results/failover.md
printf '%s\n' "$table"
