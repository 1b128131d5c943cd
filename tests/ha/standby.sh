#!/usr/bin/env bash
# A hot standby with iwd preloaded: a streaming standby (pg_basebackup -R) of a primary whose tenant has
# work due (reservations timing out, a Data Mart schedule every minute) starts none of iwd's workers, and
# serves the read paths a reporting client uses (iwd.queue, iwd.get_task, iwd.queue_stats, the Data Mart's
# report views, as the tenant's reporting role too) while refusing writes with PostgreSQL's read-only error.
# Promoted, it starts the launcher, runs the tenant's scheduler and Data Mart workers and returns the
# reservations that timed out meanwhile. Ends with "ha-standby: N passed, M failed".
set -uo pipefail
suite=ha-standby
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../scripts/lib.sh
. "$here/../../scripts/lib.sh"
work=$(work_dir ha-standby)
tenant_db=tenant_h
standby_data=$work/standby/data
standby_port=$(free_port)

cleanup() {
    [ -f "$standby_data/postmaster.pid" ] &&
        as_postgres "$bindir/pg_ctl" -D "$standby_data" -m immediate -w stop >/dev/null 2>&1
    cluster_stop immediate
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

primary() { cluster_sql -d "$tenant_db" "$@"; }
standby() { PGHOST=$work/standby PGPORT=$standby_port PGUSER=$pg_superuser "$bindir/psql" -X -q -At "$@"; }
# poll NAME EXPECTED COMMAND...: until COMMAND prints EXPECTED (at most $poll_s seconds, 60 unless set),
# then the check
poll_s=60
poll() {
    local name=$1 expected=$2 got=""; shift 2
    for _ in $(seq 1 $((poll_s * 10))); do
        got=$("$@" 2>/dev/null)
        [ "$got" = "$expected" ] && break
        sleep 0.1
    done
    check "$name" "$expected" "$got"
}
iwd_workers="SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'iwd %'"

# --- a primary with work due, and its streaming standby ----------------------------------------------
cluster_init "$work/pg" "iwd.scheduler_interval = 100ms
iwd_dm.schedule = '* * * * *'
hot_standby = on" || fail_setup "initdb failed"
cluster_start || fail_setup "PostgreSQL did not start"
cluster_sql -d postgres -c "CREATE DATABASE $tenant_db" || fail_setup "createdb failed"
primary -c "CREATE EXTENSION iwd" || fail_setup "CREATE EXTENSION failed"
primary -c "SELECT iwd.upsert_agent('{\"id\":\"a1\",\"name\":\"A1\",\"state\":\"ready\",\"capacity\":{\"workitem\":50}}')" \
    -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'S-' || i, 'capturePoint', 'standby', 'priority', i))
        FROM generate_series(1, 30) i" >/dev/null || fail_setup "tasks could not be created"
# ten completed (history for the Data Mart), ten queued, ten reserved for 10 minutes and never accepted
claims=()
for _ in $(seq 1 10); do claims+=(-c "SELECT iwd.complete_task((iwd.next_task('a1', 30) ->> 'id')::bigint, 'a1')"); done
for _ in $(seq 1 10); do claims+=(-c "SELECT iwd.next_task('a1', 600)"); done
primary "${claims[@]}" >/dev/null || fail_setup "claims failed"
primary -c "SELECT iwd_dm.run('full') ->> 'status'" >/dev/null || fail_setup "the Data Mart run failed"

owned_by_postgres "$work/standby"
chmod 755 "$work/standby"
as_postgres "$bindir/pg_basebackup" -h "$pg_dir" -p "$pg_port" -U "$pg_superuser" -D "$standby_data" -R -X stream \
    --checkpoint=fast \
    >"$work/basebackup.log" 2>&1 || { cat "$work/basebackup.log"; fail_setup "pg_basebackup failed"; }
cat >>"$standby_data/postgresql.conf" <<CONF
port = $standby_port
unix_socket_directories = '$work/standby'
CONF
as_postgres "$bindir/pg_ctl" -D "$standby_data" -l "$work/standby/log" -w -t 120 start >/dev/null 2>&1 ||
    { tail -n 20 "$work/standby/log"; fail_setup "the standby did not start"; }

check "the standby is in recovery" "t" "$(standby -d postgres -c 'SELECT pg_is_in_recovery()')"
primary -c "CREATE TABLE public.replay_marker AS SELECT 1 AS n" || fail_setup "marker failed"
poll "the standby has replayed the primary's work" "1" standby -d "$tenant_db" -c "SELECT n FROM public.replay_marker"

# --- no worker on the standby ------------------------------------------------------------------------
# the primary serves the tenant meanwhile (its launcher and a tenant worker)
poll "the primary runs the launcher" "1" \
    cluster_sql -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'iwd scheduler launcher'"
seen=0
for _ in $(seq 1 50); do   # five seconds of readings, while work is due
    n=$(standby -d postgres -c "$iwd_workers") || n=error
    [ "$n" = 0 ] || { seen=$n; break; }
    sleep 0.1
done
check "the standby starts none of iwd's workers (launcher, scheduler, Data Mart)" "0" "$seen"

# --- read paths on the standby --------------------------------------------------------------------------
queue_sql="SELECT md5(string_agg(t::text, ',')) FROM iwd.queue('{}', 100) t"
check "iwd.queue reads the universal queue as the primary does" "$(primary -c "$queue_sql")" \
    "$(standby -d "$tenant_db" -c "$queue_sql")"
id=$(primary -c "SELECT id FROM iwd.task_all WHERE status = 'completed' ORDER BY id LIMIT 1")
check "iwd.get_task reads a completed task" "completed" \
    "$(standby -d "$tenant_db" -c "SELECT iwd.get_task($id) ->> 'status'")"
id=$(primary -c "SELECT id FROM iwd.task WHERE status = 'assigned' ORDER BY id LIMIT 1")
check "iwd.get_task reads a reserved task" "assigned a1" \
    "$(standby -d "$tenant_db" -c "SELECT concat_ws(' ', t ->> 'status', t ->> 'assignedTo') FROM iwd.get_task($id) t")"
check_match "iwd.queue_stats answers" '^\{' "$(standby -d "$tenant_db" -c "SELECT iwd.queue_stats()")"
for view in $(primary -c "SELECT string_agg(c.relname, ' ' ORDER BY c.relname) FROM pg_class c
                          WHERE c.relnamespace = 'iwd_dm'::regnamespace AND c.relkind = 'v'"); do
    check "Data Mart view iwd_dm.$view reads" "ok" \
        "$(standby -d "$tenant_db" -c "SELECT 'ok' FROM (SELECT count(*) FROM iwd_dm.$view) v")"
done
check "the task fact holds every task" "30" "$(standby -d "$tenant_db" -c "SELECT count(*) FROM iwd_dm.task_fact")"
gcxi=$(primary -c "SELECT iwd._role_name('iwd_gcxi_')")
check "the reporting role reads the Data Mart" "ok" \
    "$(standby -d "$tenant_db" -c "SET ROLE $gcxi" -c "SELECT 'ok' FROM (SELECT count(*) FROM iwd_dm.task_fact) f")"
out=$(standby -d "$tenant_db" -v ON_ERROR_STOP=1 -c "\\set VERBOSITY sqlstate" \
    -c "SELECT iwd.create_task('{\"externalId\":\"S-new\",\"capturePoint\":\"standby\"}')" 2>&1)
check "a write is refused as read-only (25006)" "ERROR:  25006" "$out"
out=$(standby -d "$tenant_db" -v ON_ERROR_STOP=1 -c "\\set VERBOSITY sqlstate" -c "SELECT iwd.next_task('a1', 30)" 2>&1)
check "a claim is refused as read-only (25006)" "ERROR:  25006" "$out"

# --- promoted ----------------------------------------------------------------------------------------
# five more reservations, of 20 s, then the primary stops (a fast stop: its last WAL reaches the standby)
claims=()
for _ in $(seq 1 5); do claims+=(-c "SELECT iwd.next_task('a1', 20)"); done
primary "${claims[@]}" >/dev/null || fail_setup "claims failed"
cluster_stop fast
as_postgres "$bindir/pg_ctl" -D "$standby_data" -w promote >/dev/null 2>&1
poll "the promoted standby is out of recovery" "f" standby -d postgres -c 'SELECT pg_is_in_recovery()'
poll "the promoted standby runs the launcher" "1" \
    standby -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'iwd scheduler launcher'"
# the reservations of 20 s made before the primary stopped time out on the new primary, the others stay
poll "the new primary's scheduler returns the timed-out reservations (and only those)" "10" \
    standby -d "$tenant_db" -c "SELECT count(*) FROM iwd.task WHERE status = 'assigned'"
poll_s=120
poll "the new primary's Data Mart chain runs on schedule (every minute) and loads the timeouts" "t" \
    standby -d "$tenant_db" -c "SELECT last_event_id >= (SELECT max(id) FROM iwd.task_event WHERE event = 'reservation_timeout')
                                FROM iwd_dm.watermark"
summary
