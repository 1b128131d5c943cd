-- The tenant's next due time that its worker reports to the launcher (iwd._next_due(): the earliest
-- time the scheduler pass compares with "at"), the announcement triggers, and iwd.worker_stats().
CREATE EXTENSION iwd;
SET timezone = 'UTC';
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
CREATE FUNCTION task(ext text, extra jsonb) RETURNS bigint LANGUAGE sql AS $$
    SELECT (iwd.create_task(jsonb_build_object('externalId', ext, 'capturePoint', 'erp') || extra) ->> 'id')::bigint
$$;
-- nothing is due in an empty tenant, nor for a queued task without times
SELECT iwd._next_due() AS empty;
SELECT task('plain', '{}') > 0;
SELECT iwd._next_due() AS nothing_due;
-- each kind of due time counts, the earliest wins
SELECT task('expires', '{"expiresAt": "2026-11-24T18:00:00Z"}') > 0;
SELECT iwd._next_due() AS expiry;
SELECT task('due', '{"dueAt": "2026-11-24T16:00:00Z"}') > 0;
SELECT iwd._next_due() AS due_time;
SELECT task('deferred', '{"activationAt": "2026-11-24T14:00:00Z"}') > 0;
SELECT iwd._next_due() AS activation;
SELECT iwd.upsert_category('{"name": "Aging", "priority": 10, "reprioritize": {"step": 5, "everyMinutes": 30, "max": 90}}') IS NOT NULL;
SELECT task('aging', '{"category": "Aging"}') > 0;
SELECT iwd._next_due() AS reprioritization;
SELECT iwd.upsert_agent('{"id": "a1", "state": "ready", "capacity": {"workitem": 5}}') IS NOT NULL;
SELECT iwd.next_task('a1', 60) ->> 'reservedUntil' AS reserved_until;
SELECT iwd._next_due() AS reservation;
-- an accepted reservation no longer falls due
SELECT iwd.accept_task((SELECT id FROM iwd.task WHERE status = 'assigned'), 'a1') ->> 'status';
SELECT iwd._next_due() AS after_accept;
-- once the pass has done what was due, the next due time moves on
SELECT iwd.tick('2026-11-24 16:30:00+00') - 'reprioritized';
SELECT iwd._next_due() AS after_pass;
-- the statement triggers that announce a tenant's writes at commit
SELECT tgrelid::regclass, tgname, tgtype FROM pg_trigger
 WHERE tgfoid = 'iwd._tasks_changed()'::regprocedure ORDER BY 1::text;
-- iwd.worker_stats(): for superusers and pg_monitor only (here with the workers off: iwd.max_workers = 0)
SELECT s ? 'maxWorkers' AND s ? 'databasesOverLimit' AND s ? 'lateStarts' AND jsonb_typeof(s -> 'tenants') = 'array'
  FROM iwd.worker_stats() s;
SELECT (iwd.worker_stats() ->> 'maxWorkers')::int AS max_workers;
CREATE ROLE worker_stats_reader;
GRANT USAGE ON SCHEMA iwd TO worker_stats_reader;
SET ROLE worker_stats_reader;
SELECT iwd.worker_stats();
RESET ROLE;
GRANT pg_monitor TO worker_stats_reader;
SET ROLE worker_stats_reader;
SELECT iwd.worker_stats() IS NOT NULL AS monitor_reads;
RESET ROLE;
REVOKE USAGE ON SCHEMA iwd FROM worker_stats_reader;
DROP ROLE worker_stats_reader;
