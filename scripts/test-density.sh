#!/usr/bin/env bash
# Many tenant databases on one server, served by a bounded pool of workers: more tenant databases (80,
# made from a template that holds iwd, so no CREATE EXTENSION runs in them) than the old cap of 64, each
# with a reservation that must time out and a deferred task to activate, every one done (how late is
# printed; the 2 s target is measured by bench/density, this test only catches a deadline missed by far,
# as a lost wake-up would), never more than iwd.max_workers workers at once; with the pool short, a
# deadline is served before an announcement that came due earlier; a quiet tenant beside two busy ones
# holding a pool of 2 is counted as waiting and its events published; a database gets served
# within seconds of CREATE EXTENSION and no longer after DROP EXTENSION; iwd.databases, when set, leaves
# the others out; a reservation that timed out while the server was down is returned after the restart; a database past
# iwd.max_databases is logged and counted. Ends with "density: N passed, M failed".
set -uo pipefail
suite=density
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
pg_port=${IWD_DENSITY_PORT:-}
tenants=${IWD_DENSITY_TENANTS:-80}
max_workers=4
work=$(work_dir density)
sampler=

stop() {
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
    cluster_stop fast
    [ "$failed" -gt 0 ] && cp "$pg_log" /tmp/iwd-density-failed.log
    rm -rf "$work"
}
trap stop EXIT

sql() { cluster_sql "$@"; }

# wait_for NAME EXPECTED SECONDS SQL...: poll until the query returns EXPECTED
wait_for() {
    local name=$1 expected=$2 seconds=$3; shift 3
    local got=""
    for _ in $(seq 1 $((seconds * 10))); do
        got=$(sql "$@" 2>/dev/null)
        [ "$got" = "$expected" ] && break
        sleep 0.1
    done
    check "$name" "$expected" "$got"
}

# the tenant databases the launcher serves, by name
served_sql="SELECT coalesce(string_agg(t->>'database', ',' ORDER BY t->>'database'), '')
            FROM jsonb_array_elements(iwd.worker_stats()->'tenants') t WHERE t->>'state' = 'served'"
# a timestamp N seconds from now, as iwd reads it
at_sql() { echo "to_char(now() AT TIME ZONE 'UTC' + interval '$1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"; }
tenant() { printf 't%03d' "$1"; }

cluster_init "$work/pg" "max_worker_processes = 16
# 80 databases make a shutdown checkpoint fsync tens of thousands of files; this test needs no durability
fsync = off
iwd.max_workers = $max_workers
iwd_dm.suspend = on" || fail_setup "initdb failed"
cluster_start || fail_setup "PostgreSQL did not start"

# the template holds iwd, an agent and a deadline table; a template database is never served
sql -d postgres -c "CREATE DATABASE tpl"
sql -d tpl -c "CREATE EXTENSION iwd" -c "SELECT iwd.upsert_agent('{\"id\": \"a1\", \"state\": \"ready\"}')" \
    -c "CREATE TABLE public.deadline (what text, due timestamptz)" >/dev/null
sql -d postgres -c "ALTER DATABASE tpl IS_TEMPLATE true"
for i in $(seq 1 "$tenants"); do echo "CREATE DATABASE $(tenant "$i") TEMPLATE tpl;"; done | sql -d postgres
sql -d postgres -c "CREATE DATABASE monitor" && sql -d monitor -c "CREATE EXTENSION iwd"
wait_for "every tenant database is found and served, the template left out" "$((tenants + 1))" 30 -d monitor \
    -c "SELECT count(*) FROM jsonb_array_elements(iwd.worker_stats()->'tenants') t WHERE t->>'state' = 'served'"

# the pool's bound: sample the iwd scheduler workers while every tenant has work falling due
cluster_client psql -X -q -At -d postgres -c "CREATE TEMP TABLE sample (n int)" -c "
    DO \$\$ BEGIN FOR i IN 1..600 LOOP
        INSERT INTO sample SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'iwd scheduler';
        COMMIT; PERFORM pg_sleep(0.025); END LOOP; END \$\$" -c "SELECT max(n) FROM sample" > "$work/sample.out" 2>&1 &
sampler=$!

# in every tenant: a reservation of 3 s and a task deferred by 4 s (their deadlines spread over the loop)
writers=()
for i in $(seq 1 "$tenants"); do
    sql -d "$(tenant "$i")" -c "SELECT iwd.create_task('{\"externalId\": \"R\", \"capturePoint\": \"test\"}')" \
        -c "INSERT INTO public.deadline SELECT 'reservation', (iwd.next_task('a1', 3) ->> 'reservedUntil')::timestamptz" \
        -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'D', 'capturePoint', 'test', 'activationAt', $(at_sql 4)))" \
        -c "INSERT INTO public.deadline SELECT 'activation', activation_at FROM iwd.task WHERE external_id = 'D'" >/dev/null &
    writers+=($!)
    # a batch of 8 tenants every quarter second: deadlines arrive as a steady stream (some 30 a second),
    # not as one burst that 4 workers on a 2-core machine could not start fast enough for
    [ $((i % 8)) -eq 0 ] && { wait "${writers[@]}"; writers=(); sleep 0.25; }
done
[ ${#writers[@]} -gt 0 ] && wait "${writers[@]}"
late_sql="SELECT coalesce(max(greatest(
              (SELECT max(e.at) FROM iwd.task_event e JOIN iwd.task t ON t.id = e.task_id
               WHERE t.external_id = 'R' AND e.event = 'reservation_timeout')
              - (SELECT due FROM public.deadline WHERE what = 'reservation'),
              (SELECT max(e.at) FROM iwd.task_event e JOIN iwd.task t ON t.id = e.task_id
               WHERE t.external_id = 'D' AND e.event = 'activated')
              - (SELECT due FROM public.deadline WHERE what = 'activation'))), interval '1 day')"
# poll until every tenant's two tasks are queued again (the last deadlines fall some 4 s after the loop)
sleep 4
pending=$(seq 1 "$tenants")
for _ in $(seq 1 60); do
    still=
    for i in $pending; do
        [ "$(sql -d "$(tenant "$i")" -c "SELECT count(*) FROM iwd.task WHERE status = 'queued'")" = 2 ] || still="$still $i"
    done
    pending=$still
    [ -z "$pending" ] && break
    sleep 0.5
done
done_count=0; lates=()
for i in $(seq 1 "$tenants"); do
    row=$(sql -d "$(tenant "$i")" -c "SELECT (SELECT count(*) FROM iwd.task WHERE status = 'queued')
                                      || ' ' || round(extract(epoch FROM ($late_sql)) * 1000)")
    if [ "${row%% *}" = 2 ]; then
        done_count=$((done_count + 1))
    else
        echo "# $(tenant "$i"): $(sql -d "$(tenant "$i")" -c "SELECT string_agg(external_id || ' ' || status || ' ' ||
            coalesce(reserved_until::text, activation_at::text, ''), '; ') FROM iwd.task")"
        echo "#   $(sql -d "$(tenant "$i")" -c "SELECT string_agg(at::time || ' ' || event, '; ' ORDER BY id) FROM iwd.task_event")"
        echo "#   $(sql -d "$(tenant "$i")" -c "SELECT t FROM jsonb_array_elements(iwd.worker_stats()->'tenants') t
                                              WHERE t->>'database' = current_database()")"
    fi
    lates+=("${row##* }")
done
sorted=$(printf '%s\n' "${lates[@]}" | sort -n)
worst=$(tail -n 1 <<<"$sorted")
p50=$(sed -n "$(( (tenants + 1) / 2 ))p" <<<"$sorted")
check "every tenant's reservation timed out and deferred task activated" "$tenants" "$done_count"
echo "# lateness after the deadline, worst of each tenant's two: median ${p50} ms, max ${worst} ms"
check "none missed by far (worst ${worst} ms; a lost wake-up waits for the idle timeout or a rescan)" "t" \
    "$([ "$worst" -le 10000 ] && echo t || echo f)"
wait "$sampler"; sampler=
most=$(tail -n 1 "$work/sample.out")
check "never more than iwd.max_workers ($max_workers) scheduler workers at once (most seen: $most)" "t" \
    "$([ -n "$most" ] && [ "$most" -le "$max_workers" ] && [ "$most" -ge 1 ] && echo t || echo f)"
wait_for "and idle tenants keep none" "0" 20 -d postgres \
    -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'iwd scheduler'"

# deadlines first: t001's reservation deadline (known from its worker's survey) and t002's announcement
# (events written 1 s before that deadline, ranked 2 s after their due time) both wait with no worker
# allowed; given one, the launcher serves t001's deadline before t002's events
sql -d postgres -c "ALTER SYSTEM SET iwd.worker_idle_timeout = '100ms'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
# (a new agent, free whatever the tests above left reserved)
sql -d t001 -c "SELECT iwd.upsert_agent('{\"id\": \"a2\", \"state\": \"ready\"}')" \
    -c "SELECT iwd.create_task('{\"externalId\": \"Y\", \"capturePoint\": \"test\"}')" \
    -c "INSERT INTO public.deadline SELECT 'first', (iwd.next_task('a2', 6) ->> 'reservedUntil')::timestamptz" \
    >/dev/null
# (its next due time the deadline itself: an earlier one would be the announcement of a write not surveyed yet)
wait_for "a worker surveys the tenant's reservation and leaves" "t" 5 -d t001 \
    -c "SELECT t->>'workerPid' IS NULL AND (t->>'nextDueAt')::timestamptz BETWEEN d.due - interval '10 ms'
        AND d.due + interval '1 s' FROM jsonb_array_elements(iwd.worker_stats()->'tenants') t, public.deadline d
        WHERE t->>'database' = 't001' AND d.what = 'first'"
sql -d postgres -c "ALTER SYSTEM SET iwd.max_workers = 0" -c "SELECT pg_reload_conf()" >/dev/null
# until_first OFFSET: seconds from now to OFFSET seconds after that deadline (0 when past)
until_first() {
    sql -d t001 -c "SELECT greatest(extract(epoch FROM due - now()) + $1, 0) FROM public.deadline WHERE what = 'first'"
}
sleep "$(until_first -1)"
sql -d t002 -c "SELECT iwd.create_task('{\"externalId\": \"X\", \"capturePoint\": \"test\"}')" >/dev/null
sleep "$(until_first 0.5)"
wait_for "with no worker allowed, both wait, one of them with a deadline due" "2 1" 20 -d t001 \
    -c "SELECT (iwd.worker_stats()->>'waiting') || ' ' || (iwd.worker_stats()->>'deadlinesWaiting')"
sql -d postgres -c "ALTER SYSTEM SET iwd.max_workers = 1" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "given one worker, the reservation times out" "0" 15 -d t001 \
    -c "SELECT count(*) FROM iwd.task WHERE status = 'assigned'"
wait_for "and the other tenant's events are published" "0" 15 -d t002 -c "SELECT count(*) FROM iwd.event_outbox"
timed_out=$(sql -d t001 -c "SELECT max(at) FROM iwd.task_event WHERE event = 'reservation_timeout'")
check "the deadline is served before the announcement that was due earlier" "t" \
    "$(sql -d t002 -c "SELECT max(published_at) > '$timed_out' FROM iwd.event_feed")"
sql -d postgres -c "ALTER SYSTEM RESET iwd.max_workers" -c "ALTER SYSTEM RESET iwd.worker_idle_timeout" \
    -c "SELECT pg_reload_conf()" >/dev/null

# a pool of 2 held by two busy tenants (a session writing tasks all the time keeps its worker busy): a
# quiet tenant's committed events are published within 10 s, and meanwhile, once its announcement is
# due, the launcher counts it as waiting (the busy workers make way only for a tenant counted) or starts
# its worker. Its announcement falls due while every worker is busy: a launcher that then slept until a
# worker's exit or its next scan of pg_database left it uncounted, and the busy workers kept the pool.
sql -d postgres -c "ALTER SYSTEM SET iwd.max_workers = 2" -c "SELECT pg_reload_conf()" >/dev/null
busy=()
for db in t010 t011; do
    sql -d "$db" -c "DO \$\$ DECLARE i int := 0; BEGIN
        WHILE NOT EXISTS (SELECT FROM public.deadline WHERE what = 'stop') AND i < 6000 LOOP
            i := i + 1;
            PERFORM iwd.create_task(jsonb_build_object('externalId', 'busy-' || i, 'capturePoint', 'test'));
            COMMIT; PERFORM pg_sleep(0.02);
        END LOOP; END \$\$" >/dev/null &
    busy+=($!)
done
wait_for "two busy tenants hold both workers" "2" 20 -d monitor \
    -c "SELECT count(*) FROM jsonb_array_elements(iwd.worker_stats()->'tenants') t
        WHERE t->>'database' IN ('t010', 't011') AND t->>'workerPid' IS NOT NULL"
# pool_view: "events in the outbox, tenants waiting, this tenant's worker starts, its due time 2 s past"
pool_view="SELECT (SELECT count(*) FROM iwd.event_outbox) || ' ' || (s->>'waiting') || ' ' || (t->>'starts')
               || ' ' || coalesce((t->>'nextDueAt')::timestamptz < now() - interval '2 s', false)
           FROM iwd.worker_stats() s, jsonb_array_elements(s->'tenants') t WHERE t->>'database' = current_database()"
uncounted=0; seen_waiting=0; slowest=0
for db in t012 t013 t014; do
    read -r _ _ starts_before _ <<<"$(sql -d "$db" -c "$pool_view")"
    sql -d "$db" -c "SELECT iwd.create_task('{\"externalId\": \"Q\", \"capturePoint\": \"test\"}')" >/dev/null
    from=$(date +%s%N); outbox=1
    for _ in $(seq 1 100); do
        read -r outbox waiting starts overdue <<<"$(sql -d "$db" -c "$pool_view")"
        [ "${outbox:-1}" = 0 ] && break
        [ "${waiting:-0}" -gt 0 ] && seen_waiting=$((seen_waiting + 1))
        if [ "$overdue" = true ] && [ "$waiting" = 0 ] && [ "$starts" = "$starts_before" ]; then
            [ "$uncounted" = 0 ] && echo "# $db due 2 s ago, no worker started, not counted as waiting: $(sql -d "$db" \
                -c "SELECT now()::time || ' ' || iwd.worker_stats()")"
            uncounted=$((uncounted + 1))
        fi
        sleep 0.1
    done
    ms=$((($(date +%s%N) - from) / 1000000)); [ "$ms" -gt "$slowest" ] && slowest=$ms
    check "$db, quiet beside the busy two: its events are published (after ${ms} ms)" "0" "$outbox"
done
echo "# the quiet tenants' events published within ${slowest} ms at most, counted as waiting $seen_waiting times"
check "a quiet tenant past its due time with no worker is always counted as waiting" "0" "$uncounted"
check "and the busy workers made way for it within 10 s" "t" "$([ "$slowest" -le 10000 ] && echo t || echo f)"
for db in t010 t011; do sql -d "$db" -c "INSERT INTO public.deadline VALUES ('stop', now())" >/dev/null; done
wait "${busy[@]}"
sql -d postgres -c "ALTER SYSTEM RESET iwd.max_workers" -c "SELECT pg_reload_conf()" >/dev/null

# CREATE EXTENSION in a new database: served within seconds, its work done; DROP EXTENSION: no longer
sql -d postgres -c "CREATE DATABASE fresh"
started=$(date +%s%N)
sql -d fresh -c "CREATE EXTENSION iwd"
for _ in $(seq 1 200); do
    [ "$(sql -d monitor -c "SELECT count(*) FROM jsonb_array_elements(iwd.worker_stats()->'tenants') t
                            WHERE t->>'database' = 'fresh' AND t->>'state' = 'served' AND (t->>'starts')::int > 0")" = 1 ] && break
    sleep 0.05
done
served_ms=$((($(date +%s%N) - started) / 1000000))
check "a database is served soon after CREATE EXTENSION (${served_ms} ms)" "t" "$([ "$served_ms" -le 10000 ] && echo t || echo f)"
sql -d fresh -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'F', 'capturePoint', 'test', 'activationAt', $(at_sql 1)))" >/dev/null
wait_for "and its deferred work is done" "queued" 15 -d fresh -c "SELECT status FROM iwd.task WHERE external_id = 'F'"
sql -d fresh -c "DROP EXTENSION iwd"
wait_for "DROP EXTENSION: the database is no longer served" "0" 15 -d monitor \
    -c "SELECT count(*) FROM jsonb_array_elements(iwd.worker_stats()->'tenants') t WHERE t->>'database' = 'fresh'"

# iwd.databases set: only those are served
sql -d postgres -c "ALTER SYSTEM SET iwd.databases = 'monitor, t001'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "iwd.databases set: the databases it does not name are left out" "monitor,t001" 15 -d monitor -c "$served_sql"
for db in t001 t002; do
    sql -d "$db" -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'G', 'capturePoint', 'test', 'activationAt', $(at_sql 1)))" >/dev/null
done
wait_for "a named database's deferred work is done" "queued" 15 -d t001 -c "SELECT status FROM iwd.task WHERE external_id = 'G'"
check "another's is not" "held" "$(sql -d t002 -c "SELECT status FROM iwd.task WHERE external_id = 'G'")"
sql -d postgres -c "ALTER SYSTEM RESET iwd.databases" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "iwd.databases emptied: it is served again and its work done" "queued" 15 -d t002 \
    -c "SELECT status FROM iwd.task WHERE external_id = 'G'"

# a reservation that times out while the server is down is returned once it is back
sql -d t003 -c "SELECT iwd.create_task('{\"externalId\": \"S\", \"capturePoint\": \"test\"}')" \
    -c "SELECT iwd.next_task('a1', 1)" >/dev/null
cluster_stop fast
sleep 1.5
echo "iwd.max_databases = 50" >> "$pg_data/postgresql.conf"
cluster_start
wait_for "after a restart a reservation that timed out meanwhile is returned" "queued" 15 -d t003 \
    -c "SELECT status FROM iwd.task WHERE external_id = 'S'"
# (t003 is among the first 50 databases of pg_database; the others past the limit are logged and counted)
check "a database past iwd.max_databases is logged" "t" \
    "$(grep -q 'is not served: iwd.max_databases (50) databases are served already' "$pg_log" && echo t || echo f)"
check "and counted" "t" \
    "$(sql -d t003 -c "SELECT (iwd.worker_stats()->>'databasesOverLimit')::int > 0 AND (iwd.worker_stats()->>'databases')::int <= 50")"
check "no error in the server log" "0" "$(grep -c 'ERROR' "$pg_log")"

cluster_stop fast
check "the server stops cleanly" "0" "$?"
summary
