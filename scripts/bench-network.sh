#!/usr/bin/env bash
# Cost of a network bridge: the same workload with producers and consumers on one broker, and
# with producers on one broker and consumers on another, the messages forwarded on demand
# across a bridge (store-and-forward: stored on the first, forwarded with a receipt, stored on
# the second, acknowledged on the first). ferromq-bench, release builds, loopback: 1 KiB
# persistent messages with receipts, 16 producers (one receipt in flight each, as in
# scripts/bench-replicated.sh), 4 consumers acking client-individual, DUR seconds (default 10)
# after a 2 s warm-up, RUNS runs (default 3) per configuration, each on fresh brokers:
#
#   single  one standalone journal broker, producers and consumers on it
#   bridge  two standalone journal brokers; A has a static network connector to B
#           (uri = "static:(tcp://127.0.0.1:PB)"); producers on A, consumers on B
#   3x3     scripts/cluster.sh's three replicated groups of three (quorum_disk), bridged by
#           ZooKeeper discovery, in its own FERROMQ_CLUSTER_DIR and on ports
#           FERROMQ_BENCH_CLUSTER_BASE (default 12000: 12011..14033); producers on group1,
#           consumers on group2 (each group's current master: ferromq-bench opens plain
#           connections and ends a run on any error, so it is given the master of the
#           group's failover URL rather than the URL itself)
#
#   scripts/bench-network.sh                  # all three
#   DUR=3 RUNS=1 scripts/bench-network.sh bridge 3x3
#
# Prints each run's figures (from ferromq-bench --json) and one summary line per
# configuration: median and min–max of delivered and sent msg/s and of the p99 latencies.
# The figures with their conditions go to bench-results/ by hand.
set -u
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}"
# Two commands: a `--bin` filter applies to every package selected.
cargo build --release --locked -q -p ferromq --bin ferromq || exit 1
cargo build --release --locked -q -p ferromq-bench --bin ferromq-bench || exit 1
bash scripts/services.sh start >/dev/null 2>&1 || { echo "scripts/services.sh start failed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed for the summaries" >&2; exit 1; }
T=$CARGO_TARGET_DIR/release
BIN=$T/ferromq; BENCH=$T/ferromq-bench
W=$(mktemp -d "${FERROMQ_BENCH_DIR:-$(pwd)}/.netbench.XXXX")
DUR=${DUR:-10}
RUNS=${RUNS:-3}
case $RUNS in '' | *[!0-9]* | 0) echo "RUNS=$RUNS: expected a positive number" >&2; exit 1 ;; esac
[ "$RUNS" -le 100 ] || { echo "RUNS=$RUNS: at most 100" >&2; exit 1; }
CLUSTER_BASE=${FERROMQ_BENCH_CLUSTER_BASE:-12000}

pids=()
stop_brokers() { # kill -9 ours, and reap them (no "Killed" job notices in the output)
  local p
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  pids=()
}
cluster() { FERROMQ_CLUSTER_DIR=$W/cluster FERROMQ_CLUSTER_BASE=$CLUSTER_BASE FERROMQ_BIN=$BIN bash scripts/cluster.sh "$@"; }
cleanup() {
  stop_brokers
  [ -d "$W/cluster" ] && cluster down --purge >/dev/null 2>&1
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { # a port in 20000..39999 nobody listens on (bounded tries)
  local p i
  for ((i = 0; i < 50; i++)); do
    p=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}
wait_port() { # port: bounded, 15 s
  local i
  for ((i = 0; i < 150; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Prints one run's figures from ferromq-bench's JSON report.
show_run() { # label json-file
  python3 - "$1" "$2" <<'EOF'
import json, sys
label, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
c = r["conditions"]
def lat(x):
    if not x:
        return "-"
    return "p50 %.2f / p99 %.2f / p99.9 %.2f / max %.2f ms" % tuple(x[k] / 1000 for k in ("p50_us", "p99_us", "p99_9_us", "max_us"))
print("[%s] producers → %s, consumers → %s; %d×%d, %d B, %s, %s, window %d, ack %s, %.0f s after %.0f s" % (
    label, c["url"], c.get("consume_url", c["url"]), c["producers"], c["consumers"], c["size_bytes"],
    "persistent" if c["persistent"] else "non-persistent", "receipts" if c["receipt"] else "no receipts",
    c["window"], c["ack"], c["duration_s"], c["warmup_s"]))
print("[%s]   sent %.0f msg/s, delivered %.0f msg/s (%.2f MB/s)" % (label, r["sent"]["msgs_per_s"], r["delivered"]["msgs_per_s"], r["delivered"]["mb_per_s"]))
print("[%s]   send→receipt %s" % (label, lat(r["send_latency"])))
print("[%s]   end-to-end   %s" % (label, lat(r["end_to_end_latency"])))
print("[%s]   totals: sent %d, delivered %d of %d, undelivered after drain %d, stale %d" % (
    label, r["sent_total"], r["delivered_total"], r["expected_deliveries"], r["undelivered_after_drain"], r["stale_ignored"]))
EOF
}

# Runs the workload once: producers on $1, consumers on $2; the JSON report goes to $4.
run_bench() { # produce-addr consume-addr label json-out
  local err=$W/bench.err
  if "$BENCH" run --url "$1" --consume-url "$2" -p 16 -c 4 --size 1024 --persistent --receipt \
    --ack client-individual --warmup 2 --duration "$DUR" --timeout 30 --json --quiet \
    >"$4" 2>"$err"; then
    show_run "$3" "$4"
  else
    echo "[$3] ferromq-bench failed:"; sed "s/^/[$3]   /" "$err"
    rm -f "$4"
  fi
}

standalone_config() { # name port data [admin] [bridge-to-port]
  cat <<EOC
[broker]
name = "$1"
data_dir = "$3"
[transports]
stomp = "127.0.0.1:$2"
EOC
  [ -n "${4:-}" ] && echo "admin = \"127.0.0.1:$4\""
  if [ -n "${5:-}" ]; then
    cat <<EOC
[[network_connectors]]
name = "to-b"
uri = "static:(tcp://127.0.0.1:$5)"
duplex = false
EOC
  fi
}

single() { # run
  local P
  P=$(free_port) || { echo "[single] no free port"; return; }
  standalone_config single "$P" "$W/single-$1" >"$W/single.toml"
  NO_COLOR=1 "$BIN" --log warn serve --config "$W/single.toml" 2>>"$W/single.log" & pids+=($!)
  if wait_port "$P"; then
    sleep 1
    run_bench "127.0.0.1:$P" "127.0.0.1:$P" "single #$1" "$W/single-$1.json"
  else
    echo "[single #$1] broker did not start:"; tail -n 5 "$W/single.log"
  fi
  stop_brokers
}

bridge() { # run
  local PA PB AA i ok=""
  PA=$(free_port) && PB=$(free_port) && AA=$(free_port) || { echo "[bridge] no free port"; return; }
  standalone_config b "$PB" "$W/b-$1" >"$W/b.toml"
  standalone_config a "$PA" "$W/a-$1" "$AA" "$PB" >"$W/a.toml"
  NO_COLOR=1 "$BIN" --log warn serve --config "$W/b.toml" 2>>"$W/b.log" & pids+=($!)
  NO_COLOR=1 "$BIN" --log warn serve --config "$W/a.toml" 2>>"$W/a.log" & pids+=($!)
  if wait_port "$PB" && wait_port "$PA"; then
    # The bridge A → B is up when A's admin endpoint says so (bounded: 15 s).
    for ((i = 0; i < 150; i++)); do
      timeout 8 "$BIN" status --admin "127.0.0.1:$AA" 2>/dev/null | grep -q '"connected":true' && { ok=1; break; }
      sleep 0.1
    done
  fi
  if [ -n "$ok" ]; then
    sleep 1
    run_bench "127.0.0.1:$PA" "127.0.0.1:$PB" "bridge #$1" "$W/bridge-$1.json"
  else
    echo "[bridge #$1] brokers or bridge did not come up:"; tail -n 5 "$W/a.log" "$W/b.log"
  fi
  stop_brokers
}

cluster3x3() { # run
  local out m1 m2
  if ! out=$(FERROMQ_CLUSTER_WAIT=90 cluster up 2>&1); then
    echo "[3x3 #$1] cluster did not come up:"; echo "$out" | tail -n 20
    cluster down --purge >/dev/null 2>&1
    return
  fi
  m1=$(cluster masters | awk '$1 == "group1" {print $2}')
  m2=$(cluster masters | awk '$1 == "group2" {print $2}')
  if [ -z "$m1" ] || [ "$m1" = - ] || [ -z "$m2" ] || [ "$m2" = - ]; then
    echo "[3x3 #$1] no master for group1 or group2"; cluster status
  else
    echo "[3x3 #$1] group1 $(cluster urls | awk '$1 == "group1" {print $2}') → master $m1"
    echo "[3x3 #$1] group2 $(cluster urls | awk '$1 == "group2" {print $2}') → master $m2"
    sleep 1
    run_bench "$m1" "$m2" "3x3 #$1" "$W/3x3-$1.json"
    # What the bridges did, for the record.
    cluster status | sed "s/^/[3x3 #$1] /"
  fi
  cluster down --purge >/dev/null
}

summary() { # config
  python3 - "$1" "$W" <<'EOF'
import glob, json, statistics, sys
name, w = sys.argv[1], sys.argv[2]
runs = [json.load(open(p)) for p in sorted(glob.glob("%s/%s-*.json" % (w, name)))]
if not runs:
    print("summary %-6s no successful run" % name)
    sys.exit(0)
def fig(values, fmt):
    return (fmt + " (" + fmt + "–" + fmt + ")") % (statistics.median(values), min(values), max(values))
def p99(r, k):
    return r[k]["p99_us"] / 1000 if r[k] else float("nan")
print("summary %-6s %d run(s): delivered %s msg/s, sent %s msg/s, send→receipt p99 %s ms, end-to-end p99 %s ms, undelivered %d" % (
    name, len(runs),
    fig([r["delivered"]["msgs_per_s"] for r in runs], "%.0f"),
    fig([r["sent"]["msgs_per_s"] for r in runs], "%.0f"),
    fig([p99(r, "send_latency") for r in runs], "%.2f"),
    fig([p99(r, "end_to_end_latency") for r in runs], "%.2f"),
    sum(r["undelivered_after_drain"] for r in runs)))
EOF
}

[ $# -gt 0 ] || set -- single bridge 3x3
for config in "$@"; do
  case $config in single | bridge | 3x3) ;; *) echo "unknown configuration $config (single, bridge, 3x3)" >&2; exit 1 ;; esac
done
echo "bench-network: DUR=$DUR s, RUNS=$RUNS, $BIN, $BENCH"
for config in "$@"; do
  for ((run = 1; run <= RUNS; run++)); do
    case $config in
      single) single "$run" ;;
      bridge) bridge "$run" ;;
      3x3) cluster3x3 "$run" ;;
    esac
  done
done
echo
for config in "$@"; do summary "$config"; done
