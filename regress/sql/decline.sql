-- Decline: an agent hands back a task reserved to it; the task is queued again for the others and not
-- offered to that agent for iwd.decline_for.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
CREATE FUNCTION task(ext text, extra jsonb) RETURNS bigint LANGUAGE sql AS $$
    SELECT (iwd.create_task(jsonb_build_object('externalId', ext, 'capturePoint', 'erp') || extra) ->> 'id')::bigint
$$;
CREATE FUNCTION claim(agent text) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(nullif(concat_ws(' ', t ->> 'externalId', t ->> 'status', t ->> 'assignedTo'), ''), 'nothing')
    FROM iwd.next_task(agent) t
$$;
SELECT iwd.upsert_agent('{"id": "ann", "skills": {"invoices": 5}, "capacity": {"workitem": 5}, "state": "ready"}')
    IS NOT NULL;
SELECT iwd.upsert_agent('{"id": "bob", "skills": {"invoices": 5}, "capacity": {"workitem": 5}, "state": "ready"}')
    IS NOT NULL;
SELECT iwd.upsert_agent('{"id": "cara", "skills": {"invoices": 5}, "capacity": {"workitem": 5}, "state": "ready"}')
    IS NOT NULL;
SELECT task('first', '{"priority": 90, "skills": {"invoices": 2}}') AS first \gset
SELECT task('second', '{"priority": 80, "skills": {"invoices": 2}}') AS second \gset
SELECT task('plain', '{"priority": 70}') AS plain \gset
SHOW iwd.decline_for;

-- ann is offered "first" and declines it: queued again, the event in its history with the agent and reason
SELECT claim('ann');
SELECT t ->> 'status' AS status, t ->> 'assignedTo' AS assigned_to, t ->> 'reservedUntil' AS reserved_until
FROM iwd.decline_task(:first, 'ann', 'not trained for this supplier') t;
SELECT h ->> 'event' AS event, h ->> 'actor' AS actor, h ->> 'statusBefore' AS before, h ->> 'statusAfter' AS after,
       h -> 'detail' AS detail
FROM iwd.task_history(:first) h WHERE h ->> 'event' = 'declined';
SELECT agent, task_id = :first AS is_first, until FROM iwd.task_decline;
SELECT declined_until FROM iwd.agent WHERE id = 'ann';
-- the claim passes over it for ann ...
SELECT claim('ann');
SELECT claim('ann');
-- ... while bob gets it first
SELECT claim('bob');
-- the event type of the feed and webhooks
SELECT 'task.declined' = ANY (iwd.event_types());
SELECT iwd._event_type('declined');

-- errors: the task is not reserved to that agent (55000, as complete and reject), unknown agent (P0002),
-- unknown task (P0002), no agent (22023), a reason over 1 KB (22023)
\set VERBOSITY default
SELECT iwd.decline_task(:first, 'ann', NULL);
SELECT iwd.decline_task(:plain, 'bob', NULL);
SELECT iwd.decline_task(:first, 'nobody', NULL);
SELECT iwd.decline_task(999999, 'bob', NULL);
SELECT iwd.decline_task(:first, NULL, NULL);
SELECT iwd.decline_task(:first, 'bob', repeat('x', 1025));
\set VERBOSITY terse
-- an accepted task may be declined too; a closed one not
SELECT iwd.accept_task(:first, 'bob') ->> 'status';
SELECT iwd.decline_task(:first, 'bob', NULL) ->> 'status';
SELECT iwd.complete_task(:plain) ->> 'status';
SELECT iwd.decline_task(:plain, 'bob', NULL);

-- after iwd.decline_for, ann is offered the task again; an expired decline is cleaned by her next one
SET iwd.simulated_time = '2026-11-24 10:10:01+00';
SELECT claim('ann');
SELECT claim('ann');
SELECT iwd.decline_task(:second, 'ann', NULL) ->> 'status';
SELECT agent, task_id = :second AS is_second, until FROM iwd.task_decline ORDER BY agent, task_id;
-- a shorter iwd.decline_for; a setting that is not a positive interval is refused
SET iwd.decline_for = '30 s';
SELECT claim('ann');
SELECT iwd.decline_task(:first, 'ann', NULL) IS NOT NULL;
SELECT until FROM iwd.task_decline WHERE agent = 'ann' AND task_id = :first;
SET iwd.decline_for = '-5 min';
SET iwd.decline_for = 'soon';
-- a third agent declines too: each agent's declines are its own
SELECT claim('cara');
SELECT iwd.decline_task(:first, 'cara', 'busy') ->> 'status';
SELECT claim('cara');
SELECT claim('cara');
-- an agent's declines go with it
SELECT iwd.delete_agent('cara') IS NOT NULL;
SELECT count(*) FROM iwd.task_decline WHERE agent = 'cara';

DROP FUNCTION task(text, jsonb);
DROP FUNCTION claim(text);
DROP EXTENSION iwd CASCADE;
