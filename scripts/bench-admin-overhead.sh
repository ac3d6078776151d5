#!/usr/bin/env bash
# What the admin endpoints cost the hot path (issue 17, acceptance: "persistent and
# non-persistent throughput with the console open and /metrics scraped every second, beside the
# figures without"). One `ferromq serve` (store `journal`, `store.sync = "always"`, the default)
# with `transports.admin` on loopback; two workloads, each run in pairs:
#
#   off  no admin traffic at all (the listener is open but idle)
#   on   a poller that, once a second, scrapes GET /metrics (what Prometheus does) and fetches
#        what the console's overview page (`#/`, the page it opens on) polls every second:
#        GET /api/v1/broker, then GET /api/v1/queues (console.js, overviewPage + POLL_MS)
#
#   A  persistent, receipt per message (window 1), 16 producers → 16 consumers
#   B  non-persistent, the same shape (receipt per message, window 1, 16 → 16)
#
# 1 KiB bodies; every consumer ACKs every message with `client-individual` (no receipt on the
# ACK), as scripts/bench-compare.sh does. Interleaved: for each repeat, for each workload, the
# pair back to back, its order alternating between repeats (off/on, then on/off, ...) so that a
# drift of the shared VM does not always favour one side. Every run has its own queue, so each
# starts empty.
#
#   scripts/bench-admin-overhead.sh         # ~3 min with the release build cached
#
# Prints one line per run on stderr and a markdown table (median of the repeats, min–max) on
# stdout. Raw `--json` reports, the poller's log (one line per request: HTTP status, bytes,
# seconds) and the broker log stay in the work dir printed at the end.
#
# Environment (all optional):
#   CARGO_TARGET_DIR                 build directory (default: $HOME/.cache/ferromq/target)
#   ADMIN_BENCH_REPEATS=3            pairs per workload
#   ADMIN_BENCH_WARMUP=2 ADMIN_BENCH_DURATION=10   seconds per run (warm-up + measured)
#   ADMIN_BENCH_PRODUCERS=16 ADMIN_BENCH_CONSUMERS=16
#   ADMIN_BENCH_INTERVAL=1           seconds between two polls of the poller
#   ADMIN_BENCH_PATHS="/metrics /api/v1/broker /api/v1/queues"   what one poll fetches, in order
#                                    ("/status" alone: a control that runs the poller's processes
#                                    but asks the broker for next to nothing)
#   ADMIN_BENCH_WORKLOADS="A B"
#   ADMIN_BENCH_STOMP_PORT=61695 ADMIN_BENCH_ADMIN_PORT=61696
#   ADMIN_BENCH_DIR=/var/tmp         where the work dir (and so the journal) goes: the disk measured
#   ADMIN_BENCH_BUILD=1              0: use the binaries already in $CARGO_TARGET_DIR/release
#
# Bounded: 2 workloads × 2 sides × REPEATS runs, each limited by timeout(1); every HTTP request by
# curl --max-time; the broker start by 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/bench-pairs.sh
. scripts/lib/bench-pairs.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
REPEATS="${ADMIN_BENCH_REPEATS:-3}"
WARMUP="${ADMIN_BENCH_WARMUP:-2}"
DURATION="${ADMIN_BENCH_DURATION:-10}"
PRODUCERS="${ADMIN_BENCH_PRODUCERS:-16}"
CONSUMERS="${ADMIN_BENCH_CONSUMERS:-16}"
INTERVAL_S="${ADMIN_BENCH_INTERVAL:-1}"
STOMP_PORT="${ADMIN_BENCH_STOMP_PORT:-61695}"
ADMIN_PORT="${ADMIN_BENCH_ADMIN_PORT:-61696}"
BASE_DIR="${ADMIN_BENCH_DIR:-/var/tmp}"
BUILD="${ADMIN_BENCH_BUILD:-1}"
read -r -a PATHS <<<"${ADMIN_BENCH_PATHS:-/metrics /api/v1/broker /api/v1/queues}"
WANTED="${ADMIN_BENCH_WORKLOADS:-A B}"
BUILD_TIMEOUT_S=3600
OP_TIMEOUT_S=20     # ferromq-bench --timeout: one broker operation / drain without progress
HTTP_TIMEOUT_S=2    # curl --max-time per request: a poll never outlives its second by much

die() { echo "bench-admin-overhead: error: $*" >&2; exit 1; }
is_seconds() { [[ "$1" =~ ^[0-9]+([.][0-9]+)?$ ]]; }
is_count() { [[ "$1" =~ ^[1-9][0-9]{0,2}$ ]]; }
is_seconds "$WARMUP" || die "ADMIN_BENCH_WARMUP=$WARMUP is not a number of seconds"
if ! is_seconds "$DURATION" || [ "$DURATION" = 0 ]; then die "ADMIN_BENCH_DURATION=$DURATION is not a positive number of seconds"; fi
if ! is_seconds "$INTERVAL_S" || [ "$INTERVAL_S" = 0 ]; then die "ADMIN_BENCH_INTERVAL=$INTERVAL_S is not a positive number of seconds"; fi
[[ "$REPEATS" =~ ^[1-9][0-9]?$ ]] || die "ADMIN_BENCH_REPEATS=$REPEATS is not 1-99"
[ "${#PATHS[@]}" -ge 1 ] || die "ADMIN_BENCH_PATHS is empty"
for p in "${PATHS[@]}"; do [[ "$p" =~ ^/[A-Za-z0-9/_.-]*$ ]] || die "ADMIN_BENCH_PATHS: '$p' is not a path"; done
is_count "$PRODUCERS" || die "ADMIN_BENCH_PRODUCERS=$PRODUCERS is not 1-999"
is_count "$CONSUMERS" || die "ADMIN_BENCH_CONSUMERS=$CONSUMERS is not 1-999"
for tool in curl python3 timeout; do command -v "$tool" >/dev/null 2>&1 || die "$tool not found"; done
# Outer wall-clock limit of one run (whole seconds, for timeout(1)); the tool bounds every
# operation by --timeout, this only catches the unexpected.
RUN_LIMIT_S=$(awk -v w="$WARMUP" -v d="$DURATION" -v t="$OP_TIMEOUT_S" 'BEGIN { printf "%d", w + d + 4 * t + 30 }')

if [ "$BUILD" = 1 ]; then
  echo "==> build (release): ferromq, ferromq-bench" >&2
  timeout "$BUILD_TIMEOUT_S" cargo build --release --locked -q -p ferromq -p ferromq-bench \
    || die "cargo build --release failed or took longer than ${BUILD_TIMEOUT_S}s"
fi
FERROMQ="$CARGO_TARGET_DIR/release/ferromq"
BENCH="$CARGO_TARGET_DIR/release/ferromq-bench"
if [ ! -x "$FERROMQ" ] || [ ! -x "$BENCH" ]; then die "built binaries not found in $CARGO_TARGET_DIR/release"; fi

for port in "$STOMP_PORT" "$ADMIN_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "127.0.0.1:$port is taken"; fi
done
mkdir -p "$BASE_DIR"
work="$(mktemp -d "$BASE_DIR/ferromq-admin-overhead.XXXXXX")"
mkdir -p "$work/raw" "$work/data"
broker_pid=""
poller_pid=""
cleanup() {
  local rc=$?
  stop_pid "$poller_pid"
  stop_pid "$broker_pid"
  rm -rf "$work/data"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> ferromq serve (journal, sync=always) STOMP 127.0.0.1:$STOMP_PORT, admin 127.0.0.1:$ADMIN_PORT" >&2
FERROMQ__BROKER__DATA_DIR="$work/data" \
  FERROMQ__TRANSPORTS__STOMP="127.0.0.1:$STOMP_PORT" \
  FERROMQ__TRANSPORTS__ADMIN="127.0.0.1:$ADMIN_PORT" \
  FERROMQ__STORE__BACKEND=journal FERROMQ__STORE__SYNC=always \
  "$FERROMQ" --log warn serve </dev/null >"$work/ferromq.log" 2>&1 &
broker_pid=$!
up=0
for _ in $(seq 1 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$STOMP_PORT") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$ADMIN_PORT") 2>/dev/null; then
    up=1; break
  fi
  kill -0 "$broker_pid" 2>/dev/null || break
  sleep 0.1
done
[ "$up" = 1 ] || die "broker did not listen within 30 s: $(tail -n 3 "$work/ferromq.log" | tr '\n' ' ')"

ADMIN="http://127.0.0.1:$ADMIN_PORT"
# Every path must answer 200 before anything is measured: a poller that only collects 404s
# would measure nothing.
for p in "${PATHS[@]}"; do
  code=$(curl -s -o /dev/null --max-time "$HTTP_TIMEOUT_S" -w '%{http_code}' "$ADMIN$p" || true)
  [ "$code" = 200 ] || die "GET $p answered '$code', not 200"
done

# poller LOG: until killed (and at most RUN_LIMIT_S / INTERVAL_S polls), one poll per
# INTERVAL_S on a fixed schedule: the three requests in order over one kept-alive connection (as
# a browser and Prometheus keep theirs), one line per request to LOG:
# unix_ms path status bytes seconds.
poller() {
  local log=$1 ticks_max next now_ns
  ticks_max=$(awk -v l="$RUN_LIMIT_S" -v i="$INTERVAL_S" 'BEGIN { printf "%d", l / i + 1 }')
  local -a curl_args=(-s --max-time "$HTTP_TIMEOUT_S" -w '%{url_effective} %{http_code} %{size_download} %{time_total}\n')
  for p in "${PATHS[@]}"; do curl_args+=(-o /dev/null "$ADMIN$p"); done
  next=$(date +%s%N)
  for _ in $(seq 1 "$ticks_max"); do
    now_ns=$(date +%s%N)
    curl "${curl_args[@]}" 2>/dev/null \
      | awk -v t=$((now_ns / 1000000)) -v a="$ADMIN" '{ sub("^" a, "", $1); print t, $0 }' >>"$log" || true
    next=$((next + $(awk -v i="$INTERVAL_S" 'BEGIN { printf "%d", i * 1e9 }')))
    now_ns=$(date +%s%N)
    if [ "$next" -gt "$now_ns" ]; then
      sleep "$(awk -v d=$((next - now_ns)) 'BEGIN { printf "%.3f", d / 1e9 }')"
    else
      next=$now_ns # behind schedule: no burst of catch-up polls
    fi
  done
}

write_meta "$work/meta.env" "$work" "ferromq_version=$("$FERROMQ" --version 2>/dev/null)"

# workload: name, description, ferromq-bench run arguments besides url and destination.
SHAPE="--receipt --window 1 -p $PRODUCERS -c $CONSUMERS --ack client-individual --size 1024"
SHAPE="$SHAPE --warmup $WARMUP --duration $DURATION --timeout $OP_TIMEOUT_S"
WORKLOADS=("A|persistent, receipt window 1, $PRODUCERS producers → $CONSUMERS consumers|--persistent $SHAPE"
  "B|non-persistent, receipt window 1, $PRODUCERS producers → $CONSUMERS consumers|$SHAPE")

results="$work/results.tsv"
: >"$results"
failures=0
# run W DESC ARGS REP SIDE: one bounded run on its own queue; SIDE on = with the poller.
run() {
  local w=$1 desc=$2 args=$3 rep=$4 side=$5 out="$work/raw/$1.$5.$4"
  echo "==> $w ($desc), admin traffic $side, repeat $rep/$REPEATS" >&2
  if [ "$side" = on ]; then
    : >"$out.polls"
    poller "$out.polls" &
    poller_pid=$!
  fi
  local ok=1
  # shellcheck disable=SC2086 # $args is a list of arguments
  timeout "$RUN_LIMIT_S" "$BENCH" run --url "127.0.0.1:$STOMP_PORT" -d "/queue/adm.$w.$rep.$side" $args \
    --json --quiet </dev/null >"$out.json" 2>"$out.log" || ok=0
  if [ "$side" = on ]; then
    stop_pid "$poller_pid"
    poller_pid=""
  fi
  if [ "$ok" = 0 ]; then
    echo "bench-admin-overhead: FAILED $w.$side.$rep: $(grep -m1 '^Error' "$out.log" || tail -n 1 "$out.log")" >&2
    failures=$((failures + 1))
    return 0
  fi
  python3 - "$w" "$side" "$rep" "$out" >>"$results" <<'EOF' || { echo "bench-admin-overhead: FAILED $w.$side.$rep: unreadable report" >&2; failures=$((failures + 1)); return 0; }
import json, sys
w, side, rep, out = sys.argv[1:5]
r = json.load(open(out + ".json"))
lat = r.get("send_latency") or {}
polls = ok = 0
scrape = []
if side == "on":
    for line in open(out + ".polls"):
        f = line.split()
        if len(f) != 5:
            continue
        polls += 1
        ok += f[2] == "200"
        if f[1] == "/metrics":
            scrape.append(float(f[4]))
scrape.sort()
print("\t".join(str(x) for x in (
    w, side, rep, r["sent"]["msgs_per_s"], r["delivered"]["msgs_per_s"],
    lat.get("p50_us", ""), lat.get("p99_us", ""), r["undelivered_after_drain"], polls, ok,
    scrape[len(scrape) // 2] if scrape else "")))
EOF
  tail -n 1 "$results" | awk -F'\t' '{ printf "    receipted %.0f msg/s, delivered %.0f msg/s, send p50 %s us, p99 %s us, requests %s (200: %s)\n", $4, $5, $6, $7, $9, $10 }' >&2
}

run_pairs "$REPEATS" "$WANTED" off on
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/meta.env"
kill -0 "$broker_pid" 2>/dev/null || die "the broker exited during the runs: $(tail -n 3 "$work/ferromq.log" | tr '\n' ' ')"

python3 - "$results" "$work/meta.env" "$REPEATS" "${PATHS[*]} every ${INTERVAL_S} s" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
meta = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[2]) if "=" in l)
repeats = int(sys.argv[3])
paths = sys.argv[4]
names = {"A": "A. persistent", "B": "B. non-persistent"}
def mmm(xs, fmt="{:,.0f}"):
    if not xs:
        return "n/a"
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"
print(f"<!-- {meta.get('date')}, git {meta.get('rev')}, load {meta.get('load_before')} → {meta.get('load_after')} -->")
print("| workload | admin traffic | runs | receipted msg/s | delivered msg/s | send p50 µs | send p99 µs | admin requests per run (all 200) | /metrics scrape s (median) |")
print("|---|---|---|---|---|---|---|---|---|")
summary = []
for w in ("A", "B"):
    med = {}
    spread = {}
    if not any(r[0] == w for r in rows):
        continue
    for side in ("off", "on"):
        rs = [r for r in rows if r[0] == w and r[1] == side]
        sent = [float(r[3]) for r in rs]
        deliv = [float(r[4]) for r in rs]
        p50 = [float(r[5]) for r in rs if r[5]]
        p99 = [float(r[6]) for r in rs if r[6]]
        reqs = [int(r[8]) for r in rs]
        allok = all(r[8] == r[9] for r in rs)
        scr = [float(r[10]) for r in rs if r[10]]
        label = "none" if side == "off" else paths
        req = "–" if side == "off" else f"{mmm(reqs, '{:.0f}')} ({'yes' if allok else 'NO'})"
        print(f"| {names[w]} | {label} | {len(rs)}/{repeats} | {mmm(sent)} | {mmm(deliv)} | {mmm(p50)} | {mmm(p99)} | {req} | {mmm(scr, '{:.3f}') if scr else '–'} |")
        if sent:
            med[side] = statistics.median(sent)
            spread[side] = (min(sent), max(sent))
    if "off" in med and "on" in med:
        d = 100.0 * (med["on"] - med["off"]) / med["off"]
        overlap = spread["on"][0] <= spread["off"][1] and spread["off"][0] <= spread["on"][1]
        noise = max((hi - lo) / statistics.median([lo, hi]) for lo, hi in spread.values()) * 100.0
        summary.append(f"- {names[w]}: with admin traffic {d:+.1f} % (median receipted msg/s); "
                       f"min–max ranges {'overlap' if overlap else 'do NOT overlap'}; widest run-to-run spread {noise:.1f} %.")
print()
print("\n".join(summary))
EOF
echo "bench-admin-overhead: raw reports, poller logs and broker log in $work" >&2
[ "$failures" = 0 ] || die "$failures run(s) failed (see above)"
