#!/usr/bin/env bash
# The scheduler background workers in a real cluster: the launcher serves the databases of
# iwd.databases (a filter here; scripts/test-density.sh covers every database, the pool's bound and many
# tenants), a tenant's worker activates deferred tasks, returns timed-out reservations, announces events,
# publishes them to the event feed and the webhooks (and deletes what the feed no longer keeps) and vacuums;
# a deferred task is activated once the iwd clock is set past it, with or without a worker running;
# the launcher follows iwd.databases on reload, and the server stops cleanly. Its work runs as the role
# iwd_worker; functions planted by a database owner who is
# not a superuser never run, neither in the workers nor for a superuser; a login holding the advisory
# locks the claim and the Data Mart once used stalls neither; a tenant's reporting login reads no
# other tenant's Data Mart. Ends with "worker: N passed, M failed".
set -uo pipefail
suite=worker
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
pg_port=${IWD_WORKER_PORT:-}
work=$(work_dir worker)

stop() {
    cluster_stop fast
    rm -rf "$work"
}
trap stop EXIT

sql() { cluster_sql "$@"; }

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

cluster_init "$work/pg" "iwd.databases = 'tenant_a'
iwd.scheduler_interval = 100ms
# no scheduled Data Mart run before the test asks for one (the default schedule is every 15 minutes)
iwd_dm.suspend = on" || fail_setup "initdb failed"
cluster_start || fail_setup "PostgreSQL did not start"
sql -d postgres -c "CREATE DATABASE tenant_a" -c "CREATE DATABASE tenant_b"
sql -d tenant_a -c "CREATE EXTENSION iwd"
sql -d tenant_b -c "CREATE EXTENSION iwd"

# served: the tenant databases the launcher serves (iwd.worker_stats(), readable from any database with iwd)
served_sql="SELECT coalesce(string_agg(t->>'database', ',' ORDER BY t->>'database'), '')
            FROM jsonb_array_elements(iwd.worker_stats()->'tenants') t WHERE t->>'state' = 'served'"
wait_for "the launcher serves tenant_a" "tenant_a" -d tenant_b -c "$served_sql"
check "and not a database left out of iwd.databases" "tenant_a" "$(sql -d tenant_b -c "$served_sql")"

# the worker's work runs as iwd_worker (a trigger records who writes the events)
sql -d tenant_a -c "CREATE TABLE public.event_writer (who name, event text)" \
    -c "GRANT INSERT ON public.event_writer TO PUBLIC" \
    -c "CREATE FUNCTION public.record_writer() RETURNS trigger LANGUAGE plpgsql AS
        \$\$ BEGIN INSERT INTO public.event_writer VALUES (current_user, NEW.event); RETURN NEW; END \$\$" \
    -c "CREATE TRIGGER record_writer AFTER INSERT ON iwd.task_event FOR EACH ROW EXECUTE FUNCTION public.record_writer()"

# deferred work is activated by the worker, without any call of iwd.tick()
sql -d tenant_a -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'D1', 'capturePoint', 'test',
    'activationAt', to_char(now() AT TIME ZONE 'UTC' + interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')))" >/dev/null
check "a deferred task starts held" "held" "$(sql -d tenant_a -c "SELECT status FROM iwd.task WHERE external_id = 'D1'")"
wait_for "the worker activates it" "queued" -d tenant_a -c "SELECT status FROM iwd.task WHERE external_id = 'D1'"
check "as iwd_worker, not as a superuser" "iwd_worker" \
    "$(sql -d tenant_a -c "SELECT string_agg(DISTINCT who, ',') FROM public.event_writer WHERE event = 'activated'")"
check "the worker's role cannot log in and is no superuser" "false|false" \
    "$(sql -d postgres -c "SELECT rolcanlogin || '|' || rolsuper FROM pg_roles WHERE rolname = 'iwd_worker'")"

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

# with no sidecar, the worker publishes the events to the event feed and creates the webhooks' deliveries
sql -d tenant_a -c "SELECT iwd.upsert_webhook('{\"name\": \"crm\", \"url\": \"http://127.0.0.1:9/\", \"secret\": \"k\"}')" \
    >/dev/null

# batch announcements: the worker announces new events on iwd_task_event
cluster_client psql -X -q -d tenant_a \
    -c "LISTEN iwd_task_event" -c "SELECT pg_sleep(1.5)" -c "SELECT 1" > "$work/listen.out" 2>&1 &
listener=$!
sleep 0.5
sql -d tenant_a -c "SELECT iwd.cancel_task((SELECT id FROM iwd.task WHERE external_id = 'D1'))" >/dev/null
wait "$listener"
check "new events are announced in a batch" "1" \
    "$(grep -c 'notification "iwd_task_event" with payload "events:[0-9]*:[0-9]*"' "$work/listen.out")"

wait_for "the worker publishes every event to the feed, with no sidecar" "0" -d tenant_a \
    -c "SELECT count(*) FROM iwd.event_outbox"
check "in history order, each once" "t" \
    "$(sql -d tenant_a -c "SELECT array_agg(event_id ORDER BY id) = (SELECT array_agg(id ORDER BY id) FROM iwd.task_event)
                           FROM iwd.event_feed")"
check "with the webhook's delivery of the events after its creation" "task.canceled" \
    "$(sql -d tenant_a -c "SELECT string_agg(type, ',') FROM iwd.webhook_delivery WHERE webhook = 'crm'")"
# the worker deletes the events published longer ago than iwd.event_retention (not the last one)
old_head=$(sql -d tenant_a -c "SELECT iwd.events_head()")
sql -d tenant_a -c "SELECT iwd.delete_webhook('crm')" >/dev/null
sql -d postgres -c "ALTER SYSTEM SET iwd.event_retention = '1 s'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1.5
sql -d tenant_a -c "SELECT iwd.create_task('{\"externalId\": \"R1\", \"capturePoint\": \"test\"}')" >/dev/null
wait_for "the worker deletes the events iwd.event_retention no longer keeps" "t" -d tenant_a \
    -c "SELECT min(id) > $old_head FROM iwd.event_feed"
sql -d postgres -c "ALTER SYSTEM RESET iwd.event_retention" -c "SELECT pg_reload_conf()" >/dev/null

# the worker vacuums iwd.task once enough events have been written (threshold lowered for the test)
sql -d postgres -c "ALTER SYSTEM SET iwd.vacuum_threshold = 10" -c "SELECT pg_reload_conf()" >/dev/null
sql -d tenant_a -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'V' || i, 'capturePoint', 'test'))
                    FROM generate_series(1, 20) i" >/dev/null
wait_for "the worker vacuums iwd.task" "t" -d tenant_a \
    -c "SELECT vacuum_count > 0 FROM pg_stat_user_tables WHERE relid = 'iwd.task'::regclass"
wait_for "and the event outbox with it" "t" -d tenant_a \
    -c "SELECT vacuum_count > 0 FROM pg_stat_user_tables WHERE relid = 'iwd.event_outbox'::regclass"
# it vacuums again after more events, but refreshes the statistics at most once a minute
sql -d tenant_a -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'W' || i, 'capturePoint', 'test'))
                    FROM generate_series(1, 20) i" >/dev/null
wait_for "the worker vacuums iwd.task again" "t" -d tenant_a \
    -c "SELECT vacuum_count > 1 FROM pg_stat_user_tables WHERE relid = 'iwd.task'::regclass"
check "the second vacuum within the minute does not analyze" "1" \
    "$(sql -d tenant_a -c "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = 'iwd.task'::regclass")"

sql -d tenant_a -c "DROP TRIGGER record_writer ON iwd.task_event"

# a worker that saw sessions write leaves iwd.worker_idle_timeout after the last write when nothing is due
# soon, even with no other tenant waiting for its place (it used to sleep until its next due time)
sql -d postgres -c "ALTER SYSTEM SET iwd.worker_idle_timeout = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
for i in 1 2 3 4 5; do
    sql -d tenant_a -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'I$i', 'capturePoint', 'test'))" \
        >/dev/null
    sleep 0.2
done
running=""
for _ in $(seq 1 600); do
    running=$(sql -d tenant_b -c "SELECT iwd.worker_stats() ->> 'running'")
    [ "$running" = 0 ] && break
    sleep 0.1
done
check "once sessions stop writing, the tenant's worker leaves (nothing due soon)" "0 t" \
    "$running $(sql -d tenant_a -c "SELECT iwd._next_due() IS NULL OR iwd._next_due() > iwd.now() + interval '10 s'")"

# the iwd clock set ahead (iwd.simulated_time, as tests and replays do) past a deferred task's activation:
# the task is activated without any write, whether the tenant's worker still runs (it surveys again) or
# none does (the launcher makes the tenant due): its due time was known in the old clock, an hour ahead
# set_clock_ahead: iwd.simulated_time two hours ahead of now; reset_clock: back to the server's clock
set_clock_ahead() {
    local ahead
    ahead=$(sql -d postgres -c "SELECT now() + interval '2 hours'")
    sql -d postgres -c "ALTER SYSTEM SET iwd.simulated_time = '$ahead'" -c "SELECT pg_reload_conf()" >/dev/null
}
reset_clock() { sql -d postgres -c "ALTER SYSTEM RESET iwd.simulated_time" -c "SELECT pg_reload_conf()" >/dev/null; }
deferred_an_hour() {
    sql -d tenant_a -c "SELECT iwd.create_task(jsonb_build_object('externalId', '$1', 'capturePoint', 'test',
        'activationAt', to_char(now() AT TIME ZONE 'UTC' + interval '1 hour', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')))" \
        >/dev/null
}
deferred_an_hour C1
sleep 0.5
set_clock_ahead
wait_for "the iwd clock set past a deferred task's activation just after its write: it is activated" "queued" \
    -d tenant_a -c "SELECT status FROM iwd.task WHERE external_id = 'C1'"
reset_clock
deferred_an_hour C2
for _ in $(seq 1 600); do
    [ "$(sql -d tenant_b -c "SELECT iwd.worker_stats() ->> 'running'")" = 0 ] && break
    sleep 0.1
done
check "another deferred an hour, and the tenant's worker gone" "held 0" \
    "$(sql -d tenant_a -c "SELECT status FROM iwd.task WHERE external_id = 'C2'") $(sql -d tenant_b \
        -c "SELECT iwd.worker_stats() ->> 'running'")"
set_clock_ahead
wait_for "the iwd clock set past its activation with no worker running: it is activated" "queued" \
    -d tenant_a -c "SELECT status FROM iwd.task WHERE external_id = 'C2'"
reset_clock
sql -d postgres -c "ALTER SYSTEM RESET iwd.worker_idle_timeout" -c "SELECT pg_reload_conf()" >/dev/null

# A database owner who is not a superuser plants look-alikes of what iwd calls, each recording that it
# ran, and makes every session of the database look in that schema first.
sql -d postgres -c "CREATE ROLE tenant_owner LOGIN" -c "CREATE DATABASE hostile OWNER tenant_owner"
sql -d hostile -c "CREATE EXTENSION iwd"
sql -d hostile -U tenant_owner <<'HOSTILE'
CREATE SCHEMA evil;
CREATE TABLE evil.ran (what text, who name);
GRANT USAGE ON SCHEMA evil TO PUBLIC;
GRANT INSERT ON evil.ran TO PUBLIC;
CREATE FUNCTION evil.hashtext(text) RETURNS int LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('hashtext', current_user); SELECT pg_catalog.hashtext($1) $$;
CREATE FUNCTION evil.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('jsonb_typeof', current_user); SELECT pg_catalog.jsonb_typeof($1) $$;
CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('current_setting', current_user); SELECT pg_catalog.current_setting($1, $2) $$;
CREATE FUNCTION evil.text_eq(text, text) RETURNS boolean LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('=', current_user); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq);
ALTER DATABASE hostile SET search_path = evil, pg_catalog, iwd, iwd_dm;
HOSTILE
check "a new session of the database gets the planted search_path" "evil, pg_catalog, iwd, iwd_dm" \
    "$(sql -d hostile -c "SHOW search_path")"
# a superuser works with the tenant through every kind of function
sql -d hostile -c "SELECT iwd.upsert_agent('{\"id\": \"h1\", \"state\": \"ready\"}')" \
    -c "SELECT iwd.upsert_category('{\"name\": \"Claims\", \"queue\": \"claims\"}')" \
    -c "SELECT iwd.create_task('{\"externalId\": \"H1\", \"capturePoint\": \"erp\", \"category\": \"Claims\"}')" \
    -c "SELECT iwd.next_task('h1')" -c "SELECT iwd.complete_task(1, 'h1')" \
    -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'H2', 'capturePoint', 'erp',
        'activationAt', to_char(now() AT TIME ZONE 'UTC' + interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')))" \
    -c "SELECT iwd.queue_stats()" -c "SELECT iwd_dm.run('full')" >/dev/null
sql -d postgres -c "ALTER SYSTEM SET iwd.databases = 'tenant_a, hostile'" -c "SELECT pg_reload_conf()" >/dev/null
# (the test's own queries there use the catalog's operators: SET search_path first)
wait_for "the scheduler pass runs in the planted database" "queued" -d hostile -c "SET search_path = pg_catalog" \
    -c "SELECT status FROM iwd.task WHERE external_id = 'H2'"

# A login of no privilege holds the advisory locks the claim (class 1230003, the task id) and the Data
# Mart chain (hashtext('iwd_dm chain full')) used to take, for every queued task: neither stalls.
sql -d postgres -c "CREATE ROLE nobody LOGIN"
queued_ids=$(sql -d tenant_a -c "SELECT string_agg(id::text, ',') FROM iwd.task WHERE status = 'queued'")
cluster_client psql -X -q -d tenant_a -U nobody \
    -c "SELECT pg_advisory_lock(hashtext('iwd_dm chain full'))" \
    -c "SELECT count(pg_advisory_lock(1230003, k)) FROM unnest('{$queued_ids}'::int[]) k" \
    -c "SELECT pg_sleep(120)" >/dev/null 2>&1 &
holder=$!
wait_for "the login holds the old advisory locks" "t" -d tenant_a \
    -c "SELECT count(*) > 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'nobody' AND l.locktype = 'advisory'"
# (reserved for 1 s: its timeout is written long before the dump below compares the event counts)
check "a claim takes a task whose old advisory key a login holds" "t" \
    "$(sql -d tenant_a -c "SELECT iwd.next_task('a1', 1) IS NOT NULL")"

# the Data Mart chain runs on its schedule (every minute here), one transaction per batch
sql -d postgres -c "ALTER SYSTEM SET iwd_dm.schedule = '* * * * *'" -c "ALTER SYSTEM SET iwd_dm.batch_size = 5" \
    -c "ALTER SYSTEM SET iwd_dm.suspend = off" -c "ALTER SYSTEM SET iwd_dm.log_file = 'iwd_datamart.jsonl'" \
    -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 75); do
    done_at=$(sql -d tenant_a -c "SELECT last_success IS NOT NULL FROM iwd_dm.job_status WHERE execution_chain = 'full'")
    [ "$done_at" = t ] && break
    sleep 1
done
check "the scheduled Data Mart chain ran" "t" "$done_at"
check "in a worker of its own" "t" \
    "$(grep -q 'iwd Data Mart chain "full" started for database "tenant_a"' "$pg_log" && echo t || echo f)"
check "it loaded every event" "t" \
    "$(sql -d tenant_a -c "SELECT (SELECT count(*) FROM iwd_dm.task_event_fact) > 0 AND
                                  (SELECT last_summary->>'events' FROM iwd_dm.job_status WHERE execution_chain = 'full')::int > 0")"
# dm_log DATABASE PYTHON-EXPRESSION: evaluated over the JSON lines the chain logged for that database
# (lines: every line, parsed; runs: that database's lines; first: its first run's; a line that is no
# JSON object fails the parse)
dm_log() {
    python3 - "$pg_data/iwd_datamart.jsonl" "$1" "$2" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
runs = [l for l in lines if l["database"] == sys.argv[2]]
first = [l for l in runs if l["pid"] == runs[0]["pid"]]
print(eval(sys.argv[3]))
PY
}
check "the run is logged as JSON lines (iwd_dm.log_file): start, load, initialize, aggregate, end" \
    "run_start step:load step:initialize step:aggregate run_end" \
    "$(dm_log tenant_a '" ".join(l["event"] + (":" + l["step"] if l["event"] == "step" else "") for l in first)')"
check "every line has the documented fields" "True" \
    "$(dm_log tenant_a 'all({"time", "level", "event", "database", "chain", "pid"} <= set(l) and l["time"].endswith("Z") for l in lines)')"
check "the load names its tables and counts its events, in batches of 5 (iwd_dm.batch_size)" "True True" \
    "$(dm_log tenant_a '" ".join(str(x) for l in first if l.get("step") == "load" for x in ("iwd_dm.task_fact" in l["tables"], l["rows"] > 0 and l["batches"] >= l["rows"] / 5 and l["duration_ms"] >= 0))')"
check "the end: succeeded, with the load's events, its intervals and duration" "succeeded info True" \
    "$(dm_log tenant_a '" ".join(str(x) for l in first if l["event"] == "run_end" for x in (l["status"], l["level"], l["events"] == sum(s["rows"] for s in first if s.get("step") == "load") and l["intervals"] > 0 and l["duration_ms"] >= 0))')"
check "while a login held the chain's old advisory lock" "t" \
    "$(kill -0 "$holder" 2>/dev/null && echo t || echo f)"
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
for _ in $(seq 1 30); do
    done_at=$(sql -d hostile -c "SET search_path = pg_catalog" -c "SELECT last_summary ? 'batchSize' FROM iwd_dm.job_status WHERE execution_chain = 'full'")
    [ "$done_at" = t ] && break
    sleep 1
done
check "the scheduled chain ran in the planted database" "t" "$done_at"
# a failed run: its aggregates locked by a session beyond iwd_dm.statement_timeout (the session is then
# terminated, not cancelled: the log must show no ERROR)
sql -d postgres -c "ALTER SYSTEM SET iwd_dm.statement_timeout = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
sql -d tenant_a -c "BEGIN" -c "LOCK TABLE iwd_dm.agg_15min" -c "SELECT pg_sleep(300)" -c "COMMIT" >/dev/null 2>&1 &
dm_locker=$!
for _ in $(seq 1 90); do
    dm_failed=$(sql -d tenant_a -c "SELECT last_fail IS NOT NULL FROM iwd_dm.job_status WHERE execution_chain = 'full'")
    [ "$dm_failed" = t ] && break
    sleep 1
done
sql -d tenant_a -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(300)'" >/dev/null
wait "$dm_locker" 2>/dev/null
sql -d postgres -c "ALTER SYSTEM RESET iwd_dm.statement_timeout" -c "SELECT pg_reload_conf()" >/dev/null
check "a failed run is logged as an error: its step, the message and the SQLSTATE" \
    "error failed aggregate 57014 canceling statement due to statement timeout" \
    "$(dm_log tenant_a '(lambda f: " ".join(str(f[k]) for k in ("level", "status", "step", "sqlstate", "error")))(next(l for l in runs if l["event"] == "run_end" and l["status"] == "failed"))')"
sql -d postgres -c "ALTER SYSTEM SET iwd_dm.suspend = on" -c "SELECT pg_reload_conf()" >/dev/null
check "no planted function ran, for the superuser or a worker" "" \
    "$(sql -d hostile -c "SELECT string_agg(DISTINCT what || ' as ' || who, ', ') FROM evil.ran")"

# one reporting role per tenant database: a tenant's reporting login reads its own Data Mart only
sql -d postgres -c "CREATE ROLE report_a LOGIN IN ROLE iwd_gcxi_tenant_a" \
    -c "ALTER ROLE report_a SET log_min_messages = fatal" >/dev/null
check "a reporting login reads its tenant's Data Mart" "t" \
    "$(sql -d tenant_a -U report_a -c "SELECT count(*) > 0 FROM iwd_dm.queue_activity")"
check "and not another tenant's" "permission denied" \
    "$(sql -d tenant_b -U report_a -c "SELECT count(*) FROM iwd_dm.queue_activity" 2>&1 | grep -o 'permission denied' | head -1)"
check "nor another tenant's facts" "permission denied" \
    "$(sql -d tenant_b -U report_a -c "SELECT count(*) FROM iwd_dm.task_fact" 2>&1 | grep -o 'permission denied' | head -1)"
check "each database has its reporting role" "iwd_gcxi_hostile,iwd_gcxi_tenant_a,iwd_gcxi_tenant_b" \
    "$(sql -d postgres -c "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname LIKE 'iwd\_gcxi%'")"

# a logical backup (pg_dump) carries every task, event and configuration row, and restores
cluster_client pg_dump -Fc -f "$work/tenant_a.dump" tenant_a
sql -d postgres -c "CREATE DATABASE restored"
cluster_client pg_restore -d restored "$work/tenant_a.dump" 2>"$work/restore.err"
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

# the launcher follows iwd.databases on reload
sql -d postgres -c "ALTER SYSTEM SET iwd.databases = 'tenant_a, tenant_b'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "a database added on reload is served" "tenant_a,tenant_b" -d tenant_b -c "$served_sql"
sql -d tenant_b -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'B0', 'capturePoint', 'test',
    'activationAt', to_char(now() AT TIME ZONE 'UTC' + interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')))" >/dev/null
wait_for "and its deferred work is done" "queued" -d tenant_b -c "SELECT status FROM iwd.task WHERE external_id = 'B0'"
sql -d postgres -c "ALTER SYSTEM SET iwd.databases = 'tenant_b'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "a database removed on reload is no longer served" "tenant_b" -d tenant_b -c "$served_sql"

# a database without the extension is probed once and left alone, and no error is logged
starts=$(sql -d tenant_b -c "SELECT iwd.worker_stats()->>'starts'")
sql -d postgres -c "CREATE DATABASE plain" -c "ALTER SYSTEM SET iwd.databases = 'plain, tenant_b'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "a database without iwd is probed" "t" -d tenant_b -c "SELECT (iwd.worker_stats()->>'starts')::int > $starts"
sleep 0.5
check "and then forgotten" "tenant_b" \
    "$(sql -d tenant_b -c "SELECT string_agg(t->>'database', ',') FROM jsonb_array_elements(iwd.worker_stats()->'tenants') t")"
# (the one error this test provokes on purpose, the refused iwd.pass_duty, aside)
check "no scheduler error in the server log" "0" "$(grep 'ERROR' "$pg_log" | grep -vc 'parameter "iwd.pass_duty"')"

# Worker transactions are bounded (errors provoked on purpose, after the check above): a statement
# longer than iwd.worker_statement_timeout or a lock wait longer than iwd.worker_lock_timeout ends the
# pass with an error, the launcher starts the worker again, and the work resumes once the cause is gone.
# log_grep PATTERN: wait up to 15 s for PATTERN in the server log
log_grep() {
    for _ in $(seq 1 150); do grep -q "$1" "$pg_log" && { echo t; return; }; sleep 0.1; done
    echo f
}
deferred() {
    sql -d tenant_b -c "SELECT iwd.create_task(jsonb_build_object('externalId', '$1', 'capturePoint', 'test',
        'activationAt', to_char(now() AT TIME ZONE 'UTC' + interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')))" >/dev/null
}
sql -d tenant_b -c "CREATE FUNCTION public.slow_event() RETURNS trigger LANGUAGE plpgsql AS
        \$\$ BEGIN PERFORM pg_catalog.pg_sleep(2); RETURN NEW; END \$\$" \
    -c "CREATE TRIGGER slow_event BEFORE INSERT ON iwd.task_event FOR EACH ROW WHEN (NEW.event = 'activated')
        EXECUTE FUNCTION public.slow_event()"
sql -d postgres -c "ALTER SYSTEM SET iwd.databases = 'tenant_b'" -c "ALTER SYSTEM SET iwd.worker_statement_timeout = '500ms'" \
    -c "SELECT pg_reload_conf()" >/dev/null
deferred T1
check "a pass longer than iwd.worker_statement_timeout is stopped" "t" \
    "$(log_grep 'ERROR:  canceling statement due to statement timeout')"
sql -d tenant_b -c "DROP TRIGGER slow_event ON iwd.task_event"
wait_for "and done by the restarted worker" "queued" -d tenant_b -c "SELECT status FROM iwd.task WHERE external_id = 'T1'"
sql -d postgres -c "ALTER SYSTEM RESET iwd.worker_statement_timeout" -c "ALTER SYSTEM SET iwd.worker_lock_timeout = '200ms'" \
    -c "SELECT pg_reload_conf()" >/dev/null
# (the task first: its activation falls due while the lock is held)
deferred T2
cluster_client psql -X -q -d tenant_b \
    -c "BEGIN" -c "LOCK TABLE iwd.task IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(3)" -c "COMMIT" >/dev/null 2>&1 &
locker=$!
check "a lock held longer than iwd.worker_lock_timeout stops the pass" "t" \
    "$(log_grep 'ERROR:  canceling statement due to lock timeout')"
wait "$locker"
wait_for "and the restarted worker does the work once the lock is gone" "queued" -d tenant_b \
    -c "SELECT status FROM iwd.task WHERE external_id = 'T2'"
sql -d postgres -c "ALTER SYSTEM RESET iwd.worker_lock_timeout" -c "SELECT pg_reload_conf()" >/dev/null

# without its role a worker refuses to work rather than run the passes as the superuser
for db in tenant_a tenant_b hostile restored; do sql -d "$db" -c "DROP OWNED BY iwd_worker"; done
sql -d postgres -c "DROP ROLE iwd_worker"
deferred T3
check "without the role iwd_worker the worker refuses to work" "t" "$(log_grep 'role "iwd_worker" does not exist')"
sleep 2
check "and leaves the work undone" "held" "$(sql -d tenant_b -c "SELECT status FROM iwd.task WHERE external_id = 'T3'")"

cluster_stop fast
check "the server stops cleanly with the workers running" "0" "$?"
summary
