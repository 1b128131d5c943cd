#!/usr/bin/env bash
# What the event outbox and feed write per claim + complete cycle, for two builds of iwd in one run.
# Usage: bench/events/wal.sh BEFORE [AFTER] (commits; AFTER defaults to HEAD). Each build is made from its
# commit (git archive) and installed (DESTDIR) into a copy of this machine's PostgreSQL tree, as
# bench/density/builds.sh does, so the shared installation is left alone. IWD_BENCH_ROUNDS (2) rounds,
# alternating the builds, each on a cluster of its own with the scheduler worker publishing (no webhooks):
# IWD_BENCH_QUEUED (100k) tasks queued, a checkpoint, then IWD_BENCH_SECONDS (20) s of claim + complete
# cycles at 16 clients (bench/core/claim_complete.sql). Per round: WAL per cycle (the WAL position's
# advance over the run divided by the completions) and, by pg_walinspect over the same range, the bytes
# per cycle of the event relations (every record, by the relation of its first block, the worker's
# publication included). Prints a markdown table.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
before=${1:?usage: bench/events/wal.sh BEFORE [AFTER]}
after=${2:-HEAD}
rounds=${IWD_BENCH_ROUNDS:-2}
queued=${IWD_BENCH_QUEUED:-100000}
seconds=${IWD_BENCH_SECONDS:-20}
# shellcheck source=bench/builds.sh
. bench/builds.sh
builds_init wal || exit 1
trap '[ -z "${IWD_KEEP:-}" ] && rm -rf "$trees"' EXIT

build before "$before" && build after "$after" || exit 1

# measure NAME: one round against build NAME; prints "cycles wal_per_cycle fpi_per_cycle" and then one
# "relation bytes_per_cycle fpi_bytes_per_cycle" line per relation of the events and of the task
measure() {
    (
        export PG_CONFIG=$trees/$1$pg_root/bin/pg_config
        # shellcheck source=bench/lib.sh
        . bench/lib.sh
        start_cluster wal "" "${bench_settings[@]}" "max_connections = 100" "iwd.event_retention = '7 days'" \
            >/dev/null
        sql -f "$work/setup.sql" >/dev/null
        sql -c "CREATE EXTENSION pg_walinspect" -c "SELECT bench_queue_fill($queued)" -c "VACUUM ANALYZE" >/dev/null
        sql -c "SELECT iwd.publish_events()" -c "CHECKPOINT" >/dev/null
        position="SELECT pg_current_wal_lsn(), wal_fpi, (SELECT coalesce(max(id), 0) FROM iwd.task_event)
                  FROM pg_stat_wal"
        read -r lsn0 fpi0 events0 <<<"$(sql -F ' ' -c "$position")"
        cluster_client pgbench -n -M prepared -c 16 -j 2 -T "$seconds" -f "$work/claim_complete.sql" bench \
            >"$work/pgbench.log" 2>&1
        # the events of the run published (a worker pass) before the range closes
        for _ in $(seq 1 60); do
            [ "$(sql -c "SELECT count(*) FROM iwd.event_outbox")" = 0 ] && break
            sleep 0.5
        done
        read -r lsn1 fpi1 events1 <<<"$(sql -F ' ' -c "$position")"
        cycles=$(sql -c "SELECT greatest(count(*), 1) FROM iwd.task_event
                         WHERE id > $events0 AND id <= $events1 AND event = 'completed'")
        sql -F ' ' -c "SELECT $cycles, round(pg_wal_lsn_diff('$lsn1', '$lsn0') / $cycles),
                              round(($fpi1 - $fpi0)::numeric / $cycles, 2)"
        sql -F ' ' -c "
            WITH r AS (SELECT record_length, fpi_length,
                              (regexp_match(block_ref, 'rel \d+/\d+/(\d+)'))[1]::oid AS node
                       FROM pg_get_wal_records_info('$lsn0', '$lsn1'))
            SELECT c.relname, round(sum(r.record_length) / $cycles), round(sum(r.fpi_length) / $cycles)
            FROM r JOIN pg_class c ON c.relfilenode = r.node AND c.relfilenode <> 0
            WHERE c.relname ~ '^(event_|task_event|task$)'
            GROUP BY 1 ORDER BY 1"
    )
}

relations=$(mktemp "$trees/relations.XXXXXX")
echo "| round | build | cycles | WAL per cycle (B) | full-page images per cycle |"
echo "|---|---|---:|---:|---:|"
for r in $(seq 1 "$rounds"); do
    for name in before after; do
        commit=$before; [ "$name" = after ] && commit=$after
        out=$(measure "$name")
        read -r cycles wal fpi <<<"$(head -1 <<<"$out")"
        [ -n "$fpi" ] || { echo "the round against $name failed" >&2; exit 1; }
        echo "| $r | $name ($(git rev-parse --short "$commit")) | $cycles | $wal | $fpi |"
        tail -n +2 <<<"$out" | sed "s/^/$r $name /" >>"$relations"
    done
done
echo
echo "By relation, bytes per cycle (full-page image bytes of them), each round:"
echo
echo "| relation | round | before | after |"
echo "|---|---:|---:|---:|"
awk '{k = $3 " " $1; v[k, $2] = $4 " (" $5 ")"; keys[k] = 1}
     END {for (k in keys) {split(k, p, " "); b = v[k, "before"]; a = v[k, "after"];
                           printf "| `%s` | %s | %s | %s |\n", p[1], p[2], (b == "" ? "-" : b), (a == "" ? "-" : a)}}' \
    "$relations" | sort
