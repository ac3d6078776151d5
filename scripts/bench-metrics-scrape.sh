#!/usr/bin/env bash
# What one Prometheus scrape of `/metrics` costs with many queues (issue 17: cardinality and
# the admin endpoint's cost). One `ferromq serve` (store `journal`, the default `store.sync`),
# STOMP and `transports.admin` on loopback; QUEUES queues are created by one persistent SEND
# each (one STOMP connection, a RECEIPT on the last), then `/metrics` is fetched SCRAPES times,
# one request at a time, by curl over a fresh connection each: curl's `time_total` (request
# sent to last byte received: the broker gathers the counters of every destination, renders
# the text and sends it) and the body's size. Then the same with `/api/v1/queues` (what the
# console's queue page polls) for comparison.
#
# Run once with the default `admin.metrics_destinations_max` (1000: the rest summed under
# `_other`) and once with it at QUEUES (every queue its own series).
#
#   scripts/bench-metrics-scrape.sh            # release build (`cargo build --release`)
#
# Environment (all optional):
#   CARGO_TARGET_DIR        build directory (default: $HOME/.cache/ferromq/target)
#   METRICS_BENCH_PROFILE=release   or `debug` (unoptimized: much slower, only for a quick look)
#   METRICS_BENCH_BUILD=1   0: use the binary already built
#   METRICS_BENCH_QUEUES=5000 METRICS_BENCH_SCRAPES=20
#   METRICS_BENCH_CARGO_ARGS  more `cargo build` arguments, e.g. `--no-default-features` (the
#                           store backends and HA modes are not used here; it builds faster)
#
# Prints one markdown table row per (cap, endpoint) on stdout: median and max of time_total in
# ms, and the body size in bytes. Broker logs stay in the work dir printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$HOME/.cache/ferromq/target}"
profile="${METRICS_BENCH_PROFILE:-release}"
queues="${METRICS_BENCH_QUEUES:-5000}"
scrapes="${METRICS_BENCH_SCRAPES:-20}"
if [ "${METRICS_BENCH_BUILD:-1}" = 1 ]; then
    flag=()
    [ "$profile" = release ] && flag=(--release)
    # shellcheck disable=SC2086 # word-split on purpose: several arguments
    cargo build "${flag[@]}" -p ferromq --bin ferromq ${METRICS_BENCH_CARGO_ARGS:-} >&2
fi
bin="$target/$profile/ferromq"
[ -x "$bin" ] || { echo "no $bin" >&2; exit 1; }
work="$(mktemp -d /var/tmp/ferromq-metrics-bench.XXXXXX)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() { # $1: metrics_destinations_max
    local cap="$1" dir="$work/cap-$1" stomp admin pid
    stomp=$(free_port); admin=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/ferromq.toml" <<EOF
[broker]
name = "metrics-bench"
data_dir = "$dir/data"
[transports]
stomp = "127.0.0.1:$stomp"
admin = "127.0.0.1:$admin"
[store]
backend = "journal"
[admin]
metrics_destinations_max = $cap
EOF
    "$bin" serve --config "$dir/ferromq.toml" >"$dir/broker.log" 2>&1 &
    pid=$!
    trap 'kill $pid 2>/dev/null || true' RETURN
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$admin/status" >/dev/null 2>&1 && break
        sleep 0.1
    done
    # One connection: a persistent SEND to each queue, a RECEIPT on the last one.
    python3 - "$stomp" "$queues" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
buf = b""
while b"\0" not in buf:
    buf += s.recv(4096)
assert buf.startswith(b"CONNECTED"), buf
out = bytearray()
for i in range(n):
    hdr = f"SEND\ndestination:/queue/bench.q{i:05d}\npersistent:true\n"
    if i == n - 1:
        hdr += "receipt:done\n"
    out += (hdr + "\nx\0").encode()
s.sendall(out)
buf = b""
while b"RECEIPT" not in buf:
    chunk = s.recv(65536)
    if not chunk:
        raise SystemExit("connection closed before the receipt: " + buf.decode(errors="replace"))
    buf += chunk
s.sendall(b"DISCONNECT\n\n\0")
s.close()
PY
    for path in /metrics /api/v1/queues; do
        local times=() size=0
        for _ in $(seq "$scrapes"); do
            read -r t sz < <(curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "http://127.0.0.1:$admin$path")
            times+=("$t"); size="$sz"
        done
        printf '%s\n' "${times[@]}" | sort -n | awk -v cap="$cap" -v path="$path" -v size="$size" -v q="$queues" '
            { a[NR] = $1 * 1000 }
            END { med = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
                  printf "| %d | %d | `%s` | %.1f | %.1f | %d |\n", q, cap, path, med, a[NR], size }'
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "| queues | metrics_destinations_max | endpoint | median ms | max ms | bytes |"
echo "|---|---|---|---|---|---|"
run 1000
run "$queues"
echo "work dir: $work" >&2
