#!/usr/bin/env bash
# Data Mart benchmark: 1M task events over 30 days (250k tasks), then `full` from scratch, against one
# INSERT ... SELECT ... GROUP BY computing the daily aggregate from the same facts; then 10k new events
# and an incremental `intraday` run. Prints a markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
tasks=${IWD_BENCH_DM_TASKS:-250000}
port=${IWD_BENCH_DM_PORT:-54343}
. bench/lib.sh
start_cluster dm "$port" "iwd.databases = ''" "shared_buffers = 512MB" "work_mem = 64MB" "max_wal_size = 4GB"
cp bench/datamart/generate.sql "$work/"; chmod 644 "$work/generate.sql"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
sql -c "CREATE EXTENSION iwd"
echo "datamart bench: generating $((tasks * 4)) events..." >&2
sql -v tasks="$tasks" -v days=30 -v first=1 -v end='2026-03-31 00:00+00' -f "$work/generate.sql"
sql -c "VACUUM ANALYZE"
t0=$(ms); sql -c "SELECT iwd_dm.run('full')" >/dev/null; full=$(( $(ms) - t0 ))
# the reference: one INSERT ... SELECT ... GROUP BY of the daily aggregate over the same facts
t0=$(ms)
sql -c "CREATE TABLE ref_day AS SELECT date_trunc('day', finished_at) AS day, department, process, category, queue,
               media_type, customer_segment, count(*) FILTER (WHERE status = 'completed') AS completed,
               count(*) FILTER (WHERE status = 'canceled') AS canceled, avg(age_s) AS avg_age_s,
               sum(business_value) AS value
        FROM iwd_dm.task_fact GROUP BY 1, 2, 3, 4, 5, 6, 7"
ref=$(( $(ms) - t0 ))
events=$(sql -c "SELECT count(*) FROM iwd_dm.task_event_fact")
# 10k new events (2,500 tasks) in the last hours, then an intraday run
sql -v tasks=2500 -v days=0.1 -v first=$((tasks + 1)) -v end='2026-03-31 00:00+00' -f "$work/generate.sql"
t0=$(ms); sql -c "SET iwd.simulated_time = '2026-03-31 00:00+00'" -c "SELECT iwd_dm.run('intraday')" >/dev/null
intraday=$(( $(ms) - t0 ))
echo "| measure | value |"
echo "|---|---:|"
echo "| events loaded by \`full\` | $events |"
echo "| \`full\` from scratch | $full ms |"
echo "| reference: one INSERT … SELECT … GROUP BY of the daily aggregate | $ref ms |"
echo "| \`full\` / reference | $(awk -v a="$full" -v b="$ref" 'BEGIN {printf "%.1f", a / b}') (target ≤ 2) |"
echo "| incremental \`intraday\` after 10k new events | $intraday ms |"
echo "| \`intraday\` / \`full\` | $(awk -v a="$intraday" -v b="$full" 'BEGIN {printf "%.2f %%", 100 * a / b}') (target ≤ 2 %) |"
