# Shared by the A/B benchmark scripts that compare two sides of one broker in interleaved pairs
# (scripts/bench-admin-overhead.sh, scripts/bench-tls.sh). Source it; it defines functions only.

# stop_pid PID: TERM, wait up to 10 s, then KILL; only for processes the script started.
stop_pid() {
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# write_meta FILE DIR [KEY=VALUE...]: the run's conditions (machine, disk of DIR, git revision,
# load) as KEY=VALUE lines, extra pairs appended; echoed to stderr as comments.
write_meta() {
  local file=$1 dir=$2
  shift 2
  {
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "kernel=$(uname -sr)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) online CPUs)"
    echo "memory=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "disk=$(df -PT "$dir" | awk 'NR==2 {print $1 " (" $2 ")"}')"
    echo "rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
    echo "rustc=$(rustc -V 2>/dev/null || echo unknown)"
    for kv in "$@"; do echo "$kv"; done
    echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$file"
  sed 's/^/# /' "$file" >&2
}

# run_pairs REPEATS WANTED SIDE_A SIDE_B: for each repeat, for each entry "W|description|args"
# of the WORKLOADS array whose W is in WANTED (space-separated), calls `run W DESC ARGS REP SIDE`
# for both sides back to back, A first in odd repeats and B first in even ones, so that a drift
# of the shared machine does not always favour one side.
run_pairs() {
  local repeats=$1 wanted=$2 a=$3 b=$4 rep order wl w desc args side
  for rep in $(seq 1 "$repeats"); do
    if [ $((rep % 2)) = 1 ]; then order="$a $b"; else order="$b $a"; fi
    for wl in "${WORKLOADS[@]}"; do
      IFS='|' read -r w desc args <<<"$wl"
      case " $wanted " in *" $w "*) ;; *) continue ;; esac
      for side in $order; do
        run "$w" "$desc" "$args" "$rep" "$side"
        sleep 1
      done
    done
  done
}
