#!/usr/bin/env bash
# Instructions the proxy executes per getJob request (registry hit), counted by callgrind: a
# measure of the proxy's own CPU work that does not move with the load of this shared machine,
# for comparing two builds. Kernel work (system calls, TCP) is not counted.
#
#   bash benches/instructions.sh [BINARY ...]     (default: target/release/sfbulk-proxy, built)
#
# Each binary serves wrk (8 connections) twice under callgrind, for 2 s and for 8 s; the
# difference between the two runs, divided by the difference in requests, cancels start-up and
# shutdown. The emulator runs natively as the upstream.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need valgrind || ! need wrk || ! need curl; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq valgrind wrk curl >/dev/null
fi
if [ $# -eq 0 ]; then
  cargo build --release --quiet
  set -- target/release/sfbulk-proxy
fi

work=$(mktemp -d /tmp/sfbulk-instructions-XXXXXX)
token='00DBENCHMARK001!benchmark-session'
emulator=127.0.0.1:18291
proxy=127.0.0.1:18290
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

wait_ready() {
  for _ in $(seq 200); do curl -sf -o /dev/null "http://$1/healthz" && return 0; sleep 0.05; done
  echo "$1 did not start" >&2; exit 1
}

# One run: prints "requests instructions".
run() {
  local binary=$1 seconds=$2 out="$work/callgrind.out"
  rm -rf "$work/registry" "$out"
  SFBULK__SERVER__LISTEN=$proxy SFBULK__SALESFORCE__ALLOWED_ORIGINS=http://$emulator \
    SFBULK__SALESFORCE__TOKEN_ENDPOINT_HOSTNAME=http://$emulator SFBULK__REGISTRY__DIR="$work/registry" \
    valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" serve >"$work/proxy.log" 2>"$work/valgrind.log" &
  local pid=$!
  wait_ready $proxy
  local requests
  requests=$(wrk -t1 -c8 -d"${seconds}s" -s "$work/request.lua" "http://$proxy/services/salesforcebulk_getJob" |
    sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
  kill -INT $pid; wait $pid 2>/dev/null || true
  echo "$requests $(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out")"
}

for binary in "$@"; do
  SFBULK__EMULATOR__LISTEN=$emulator SFBULK__EMULATOR__ACCESS_TOKEN=$token SFBULK__LOG__LEVEL=warn \
    "$binary" emulator >"$work/emulator.log" 2>&1 &
  pids+=($!)
  wait_ready $emulator
  job=$(curl -s -X POST -H "X-SFDC-Session: $token" -H 'Content-Type: application/xml' \
    -d '<jobInfo xmlns="http://www.force.com/2009/06/asyncapi/dataload"><operation>insert</operation><object>Contact</object></jobInfo>' \
    "http://$emulator/services/async/34.0/job" | sed -n 's|.*<id>\(.*\)</id>.*|\1|p')
  body="<getJob><apiVersion>34.0</apiVersion><accessToken>$token</accessToken><apiUrl>http://$emulator</apiUrl><refreshToken>sfbulk-demo-refresh-token</refreshToken><clientId>sfbulk-demo-client-id</clientId><clientSecret>sfbulk-demo-client-secret</clientSecret><intervalTime>86400000</intervalTime><registryPath>connectors/SalesforceBulk</registryPath><jobId>$job</jobId></getJob>"
  printf 'wrk.method = "POST"\nwrk.body = "%s"\nwrk.headers["Content-Type"] = "text/xml"\n' "$body" >"$work/request.lua"
  read -r short_requests short_instructions < <(run "$binary" 2)
  read -r long_requests long_instructions < <(run "$binary" 8)
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  per_request=$(( (long_instructions - short_instructions) / (long_requests - short_requests) ))
  echo "$binary: $per_request instructions per getJob request ($short_requests and $long_requests requests)"
done
