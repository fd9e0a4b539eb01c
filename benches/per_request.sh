#!/usr/bin/env bash
# The proxy's work per getJob request (registry hit; OPERATION=createJob for createJob), in two
# counts that do not move with the load of this shared machine, for comparing two builds:
#   - instructions, counted by callgrind (the proxy's own CPU work; kernel work is not counted).
#     Each binary serves wrk (8 connections, or CONNECTIONS) under callgrind: a warm-up (every
#     connection opened, every TLS handshake made), then callgrind's counts are zeroed and 6 s more
#     of the same wrk run are counted, over the requests the proxy answered in them. Valgrind hides the CPU's SHA extensions, so the registry key's SHA-256 counts
#     about 14k instructions here that natively are a few hundred cycles.
#   - system calls, by name, counted by `perf stat` (kernel tracepoints) while the binary runs
#     natively under wrk at 32 connections (or at each of CONNECTIONS), pinned as in
#     benches/e2e.sh: proxy and emulator on core 0 (so the proxy runs its one-core runtime), wrk on
#     core 1. strace would slow the proxy enough to change which system calls it makes. A native
#     run without the tracepoints (which slow every system call) gives the proxy's CPU time per
#     request (user and system, from /proc, in µs): time, unlike instructions, shows what waiting,
#     contention and cache misses cost, but moves with the machine's load. (This machine's perf
#     counts no cycles; where it does, `perf stat -e cycles -p PID` over the same window adds them.)
#
#   [OPERATION=createJob] [CONNECTIONS="8 32 256"] [GOVERNOR=both] [UPSTREAM=tls] [REPEAT=3] \
#     bash benches/per_request.sh [BINARY ...]  (default binary: target/release/sfbulk-proxy, built)
#
# CONNECTIONS: wrk's connections for the callgrind runs (default 8; several are measured in turn)
# and for the native runs (default 32).
# REPEAT: how many times each instruction count is made (default 1), the binaries taking turns;
# the summary gives each binary's median and range, and its ratio to the first binary's.
# GOVERNOR=both: each count is made with the org-budget guard on (its default) and off
# (SFBULK__GOVERNOR__ENABLED=false), on then off for each count in turn, with their ratio.
# PROFILE_DIR=dir: each callgrind run's profile (the counted part) is kept there, for callgrind_annotate
# (build with symbols: CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only).
# UPSTREAM=tls: the emulator serves HTTPS (a certificate of a CA made for the run by openssl) and
# the proxy trusts that CA (salesforce.ca_file): the TLS-upstream case of benches/e2e.sh.
#
# The emulator runs natively as the upstream.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need valgrind || ! need perf || ! need taskset || ! need wrk || ! need curl || ! need openssl; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq &&
    $sudo_cmd apt-get install -y -qq valgrind linux-perf util-linux wrk curl openssl >/dev/null
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
proxy_pid=""
trap 'kill "${pids[@]}" $proxy_pid 2>/dev/null || true' EXIT

wait_ready() {
  for _ in $(seq 200); do curl -sf -o /dev/null ${2:+--cacert "$2"} "${3:-http}://$1/healthz" && return 0; sleep 0.05; done
  echo "$1 did not start" >&2; exit 1
}

UPSTREAM=${UPSTREAM:-plain}
case $UPSTREAM in
  plain) scheme=http; emulator_tls=(); proxy_tls=(); ca="" ;;
  tls)
    scheme=https ca="$work/ca.pem"
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >"$work/cert.ext"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/ca.key" -out "$ca" -subj "/CN=bench CA" -days 2 \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.csr" -subj /CN=127.0.0.1 2>/dev/null
    openssl x509 -req -in "$work/cert.csr" -CA "$ca" -CAkey "$work/ca.key" -CAcreateserial -out "$work/cert.pem" \
      -days 2 -extfile "$work/cert.ext" 2>/dev/null
    emulator_tls=(SFBULK__EMULATOR__TLS_CERT_FILE="$work/cert.pem" SFBULK__EMULATOR__TLS_KEY_FILE="$work/key.pem")
    proxy_tls=(SFBULK__SALESFORCE__CA_FILE="$ca") ;;
  *) echo "UPSTREAM is plain or tls" >&2; exit 2 ;;
esac

# Starts the proxy, run by the command given (a binary and `serve`, behind valgrind or not).
start_proxy() {
  rm -rf "$work/registry"
  # The requests are counted from the access lines, so the log is text at info whatever the shell says.
  env -u RUST_LOG "${proxy_tls[@]}" SFBULK__LOG__FORMAT=text SFBULK__LOG__LEVEL=info \
    SFBULK__SERVER__LISTEN=$proxy SFBULK__SALESFORCE__ALLOWED_ORIGINS=$scheme://$emulator \
    SFBULK__SALESFORCE__TOKEN_ENDPOINT_HOSTNAME=$scheme://$emulator SFBULK__REGISTRY__DIR="$work/registry" \
    "$@" >"$work/proxy.log" 2>"$work/tool.log" &
  proxy_pid=$!
  wait_ready $proxy
}

# Stops the proxy started last.
stop_proxy() {
  kill -INT "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true
  proxy_pid=""
}

# The connector requests answered between two counts of the access lines; a run that answered
# none (a proxy that did not serve, a log that changed its form) stops the script.
served() {
  if [ "$2" -le "$1" ]; then
    echo "no requests were answered (see $work/proxy.log and $work/tool.log)" >&2
    exit 1
  fi
  echo $(($2 - $1))
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

# The native runs (system calls, CPU time) at each of CONNECTIONS when it is given, else at 32.
NATIVE_CONNECTIONS=${CONNECTIONS:-32}
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

# One callgrind run: prints "requests instructions" for the requests served in `seconds` of one
# wrk run, after a warm-up in that same run long enough for every connection, to the caller and to
# the emulator, to be open and its TLS handshake made (under valgrind a handshake takes a good part
# of a second): callgrind's counts are zeroed when it ends, and dumped `seconds` later, wrk still
# running. A second wrk run would not do: when wrk stops, the requests it had in flight are cut
# off, and so are their connections to the emulator, which the next run would open again inside
# the count. The requests are the proxy's access lines written meanwhile.
instructions() {
  local binary=$1 seconds=$2 connections=$3 guard=$4 out="$work/callgrind.out"
  local warm=$((2 + connections / 16))
  rm -f "$out" "$out".*
  # shellcheck disable=SC2046
  start_proxy $(guarded "$guard") taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" serve
  LOAD="taskset -c 1" load $((warm + seconds + 2)) "$connections" >/dev/null &
  local wrk_pid=$! before after
  sleep "$warm"
  callgrind_control -z "$proxy_pid" >/dev/null 2>&1
  before=$(answered)
  sleep "$seconds"
  callgrind_control -d "$proxy_pid" >/dev/null 2>&1
  after=$(answered)
  wait $wrk_pid
  stop_proxy
  if [ ! -s "$out.1" ]; then
    echo "callgrind wrote no counts for $binary (see $work/tool.log)" >&2
    exit 1
  fi
  if [ -n "${PROFILE_DIR:-}" ]; then
    mkdir -p "$PROFILE_DIR"
    cp "$out.1" "$PROFILE_DIR/callgrind.$5-$(basename "$binary").$connections.$guard.round$6.out"
  fi
  local requests
  requests=$(served "$before" "$after")
  echo "$requests $(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out.1")"
}

# The connector requests the proxy has answered so far (its access lines).
answered() {
  grep -c 'access_log: .*path="/services/' "$work/proxy.log" || true
}

# Which of the binaries given (1, 2, ...) the first argument is: profiles of two builds of the
# same name are kept apart.
position() {
  local binary=$1 i=0 each
  shift
  for each in "$@"; do
    i=$((i + 1))
    if [ "$each" = "$binary" ]; then echo $i; return; fi
  done
}

# CPU time per request (user and system, from /proc) and system calls per request, in all and by
# name, from native runs at the given connections. The CPU time is read within one wrk run after a
# warm-up, over the requests answered meanwhile (its access lines), both read at the same moments:
# a second wrk run would open again the connections the first one's end cut off. The system calls
# are counted by perf, attached first, over a wrk run of their own and wrk's count of it, as before
# issue 36 (perf's start cannot be lined up with the access lines).
SYSCALLS="recvfrom read writev write sendto epoll_wait epoll_ctl futex accept4"
system_calls() {
  local connections=$3 tick
  tick=$(getconf CLK_TCK)
  # shellcheck disable=SC2046
  start_proxy $(guarded "$2") taskset -c 0 "$1" serve
  LOAD="taskset -c 1" load 7 "$connections" >/dev/null &
  local wrk_pid=$! before after cpu_before cpu_after requests events="-e raw_syscalls:sys_enter" name
  sleep 2
  cpu_before=$(cpu_ticks) before=$(answered)
  sleep 4
  cpu_after=$(cpu_ticks) after=$(answered)
  wait $wrk_pid
  requests=$(served "$before" "$after")
  # shellcheck disable=SC2086
  set -- $cpu_before $cpu_after
  awk -v n="$requests" -v t="$tick" -v u0="$1" -v s0="$2" -v u1="$3" -v s1="$4" 'BEGIN {
    printf "CPU %.1f us (user %.1f) per request;  ", (u1 + s1 - u0 - s0) * 1e6 / t / n, (u1 - u0) * 1e6 / t / n }'
  for name in $SYSCALLS; do events="$events -e syscalls:sys_enter_$name"; done
  # shellcheck disable=SC2086
  perf stat -x, $events -p $proxy_pid -o "$work/perf.txt" 2>"$work/perf.log" &
  local perf_pid=$!
  sleep 0.5
  requests=$(LOAD="taskset -c 1" load 4 "$connections")
  kill -INT $perf_pid; wait $perf_pid 2>/dev/null || true
  stop_proxy
  # perf stat -x, rows: count,unit,event,...
  awk -F, -v n="$requests" '$3 ~ /sys_enter/ && $1 ~ /^[0-9]+$/ {
      name = $3; sub(/.*sys_enter_?/, "", name); if (name == "") name = "all"
      if ($1 / n >= 0.01) printf "%s %.2f  ", name, $1 / n }
    END { print "(system calls per request)" }' "$work/perf.txt"
}

# The proxy's user and system CPU time so far, in clock ticks.
cpu_ticks() {
  awk '{ print $14, $15 }' "/proc/$proxy_pid/stat"
}

# One emulator, started from the first binary, serves every binary's runs.
env "${emulator_tls[@]}" SFBULK__EMULATOR__LISTEN=$emulator SFBULK__EMULATOR__ACCESS_TOKEN=$token \
  SFBULK__LOG__LEVEL=warn taskset -c 0 "$1" emulator >"$work/emulator.log" 2>&1 &
pids+=($!)
wait_ready $emulator "$ca" $scheme
job=$(curl -s ${ca:+--cacert "$ca"} -X POST -H "X-SFDC-Session: $token" -H 'Content-Type: application/xml' \
  -d '<jobInfo xmlns="http://www.force.com/2009/06/asyncapi/dataload"><operation>insert</operation><object>Contact</object></jobInfo>' \
  "$scheme://$emulator/services/async/34.0/job" | sed -n 's|.*<id>\(.*\)</id>.*|\1|p')
body="<apiVersion>34.0</apiVersion><accessToken>$token</accessToken><apiUrl>$scheme://$emulator</apiUrl><refreshToken>sfbulk-demo-refresh-token</refreshToken><clientId>sfbulk-demo-client-id</clientId><clientSecret>sfbulk-demo-client-secret</clientSecret><intervalTime>86400000</intervalTime><registryPath>connectors/SalesforceBulk</registryPath>"
if [ "$OPERATION" = getJob ]; then
  body="<getJob>$body<jobId>$job</jobId></getJob>"
else
  body="<createJob>$body<operation>insert</operation><object>Contact</object><contentType>CSV</contentType></createJob>"
fi
printf 'wrk.method = "POST"\nwrk.body = "%s"\nwrk.headers["Content-Type"] = "text/xml"\n' "$body" >"$work/request.lua"

# The ratio of the medians of two lists of counts.
ratio() {
  # shellcheck disable=SC2086
  awk -v this="$(spread $1)" -v that="$(spread $2)" 'BEGIN { printf "%.3f", this / that }'
}

# Prints each binary's median and range of the counts in the associative array named first (keyed
# binary|connections|guard) at each of the connections given second, as "<third> ... <median>
# <fourth>", with its ratio to the first binary's median and, when the guard was measured on and
# off, the ratio of the two; the binaries follow.
summarize() {
  local -n counts=$1
  local at=$2 what=$3 unit=$4 connections binary guard line
  shift 4
  for connections in $at; do
    for binary in "$@"; do
      for guard in "${guards[@]}"; do
        # shellcheck disable=SC2086
        line="$binary: $what at $connections connections, guard $guard: $(spread ${counts[$binary|$connections|$guard]})$unit"
        if [ "$binary" != "$1" ]; then
          line="$line, $(ratio "${counts[$binary|$connections|$guard]}" "${counts[$1|$connections|$guard]}") of the first binary's median"
        fi
        echo "$line"
      done
      if [ ${#guards[@]} -eq 2 ]; then
        echo "$binary: $what, guard on / off at $connections connections:" \
          "$(ratio "${counts[$binary|$connections|on]}" "${counts[$binary|$connections|off]}")"
      fi
    done
  done
}

# "median (least–most)" of the numbers given.
spread() {
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1; if ($1 ~ /\./) f = "%.1f"; else if (!f) f = "%d" } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf f " (" f "–" f ")", m, v[1], v[NR] }'
}

# The counts move by a few per cent from run to run (how many requests each turn of the event
# loop finds ready changes what is spent per request), so each is made REPEAT times, the
# binaries taking turns, and reported as the median with its range.
declare -A counted
for round in $(seq "${REPEAT:-1}"); do
  for connections in $CONNECTIONS; do
    for binary in "$@"; do
      for guard in "${guards[@]}"; do
        instructions "$binary" 6 "$connections" "$guard" "$(position "$binary" "$@")" "$round" >"$work/counted"
        read -r requests total <"$work/counted"
        per_request=$((total / requests))
        counted[$binary|$connections|$guard]+=" $per_request"
        echo "$binary: $per_request instructions per $OPERATION request at $connections connections," \
          "guard $guard ($requests requests, round $round)"
      done
    done
  done
done
summarize counted "$CONNECTIONS" "$OPERATION" " instructions per request" "$@"
declare -A clocked
for round in $(seq "${REPEAT:-1}"); do
  for connections in $NATIVE_CONNECTIONS; do
    for binary in "$@"; do
      for guard in "${guards[@]}"; do
        line=$(system_calls "$binary" "$guard" "$connections")
        clocked[$binary|$connections|$guard]+=" $(echo "$line" | sed -n 's/^CPU \([0-9.]*\) us.*/\1/p')"
        echo "$binary: $connections connections, guard $guard: $line (round $round)"
      done
    done
  done
done
summarize clocked "$NATIVE_CONNECTIONS" "native CPU" " µs per request" "$@"
