-- Batch actions: hold, resume, cancel and reprioritize many tasks in one call, chosen by id or by the queue
-- filter, each task's history recording the event with the actor; dry run; errors.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
CREATE FUNCTION task(ext text, extra jsonb) RETURNS bigint LANGUAGE sql AS $$
    SELECT (iwd.create_task(jsonb_build_object('externalId', ext, 'capturePoint', 'erp') || extra) ->> 'id')::bigint
$$;
CREATE FUNCTION statuses() RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(external_id || '=' || status, ' ' ORDER BY external_id) FROM iwd.task_all
$$;
SELECT iwd.upsert_agent('{"id": "ann", "capacity": {"workitem": 5}, "state": "ready"}') IS NOT NULL;
SELECT task('a', '{"priority": 10, "queue": "finance"}') AS a \gset
SELECT task('b', '{"priority": 20, "queue": "finance"}') AS b \gset
SELECT task('c', '{"priority": 30, "queue": "claims"}') AS c \gset
SELECT task('d', '{"priority": 40, "queue": "finance"}') AS d \gset
SELECT iwd.next_task('ann') ->> 'externalId';
SELECT iwd.complete_task(:c) ->> 'status';

-- dry run: what would change, nothing changed
SELECT iwd.batch_action('hold', filter => '{"queue": "finance"}', args => '{"dryRun": true}');
SELECT statuses();
-- hold by filter: every open finance task, the reserved one too
SELECT iwd.batch_action('hold', filter => '{"queue": "finance"}', actor => 'sup-1', args => '{"reason": "audit"}');
SELECT statuses();
SELECT e.task_id = :a AS is_a, e.event, e.actor, e.status_before, e.status_after, e.detail
FROM iwd.task_event e WHERE e.event = 'held' ORDER BY e.task_id;
SELECT hold_reason, assigned_to FROM iwd.task WHERE id = :d;
-- resume by ids: the held ones change; a completed task and an unknown id are skipped with their reason
SELECT iwd.batch_action('resume', ARRAY[:a, :b, :c, 999999]::bigint[], actor => 'sup-2');
SELECT statuses();
SELECT count(*) FROM iwd.task_event WHERE event = 'resumed' AND actor = 'sup-2';
-- reprioritize: the queue order changes; the event says from and to
SELECT iwd.batch_action('reprioritize', ARRAY[:a]::bigint[], actor => 'sup-3', args => '{"priority": 99}');
SELECT string_agg(q ->> 'externalId', ' ') FROM iwd.queue('{}') q;
SELECT detail, actor FROM iwd.task_event WHERE event = 'reprioritized';
SELECT iwd.batch_action('reprioritize', ARRAY[:b]::bigint[], args => '{"businessValue": 700}') ->> 'changed';
SELECT business_value FROM iwd.task WHERE id = :b;
-- cancel by filter of all open tasks: they move to the closed tasks
SELECT iwd.batch_action('cancel', filter => '{}', actor => 'sup-4', args => '{"reason": "duplicate load"}');
SELECT statuses();
SELECT count(*) FROM iwd.task;
-- a filter that matches nothing; the events went out (the feed's type)
SELECT iwd.batch_action('hold', filter => '{"queue": "none"}');
SELECT DISTINCT iwd._event_type(event) FROM iwd.task_event WHERE event IN ('held', 'canceled') ORDER BY 1;

-- errors
\set VERBOSITY terse
SELECT iwd.batch_action('delete', ARRAY[1]::bigint[]);
SELECT iwd.batch_action('hold');
SELECT iwd.batch_action('hold', ARRAY[1]::bigint[], '{}');
SELECT iwd.batch_action('hold', ARRAY(SELECT generate_series(1, 10001))::bigint[]);
SELECT iwd.batch_action('hold', ARRAY[1, NULL]::bigint[]);
SELECT iwd.batch_action('hold', filter => '{"queue": 5}');
SELECT iwd.batch_action('hold', filter => '{"afterId": 1}');
SELECT iwd.batch_action('hold', filter => '[]');
SELECT iwd.batch_action('hold', ARRAY[1]::bigint[], args => '{"priority": 5}');
SELECT iwd.batch_action('hold', ARRAY[1]::bigint[], args => ('{"reason": "' || repeat('x', 1025) || '"}')::jsonb);
SELECT iwd.batch_action('hold', ARRAY[1]::bigint[], args => '{"dryRun": "yes"}');
SELECT iwd.batch_action('reprioritize', ARRAY[1]::bigint[]);
SELECT iwd.batch_action('reprioritize', ARRAY[1]::bigint[], args => '{"priority": "high"}');
SELECT iwd.batch_action('hold', ARRAY[1]::bigint[], actor => repeat('x', 257));

DROP FUNCTION task(text, jsonb);
DROP FUNCTION statuses();
DROP EXTENSION iwd CASCADE;
