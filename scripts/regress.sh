#!/usr/bin/env bash
# Runs the pg_regress suites (regress/sql) and the isolation specs (regress/specs) with `make installcheck`
# against a throwaway cluster configured by regress/regress.conf (iwd preloaded, no background workers),
# on port IWD_REGRESS_PORT or a free one (scripts/lib.sh). IWD_REGRESS_RESULTS=DIR keeps the actual
# outputs (to review and adopt as expected files). Ends with "regress: N passed, M failed".
set -uo pipefail
suite=regress
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$iwd_top" || exit 1
work=$(work_dir regress) || fail_setup "no work directory"
trap 'cluster_stop immediate; rm -rf "$work"' EXIT
pg_port=${IWD_REGRESS_PORT:-}
cluster_init "$work/cluster" "$(cat regress/regress.conf)" || fail_setup "initdb failed"
cluster_start || fail_setup "the cluster did not start"

# the pg_regress suites, then the isolation specs (each whatever the other's outcome)
make_rc=0
for only in "ISOLATION=" "REGRESS="; do
    PGHOST=$pg_dir PGPORT=$pg_port PGUSER=$pg_superuser \
        make -s installcheck PG_CONFIG="$PG_CONFIG" REGRESS_OUTDIR="$work/out" "$only" 2>&1 |
        tee -a "$work/installcheck.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || make_rc=$rc
done

# pg_regress's per-test "ok" / "FAILED" lines, of both suites
passed=$(grep -cE '^(test| ) .* \.\.\. ok|^ok [0-9]+' "$work/installcheck.log")
failed=$(grep -cE '\.\.\. FAILED|^not ok [0-9]+' "$work/installcheck.log")
for diffs in "$work/out/regression.diffs" "$work/out/output_iso/regression.diffs"; do
    [ -s "$diffs" ] && cat "$diffs"
done
if [ "$make_rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "make installcheck failed (status $make_rc) without a failed test:"
    tail -n 20 "$pg_log"
    failed=1
fi
if [ -n "${IWD_REGRESS_RESULTS:-}" ]; then
    mkdir -p "$IWD_REGRESS_RESULTS"
    cp "$work"/out/results/*.out "$work"/out/output_iso/results/*.out "$IWD_REGRESS_RESULTS"/ 2>/dev/null
fi
[ $((passed + failed)) -gt 0 ] || { echo "no test ran"; failed=1; }
summary
