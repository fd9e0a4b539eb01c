#!/usr/bin/env bash
# Whole-load benchmark: a 1 GB, 5,000,000-row CSV through the proxy's salesforcebulkv2_load and
# by simple-salesforce, a 90 MB file through the proxy and by jsforce, against the emulator; wall
# time to the last result row, peak memory, API calls. One machine, one run.
# Usage: bash benches/loads.sh   (BIG_ROWS=500000 ONE_JOB_ROWS=45000 for a quick try;
# INGEST_US_PER_RECORD=50 SIMPLE_SALESFORCE_CONCURRENCY="1 10" to change)
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
install_if_missing openssl openssl
install_if_missing node nodejs
install_if_missing npm npm
python3 -c 'import venv, ensurepip' 2>/dev/null \
  || install_if_missing "python3-venv-is-missing" python3-venv

cargo build --release --quiet
exec python3 benches/loads.py "$@"
