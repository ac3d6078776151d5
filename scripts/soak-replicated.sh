#!/usr/bin/env bash
# Replicated soak: three `ferromq serve` brokers (release build) in replicated mode on the real
# ZooKeeper ensemble (scripts/services.sh), 16 producers sending receipted persistent messages
# at full speed through failover clients (a window of receipts outstanding each), consumers
# acking client-individual with receipts and recording every MESSAGE frame off the wire. The
# load runs until the log has grown past a target; then kill -9 of the master, wait for the
# new master and its first receipt, the killed broker returns as a slave (and catches up),
# the load goes on, and again, for ROUNDS rounds; after every SLAVE_EVERY master rounds a
# slave round: a slave killed and returning under the load, then the other slave killed so
# that the returned one must carry the quorum. After the last round the producers stop, the
# consumers drain, and the history is judged: no receipted message lost, no broker-level
# duplicate (a message stored twice, delivered twice on one connection, or delivered again
# after its ACK was confirmed), nothing unknown. Exits non-zero on any violation.
#
#   scripts/soak-replicated.sh [ROUNDS] [LOG_TARGET] [MSG_BYTES] [MAX_MINUTES]
#       ROUNDS       kill -9 rounds of the master            (default 100)
#       LOG_TARGET   log position before the first kill      (default 1000000)
#       MSG_BYTES    message body size                       (default 1024; 4096 for GiB stores)
#       MAX_MINUTES  no round starts after this; the run then drains and checks (default 120)
#
#   Further settings (environment): FERROMQ_SOAK_PRODUCERS (16), FERROMQ_SOAK_WINDOW (16),
#   FERROMQ_SOAK_CONSUMERS (2), FERROMQ_SOAK_CONSUME_DURING (true; false: the consumers start
#   only after the last round, so the store grows with every message and the full copies of
#   returning brokers are as large), FERROMQ_SOAK_SLAVE_EVERY (10), FERROMQ_SOAK_ROUND_CONFIRMS
#   (receipts between kills, ±50 %; 20000), FERROMQ_SOAK_WAIT_SECS (bound of any one wait;
#   300), FERROMQ_SOAK_SEED (replays a run's choices), FERROMQ_SOAK_DIR (where the data dirs
#   go; deleted afterwards), FERROMQ_SOAK_HISTORY (keep the history file there).
#
# The full job (1,000,000 and 100 rounds, 4 KiB messages) needs about 3 × the store size of
# free disk (three brokers, each its own store: ~4 GiB each at 1,000,000 × 4 KiB kept until
# the drain) and, extrapolated from bench-results/replicated-soak.md, about an hour on two cores:
#
#   FERROMQ_SOAK_CONSUME_DURING=false FERROMQ_SOAK_DIR=/var/tmp/soak \
#     scripts/soak-replicated.sh 100 1000000 4096 360
#
# The driver is the test crates/server/tests/ha_replicated_load.rs (CI runs it with small
# parameters in a debug build); figures go to stderr and, with the conditions, to
# bench-results/replicated-soak.md when written up. See docs/testing.md, "Replicated soak".
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-100}"
target="${2:-1000000}"
msg_bytes="${3:-1024}"
max_minutes="${4:-120}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
bash scripts/services.sh start
eval "$(bash scripts/services.sh env)"
export FERROMQ_SOAK_ROUNDS="$rounds"
export FERROMQ_SOAK_LSN="$target"
export FERROMQ_SOAK_MSG_BYTES="$msg_bytes"
export FERROMQ_SOAK_MAX_SECS=$((max_minutes * 60))
export FERROMQ_SOAK_SLAVE_EVERY="${FERROMQ_SOAK_SLAVE_EVERY:-10}"
export FERROMQ_SOAK_ROUND_CONFIRMS="${FERROMQ_SOAK_ROUND_CONFIRMS:-20000}"
export FERROMQ_SOAK_WAIT_SECS="${FERROMQ_SOAK_WAIT_SECS:-300}"
if [ -n "${FERROMQ_SOAK_DIR:-}" ]; then
  mkdir -p "$FERROMQ_SOAK_DIR"
  df -h "$FERROMQ_SOAK_DIR" | tail -1
fi
# The drain and the final check run inside the bound too: allow them an hour beyond it.
timeout $(((max_minutes + 60) * 60)) \
  cargo test --release --locked -p ferromq --features zk --test ha_replicated_load -- \
  --exact kill_9_rounds_of_the_master_and_a_slave_return_under_16_full_speed_producers --nocapture
