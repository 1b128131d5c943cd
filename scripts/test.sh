#!/usr/bin/env bash
# Runs every iwd test suite and ends with one line "N passed, M failed".
# Suites: version check, sidecar module layers, extension call layers, pg_regress (regress/sql), isolation
# (regress/specs), upgrade, worker, density, openapi (the API document's lint and validating proxy), sidecar,
# pgbouncer, chart, fuzz (short), faults (kill -9 under load, tests/faults), hostile inputs (tests/hostile) and
# the cache on a Redis Cluster and over TLS (tests/redis); availability (tests/ha: a hot standby, two failover
# cycles on pg_auto_failover, a tenant moved between servers).
# Each suite script ends its output with its own "N passed, M failed" line; this driver adds them up.
set -uo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
log_dir=$(mktemp -d /tmp/iwd-test-log.XXXXXX)
total_passed=0
total_failed=0

run_suite() {
    local name=$1; shift
    echo "=== suite: $name"
    "$@" 2>&1 | tee "$log_dir/$name.log"
    local rc=${PIPESTATUS[0]}
    local line
    line=$(grep -E '^([A-Za-z-]+: )?[0-9]+ passed, [0-9]+ failed' "$log_dir/$name.log" | tail -n 1)
    local p f
    p=$(sed -E 's/^([A-Za-z-]+: )?([0-9]+) passed.*/\2/' <<<"$line")
    f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    [ -n "$line" ] || { p=0; f=1; echo "$name: suite printed no result line"; }
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "$name: suite exited with status $rc"; fi
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    echo "=== $name: $p passed, $f failed"
}

run_suite version scripts/check-version.sh
run_suite layers scripts/check-layers.sh
run_suite extension-calls scripts/check-extension-calls.sh
run_suite dist scripts/dist-check.sh
run_suite regress scripts/regress.sh
run_suite upgrade scripts/test-upgrade.sh
run_suite run scripts/test-run.sh
run_suite worker scripts/test-worker.sh
run_suite density scripts/test-density.sh
run_suite openapi tests/openapi/run.sh
run_suite sidecar sidecar/tests/run.sh
run_suite pgbouncer tests/pgbouncer/run.sh
run_suite router tests/router/run.sh
run_suite ui tests/ui/run.sh
run_suite chart chart/tests/run.sh
run_suite fuzz scripts/fuzz.sh
run_suite email tests/email/run.sh
run_suite faults tests/faults/run.sh
run_suite hostile tests/hostile/run.sh
run_suite redis tests/redis/run.sh
run_suite ha tests/ha/run.sh

rm -rf "$log_dir"
echo "${total_passed} passed, ${total_failed} failed"
[ "$total_failed" -eq 0 ]
