#!/usr/bin/env bash
# What the announcement triggers cost the claim path: claim + complete (bench/core/claim_complete.sql,
# the matrix's workload: 10k backlog, 4 clients) with the statement triggers tasks_changed on iwd.task and
# iwd.task_event enabled and disabled, alternating, IWD_BENCH_RUNS (5) runs of IWD_BENCH_SECONDS (5) each.
# Prints a markdown table row per case (bench/RESULTS.md, "Density").
set -uo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh
port=${IWD_BENCH_PORT:-54372}
runs=${IWD_BENCH_RUNS:-5}
seconds=${IWD_BENCH_SECONDS:-5}
start_cluster triggers "$port" "${bench_settings[@]}" "max_connections = 100"
sql -f "$work/setup.sql" >/dev/null
sql -c "SELECT bench_queue_fill(10000)" -c "VACUUM ANALYZE" >/dev/null
on=(); off=()
for r in $(seq 1 "$runs"); do
    for mode in ENABLE DISABLE; do
        sql -c "ALTER TABLE iwd.task $mode TRIGGER tasks_changed" -c "ALTER TABLE iwd.task_event $mode TRIGGER tasks_changed" \
            -c "SELECT bench_queue_fill(10000)" >/dev/null
        tps=$("${as_user[@]}" "$bindir/pgbench" -h "$work" -p "$port" -n -M prepared -c 4 -j 2 -T "$seconds" \
                -f "$work/claim_complete.sql" bench 2>&1 | sed -nE 's/^tps = ([0-9.]+).*/\1/p')
        tps=${tps%.*}
        if [ "$mode" = ENABLE ]; then on+=("$tps"); else off+=("$tps"); fi
    done
done
echo "| announcement triggers | claim + complete cycles/s, 4 clients (min / median / max of $runs runs of $seconds s) |"
echo "|---|---:|"
echo "| enabled (as installed) | $(min_med_max "${on[@]}") |"
echo "| disabled | $(min_med_max "${off[@]}") |"
