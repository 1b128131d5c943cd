#!/usr/bin/env bash
# make bench-soak: sustained claim + complete at 16 clients (IWD_SOAK_MINUTES, default 30) over a
# 1M-task backlog kept topped up; compares the claim rate of the last minute with the first and reports
# the hot table's size and dead tuples along the way. The scheduler worker runs (passes, reservation
# timeouts, its vacuum of iwd.task); the Data Mart schedule is suspended, so that the figures show the
# hot path alone (the chain runs in a worker of its own and does not hold up the scheduler). Prints a markdown section on stdout and keeps it in
# bench/soak-results.md, which make bench appends to bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${IWD_SOAK_MINUTES:-30}
backlog=${IWD_SOAK_BACKLOG:-1000000}
port=${IWD_SOAK_PORT:-54346}
. bench/lib.sh
start_cluster soak "$port" "${bench_settings[@]}"
sql -f "$work/setup.sql" >/dev/null
# reprioritization every hour: no pass over the whole backlog falls inside the soak (bench/targets.sh
# measures claims during one)
sql -c "UPDATE iwd.category SET reprioritize_every_min = 60" >/dev/null
echo "soak: filling the queue to $backlog tasks..." >&2
sql -c "SELECT bench_queue_fill($backlog)" -c "VACUUM ANALYZE" >/dev/null
# keep the backlog topped up while the clients consume it
( while sleep 20; do sql -c "CALL bench_queue_topup($backlog)" >/dev/null 2>&1 || break; done ) &
filler=$!
(cd "$work" && "${as_user[@]}" "$bindir/pgbench" -h "$work" -p "$port" -n -M prepared -c 16 -j 2 \
    -T $((minutes * 60)) -P 60 -f "$work/claim_complete.sql" bench) > "$work/soak.txt" 2>&1 &
bench=$!
samples=()
while kill -0 "$bench" 2>/dev/null; do
    sleep 60
    samples+=("$(sql -c "SELECT pg_size_pretty(pg_total_relation_size('iwd.task')) || ' / ' || n_dead_tup
                          FROM pg_stat_user_tables WHERE relid = 'iwd.task'::regclass" 2>/dev/null || echo '?')")
done
kill "$filler" 2>/dev/null || true
wait "$bench" || true
first=$(awk '/^progress: / {print $4; exit}' "$work/soak.txt")
last=$(awk '/^progress: / {v=$4} END {print v}' "$work/soak.txt")
{
    echo "$minutes minutes of claim + complete at 16 clients (pgbench \`-M prepared -j 2\`) over a backlog of"
    echo "$backlog queued tasks topped up every 20 s through \`iwd.create_tasks\` (one transaction per 1,000),"
    echo "run on $(date -u +%Y-%m-%d); iwd.task's size and dead tuples sampled every minute. The scheduler worker"
    echo "runs (its passes, reservation timeouts and vacuum of iwd.task); the Data Mart schedule is suspended and"
    echo "reprioritization is hourly, so that no pass over the whole backlog falls inside the run."
    echo
    echo "| minute | claim + complete cycles/s | iwd.task size / dead tuples |"
    echo "|---:|---:|---|"
    i=0
    while read -r rate; do
        echo "| $((i + 1)) | $rate | ${samples[$i]:-} |"
        i=$((i + 1))
    done < <(awk '/^progress: / {print $4}' "$work/soak.txt")
    echo
    ratio=$(awk -v a="$last" -v b="$first" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}')
    echo "Last minute / first minute: $ratio (target ≥ 0.85: $(awk -v r="$ratio" 'BEGIN {print (r >= 0.85) ? "met" : "**not met**"}'))."
} | tee bench/soak-results.md.new
mv bench/soak-results.md.new bench/soak-results.md
