#!/usr/bin/env bash
# What declines cost the claim: claim + complete cycles/s (bench/core/claim_complete.sql, 4 clients) for
# 500 agents without a decline (the claim reads one more column of the agent's row, nothing else) and for
# the same agents each with an active decline (the claim then reads the agent's declined tasks: one index
# probe, and leaves them out of the pick), alternating, 5 runs of 5 s each way, over a backlog of 20,000.
# Prints a Markdown table for bench/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
suite=bench-decline
# shellcheck source=lib.sh
. bench/lib.sh
start_cluster decline "" "${bench_settings[@]}"
sql -c "CREATE EXTENSION iwd" >/dev/null
sql -c "SELECT count(iwd.upsert_agent(jsonb_build_object('id', 'agent' || i, 'capacity', '{\"workitem\": 1000}'::jsonb,
                                                        'state', 'ready')))
        FROM generate_series(1, 500) i" >/dev/null
topup() {
    sql -c "SELECT iwd.create_tasks(jsonb_agg(jsonb_build_object('externalId', 'T' || g || '-' || i,
                                                              'capturePoint', 'bench', 'priority', i % 100)))
            FROM generate_series(1, 20000 - (SELECT count(*) FROM iwd.task WHERE status = 'queued')) i,
                 (SELECT extract(epoch FROM clock_timestamp())::bigint AS g) s
            HAVING count(*) > 0" >/dev/null
}
declines() { # declines on|off: every agent declines the queue's head task (kept for an hour), or none
    if [ "$1" = on ]; then
        sql -c "SET iwd.decline_for = '1 hour';
                SELECT count(iwd.decline_task((iwd.next_task('agent' || i) ->> 'id')::bigint, 'agent' || i, 'bench'))
                FROM generate_series(1, 500) i" >/dev/null
    else
        sql -c "DELETE FROM iwd.task_decline; UPDATE iwd.agent SET declined_until = NULL" >/dev/null
    fi
}
run() { # cycles/s of one 5 s run at 4 clients
    "${as_user[@]}" "$bindir/pgbench" -h "$work" -p "$bench_port" -n -M prepared -c 4 -j 2 -T 5 \
        -f "$work/claim_complete.sql" bench 2>/dev/null | awk '/^tps/ {printf "%d", $3; exit}'
}
without=(); with=()
for _ in 1 2 3 4 5; do
    topup; declines off; without+=("$(run)")
    topup; declines on; with+=("$(run)")
done
echo "| agents | claim + complete cycles/s, 4 clients (min / median / max of 5 runs of 5 s) |"
echo "|---|---:|"
echo "| without a decline | $(min_med_max "${without[@]}") |"
echo "| each with an active decline | $(min_med_max "${with[@]}") |"
