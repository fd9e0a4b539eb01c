#!/usr/bin/env bash
# End-to-end benchmark: the emulator's GET job read directly, through nginx, and through
# sfbulk-proxy (memory and redis registry backends), over HTTP and over HTTPS to the upstream,
# plus createJob, large query results with and without gzip, and thousands of callers waiting on
# a slow org; one machine, one run.
# Usage: bash benches/e2e.sh   (DURATION=10 CONNECTIONS="1 32 256" STREAM_ROWS=13000000 to change)
set -euo pipefail
cd "$(dirname "$0")/.."

install_if_missing() {
  local command=$1 package=$2
  if ! command -v "$command" >/dev/null 2>&1; then
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  fi
}
install_if_missing wrk wrk
install_if_missing nginx nginx-light
install_if_missing curl curl
install_if_missing redis-server redis-server
install_if_missing taskset util-linux
install_if_missing python3 python3

install_if_missing openssl openssl
install_if_missing ss iproute2

# The slow-Salesforce case holds thousands of connections open at once.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet
exec python3 benches/e2e.py "$@"
