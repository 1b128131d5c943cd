#!/usr/bin/env bash
# Data Mart benchmark: 1M task events over 30 days (250k tasks), then, IWD_BENCH_DM_RUNS (5) times, `full` from an
# empty Data Mart against one INSERT ... SELECT ... GROUP BY computing the daily aggregate from the same
# facts, and the floor of any `full` that writes what it writes (it reads the events in place: the task facts and
# aggregates of that run written again into copies of their tables, their indexes built after); then, as many times,
# 10k new events and an incremental `intraday` run. Each of `full` and the reference is also measured by the
# cluster's CPU time, which the machine's other load moves far less than the wall time. Prints markdown tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
tasks=${IWD_BENCH_DM_TASKS:-250000}
port=${IWD_BENCH_DM_PORT:-54343}
. bench/lib.sh
start_cluster dm "$port" "iwd.max_workers = 0" "shared_buffers = 512MB" "work_mem = 64MB" "max_wal_size = 4GB" \
    "autovacuum = off"  # the runs analyze what they need; an autovacuum would land in one measure or another
# shellcheck source=bench/density/common.sh
. bench/density/common.sh   # cpu_ticks: the cluster's CPU time, which other load on the machine hardly moves
tick_ms=$((1000 / $(getconf CLK_TCK)))
# cpu: cpu_ticks once the sessions' backends have exited and been reaped (only then does their time count),
# read again when a child was reaped while it read (its time would be missed or counted twice)
cpu() {
    local postmaster reaped total
    postmaster=$(head -1 "$work/data/postmaster.pid")
    for _ in $(seq 1 200); do
        ps --ppid "$postmaster" -o stat=,args= | grep -qE '^Z|\[local\]' || break
        sleep 0.05
    done
    for _ in $(seq 1 20); do
        reaped=$(awk '{print $16 + $17}' "/proc/$postmaster/stat")
        total=$(cpu_ticks)
        [ "$(awk '{print $16 + $17}' "/proc/$postmaster/stat")" = "$reaped" ] && break
    done
    echo "$total"
}
cp bench/datamart/generate.sql "$work/"; chmod 644 "$work/generate.sql"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
sql -c "CREATE EXTENSION iwd"
echo "datamart bench: generating $((tasks * 4)) events..." >&2
sql -v tasks="$tasks" -v days=30 -v first=1 -v end='2026-03-31 00:00+00' -f "$work/generate.sql"
sql -c "VACUUM ANALYZE"
runs=${IWD_BENCH_DM_RUNS:-5}
# the Data Mart back to its state after CREATE EXTENSION (the priority and value ranges are seeded there)
reset_dm="SELECT string_agg(c.oid::regclass::text, ', ') FROM pg_class c
          WHERE c.relnamespace = 'iwd_dm'::regnamespace AND c.relkind = 'r'
            AND c.relname NOT IN ('job_status', 'watermark', 'dim_priority_range', 'dim_business_value_range')"
fulls=() refs=() full_cpus=() ref_cpus=() intradays=() intraday_cpus=() writes=() write_cpus=() loads=() facts=() aggs=() others=()
# the floor: the task facts and the five aggregates of the run, written again into empty copies of their tables
floor_write="CREATE TABLE floor_facts (LIKE iwd_dm.task_fact INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
    ALTER TABLE floor_facts ADD PRIMARY KEY (task_id);
    INSERT INTO floor_facts SELECT * FROM iwd_dm.task_fact ORDER BY task_id;
    CREATE INDEX ON floor_facts (created_at); CREATE INDEX ON floor_facts (finished_at);
    CREATE INDEX ON floor_facts ((greatest(created_at, due_at))) WHERE due_at IS NOT NULL;
    CREATE INDEX ON floor_facts ((coalesce(first_assigned_at, finished_at)));
    CREATE INDEX ON floor_facts ((coalesce(finished_at, 'infinity'))) WHERE first_assigned_at IS NOT NULL;"
for level in 15min hour day week month; do
    floor_write+="CREATE TABLE floor_$level (LIKE iwd_dm.agg_$level INCLUDING ALL);
    INSERT INTO floor_$level SELECT * FROM iwd_dm.agg_$level ORDER BY interval_start, department COLLATE \"C\",
        process COLLATE \"C\", category COLLATE \"C\", queue COLLATE \"C\", media_type COLLATE \"C\",
        customer_segment COLLATE \"C\";"
done
drop_floors="DROP TABLE IF EXISTS floor_facts, floor_15min, floor_hour, floor_day, floor_week,
    floor_month"
# where a run's time went: the steps' functions (track_functions), in ms
steps="SELECT round(sum(self_time) FILTER (WHERE funcname = '_load_batch')) || ' '
              || round(sum(total_time) FILTER (WHERE funcname = '_refresh_task_facts')) || ' '
              || round(sum(total_time) FILTER (WHERE funcname = '_aggregate_batch')) || ' '
              || round(sum(total_time) FILTER (WHERE funcname IN ('_initialize', '_analyze', '_mark_dirty')))
       FROM pg_stat_xact_user_functions WHERE schemaname = 'iwd_dm'"

for r in $(seq 1 "$runs"); do
    sql -c "TRUNCATE $(sql -c "$reset_dm") RESTART IDENTITY" -c "UPDATE iwd_dm.watermark SET last_event_id = 0" \
        -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS ref_day" -c "$drop_floors" -c "VACUUM ANALYZE" \
        -c "CHECKPOINT"
    c0=$(cpu) t0=$(ms)
    read -r load fact agg other < <(sql -c "BEGIN" -c "SET LOCAL track_functions = 'pl'" \
                                        -c "SELECT iwd_dm.run('full')" -c "$steps" -c "COMMIT" | tail -1)
    fulls+=($(( $(ms) - t0 ))) full_cpus+=($(( ($(cpu) - c0) * tick_ms )))
    loads+=("$load") facts+=("$fact") aggs+=("$agg") others+=("$other")
    # the reference: one INSERT ... SELECT ... GROUP BY computing a daily aggregate from the same events
    # (each event joined to its task's dimensions; counts by kind, handle time and value of finished work)
    c0=$(cpu) t0=$(ms)
    sql -c "CREATE TABLE ref_day AS SELECT date_trunc('day', e.at) AS day, t.department, t.process, t.category,
                   t.queue, t.media_type, t.customer_segment,
                   count(*) FILTER (WHERE e.event = 'created') AS created,
                   count(*) FILTER (WHERE e.event = 'completed') AS completed,
                   count(*) FILTER (WHERE e.event = 'canceled') AS canceled,
                   avg(extract(epoch FROM e.at - t.created_at)) FILTER (WHERE e.event = 'completed') AS avg_age_s,
                   sum(t.business_value) FILTER (WHERE e.event = 'completed') AS value
            FROM iwd.task_event e JOIN iwd.task_closed t ON t.id = e.task_id GROUP BY 1, 2, 3, 4, 5, 6, 7"
    refs+=($(( $(ms) - t0 ))) ref_cpus+=($(( ($(cpu) - c0) * tick_ms )))
    sql -c CHECKPOINT
    c0=$(cpu) t0=$(ms); sql -c "$floor_write"; writes+=($(( $(ms) - t0 ))) write_cpus+=($(( ($(cpu) - c0) * tick_ms )))
    sql -c "$drop_floors"
    echo "datamart bench: run $r: full ${fulls[-1]} ms, CPU ${full_cpus[-1]} ms (load $load, facts $fact," \
         "aggregates $agg, other $other), reference ${refs[-1]} ms, CPU ${ref_cpus[-1]} ms," \
         "floor: writes ${writes[-1]} ms, CPU ${write_cpus[-1]} ms" >&2
done
events=$(sql -c "SELECT count(*) FROM iwd_dm.task_event_fact")
# then, on the last full load, 10k new events (2,500 tasks) in the last hours and an intraday run, each time
for r in $(seq 1 "$runs"); do
    sql -v tasks=2500 -v days=0.1 -v first=$((tasks + 1 + (r - 1) * 2500)) -v end='2026-03-31 00:00+00' -f "$work/generate.sql"
    c0=$(cpu) t0=$(ms); sql -c "SET iwd.simulated_time = '2026-03-31 00:00+00'" -c "SELECT iwd_dm.run('intraday')" >/dev/null
    intradays+=($(( $(ms) - t0 ))) intraday_cpus+=($(( ($(cpu) - c0) * tick_ms )))
    echo "datamart bench: run $r: intraday ${intradays[-1]} ms, CPU ${intraday_cpus[-1]} ms" >&2
done
med() { printf '%s\n' "$@" | median; }
full=$(med "${fulls[@]}"); ref=$(med "${refs[@]}"); intraday=$(med "${intradays[@]}")
ratios=$(for i in "${!fulls[@]}"; do awk -v a="${fulls[$i]}" -v b="${refs[$i]}" 'BEGIN {printf "%.1f ", a / b}'; done)
echo "$runs runs of each; \`full\` starts from an empty Data Mart after a CHECKPOINT each time."
echo
echo "| measure | min / median / max |"
echo "|---|---:|"
echo "| events loaded by \`full\` | $events |"
echo "| \`full\` from scratch | $(min_med_max "${fulls[@]}") ms |"
echo "| reference: one INSERT … SELECT … GROUP BY of the daily aggregate | $(min_med_max "${refs[@]}") ms |"
echo "| \`full\`: CPU time of the cluster | $(min_med_max "${full_cpus[@]}") ms |"
echo "| reference: CPU time of the cluster | $(min_med_max "${ref_cpus[@]}") ms |"
echo "| incremental \`intraday\` after 10k new events | $(min_med_max "${intradays[@]}") ms |"
echo "| incremental \`intraday\`: CPU time of the cluster | $(min_med_max "${intraday_cpus[@]}") ms |"
echo "| \`full\`'s steps: reading the events (gaps, watermark) | $(min_med_max "${loads[@]}") ms |"
echo "| \`full\`'s steps: the task facts | $(min_med_max "${facts[@]}") ms |"
echo "| \`full\`'s steps: the aggregates of the five levels | $(min_med_max "${aggs[@]}") ms |"
echo "| \`full\`'s steps: dimensions, statistics, dirty intervals | $(min_med_max "${others[@]}") ms |"
echo "| floor: the run's task facts and aggregates written into copies of their tables |" \
     "$(min_med_max "${writes[@]}") ms |"
echo "| floor: the same writes, CPU time of the cluster | $(min_med_max "${write_cpus[@]}") ms |"
echo
echo "| ratio | of the medians | run by run | target |"
echo "|---|---:|---:|---:|"
echo "| \`full\` / reference | $(awk -v a="$full" -v b="$ref" 'BEGIN {printf "%.1f", a / b}') | ${ratios% } | ≤ 2 |"
cpu_ratios=$(for i in "${!fulls[@]}"; do
    awk -v a="${full_cpus[$i]}" -v b="${ref_cpus[$i]}" 'BEGIN {printf "%.1f ", a / b}'; done)
echo "| \`full\` / reference, CPU time of the cluster | $(awk -v a="$(med "${full_cpus[@]}")" \
    -v b="$(med "${ref_cpus[@]}")" 'BEGIN {printf "%.1f", a / b}') | ${cpu_ratios% } | |"
echo "| \`intraday\` / \`full\` | $(awk -v a="$intraday" -v b="$full" 'BEGIN {printf "%.2f %%", 100 * a / b}') | | ≤ 2 % |"
echo "| \`intraday\` / \`full\`, CPU time of the cluster | $(awk -v a="$(med "${intraday_cpus[@]}")" \
    -v b="$(med "${full_cpus[@]}")" 'BEGIN {printf "%.2f %%", 100 * a / b}') | | ≤ 2 % |"
floors=$(for i in "${!fulls[@]}"; do
    awk -v w="${writes[$i]}" -v b="${refs[$i]}" 'BEGIN {printf "%.1f ", w / b}'; done)
echo "| floor (writes) / reference | $(awk -v w="$(med "${writes[@]}")" -v b="$ref" 'BEGIN {printf "%.1f", w / b}') |" \
     "${floors% } | |"
floor_cpus=$(for i in "${!fulls[@]}"; do
    awk -v w="${write_cpus[$i]}" -v b="${ref_cpus[$i]}" 'BEGIN {printf "%.1f ", w / b}'; done)
echo "| floor (writes) / reference, CPU time of the cluster | $(awk -v w="$(med "${write_cpus[@]}")" \
    -v b="$(med "${ref_cpus[@]}")" 'BEGIN {printf "%.1f", w / b}') | ${floor_cpus% } | |"
