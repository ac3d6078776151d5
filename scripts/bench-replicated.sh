#!/usr/bin/env bash
# Cost of each `sync` mode of ha.mode = "replicated": three release brokers on loopback and the
# ZooKeeper ensemble of scripts/services.sh, against one standalone journal broker, with
# ferromq-bench: 1 KiB persistent messages with receipts, 16 producers, 4 consumers (PRODUCERS,
# CONSUMERS in the environment: 1 producer measures the protocol's latency, not the CPU share)
# (client-individual acks), DUR seconds (default 10) after a 2 s warm-up.
#
#   scripts/bench-replicated.sh single solo local_disk quorum_disk ...   # modes to run
#   scripts/bench-replicated.sh quorum_disk quorum_disk+tls              # +tls: mutual TLS on the
#                                                                        # replication link
#
# Prints ferromq-bench's reports; the figures with their conditions go to
# bench-results/replicated.md by hand.
set -u
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}"
# Two commands: a `--bin` filter applies to every package selected.
cargo build --release --locked -q -p ferromq --bin ferromq || exit 1
cargo build --release --locked -q -p ferromq-bench --bin ferromq-bench || exit 1
bash scripts/services.sh start >/dev/null
T=$CARGO_TARGET_DIR/release
BIN=$T/ferromq; BENCH=$T/ferromq-bench
ZK=${FERROMQ_TEST_ZK_ENSEMBLE:-127.0.0.1:2191,127.0.0.1:2192,127.0.0.1:2193}
W=$(mktemp -d "${FERROMQ_BENCH_DIR:-$(pwd)}/.zkbench.XXXX")
DUR=${DUR:-10}
PRODUCERS=${PRODUCERS:-16}
CONSUMERS=${CONSUMERS:-4}
[[ "$PRODUCERS" =~ ^[1-9][0-9]{0,2}$ && "$CONSUMERS" =~ ^[1-9][0-9]{0,2}$ ]] || { echo "PRODUCERS and CONSUMERS: 1-999" >&2; exit 2; }
run_bench() { # port label
  $BENCH run --url 127.0.0.1:$1 -p $PRODUCERS -c $CONSUMERS --size 1024 --persistent --receipt --ack client-individual --warmup 2 --duration $DUR --timeout 30 2>&1 | sed "s/^/[$2] /" | grep -vE "(warm-up|measure|drain)  *\]"
}
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 $p 2>/dev/null; done; pids=(); }
trap cleanup EXIT
single() {
  P=$((20000 + RANDOM % 20000))
  cat > $W/single.toml <<EOC
[broker]
name = "single"
data_dir = "$W/single-$RANDOM"
[transports]
stomp = "127.0.0.1:$P"
EOC
  $BIN --log warn serve --config $W/single.toml 2>$W/single.log & pids+=($!)
  sleep 1.5
  run_bench $P "journal-single"
  cleanup
}
# A CA and one member certificate for 127.0.0.1 (server and client use), for `+tls` runs.
make_certs() {
  [ -f $W/member.crt ] && return
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
    -keyout $W/ca.key -out $W/ca.crt -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null || exit 1
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=member" \
    -keyout $W/member.key -out $W/member.csr 2>/dev/null || exit 1
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > $W/member.ext
  openssl x509 -req -in $W/member.csr -CA $W/ca.crt -CAkey $W/ca.key -CAcreateserial -days 2 \
    -extfile $W/member.ext -out $W/member.crt 2>/dev/null || exit 1
}
replicated() { # sync[+tls]
  local sync=${1%+tls}; local path="/ferromq-bench/$sync-$$-$RANDOM" ports=() tls=""
  if [ "$1" != "$sync" ]; then
    make_certs
    tls="tls_cert = \"$W/member.crt\"
tls_key = \"$W/member.key\"
tls_ca = \"$W/ca.crt\""
  fi
  for i in 0 1 2; do
    P=$((20000 + RANDOM % 20000)); ports+=($P)
    cat > $W/r$i.toml <<EOC
[broker]
name = "bench"
data_dir = "$W/$1-$i"
[transports]
stomp = "127.0.0.1:$P"
[ha]
mode = "replicated"
zk_address = "$ZK"
zk_path = "$path"
bind = "tcp://127.0.0.1:0"
sync = "$sync"
$tls
EOC
    $BIN --log info serve --config $W/r$i.toml 2>$W/$1-$i.log & pids+=($!)
  done
  local m=""
  for _ in $(seq 1 300); do
    for P in "${ports[@]}"; do
      if (exec 3<>/dev/tcp/127.0.0.1/$P) 2>/dev/null; then m=$P; break 2; fi
    done
    sleep 0.1
  done
  [ -n "$m" ] || { echo "[$1] no master"; cleanup; return; }
  sleep 1
  run_bench $m "replicated-$1"
  cleanup
}
solo() { # one-member replicated group: the wrapper's cost without slaves
  local path="/ferromq-bench/solo-$$-$RANDOM"
  P=$((20000 + RANDOM % 20000))
  cat > $W/solo.toml <<EOC
[broker]
name = "solo"
data_dir = "$W/solo-$RANDOM"
[transports]
stomp = "127.0.0.1:$P"
[ha]
mode = "replicated"
replicas = 1
zk_address = "$ZK"
zk_path = "$path"
bind = "tcp://127.0.0.1:0"
sync = "local_disk"
EOC
  $BIN --log warn serve --config $W/solo.toml 2>$W/solo.log & pids+=($!)
  for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$P) 2>/dev/null && break; sleep 0.1; done
  sleep 1
  run_bench $P "replicated-solo-local_disk"
  cleanup
}
[ $# -gt 0 ] || set -- single solo local_mem local_disk remote_mem remote_disk quorum_mem quorum_disk
for mode in "$@"; do
  case $mode in single) single ;; solo) solo ;; *) replicated $mode ;; esac
done
rm -rf $W
