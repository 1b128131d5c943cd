-- Distribution: skills and levels, capacity per media type, not_ready agents, queue order,
-- requested agent, reservation timeout.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
CREATE FUNCTION task(ext text, extra jsonb) RETURNS bigint LANGUAGE sql AS $$
    SELECT (iwd.create_task(jsonb_build_object('externalId', ext, 'capturePoint', 'erp') || extra) ->> 'id')::bigint
$$;
CREATE FUNCTION claim(agent text) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(nullif(concat_ws(' ', t ->> 'externalId', t ->> 'status', t ->> 'assignedTo', t ->> 'reservedUntil'),
                           ''), 'nothing')
    FROM iwd.next_task(agent) t
$$;
SELECT iwd.upsert_agent('{"id": "junior", "skills": {"invoices": 2}, "capacity": {"workitem": 5}, "state": "ready"}') IS NOT NULL;
SELECT iwd.upsert_agent('{"id": "senior", "skills": {"invoices": 8, "claims": 5}, "capacity": {"workitem": 1, "email": 1},
                          "state": "ready"}') IS NOT NULL;
SELECT iwd.upsert_agent('{"id": "away", "skills": {"invoices": 10}, "capacity": {"workitem": 5}}') IS NOT NULL;

-- the counters are cumulative since server start: measure what this test adds
SELECT claims AS claims0, reservation_timeouts AS timeouts0 FROM iwd._counters() \gset
SELECT task('low', '{"priority": 1}');
SELECT task('needs-5', '{"priority": 50, "skills": {"invoices": 5}}');
SELECT task('needs-2', '{"priority": 40, "skills": {"invoices": 2}}');
SELECT task('claims', '{"priority": 60, "skills": {"claims": 1}}');
SELECT task('mail', '{"priority": 70, "mediaType": "email"}');
SELECT task('for-junior', '{"priority": 99, "requestedAgent": "junior"}');
SELECT task('tie-b', '{"priority": 30, "businessValue": 5}');
SELECT task('tie-a', '{"priority": 30, "businessValue": 9}');
SELECT task('due-late', '{"priority": 20, "dueAt": "2026-11-25T00:00:00Z"}');
SELECT task('due-soon', '{"priority": 20, "dueAt": "2026-11-24T12:00:00Z"}');

-- a not_ready agent gets nothing, whatever its skills
SELECT claim('away');
-- junior has no email capacity and invoices level 2: the task requested for it, then the best it can do
SELECT claim('junior');
SELECT claim('junior');
SELECT claim('junior');
SELECT claim('junior');
SELECT claim('junior');
SELECT claim('junior');
-- senior: email first (priority 70), then claims (60); workitem capacity 1 stops it after one workitem
SELECT claim('senior');
SELECT claim('senior');
SELECT claim('senior');
-- nothing left that senior may take: capacity full for both media types
SELECT iwd.complete_task((SELECT id FROM iwd.task WHERE external_id = 'mail'), 'senior') ->> 'status';
SELECT claim('senior');
-- junior is at its capacity of 5 work items
SELECT claim('junior');
SELECT external_id, status, assigned_to FROM iwd.task ORDER BY priority DESC, business_value DESC, id;

-- a reservation that is not accepted in time returns to the queue
SELECT iwd.accept_task((SELECT id FROM iwd.task WHERE external_id = 'for-junior'), 'junior') ->> 'acceptedAt';
SELECT iwd.tick('2026-11-24 10:00:29+00') -> 'reservationTimeouts';
SELECT iwd.tick('2026-11-24 10:00:30+00') -> 'reservationTimeouts';
SELECT external_id, status, assigned_to FROM iwd.task WHERE status = 'assigned' ORDER BY id;
SELECT task_id, event, actor FROM iwd.task_event WHERE event = 'reservation_timeout' ORDER BY task_id;
-- the claim counters
SELECT claims - :claims0 AS claims, reservation_timeouts - :timeouts0 AS timeouts FROM iwd._counters();
SELECT iwd.queue_stats() -> 'queues';
-- a longer reservation on request
SELECT iwd.next_task('junior', 600) ->> 'reservedUntil';

-- a task needing one skill sits in the bucket of that skill and level, one needing several in the bucket of
-- its first two skills (jsonb key order: shorter first); an agent reads the buckets of its skills up to
-- its levels, of pairs of its skills, and the one of tasks needing none
SELECT iwd.routing_key('{"billing": 1, "audit": 2}') AS pair, iwd.routing_key('{}') AS none,
       iwd.routing_key('{"zeta": 0}') AS one, iwd.routing_key('{"zeta": 99}') AS capped;
SELECT iwd.upsert_agent('{"id": "biller", "skills": {"billing": 3}, "capacity": {"chat": 10}, "state": "ready"}') IS NOT NULL;
SELECT iwd.upsert_agent('{"id": "auditor", "skills": {"audit": 2, "billing": 3}, "capacity": {"chat": 10},
                          "state": "ready"}') IS NOT NULL;
SELECT task('pair', '{"priority": 90, "mediaType": "chat", "skills": {"billing": 1, "audit": 2}}') > 0;
SELECT task('bill-hard', '{"priority": 80, "mediaType": "chat", "skills": {"billing": 5}}') > 0;
SELECT task('pair-hard', '{"priority": 95, "mediaType": "chat", "skills": {"billing": 5, "audit": 1}}') > 0;
SELECT task('plain', '{"priority": 50, "mediaType": "chat"}') > 0;
SELECT task('bill-easy', '{"priority": 10, "mediaType": "chat", "skills": {"billing": 1}}') > 0;
-- biller lacks audit and billing level 5: the task needing no skill, then the easy one, then nothing
SELECT claim('biller');
SELECT claim('biller');
SELECT claim('biller');
-- auditor has both skills of the pair (found in the bucket of that pair), but not the billing level
-- pair-hard needs
SELECT claim('auditor');
SELECT claim('auditor');

-- an agent with very many skills (here 199 buckets) walks the universal queue instead: same result
SELECT iwd.upsert_agent(jsonb_build_object('id', 'generalist', 'state', 'ready', 'capacity', '{"chat": 10}'::jsonb,
       'skills', (SELECT jsonb_object_agg('g' || i, 10) FROM generate_series(1, 12) i))) IS NOT NULL;
SELECT task('g-pair', '{"priority": 40, "mediaType": "chat", "skills": {"g3": 4, "g11": 9}}') > 0;
SELECT task('g-other', '{"priority": 60, "mediaType": "chat", "skills": {"g3": 4, "h1": 1}}') > 0;
SELECT claim('generalist');
SELECT claim('generalist');

-- the routing key registry: every key a task has had, written with the task
SELECT key FROM iwd.routing_keys ORDER BY key;
SELECT iwd.upsert_agent('{"id": "reg", "skills": {"r1": 5, "r2": 5}, "capacity": {"workitem": 10}, "state": "ready"}') IS NOT NULL;
-- a key registered by a transaction that rolled back is not there, and the next writer registers it
BEGIN;
SELECT task('rolled-back', '{"skills": {"r1": 3}}') > 0;
ROLLBACK;
SELECT count(*) FROM iwd.routing_keys WHERE key = 'r1:3';
SELECT task('r1-3', '{"priority": 95, "skills": {"r1": 3}}') > 0;
SELECT count(*) FROM iwd.routing_keys WHERE key = 'r1:3';
SELECT claim('reg');
-- a key written twice in a subtransaction that rolled back (the second write finds the first)
BEGIN;
SAVEPOINT s;
SELECT task('sub-a', '{"skills": {"r2": 4}}') > 0;
SELECT task('sub-b', '{"skills": {"r2": 4}}') > 0;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT count(*) FROM iwd.routing_keys WHERE key = 'r2:4';
SELECT task('r2-4', '{"priority": 95, "skills": {"r2": 4}}') > 0;
SELECT count(*) FROM iwd.routing_keys WHERE key = 'r2:4';
SELECT claim('reg');
-- a batch registers its keys; a change of skills registers the new key
SELECT jsonb_array_length(iwd.create_tasks('[{"externalId": "b1", "capturePoint": "erp", "priority": 94, "skills": {"r1": 1, "r2": 2}},
                                              {"externalId": "b2", "capturePoint": "erp", "priority": 93, "skills": {"r2": 1}}]'));
SELECT iwd.update_task(task('moved', '{"priority": 92, "skills": {"r1": 2}}'), '{"skills": {"r2": 5}}') ->> 'skills';
SELECT key FROM iwd.routing_keys WHERE key LIKE 'r%' ORDER BY key;
SELECT claim('reg');
SELECT claim('reg');
SELECT claim('reg');
-- the registry only grows
DO $$ BEGIN DELETE FROM iwd.routing_keys; EXCEPTION WHEN insufficient_privilege THEN RAISE NOTICE '%', SQLERRM; END $$;
DO $$ BEGIN UPDATE iwd.routing_keys SET key = 'x'; EXCEPTION WHEN insufficient_privilege THEN RAISE NOTICE '%', SQLERRM; END $$;
DO $$ BEGIN TRUNCATE iwd.routing_keys; EXCEPTION WHEN insufficient_privilege THEN RAISE NOTICE '%', SQLERRM; END $$;
SELECT count(*) > 0 FROM iwd.routing_keys;
-- a key this session has found registered by another transaction (so it remembers it)
SELECT task('known-key', '{"skills": {"invoices": 2}}') > 0;

DROP FUNCTION task(text, jsonb);
DROP FUNCTION claim(text);
DROP EXTENSION iwd CASCADE;
-- a new registry after the extension is re-created in the same session: the session forgets the old one
CREATE EXTENSION iwd;
SELECT iwd.upsert_agent('{"id": "again", "skills": {"invoices": 2}, "state": "ready"}') IS NOT NULL;
SELECT iwd.create_task('{"externalId": "again", "capturePoint": "erp", "skills": {"invoices": 2}}') ->> 'externalId';
SELECT key FROM iwd.routing_keys;
SELECT iwd.next_task('again') ->> 'externalId';
DROP EXTENSION iwd CASCADE;
