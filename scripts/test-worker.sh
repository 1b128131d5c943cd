#!/usr/bin/env bash
# The scheduler background worker in a real cluster: it starts for the databases of iwd.databases,
# activates deferred tasks, returns timed-out reservations, follows iwd.databases on reload, and
# stops cleanly. Ends with "worker: N passed, M failed".
set -uo pipefail
bindir=$(/usr/lib/postgresql/15/bin/pg_config --bindir)
port=${IWD_WORKER_PORT:-54331}
work=$(mktemp -d /tmp/iwd-worker.XXXXXX)
as_user=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$work"
    as_user=(runuser -u postgres --)
fi
passed=0; failed=0

stop() {
    "${as_user[@]}" "$bindir/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$work"
}
trap stop EXIT

sql() { "${as_user[@]}" "$bindir/psql" -X -q -At -h "$work" -p "$port" -v ON_ERROR_STOP=1 "$@"; }

# check NAME EXPECTED ACTUAL
check() {
    if [ "$2" = "$3" ]; then
        passed=$((passed + 1)); echo "ok - $1"
    else
        failed=$((failed + 1)); echo "not ok - $1: expected '$2', got '$3'"
    fi
}

# wait_for NAME EXPECTED SQL...: poll for up to 15 s until the query returns EXPECTED
wait_for() {
    local name=$1 expected=$2; shift 2
    local got=""
    for _ in $(seq 1 150); do
        got=$(sql "$@" 2>/dev/null)
        [ "$got" = "$expected" ] && break
        sleep 0.1
    done
    check "$name" "$expected" "$got"
}

"${as_user[@]}" "$bindir/initdb" -D "$work/data" -A trust >/dev/null || { echo "worker: 0 passed, 1 failed"; exit 1; }
cat >> "$work/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'iwd'
iwd.databases = 'tenant_a'
iwd.scheduler_interval = 100ms
# no scheduled Data Mart run before the test asks for one (the default schedule is every 15 minutes)
iwd_dm.suspend = on
CONF
"${as_user[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/log" -w start >/dev/null || { cat "$work/log"; echo "worker: 0 passed, 1 failed"; exit 1; }
sql -d postgres -c "CREATE DATABASE tenant_a" -c "CREATE DATABASE tenant_b"
sql -d tenant_a -c "CREATE EXTENSION iwd"
sql -d tenant_b -c "CREATE EXTENSION iwd"

wait_for "a scheduler worker serves tenant_a" "1" -d postgres \
    -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'iwd scheduler' AND datname = 'tenant_a'"
check "no worker for a database not listed" "0" \
    "$(sql -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'iwd scheduler' AND datname = 'tenant_b'")"

# deferred work is activated by the worker, without any call of iwd.tick()
sql -d tenant_a -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'D1', 'capturePoint', 'test',
    'activationAt', to_char(now() AT TIME ZONE 'UTC' + interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')))" >/dev/null
check "a deferred task starts held" "held" "$(sql -d tenant_a -c "SELECT status FROM iwd.task WHERE external_id = 'D1'")"
wait_for "the worker activates it" "queued" -d tenant_a -c "SELECT status FROM iwd.task WHERE external_id = 'D1'"

# a long pass works in batches and rests between them (iwd.pass_duty); it still gets through them all
sql -d postgres -c "ALTER SYSTEM SET iwd.batch_size = 2" -c "ALTER SYSTEM SET iwd.pass_duty = 20" \
    -c "SELECT pg_reload_conf()" >/dev/null
sql -d tenant_a -c "SELECT count(iwd.create_task(jsonb_build_object('externalId', 'L' || i, 'capturePoint', 'test',
    'activationAt', to_char(now() AT TIME ZONE 'UTC' + interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))))
    FROM generate_series(1, 11) i" >/dev/null
wait_for "a pass in batches with rests activates every deferred task" "11" -d tenant_a \
    -c "SELECT count(*) FROM iwd.task WHERE external_id LIKE 'L%' AND status = 'queued'"
check "iwd.pass_duty refuses 0" "22023" \
    "$(sql -d postgres -v VERBOSITY=verbose -c "ALTER SYSTEM SET iwd.pass_duty = 0" 2>&1 | sed -nE 's/^ERROR: +([0-9A-Z]{5}):.*/\1/p')"
sql -d postgres -c "ALTER SYSTEM RESET iwd.batch_size" -c "ALTER SYSTEM RESET iwd.pass_duty" \
    -c "SELECT pg_reload_conf()" >/dev/null

# an unaccepted reservation returns to the queue
sql -d tenant_a -c "SELECT iwd.upsert_agent('{\"id\": \"a1\", \"state\": \"ready\"}')" >/dev/null
check "the agent reserves the task" "D1" "$(sql -d tenant_a -c "SELECT iwd.next_task('a1', 1) ->> 'externalId'")"
wait_for "the worker returns the timed-out reservation" "queued" -d tenant_a \
    -c "SELECT status FROM iwd.task WHERE external_id = 'D1'"
check "the timeout is in the history" "reservation_timeout|a1" \
    "$(sql -d tenant_a -c "SELECT event || '|' || actor FROM iwd.task_event WHERE event = 'reservation_timeout'")"

# batch announcements: the worker announces new events on iwd_task_event
"${as_user[@]}" "$bindir/psql" -X -q -h "$work" -p "$port" -d tenant_a \
    -c "LISTEN iwd_task_event" -c "SELECT pg_sleep(1.5)" -c "SELECT 1" > "$work/listen.out" 2>&1 &
listener=$!
sleep 0.5
sql -d tenant_a -c "SELECT iwd.cancel_task((SELECT id FROM iwd.task WHERE external_id = 'D1'))" >/dev/null
wait "$listener"
check "new events are announced in a batch" "1" \
    "$(grep -c 'notification "iwd_task_event" with payload "events:[0-9]*:[0-9]*"' "$work/listen.out")"

# the worker vacuums iwd.task once enough events have been written (threshold lowered for the test)
sql -d postgres -c "ALTER SYSTEM SET iwd.vacuum_threshold = 10" -c "SELECT pg_reload_conf()" >/dev/null
sql -d tenant_a -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'V' || i, 'capturePoint', 'test'))
                    FROM generate_series(1, 20) i" >/dev/null
wait_for "the worker vacuums iwd.task" "t" -d tenant_a \
    -c "SELECT vacuum_count > 0 FROM pg_stat_user_tables WHERE relid = 'iwd.task'::regclass"
# it vacuums again after more events, but refreshes the statistics at most once a minute
sql -d tenant_a -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'W' || i, 'capturePoint', 'test'))
                    FROM generate_series(1, 20) i" >/dev/null
wait_for "the worker vacuums iwd.task again" "t" -d tenant_a \
    -c "SELECT vacuum_count > 1 FROM pg_stat_user_tables WHERE relid = 'iwd.task'::regclass"
check "the second vacuum within the minute does not analyze" "1" \
    "$(sql -d tenant_a -c "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = 'iwd.task'::regclass")"

# the Data Mart chain runs on its schedule (every minute here), one transaction per batch
sql -d postgres -c "ALTER SYSTEM SET iwd_dm.schedule = '* * * * *'" -c "ALTER SYSTEM SET iwd_dm.batch_size = 5" \
    -c "ALTER SYSTEM SET iwd_dm.suspend = off" \
    -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 75); do
    done_at=$(sql -d tenant_a -c "SELECT last_success IS NOT NULL FROM iwd_dm.job_status WHERE execution_chain = 'full'")
    [ "$done_at" = t ] && break
    sleep 1
done
check "the scheduled Data Mart chain ran" "t" "$done_at"
check "in a worker of its own" "t" \
    "$(grep -q 'iwd Data Mart chain "full" started for database "tenant_a"' "$work/log" && echo t || echo f)"
check "it loaded every event" "t" \
    "$(sql -d tenant_a -c "SELECT (SELECT count(*) FROM iwd_dm.task_event_fact) > 0 AND
                                  (SELECT last_summary->>'events' FROM iwd_dm.job_status WHERE execution_chain = 'full')::int > 0")"
sql -d postgres -c "ALTER SYSTEM SET iwd_dm.suspend = on" -c "SELECT pg_reload_conf()" >/dev/null

# a logical backup (pg_dump) carries every task, event and configuration row, and restores
"${as_user[@]}" "$bindir/pg_dump" -h "$work" -p "$port" -Fc -f "$work/tenant_a.dump" tenant_a
sql -d postgres -c "CREATE DATABASE restored"
"${as_user[@]}" "$bindir/pg_restore" -h "$work" -p "$port" -d restored "$work/tenant_a.dump" 2>"$work/restore.err"
counts="SELECT (SELECT count(*) FROM iwd.task_all) || ' ' || (SELECT count(*) FROM iwd.task_event) || ' ' ||
               (SELECT count(*) FROM iwd.agent) || ' ' || (SELECT count(*) FROM iwd.task_key) || ' ' ||
               (SELECT count(*) FROM iwd_dm.task_event_fact)"
check "pg_dump and pg_restore keep every row" "$(sql -d tenant_a -c "$counts")" "$(sql -d restored -c "$counts")"
check "pg_restore reports no error" "" "$(cat "$work/restore.err")"
check "the restored routing key registry covers every open task" "0" \
    "$(sql -d restored -c "SELECT count(*) FROM iwd.task t
                           WHERE NOT EXISTS (SELECT 1 FROM iwd.routing_keys r WHERE r.key = iwd.routing_key(t.skills))")"
check "the restored tenant keeps working" "t" \
    "$(sql -d restored -c "SELECT iwd.create_task('{\"externalId\": \"after-restore\", \"capturePoint\": \"test\"}') ->> 'id' IS NOT NULL")"

# the worker follows iwd.databases on reload
sql -d postgres -c "ALTER SYSTEM SET iwd.databases = 'tenant_a, tenant_b'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "a worker starts for a database added on reload" "1" -d postgres \
    -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'iwd scheduler' AND datname = 'tenant_b'"
sql -d postgres -c "ALTER SYSTEM SET iwd.databases = 'tenant_b'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "the worker of a database removed on reload stops" "0" -d postgres \
    -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'iwd scheduler' AND datname = 'tenant_a'"

# a database without the extension is left alone, and no error is logged
sql -d postgres -c "CREATE DATABASE plain" -c "ALTER SYSTEM SET iwd.databases = 'plain'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "a worker serves a database without iwd" "1" -d postgres \
    -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'iwd scheduler' AND datname = 'plain'"
sleep 0.5
# (the one error this test provokes on purpose, the refused iwd.pass_duty, aside)
check "no scheduler error in the server log" "0" "$(grep 'ERROR' "$work/log" | grep -vc 'parameter "iwd.pass_duty"')"

"${as_user[@]}" "$bindir/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null
check "the server stops cleanly with the workers running" "0" "$?"
echo "worker: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
