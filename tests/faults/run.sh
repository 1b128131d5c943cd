#!/usr/bin/env bash
# The fault suite: a real PostgreSQL cluster preloading iwd (scheduler and Data Mart workers on), Redis
# and the sidecar under the load of tests/faults/load.py (12 REST and 4 SQL clients creating, claiming,
# accepting and finishing tasks, each logging every acknowledged change). Faults are injected one at a
# time: kill -9 of random backends, of the sidecar (restarted), of Redis (restarted), of the Data Mart
# worker and of an iwd_dm.run() mid-chain, of the postmaster (restarted). After each the load must make
# progress again and checks.sql finds no task lost, none assigned twice, every acknowledged change in
# place and the history consistent. At the end, the Data Mart after a rerun must hold the same
# aggregates as one rebuilt from scratch.
# Usage: tests/faults/run.sh [--long]   (two rounds of every fault; --long: IWD_FAULT_ROUNDS rounds, default 10)
# Ends with "faults: N passed, M failed".
set -uo pipefail
suite=faults
rounds=2
[ "${1:-}" = --long ] && rounds=${IWD_FAULT_ROUNDS:-10}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"
work=$(work_dir faults)
load_pid=""
faults_injected=0
tenant_db=tenant_f
tenant_key="fault-tenant-key-0123456789abcdef"

cleanup() {
    [ -n "$load_pid" ] && { touch "$work/stop"; wait "$load_pid" 2>/dev/null; }
    servers_stop immediate
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

acks() { cat "$work"/load/ack-*.csv 2>/dev/null | wc -l; }
acks_via() { cat "$work"/load/ack-*.csv 2>/dev/null | grep -c ",$1,"; }

# progress NAME: both kinds of client acknowledge new changes within 60 s
progress() {
    local rest0 sql0 rest sql
    rest0=$(acks_via rest); sql0=$(acks_via sql)
    for _ in $(seq 1 600); do
        rest=$(acks_via rest); sql=$(acks_via sql)
        [ "$rest" -ge $((rest0 + 20)) ] && [ "$sql" -ge $((sql0 + 10)) ] && break
        sleep 0.1
    done
    check "after $1: REST and SQL clients acknowledge changes again" "yes" \
        "$([ "$rest" -ge $((rest0 + 20)) ] && [ "$sql" -ge $((sql0 + 10)) ] && echo yes || echo "no (REST +$((rest - rest0)), SQL +$((sql - sql0)))")"
}

# consistency NAME [full]: every check of checks.sql on a snapshot of the acknowledged changes, for the
# tasks changed or acknowledged since the previous check (every task with "full")
checked_event=0; checked_ms=0
consistency() {
    local out name n since_event=$checked_event since_ms=$checked_ms
    [ "${2:-}" = full ] && { since_event=0; since_ms=0; }
    checked_event=$(sql "$tenant_db" -c "SELECT coalesce(max(id), 0) FROM iwd.task_event")
    checked_ms=$(($(date +%s%3N) - 60000))   # acknowledgements written late: a minute's margin
    cat "$work"/load/ack-*.csv > "$work/acks.csv"
    out=$(sql "$tenant_db" -v since_event="$since_event" -v since_ms="$since_ms" -f "$here/checks.sql" <"$work/acks.csv" 2>&1)
    if ! grep -q '|' <<<"$out"; then check "after $1: the checks ran" "" "$out"; return; fi
    while IFS='|' read -r name n; do
        check "after $1: $name" "0" "$n"
    done < <(grep '|' <<<"$out")
    grep '^# ' <<<"$out"
}

# recovered [PID...]: the killed processes are gone (the postmaster reaped them: it has noticed the crash
# and restarts the cluster, so a query answered before that is not taken for a recovery), the cluster
# accepts queries again and the sidecar serves the tenant
recovered() {
    local pid
    for pid in "$@"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    cluster_wait || return 1
    for _ in $(seq 1 300); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $tenant_key" "$base/tasks?limit=1")" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

# --- the faults --------------------------------------------------------------------------------------
fault_backends() {
    local pids
    pids=$(sql postgres -c "SELECT pid FROM pg_stat_activity WHERE datname = '$tenant_db' AND backend_type = 'client backend'
                            AND pid <> pg_backend_pid() ORDER BY random() LIMIT 2")
    [ -n "$pids" ] || { check "kill -9 of backends: backends to kill" "some" "none"; return; }
    # shellcheck disable=SC2086
    kill -9 $pids
    faults_injected=$((faults_injected + 1))
    # shellcheck disable=SC2086
    check "kill -9 of $(wc -w <<<"$pids") backends: the cluster recovers" "0" "$(recovered $pids; echo $?)"
}

fault_postmaster() {
    local pm alive kids
    pm=$(postmaster_pid)
    kids=$(children "$pm" | tr '\n' ' ')
    kill -9 "$pm"
    faults_injected=$((faults_injected + 1))
    # the backends notice the postmaster's death and exit; a new postmaster needs them gone
    for _ in $(seq 1 300); do
        alive=0
        for c in $kids; do kill -0 "$c" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    [ "$alive" = 0 ] || kill -9 $kids 2>/dev/null
    sleep 0.5
    cluster_start
    check "kill -9 of the postmaster: restarted, it recovers" "0" "$(recovered; echo $?)"
}

fault_sidecar() {
    kill -9 "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null
    faults_injected=$((faults_injected + 1))
    sleep 1
    sidecar_start >/dev/null
    check "kill -9 of the sidecar: restarted, it serves the tenant" "0" "$(recovered; echo $?)"
}

fault_redis() {
    kill -9 "$(cat "$work/redis.pid")"
    faults_injected=$((faults_injected + 1))
    sleep 3   # requests go on without Redis
    check "kill -9 of Redis: the tenant is served without it" "0" "$(recovered; echo $?)"
    rm -f "$work/redis.pid"
    redis_start "$work" "$redis_password"
    check "Redis restarted" "PONG" "$(redis_cli ping)"
}

# wait_backend CONDITION SECONDS: the pid of the first backend of pg_stat_activity matching CONDITION, polled
# every 10 ms from one session
wait_backend() {
    sql postgres -c "DO \$\$ BEGIN FOR i IN 1..$2 * 100 LOOP
                         PERFORM pg_stat_clear_snapshot(); PERFORM 1 FROM pg_stat_activity WHERE $1;
                         EXIT WHEN FOUND; PERFORM pg_sleep(0.01);
                     END LOOP; END \$\$" -c "SELECT pid FROM pg_stat_activity WHERE $1 LIMIT 1"
}

# fault_datamart_worker: kill -9 of the scheduled chain's worker while it runs (it starts every minute);
# a run that ends before the kill is followed by the next one, three at most
fault_datamart_worker() {
    local pid attempt
    for attempt in 1 2 3; do
        pid=$(wait_backend "backend_type = 'iwd datamart' AND datname = '$tenant_db'" 75)
        if [ -z "$pid" ]; then check "kill -9 of the Data Mart worker: it ran within 75 s" "running" "not seen"; return; fi
        sleep 0.1
        if kill -9 "$pid" 2>/dev/null; then
            faults_injected=$((faults_injected + 1))
            check "kill -9 of the Data Mart worker mid-chain: the cluster recovers" "0" "$(recovered "$pid"; echo $?)"
            return
        fi
        sleep 1
    done
    check "kill -9 of the Data Mart worker: caught running" "running" "finished first, three times"
}

# fault_datamart_run: kill -9 of a session running iwd_dm.run('full') while it works
fault_datamart_run() {
    local pid psql_pid
    sql "$tenant_db" -c "SET application_name = 'fault-dm-run'" -c "SET iwd_dm.batch_size = 5" -c "SELECT iwd_dm.run('full')" >/dev/null 2>&1 &
    psql_pid=$!
    pid=$(wait_backend "application_name = 'fault-dm-run' AND state = 'active' AND query LIKE '%iwd_dm.run%'" 10)
    if [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; then
        faults_injected=$((faults_injected + 1))
        check "kill -9 of an iwd_dm.run('full') session mid-chain: the cluster recovers" "0" \
            "$(recovered "$pid"; echo $?)"
    else
        check "kill -9 of an iwd_dm.run('full') session: caught running" "running" "finished first"
    fi
    wait "$psql_pid" 2>/dev/null
}

# --- servers and load ----------------------------------------------------------------------------------
build_sidecar || fail_setup "cannot build iwd-sidecar-asan"
pg_init "iwd.databases = '$tenant_db'
iwd.scheduler_interval = 100ms
iwd_dm.schedule = '* * * * *'
iwd_dm.batch_size = 50
log_min_messages = warning" || fail_setup "initdb failed"
cluster_start || fail_setup "PostgreSQL did not start"
sql postgres -c "CREATE DATABASE control" || fail_setup "createdb control failed"
redis_start "$work" "$redis_password" || fail_setup "redis-server did not start"
sidecar_start || fail_setup "sidecar start failed"
provision f "$tenant_db" "$tenant_key" || fail_setup "provisioning the tenant failed"

per_round=7
seconds=$((rounds * per_round * 45 + 120))
mkdir -p "$work/load"
/usr/bin/python3 "$here/load.py" --base "$base" --key "$tenant_key" \
    --dsn "host=$pg_dir port=$pg_port dbname=$tenant_db user=$pg_superuser" \
    --rest-clients 12 --sql-clients 4 --seconds "$seconds" --log-dir "$work/load" --stop-file "$work/stop" \
    >"$work/load.log" 2>&1 &
load_pid=$!
t0=$(date +%s)
progress "the start"

for round in $(seq 1 "$rounds"); do
    [ "$rounds" -gt 1 ] && echo "# round $round of $rounds"
    for fault in backends sidecar redis datamart_run datamart_worker backends postmaster; do
        echo "# $(date -u +%H:%M:%S) fault: $fault"
        "fault_$fault"
        progress "$fault"
        consistency "$fault"
    done
done

# --- the end: every change settled, the Data Mart rerun against a rebuild from scratch --------------------
touch "$work/stop"; wait "$load_pid"; load_pid=""
check "the load ran to its end without an exception" "" "$(grep -m1 -E 'Traceback|Error' "$work/load.log")"
consistency "the load (every task)" full
# the history must stand still while the Data Mart is compared: the reservations the load left unaccepted
# time out (the scheduler returns them), then the scheduler and the Data Mart schedule stop
unaccepted="SELECT count(*) FROM iwd.task WHERE status = 'assigned' AND accepted_at IS NULL"
for _ in $(seq 1 300); do
    [ "$(sql "$tenant_db" -c "$unaccepted")" = 0 ] && break
    sleep 0.1
done
check "the scheduler returns every reservation left unaccepted" "0" "$(sql "$tenant_db" -c "$unaccepted")"
sql postgres -c "ALTER SYSTEM SET iwd_dm.suspend = on" -c "ALTER SYSTEM SET iwd.max_workers = 0" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 600); do
    [ "$(sql postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('iwd datamart', 'iwd scheduler')
                          AND datname = '$tenant_db'")" = 0 ] && break
    sleep 0.1
done
check "the Data Mart rerun succeeds" "succeeded" "$(sql "$tenant_db" -c "SELECT iwd_dm.run('full') ->> 'status'")"
levels="15min hour day week month"
dm_tables="task_fact $(for l in $levels; do printf 'agg_%s ' "$l"; done)"
save="CREATE SCHEMA fault_incremental;"; dm_list="iwd_dm.dirty, iwd_dm.event_gap"
for t in $dm_tables; do save="$save CREATE TABLE fault_incremental.$t AS TABLE iwd_dm.$t;"; dm_list="$dm_list, iwd_dm.$t"; done
sql "$tenant_db" -c "$save" || check "the incremental Data Mart is saved" "" "failed"
sql "$tenant_db" -c "TRUNCATE $dm_list" -c "UPDATE iwd_dm.watermark SET last_event_id = 0" >/dev/null
check "a rebuild from scratch succeeds" "succeeded" "$(sql "$tenant_db" -c "SELECT iwd_dm.run('full') ->> 'status'")"
avg_cols="avg_age_s, avg_queue_s, avg_handle_s"
for t in $dm_tables; do
    all_cols=$(sql "$tenant_db" -c "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
                                    WHERE attrelid = 'iwd_dm.$t'::regclass AND attnum > 0 AND NOT attisdropped")
    exact_cols=$(sed -E 's/(, )?avg_(age|queue|handle)_s//g; s/^, //' <<<"$all_cols")
    diff_sql() { # diff_sql COLUMNS: rows of one side missing from the other, both ways
        echo "SELECT (SELECT count(*) FROM (SELECT $1 FROM fault_incremental.$t EXCEPT ALL SELECT $1 FROM iwd_dm.$t) a)
                   + (SELECT count(*) FROM (SELECT $1 FROM iwd_dm.$t EXCEPT ALL SELECT $1 FROM fault_incremental.$t) b)"
    }
    check "Data Mart $t: the rerun's rows equal a rebuild from scratch (all but the averages)" "0" \
        "$(sql "$tenant_db" -c "$(diff_sql "$exact_cols")")" ||
        sql "$tenant_db" -c "(SELECT '# rerun only: ' || to_jsonb(r) FROM (SELECT $exact_cols FROM fault_incremental.$t
                                 EXCEPT ALL SELECT $exact_cols FROM iwd_dm.$t) r LIMIT 3)
                             UNION ALL (SELECT '# rebuild only: ' || to_jsonb(r) FROM (SELECT $exact_cols FROM iwd_dm.$t
                                 EXCEPT ALL SELECT $exact_cols FROM fault_incremental.$t) r LIMIT 3)"
    if [ "$t" != task_fact ]; then
        check "Data Mart $t: the same averages ($avg_cols) to the last bit" "0" "$(sql "$tenant_db" -c "$(diff_sql "$all_cols")")"
    fi
done
check "the Data Mart holds every task" "$(sql "$tenant_db" -c "SELECT count(*) FROM iwd.task_all")" \
    "$(sql "$tenant_db" -c "SELECT count(*) FROM iwd_dm.task_fact")"

# --- the counts ----------------------------------------------------------------------------------------
kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null; sidecar_pid=""
check "no AddressSanitizer or UndefinedBehaviorSanitizer report" "0" \
    "$(grep -c -E 'AddressSanitizer|runtime error' "$work/sidecar.log")"
tasks=$(sql "$tenant_db" -c "SELECT count(*) FROM iwd.task_all WHERE capture_point = 'fault'")
events=$(sql "$tenant_db" -c "SELECT count(*) FROM iwd.task_event")
codes=$(cat "$work"/load/summary-*.json 2>/dev/null | jq -s -r 'map(.codes) | reduce .[] as $c ({}; reduce ($c | to_entries[]) as $e (.; .[$e.key] += $e.value)) | to_entries | map("\(.key): \(.value)") | join(", ")')
echo "# $(($(date +%s) - t0)) s of load: $(acks) acknowledged changes on $tasks tasks ($events events), $faults_injected faults injected"
echo "# answers seen by the clients: $codes"
summary
