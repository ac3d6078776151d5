#!/usr/bin/env bash
# What TLS costs (issue 18, item 6: "persistent and non-persistent throughput over TLS beside
# plain TCP"). One `ferromq serve` (store `journal`, `store.sync = "always"`, the default) with
# a plain STOMP listener and a STOMP-over-TLS listener (`transports.stomp_ssl`, ActiveMQ's
# stomp+ssl://) side by side, a P-256 certificate from a throwaway CA made here with openssl;
# the same workloads through each, in pairs:
#
#   A  persistent, receipt per message (window 1), 16 producers → 16 consumers
#   B  non-persistent, the same shape
#   C  persistent, receipt per message, 1 producer → 1 consumer (one connection's latency)
#
# 1 KiB bodies; consumers ACK every message with `client-individual` (no receipt on the ACK).
# Interleaved: for each repeat, for each workload, plain and TLS back to back, the order
# alternating between repeats so that a drift of the shared VM does not favour one side. Every
# run has its own queue. Before them, the memory of idle connections: the broker's RSS after
# opening IDLE connections (CONNECTed, then silent) over each listener.
#
#   scripts/bench-tls.sh         # ~4 min with the release build cached
#
# Prints one line per run on stderr and a markdown table (median of the repeats, min–max) on
# stdout; the raw `--json` reports and the broker log stay in the work dir printed at the end.
#
# Environment (all optional):
#   CARGO_TARGET_DIR            build directory (default: $HOME/.cache/ferromq/target)
#   TLS_BENCH_REPEATS=3         pairs per workload
#   TLS_BENCH_WARMUP=2 TLS_BENCH_DURATION=10   seconds per run
#   TLS_BENCH_WORKLOADS="A B C"
#   TLS_BENCH_IDLE=500          idle connections per side for the memory figure (0: skip)
#   TLS_BENCH_PORT=61697        plain STOMP; TLS is the next port
#   TLS_BENCH_DIR=/var/tmp      where the work dir (and so the journal) goes
#   TLS_BENCH_BUILD=1           0: use the binaries already in $CARGO_TARGET_DIR/release
#
# Bounded: 3 workloads × 2 sides × REPEATS runs, each limited by timeout(1); the broker start by
# 30 s; the idle-connection step by 120 s.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/bench-pairs.sh
. scripts/lib/bench-pairs.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
REPEATS="${TLS_BENCH_REPEATS:-3}"
WARMUP="${TLS_BENCH_WARMUP:-2}"
DURATION="${TLS_BENCH_DURATION:-10}"
WANTED="${TLS_BENCH_WORKLOADS:-A B C}"
IDLE="${TLS_BENCH_IDLE:-500}"
PORT="${TLS_BENCH_PORT:-61697}"
TLS_PORT=$((PORT + 1))
BASE_DIR="${TLS_BENCH_DIR:-/var/tmp}"
BUILD="${TLS_BENCH_BUILD:-1}"
BUILD_TIMEOUT_S=3600
OP_TIMEOUT_S=20

die() { echo "bench-tls: error: $*" >&2; exit 1; }
[[ "$WARMUP" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "TLS_BENCH_WARMUP=$WARMUP is not a number of seconds"
[[ "$DURATION" =~ ^[0-9]+([.][0-9]+)?$ ]] && [ "$DURATION" != 0 ] || die "TLS_BENCH_DURATION=$DURATION is not a positive number of seconds"
[[ "$REPEATS" =~ ^[1-9][0-9]?$ ]] || die "TLS_BENCH_REPEATS=$REPEATS is not 1-99"
[[ "$IDLE" =~ ^[0-9]{1,4}$ ]] || die "TLS_BENCH_IDLE=$IDLE is not 0-9999"
[[ "$PORT" =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1024 ] && [ "$PORT" -lt 65535 ] || die "TLS_BENCH_PORT=$PORT is not a port"
for tool in openssl python3 timeout; do command -v "$tool" >/dev/null 2>&1 || die "$tool not found"; done
RUN_LIMIT_S=$(awk -v w="$WARMUP" -v d="$DURATION" -v t="$OP_TIMEOUT_S" 'BEGIN { printf "%d", w + d + 4 * t + 30 }')

if [ "$BUILD" = 1 ]; then
  echo "==> build (release): ferromq, ferromq-bench" >&2
  timeout "$BUILD_TIMEOUT_S" cargo build --release --locked -q -p ferromq -p ferromq-bench \
    || die "cargo build --release failed or took longer than ${BUILD_TIMEOUT_S}s"
fi
FERROMQ="$CARGO_TARGET_DIR/release/ferromq"
BENCH="$CARGO_TARGET_DIR/release/ferromq-bench"
[ -x "$FERROMQ" ] && [ -x "$BENCH" ] || die "built binaries not found in $CARGO_TARGET_DIR/release"
for port in "$PORT" "$TLS_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "127.0.0.1:$port is taken"; fi
done

mkdir -p "$BASE_DIR"
work="$(mktemp -d "$BASE_DIR/ferromq-tls.XXXXXX")"
mkdir -p "$work/raw" "$work/data" "$work/pki"
broker_pid=""
cleanup() {
  local rc=$?
  stop_pid "$broker_pid"
  rm -rf "$work/data"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A throwaway CA and a broker certificate for 127.0.0.1, as docs/security.md makes them.
pki="$work/pki"
(
  cd "$pki"
  umask 077
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=bench-broker" \
    -keyout broker.key -out broker.csr
  printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n" >ext.cnf
  openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -out broker.pem -extfile ext.cnf
) >"$work/pki.log" 2>&1 || die "openssl could not make the certificates: $(tail -n 3 "$work/pki.log" | tr '\n' ' ')"

echo "==> ferromq serve (journal, sync=always) STOMP 127.0.0.1:$PORT, STOMP+TLS 127.0.0.1:$TLS_PORT" >&2
FERROMQ__BROKER__DATA_DIR="$work/data" \
  FERROMQ__TRANSPORTS__STOMP="127.0.0.1:$PORT" \
  FERROMQ__TRANSPORTS__STOMP_SSL="127.0.0.1:$TLS_PORT" \
  FERROMQ__TLS__CERT="$pki/broker.pem" FERROMQ__TLS__KEY="$pki/broker.key" \
  FERROMQ__STOMP__MAX_CONNECTIONS=$((2 * IDLE + 200)) \
  FERROMQ__STORE__BACKEND=journal FERROMQ__STORE__SYNC=always \
  "$FERROMQ" --log warn serve </dev/null >"$work/ferromq.log" 2>&1 &
broker_pid=$!
up=0
for _ in $(seq 1 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null; then
    up=1; break
  fi
  kill -0 "$broker_pid" 2>/dev/null || break
  sleep 0.1
done
[ "$up" = 1 ] || die "broker did not listen within 30 s: $(tail -n 3 "$work/ferromq.log" | tr '\n' ' ')"

write_meta "$work/meta.env" "$work" "openssl=$(openssl version)"

COMMON="--ack client-individual --size 1024 --warmup $WARMUP --duration $DURATION --timeout $OP_TIMEOUT_S"
WORKLOADS=("A|persistent, receipt window 1, 16 → 16|--persistent --receipt --window 1 -p 16 -c 16 $COMMON"
  "B|non-persistent, receipt window 1, 16 → 16|--receipt --window 1 -p 16 -c 16 $COMMON"
  "C|persistent, receipt window 1, 1 → 1|--persistent --receipt --window 1 -p 1 -c 1 $COMMON")

results="$work/results.tsv"
: >"$results"
failures=0
run() { # W DESC ARGS REP SIDE
  local w=$1 desc=$2 args=$3 rep=$4 side=$5 out="$work/raw/$1.$5.$4" url tls=()
  if [ "$side" = tls ]; then
    url="stomp+ssl://127.0.0.1:$TLS_PORT"; tls=(--tls-ca "$pki/ca.pem")
  else
    url="127.0.0.1:$PORT"
  fi
  echo "==> $w ($desc) over $side, repeat $rep/$REPEATS" >&2
  # shellcheck disable=SC2086 # $args is a list of arguments
  if ! timeout "$RUN_LIMIT_S" "$BENCH" run --url "$url" "${tls[@]}" -d "/queue/tls.$w.$rep.$side" $args \
    --json --quiet </dev/null >"$out.json" 2>"$out.log"; then
    echo "bench-tls: FAILED $w.$side.$rep: $(grep -m1 '^Error' "$out.log" || tail -n 1 "$out.log")" >&2
    failures=$((failures + 1))
    return 0
  fi
  python3 - "$w" "$side" "$rep" "$out.json" >>"$results" <<'EOF'
import json, sys
w, side, rep, path = sys.argv[1:5]
r = json.load(open(path))
lat = r.get("send_latency") or {}
print("\t".join(str(x) for x in (w, side, rep, r["sent"]["msgs_per_s"], r["delivered"]["msgs_per_s"],
      lat.get("p50_us", ""), lat.get("p99_us", ""), r["undelivered_after_drain"])))
EOF
  tail -n 1 "$results" | awk -F'\t' '{ printf "    receipted %.0f msg/s, delivered %.0f msg/s, send p50 %s us, p99 %s us\n", $4, $5, $6, $7 }' >&2
}

# Idle connections, first, on the fresh broker (after the load runs its allocator holds freed
# memory that new connections reuse unseen): the broker's RSS before, after IDLE plain
# connections, after IDLE TLS ones (each CONNECTed and answered, then silent; all held open
# until the last reading, then closed).
if [ "$IDLE" -gt 0 ]; then
  echo "==> $IDLE idle connections per side (broker RSS)" >&2
  timeout 120 python3 - "$broker_pid" "$PORT" "$TLS_PORT" "$pki/ca.pem" "$IDLE" >"$work/idle.tsv" <<'EOF' \
    || die "the idle-connection step failed or took over 120 s"
import socket, ssl, sys, time
pid, port, tls_port, ca, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit("no VmRSS")
def connect(tls):
    s = socket.create_connection(("127.0.0.1", tls_port if tls else port), timeout=10)
    if tls:
        ctx = ssl.create_default_context(cafile=ca)
        s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\x00")
    got = b""
    while b"\x00" not in got:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("connection closed before CONNECTED")
        got += chunk
    if not got.startswith(b"CONNECTED"):
        raise SystemExit("not CONNECTED: %r" % got[:80])
    return s
def settle():
    time.sleep(2)
    return rss_kib()
held = []
base = settle()
print(f"base\t{base}")
for side, tls in (("plain", False), ("tls", True)):
    before = settle()
    held += [connect(tls) for _ in range(n)]
    after = settle()
    print(f"{side}\t{after}\t{(after - before) / n:.1f}")
EOF
fi

run_pairs "$REPEATS" "$WANTED" plain tls
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/meta.env"
kill -0 "$broker_pid" 2>/dev/null || die "the broker exited during the runs: $(tail -n 3 "$work/ferromq.log" | tr '\n' ' ')"

python3 - "$results" "$work/meta.env" "$REPEATS" "$work/idle.tsv" "$IDLE" <<'EOF'
import os, statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
meta = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[2]) if "=" in l)
repeats, idle_path, idle = int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
names = {"A": "A. persistent, 16 → 16", "B": "B. non-persistent, 16 → 16", "C": "C. persistent, 1 → 1"}
def mmm(xs, fmt="{:,.0f}"):
    if not xs:
        return "n/a"
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"
print(f"<!-- {meta.get('date')}, git {meta.get('rev')}, load {meta.get('load_before')} → {meta.get('load_after')} -->")
print("| workload | transport | runs | receipted msg/s | delivered msg/s | send p50 µs | send p99 µs | TLS ÷ plain |")
print("|---|---|---|---|---|---|---|---|")
for w in ("A", "B", "C"):
    med = {}
    for side in ("plain", "tls"):
        rs = [r for r in rows if r[0] == w and r[1] == side]
        if not rs:
            continue
        sent = [float(r[3]) for r in rs]
        med[side] = statistics.median(sent)
        ratio = f"{med['tls'] / med['plain']:.2f}×" if side == "tls" and "plain" in med else ""
        print(f"| {names[w]} | {'STOMP over TLS' if side == 'tls' else 'plain TCP'} | {len(rs)}/{repeats} "
              f"| {mmm(sent)} | {mmm([float(r[4]) for r in rs])} | {mmm([float(r[5]) for r in rs if r[5]])} "
              f"| {mmm([float(r[6]) for r in rs if r[6]])} | {ratio} |")
if idle and os.path.exists(idle_path):
    print()
    print(f"Idle connections ({idle} per side, CONNECTed then silent), broker RSS:")
    print()
    print("| transport | RSS after (KiB) | per connection (KiB) |")
    print("|---|---|---|")
    for line in open(idle_path):
        f = line.rstrip("\n").split("\t")
        if f[0] == "base":
            print(f"| (none) | {f[1]} | |")
        else:
            print(f"| {'STOMP over TLS' if f[0] == 'tls' else 'plain TCP'} | {f[1]} | {f[2]} |")
EOF
echo "bench-tls: raw reports and the broker log in $work" >&2
[ "$failures" = 0 ] || die "$failures run(s) failed (see above)"
