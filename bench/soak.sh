#!/usr/bin/env bash
# make bench-soak: sustained claim + complete at 16 clients (IWD_SOAK_MINUTES, default 30) over a
# 1M-task backlog kept topped up; compares the claim rate of the last minute with the first, and the size
# of iwd.task with its indexes at the last minute with minute IWD_SOAK_SIZE_FROM (5; target 6: within
# 10 %), and reports each part of it (heap, id index, queue and claim indexes, the others) and the dead
# tuples along the way. The scheduler worker runs (passes, reservation timeouts, its vacuum of iwd.task);
# the Data Mart schedule is suspended, so that the figures show the hot path alone (the chain runs in a
# worker of its own and does not hold up the scheduler). Every
# minute it also records the WAL written, the checkpoints so far, the share of CPU time the hypervisor
# stole and the commonest wait event of the client backends (sampled every 5 s), so that a drop in the
# rate can be told apart as I/O, checkpoint, other load or lock waits. Prints a markdown section on
# stdout and keeps it in bench/soak-results.md, which make bench appends to bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${IWD_SOAK_MINUTES:-30}
backlog=${IWD_SOAK_BACKLOG:-1000000}
size_from=${IWD_SOAK_SIZE_FROM:-5}
port=${IWD_SOAK_PORT:-54346}
. bench/lib.sh
start_cluster soak "$port" "${bench_settings[@]}"
sql -f "$work/setup.sql" >/dev/null
sql -c "CREATE EXTENSION pg_walinspect" >/dev/null
# reprioritization every hour: no pass over the whole backlog falls inside the soak (bench/targets.sh
# measures claims during one)
sql -c "UPDATE iwd.category SET reprioritize_every_min = 60" >/dev/null
echo "soak: filling the queue to $backlog tasks..." >&2
fill_start=$(date +%s)
sql -c "SELECT bench_queue_fill($backlog)" -c "VACUUM ANALYZE" >/dev/null
fill_seconds=$(( $(date +%s) - fill_start ))
# keep the backlog topped up while the clients consume it
( while sleep 20; do sql -c "CALL bench_queue_topup($backlog)" >/dev/null 2>&1 || break; done ) &
filler=$!
(cd "$work" && "${as_user[@]}" "$bindir/pgbench" -h "$work" -p "$port" -n -M prepared -c 16 -j 2 \
    -T $((minutes * 60)) -P 60 -f "$work/claim_complete.sql" bench) > "$work/soak.txt" 2>&1 &
bench=$!
# the client backends' wait events, one line per backend every 5 s
( while kill -0 "$bench" 2>/dev/null; do
      sql -c "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity
              WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()" \
          >> "$work/waits.txt" 2>/dev/null || true
      sleep 5
  done ) &
sampler=$!
# cumulative WAL bytes and checkpoints; /proc/stat's cpu line (steal is its 8th figure)
wal_checkpoints() {
    sql -c "SELECT w.wal_bytes, b.checkpoints_timed + b.checkpoints_req FROM pg_stat_wal w, pg_stat_bgwriter b" 2>/dev/null \
        || echo '0|0'
}
cpu_line() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $9}' /proc/stat; }
# the WAL position and the last history event: the first 10 s of every minute are marked, and the last
# minute's are read record by record at the end (what a cycle writes, relation by relation)
wal_mark() {
    sql -c "SELECT pg_current_wal_lsn() || ' ' || coalesce(max(id), 0) FROM iwd.task_event" 2>/dev/null || echo '- -'
}
mark_from='- -'
mark_to='- -'
samples=()
prev_wal=$(wal_checkpoints | cut -d'|' -f1)
prev_cpu=$(cpu_line)
: > "$work/waits.txt"
while kill -0 "$bench" 2>/dev/null; do
    mark_from=$(wal_mark)
    sleep 10
    mark_to=$(wal_mark)
    sleep 50
    # iwd.task whole (MB, for the ratio) | heap | id index | queue + claim indexes | other indexes (MB) | dead
    table=$(sql -F ' | ' -c "SELECT round(pg_total_relation_size('iwd.task') / 1048576.0),
                    round(pg_relation_size('iwd.task') / 1048576.0),
                    round(pg_relation_size('iwd.task_pkey') / 1048576.0),
                    round((pg_relation_size('iwd.task_queue_idx') + pg_relation_size('iwd.task_claim_idx'))
                          / 1048576.0),
                    round((pg_indexes_size('iwd.task') - pg_relation_size('iwd.task_pkey')
                           - pg_relation_size('iwd.task_queue_idx') - pg_relation_size('iwd.task_claim_idx'))
                          / 1048576.0), n_dead_tup
                    FROM pg_stat_user_tables WHERE relid = 'iwd.task'::regclass" 2>/dev/null) ||
        table='? | ? | ? | ? | ? | ?'
    wc=$(wal_checkpoints)
    wal=$(awk -v a="${wc%%|*}" -v b="$prev_wal" 'BEGIN {printf "%.0f", (a - b) / 1048576}')
    prev_wal=${wc%%|*}
    cpu=$(cpu_line)
    steal=$(awk -v now="$cpu" -v before="$prev_cpu" \
        'BEGIN {split(now, n, " "); split(before, b, " "); t = n[1] - b[1]; printf "%.1f", (t > 0) ? 100 * (n[2] - b[2]) / t : 0}')
    prev_cpu=$cpu
    wait=$(sort "$work/waits.txt" | uniq -c | sort -rn | awk 'NR == 1 {w = $2; c = $1} {s += $1}
                END {if (s) printf "%s %d %%", w, 100 * c / s; else print "-"}')
    : > "$work/waits.txt"
    samples+=("$table | $wal | ${wc##*|} | $steal | $wait")
done
kill "$filler" "$sampler" 2>/dev/null || true
wait "$bench" || true
first=$(awk '/^progress: / {print $4; exit}' "$work/soak.txt")
last=$(awk '/^progress: / {v=$4} END {print v}' "$work/soak.txt")
{
    echo "$minutes minutes of claim + complete at 16 clients (pgbench \`-M prepared -j 2\`) over a backlog of"
    echo "$backlog queued tasks topped up every 20 s through \`iwd.create_tasks\` (one transaction per 1,000),"
    echo "run on $(date -u +%Y-%m-%d) (the fill of the backlog took $fill_seconds s). The scheduler worker runs (its"
    echo "passes, reservation timeouts and vacuum of iwd.task); the Data Mart schedule is suspended and"
    echo "reprioritization is hourly, so that no pass over the whole backlog falls inside the run. Sampled every"
    echo "minute: iwd.task's size and dead tuples, the WAL written in the minute, the checkpoints since the"
    echo "start, the share of the machine's CPU time stolen by the hypervisor, and the commonest wait event of"
    echo "the active client backends (sampled every 5 s; CPU = not waiting). Sizes in MB: iwd.task with its"
    echo "indexes, then its heap, its id index, its queue and claim indexes and its other indexes."
    echo
    echo "| minute | claim + complete cycles/s | iwd.task | heap | id index | queue + claim | other indexes |" \
         "dead tuples | WAL MB | checkpoints | steal % | commonest wait |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    i=0
    while read -r rate; do
        echo "| $((i + 1)) | $rate | ${samples[$i]:-} |"
        i=$((i + 1))
    done < <(awk '/^progress: / {print $4}' "$work/soak.txt")
    echo
    ratio=$(awk -v a="$last" -v b="$first" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}')
    echo "Last minute / first minute: $ratio (target ≥ 0.85: $(awk -v r="$ratio" 'BEGIN {print (r >= 0.85) ? "met" : "**not met**"}'))."
    # iwd.task with its indexes: the last minute against minute IWD_SOAK_SIZE_FROM (the first when the run
    # is shorter)
    at=$(( ${#samples[@]} >= size_from ? size_from - 1 : 0 ))
    growth=$(awk -v a="${samples[-1]%% *}" -v b="${samples[$at]%% *}" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}')
    echo "iwd.task with its indexes, last minute / minute $((at + 1)): $growth (target ≤ 1.10:" \
         "$(awk -v r="$growth" 'BEGIN {print (r > 0 && r <= 1.10) ? "met" : "**not met**"}'))."
    read -r lsn_from event_from <<<"$mark_from"
    read -r lsn_to event_to <<<"$mark_to"
    if [ "$lsn_from" != - ] && [ "$lsn_to" != - ]; then
        echo
        echo "WAL per cycle by relation in the first 10 s of the last minute (\`pg_walinspect\`: every record"
        echo "written, by every process, by the relation of its first block; cycles: the completions recorded;"
        echo "the top-up's captures included, one per cycle at a constant backlog):"
        echo
        echo "| relation | bytes per cycle | full-page image bytes | full-page images per cycle |"
        echo "|---|---:|---:|---:|"
        sql -F ' | ' -c "
            WITH n AS (SELECT greatest(count(*), 1) AS cycles FROM iwd.task_event
                       WHERE id > $event_from AND id <= $event_to AND event = 'completed'),
                 r AS (SELECT record_length, fpi_length, resource_manager,
                              (regexp_match(block_ref, 'rel \d+/\d+/(\d+)'))[1]::oid AS node
                       FROM pg_get_wal_records_info('$lsn_from', '$lsn_to'))
            SELECT '| ' || coalesce(c.relname, r.resource_manager), round(sum(record_length) / min(n.cycles)),
                   round(sum(fpi_length) / min(n.cycles)),
                   round(count(*) FILTER (WHERE fpi_length > 0)::numeric / min(n.cycles), 3) || ' |'
            FROM r CROSS JOIN n LEFT JOIN pg_class c ON c.relfilenode = r.node AND c.relfilenode <> 0
            GROUP BY 1 ORDER BY sum(record_length) DESC LIMIT 15" || echo "(not read)"
    fi
} | tee bench/soak-results.md.new
mv bench/soak-results.md.new bench/soak-results.md
