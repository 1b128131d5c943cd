#!/usr/bin/env bash
# Runs the pg_regress suites (regress/sql) and the isolation specs (regress/specs) on temporary
# instances that preload iwd. PostgreSQL refuses to run as root, so as root the suites run as the
# "postgres" user from a copy of regress/ that it owns.
set -uo pipefail
cd "$(dirname "$0")/.."
bindir=$(/usr/lib/postgresql/15/bin/pg_config --bindir)
pgxs_dir=$(dirname "$(/usr/lib/postgresql/15/bin/pg_config --pgxs)")/..
work=$(mktemp -d /tmp/iwd-regress.XXXXXX)
cp -r regress "$work/"
as_user=()
if [ "$(id -u)" -eq 0 ]; then
    chown -R postgres: "$work"
    as_user=(runuser -u postgres --)
fi
port=${IWD_REGRESS_PORT:-54329}
tests=$(cd regress/sql && ls *.sql 2>/dev/null | sed 's/\.sql$//' | sort)
specs=$(cd regress/specs && ls *.spec 2>/dev/null | sed 's/\.spec$//' | sort)
passed=0; failed=0

# count_results LOG: adds pg_regress's per-test "ok"/"FAILED" lines to the totals.
count_results() {
    local ok bad
    ok=$(grep -cE '^(test| ) .* \.\.\. ok|^ok [0-9]+' "$1")
    bad=$(grep -cE '\.\.\. FAILED|^not ok [0-9]+' "$1")
    passed=$((passed + ok)); failed=$((failed + bad))
}

if [ -n "$tests" ]; then
    (cd "$work" && "${as_user[@]}" "$pgxs_dir/test/regress/pg_regress" --bindir="$bindir" \
        --temp-instance="$work/tmp_check" --temp-config="$work/regress/regress.conf" --port="$port" \
        --inputdir="$work/regress" --outputdir="$work/out" $tests) 2>&1 | tee "$work/regress.log"
    count_results "$work/regress.log"
    [ -f "$work/out/regression.diffs" ] && cat "$work/out/regression.diffs"
fi
if [ -n "$specs" ]; then
    (cd "$work" && "${as_user[@]}" "$pgxs_dir/test/isolation/pg_isolation_regress" --bindir="$bindir" \
        --temp-instance="$work/tmp_check_iso" --temp-config="$work/regress/regress.conf" --port="$port" \
        --inputdir="$work/regress" --outputdir="$work/out_iso" $specs) 2>&1 | tee "$work/isolation.log"
    count_results "$work/isolation.log"
    [ -f "$work/out_iso/regression.diffs" ] && cat "$work/out_iso/regression.diffs"
fi
# IWD_REGRESS_RESULTS=DIR keeps the actual outputs (to review and adopt as expected files)
if [ -n "${IWD_REGRESS_RESULTS:-}" ]; then
    mkdir -p "$IWD_REGRESS_RESULTS"
    cp "$work"/out/results/*.out "$work"/out_iso/results/*.out "$IWD_REGRESS_RESULTS"/ 2>/dev/null
fi
rm -rf "$work"
echo "regress: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ $((passed + failed)) -gt 0 ]
