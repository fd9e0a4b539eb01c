#!/usr/bin/env bash
# Whole-export benchmark: 200 small result pages from an org 200 ms away, read through the proxy's
# salesforcebulkv2_query (pages in parallel), one after another directly (as client libraries do),
# and through allPages read one after another (as it did before resultPages); rows a second and the
# proxy's peak memory. One machine, one run.
# Usage: bash benches/exports.sh   (PAGES=50 LATENCY_MS=100 for a quick try)
set -euo pipefail
cd "$(dirname "$0")/.."

install_if_missing() {
  local command=$1 package=$2
  if ! command -v "$command" >/dev/null 2>&1; then
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  fi
}
install_if_missing curl curl
install_if_missing taskset util-linux
install_if_missing python3 python3

cargo build --release --quiet
exec python3 benches/exports.py "$@"
