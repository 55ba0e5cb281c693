#!/usr/bin/env bash
# The profiles of bench/results/profiles.md, section 2: CPU per request of
# hello over HTTP, by thread (HTTP threads, guest workers, the client, idle),
# for bare hyper and wasmbox, from system-wide `perf` samples while `wrk`
# loads the server. Needs root (kernel symbols) and installs perf and wrk.
#   ./bench/profile.sh            c=16 and c=1, defaults and isolation none
# Output: one table per concurrency on stdout; perf data in $OUT (default
# /tmp/wasmbox-profile).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/wasmbox-profile}
SECS=${SECS:-6}
HZ=2999
command -v wrk >/dev/null && command -v perf >/dev/null ||
  apt-get install -y wrk linux-perf >/dev/null
./functions/build.sh >/dev/null
cargo build --release --locked -p wasmbox -p wasmbox-bench
bin=target/release
mkdir -p "$OUT"

# profile NAME CONCURRENCY PATH PORT -- SERVER COMMAND...
profile() {
  local name=$1 conns=$2 path=$3 port=$4
  shift 5
  "$@" >/dev/null 2>&1 &
  local pid=$! up=""
  for _ in $(seq 200); do
    curl -sf -o /dev/null "http://127.0.0.1:$port$path" && { up=1; break; }
    sleep 0.05
  done
  [ -n "$up" ] || { kill "$pid"; echo "$name: the server did not answer" >&2; exit 1; }
  local url="http://127.0.0.1:$port$path" hdr="cpu_quota: 1000"
  wrk -t1 -c"$conns" -d2s -H "$hdr" "$url" >/dev/null
  perf record -q -F $HZ -a -o "$OUT/$name.data" -- \
    wrk -t1 -c"$conns" -d"${SECS}s" -H "$hdr" "$url" >"$OUT/$name.wrk" 2>/dev/null
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

# table NAME...: µs of CPU per request by thread kind, from the samples'
# thread names and whether they were in the kernel.
table() {
  for name in "$@"; do
    local reqs
    reqs=$(awk -v s="$SECS" '/Requests\/sec/{print $2 * s}' "$OUT/$name.wrk")
    perf script -i "$OUT/$name.data" -F comm,ip,dso --hide-call-graph 2>/dev/null |
      awk -v name="$name" -v reqs="$reqs" -v hz=$HZ -v secs="$SECS" '
        NF >= 3 {
          comm = $1; dso = $NF
          side = (dso ~ /kernel/) ? "kernel" : "user"
          if (comm ~ /^wrk/) who = "client (wrk)"
          else if (comm ~ /^tokio/ || comm ~ /^wasmbox-bench/) who = "HTTP threads"
          else if (comm ~ /^wasmbox-worker/) who = "guest workers"
          else if (comm == "swapper") { who = "idle"; side = "" }
          else who = "other"
          n[who " " side]++
          if (who != "idle") busy++
        }
        END {
          for (k in n) printf "%s\t%s\t%.1f\n", name, k, n[k] / hz / reqs * 1e6
          printf "%s\tbusy, all\t%.1f\n", name, busy / hz / reqs * 1e6
          printf "%s\treq/s (under perf)\t%.0f\n", name, reqs / secs
        }'
  done | awk -F'\t' -v names="$*" '
    # One markdown row per thread kind, one column per server.
    { v[$2, $1] = $3; if (!($2 in seen)) { seen[$2] = 1; kinds[++k] = $2 } }
    END {
      m = split(names, col, " ")
      line = "| µs of CPU per request |"; sep = "|---|"
      for (j = 1; j <= m; j++) { line = line " " col[j] " |"; sep = sep "---|" }
      print line; print sep
      for (i = 1; i <= k; i++) {
        line = "| " kinds[i] " |"
        for (j = 1; j <= m; j++) line = line " " ((kinds[i], col[j]) in v ? v[kinds[i], col[j]] : "-") " |"
        print line
      }
    }'
}

serve=("$bin/wasmbox" serve --functions functions --log-level warn --prewarm-poll 0)
for c in 16 1; do
  profile "bare$c" $c / 9411 -- "$bin/wasmbox-bench" bare-hyper --port 9411
  profile "defaults$c" $c /hello 9412 -- "${serve[@]}" --port 9412
  profile "none$c" $c /hello 9413 -- "${serve[@]}" --port 9413 --cpu-isolation none
  echo "== c=$c"
  table "bare$c" "none$c" "defaults$c"
done
