#!/usr/bin/env bash
# The high-availability suite: a hot standby with iwd preloaded (standby.sh), automatic failover under
# load on a pg_auto_failover formation (failover.sh), a tenant moved between two servers under load
# (move.sh). Usage: tests/ha/run.sh [--long]   (2 failover cycles; --long: IWD_HA_CYCLES, default 5)
# Ends with "ha: N passed, M failed" (the sum of the three).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cycles=2
[ "${1:-}" = --long ] && cycles=${IWD_HA_CYCLES:-5}
passed=0 failed=0
log=$(mktemp /tmp/iwd-ha-log.XXXXXX)
trap 'rm -f "$log"' EXIT
for part in "standby.sh" "failover.sh $cycles" "move.sh"; do
    echo "# $(date -u +%H:%M:%S) tests/ha/$part"
    # shellcheck disable=SC2086 # (the part's arguments)
    "$here"/$part 2>&1 | tee "$log"
    line=$(grep -E '^ha-[a-z]+: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -z "$line" ]; then
        echo "tests/ha/$part printed no result line"; failed=$((failed + 1)); continue
    fi
    p=${line#*: }; p=${p%% passed*}
    f=${line##*passed, }; f=${f%% failed*}
    passed=$((passed + p)); failed=$((failed + f))
done
echo "ha: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
