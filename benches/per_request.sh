#!/usr/bin/env bash
# The proxy's work per getJob request (registry hit; OPERATION=createJob for createJob), in two
# counts that do not move with the load of this shared machine, for comparing two builds:
#   - instructions, counted by callgrind (the proxy's own CPU work; kernel work is not counted).
#     Each binary serves wrk (8 connections, or CONNECTIONS) twice under callgrind, for 2 s and
#     for 8 s; the difference between the two runs, divided by the difference in requests,
#     cancels start-up and shutdown. Valgrind hides the CPU's SHA extensions, so the registry key's SHA-256 counts
#     about 14k instructions here that natively are a few hundred cycles.
#   - system calls, by name, counted by `perf stat` (kernel tracepoints) while the binary runs
#     natively under wrk at 32 connections, pinned as in benches/e2e.sh: proxy and emulator on
#     core 0 (so the proxy runs its one-core runtime), wrk on core 1. strace would slow the proxy
#     enough to change which system calls it makes.
#
#   [OPERATION=createJob] [CONNECTIONS="8 32 256"] [GOVERNOR=both] \
#     bash benches/per_request.sh [BINARY ...]  (default binary: target/release/sfbulk-proxy, built)
#
# CONNECTIONS: wrk's connections for the callgrind runs (default 8; several are measured in turn).
# GOVERNOR=both: each count is made with the org-budget guard on (its default) and off
# (SFBULK__GOVERNOR__ENABLED=false), on then off for each count in turn, with their ratio.
#
# The emulator runs natively as the upstream.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need valgrind || ! need perf || ! need taskset || ! need wrk || ! need curl; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq &&
    $sudo_cmd apt-get install -y -qq valgrind linux-perf util-linux wrk curl >/dev/null
fi
if [ $# -eq 0 ]; then
  cargo build --release --quiet
  set -- target/release/sfbulk-proxy
fi

work=$(mktemp -d /tmp/sfbulk-per-request-XXXXXX)
token='00DBENCHMARK001!benchmark-session'
emulator=127.0.0.1:18291
proxy=127.0.0.1:18290
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

wait_ready() {
  for _ in $(seq 200); do curl -sf -o /dev/null "http://$1/healthz" && return 0; sleep 0.05; done
  echo "$1 did not start" >&2; exit 1
}

# Starts the proxy, run by the command given (a binary and `serve`, behind valgrind or not).
start_proxy() {
  rm -rf "$work/registry"
  SFBULK__SERVER__LISTEN=$proxy SFBULK__SALESFORCE__ALLOWED_ORIGINS=http://$emulator \
    SFBULK__SALESFORCE__TOKEN_ENDPOINT_HOSTNAME=http://$emulator SFBULK__REGISTRY__DIR="$work/registry" \
    "$@" >"$work/proxy.log" 2>"$work/tool.log" &
  proxy_pid=$!
  wait_ready $proxy
}

OPERATION=${OPERATION:-getJob}
case $OPERATION in
  getJob | createJob) ;;
  *) echo "OPERATION is getJob or createJob" >&2; exit 2 ;;
esac

# Prints the number of requests wrk made in the given seconds with the given connections.
load() {
  ${LOAD:-} wrk -t1 -c"$2" -d"$1s" -s "$work/request.lua" "http://$proxy/services/salesforcebulk_$OPERATION" |
    sed -n 's/^ *\([0-9]*\) requests in.*/\1/p'
}

CONNECTIONS=${CONNECTIONS:-8}
case ${GOVERNOR:-on} in
  on) guards=(on) ;;
  both) guards=(on off) ;;
  *) echo "GOVERNOR is on or both" >&2; exit 2 ;;
esac

# The command that runs the proxy with the guard as given (on: as configured, its default).
guarded() {
  if [ "$1" = off ]; then echo "env SFBULK__GOVERNOR__ENABLED=false"; fi
}

# One callgrind run: prints "requests instructions".
instructions() {
  local binary=$1 seconds=$2 connections=$3 guard=$4 out="$work/callgrind.out"
  rm -f "$out"
  # shellcheck disable=SC2046
  start_proxy $(guarded "$guard") valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" serve
  local requests
  requests=$(load "$seconds" "$connections")
  kill -INT $proxy_pid; wait $proxy_pid 2>/dev/null || true
  echo "$requests $(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out")"
}

# System calls per request, in all and by name, from a native run at 32 connections.
SYSCALLS="recvfrom read writev write sendto epoll_wait epoll_ctl futex accept4"
system_calls() {
  # shellcheck disable=SC2046
  start_proxy $(guarded "$2") taskset -c 0 "$1" serve
  LOAD="taskset -c 1" load 1 32 >/dev/null
  local events="-e raw_syscalls:sys_enter" name
  for name in $SYSCALLS; do events="$events -e syscalls:sys_enter_$name"; done
  # shellcheck disable=SC2086
  perf stat -x, $events -p $proxy_pid -o "$work/perf.txt" 2>"$work/perf.log" &
  local perf_pid=$! requests
  sleep 0.5
  requests=$(LOAD="taskset -c 1" load 4 32)
  kill -INT $perf_pid; wait $perf_pid 2>/dev/null || true
  kill -INT $proxy_pid; wait $proxy_pid 2>/dev/null || true
  # perf stat -x, rows: count,unit,event,...
  awk -F, -v n="$requests" '$3 ~ /sys_enter/ && $1 ~ /^[0-9]+$/ {
      name = $3; sub(/.*sys_enter_?/, "", name); if (name == "") name = "all"
      if ($1 / n >= 0.01) printf "%s %.2f  ", name, $1 / n }
    END { print "(system calls per request)" }' "$work/perf.txt"
}

for binary in "$@"; do
  SFBULK__EMULATOR__LISTEN=$emulator SFBULK__EMULATOR__ACCESS_TOKEN=$token SFBULK__LOG__LEVEL=warn \
    taskset -c 0 "$binary" emulator >"$work/emulator.log" 2>&1 &
  pids+=($!)
  wait_ready $emulator
  job=$(curl -s -X POST -H "X-SFDC-Session: $token" -H 'Content-Type: application/xml' \
    -d '<jobInfo xmlns="http://www.force.com/2009/06/asyncapi/dataload"><operation>insert</operation><object>Contact</object></jobInfo>' \
    "http://$emulator/services/async/34.0/job" | sed -n 's|.*<id>\(.*\)</id>.*|\1|p')
  body="<apiVersion>34.0</apiVersion><accessToken>$token</accessToken><apiUrl>http://$emulator</apiUrl><refreshToken>sfbulk-demo-refresh-token</refreshToken><clientId>sfbulk-demo-client-id</clientId><clientSecret>sfbulk-demo-client-secret</clientSecret><intervalTime>86400000</intervalTime><registryPath>connectors/SalesforceBulk</registryPath>"
  if [ "$OPERATION" = getJob ]; then
    body="<getJob>$body<jobId>$job</jobId></getJob>"
  else
    body="<createJob>$body<operation>insert</operation><object>Contact</object><contentType>CSV</contentType></createJob>"
  fi
  printf 'wrk.method = "POST"\nwrk.body = "%s"\nwrk.headers["Content-Type"] = "text/xml"\n' "$body" >"$work/request.lua"
  for connections in $CONNECTIONS; do
    counts=()
    for guard in "${guards[@]}"; do
      read -r short_requests short_instructions < <(instructions "$binary" 2 "$connections" "$guard")
      read -r long_requests long_instructions < <(instructions "$binary" 8 "$connections" "$guard")
      per_request=$(( (long_instructions - short_instructions) / (long_requests - short_requests) ))
      counts+=("$per_request")
      echo "$binary: $per_request instructions per $OPERATION request at $connections connections," \
        "guard $guard ($short_requests and $long_requests requests)"
    done
    if [ ${#counts[@]} -eq 2 ]; then
      echo "$binary: guard on / off at $connections connections:" \
        "$(awk -v on="${counts[0]}" -v off="${counts[1]}" 'BEGIN { printf "%.3f", on / off }')"
    fi
  done
  for guard in "${guards[@]}"; do
    echo "$binary: guard $guard: $(system_calls "$binary" "$guard")"
  done
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
done
