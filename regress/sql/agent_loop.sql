-- The agent's loop in one round trip: iwd.complete_task(id, agent, next => true) completes the task and
-- reserves the agent's next in the same transaction (capacity counted after the completion, skills
-- respected); a completion that fails reserves nothing; without next the result is unchanged.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
CREATE FUNCTION err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE FUNCTION task(ext text, extra jsonb) RETURNS bigint LANGUAGE sql AS $$
    SELECT (iwd.create_task(jsonb_build_object('externalId', ext, 'capturePoint', 'erp') || extra) ->> 'id')::bigint
$$;
CREATE FUNCTION id_of(ext text) RETURNS bigint LANGUAGE sql AS $$
    SELECT id FROM iwd.task_all WHERE external_id = ext
$$;
-- a completion with next, in brief: the completed task's external id and status, the next's (or null)
CREATE FUNCTION brief(j jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(' | ', concat_ws(' ', j -> 'completed' ->> 'externalId', j -> 'completed' ->> 'status'),
                     CASE jsonb_typeof(j -> 'next') WHEN 'null' THEN 'next null'
                          ELSE concat_ws(' ', j -> 'next' ->> 'externalId', j -> 'next' ->> 'status',
                                         j -> 'next' ->> 'assignedTo', j -> 'next' ->> 'reservedUntil') END)
$$;
CREATE FUNCTION held(agent text) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(external_id, ' ' ORDER BY external_id), 'none') FROM iwd.task
    WHERE assigned_to = agent AND status = 'assigned'
$$;
SELECT iwd.upsert_agent('{"id": "solo", "skills": {"invoices": 5}, "capacity": {"workitem": 1}, "state": "ready"}')
       IS NOT NULL;
SELECT iwd.upsert_agent('{"id": "pair", "skills": {"claims": 3}, "capacity": {"workitem": 2}, "state": "ready"}')
       IS NOT NULL;
SELECT task('inv-50', '{"priority": 50, "skills": {"invoices": 2}}') > 0;
SELECT task('inv-40', '{"priority": 40, "skills": {"invoices": 3}}') > 0;
SELECT task('claims-30', '{"priority": 30, "skills": {"claims": 1}}') > 0;
SELECT task('inv-expert', '{"priority": 20, "skills": {"invoices": 9}}') > 0;
SELECT task('claims-10', '{"priority": 10, "skills": {"claims": 1}}') > 0;
SELECT task('claims-5', '{"priority": 5, "skills": {"claims": 2}}') > 0;

-- solo holds one task (its capacity): the completion frees the place the next one takes
SELECT iwd.next_task('solo') ->> 'externalId';
SELECT brief(iwd.complete_task(id_of('inv-50'), 'solo', next => true));
SELECT held('solo');
-- the completion's event and the reservation's were written by one transaction
SELECT count(DISTINCT xmin::text) AS transactions, string_agg(event, ' ' ORDER BY event) AS events FROM iwd.task_event
WHERE (task_id = id_of('inv-50') AND event = 'completed') OR (task_id = id_of('inv-40') AND event = 'reserved');
-- skills respected: nothing left that solo may take (claims needs another skill, inv-expert level 9)
SELECT brief(iwd.complete_task(id_of('inv-40'), 'solo', next => true));
SELECT held('solo');
SELECT status, assigned_to FROM iwd.task WHERE external_id IN ('claims-30', 'inv-expert') ORDER BY external_id;

-- capacity: pair holds two tasks, then its capacity drops to one; completing one leaves it full
SELECT iwd.next_task('pair') ->> 'externalId';
SELECT iwd.next_task('pair') ->> 'externalId';
SELECT iwd.upsert_agent('{"id": "pair", "skills": {"claims": 3}, "capacity": {"workitem": 1}, "state": "ready"}')
       IS NOT NULL;
SELECT brief(iwd.complete_task(id_of('claims-30'), 'pair', next => true));
SELECT held('pair');
-- now at one place free after the completion: the next is reserved, for reserve_seconds
SELECT brief(iwd.complete_task(id_of('claims-10'), 'pair', next => true, reserve_seconds => 600));
-- the claim's plan settings (iwd.next_task's, for the claim of a completion with next) end with the call
SELECT current_setting('enable_sort') AS enable_sort, current_setting('enable_nestloop') AS enable_nestloop;

-- a completion that fails reserves nothing: a task the agent does not hold, an unknown agent
SELECT task('inv-20', '{"priority": 20, "skills": {"invoices": 1}}') > 0;
SELECT err($$SELECT iwd.complete_task(id_of('claims-5'), 'solo', next => true)$$);
SELECT err($$SELECT iwd.complete_task(id_of('inv-20'), 'nobody', next => true)$$);
SELECT err($$SELECT iwd.complete_task(id_of('inv-50'), 'solo', next => true)$$);
SELECT held('solo'), (SELECT status FROM iwd.task WHERE external_id = 'inv-20');
-- bad arguments, refused before anything is done
SELECT err($$SELECT iwd.complete_task(id_of('claims-5'), NULL, next => true)$$);
SELECT err($$SELECT iwd.complete_task(id_of('claims-5'), 'pair', next => NULL)$$);
SELECT err($$SELECT iwd.complete_task(id_of('claims-5'), 'pair', next => true, reserve_seconds => 0)$$);
SELECT err($$SELECT iwd.complete_task(id_of('claims-5'), 'pair', next => true, reserve_seconds => NULL)$$);
SELECT held('pair'), (SELECT count(*) FROM iwd.task_closed WHERE external_id = 'claims-5') AS closed;

-- an agent that is not ready completes its task and gets no next
SELECT iwd.upsert_agent('{"id": "pair", "skills": {"claims": 3}, "capacity": {"workitem": 1}, "state": "not_ready"}')
       IS NOT NULL;
SELECT task('claims-1', '{"priority": 1, "skills": {"claims": 1}}') > 0;
SELECT brief(iwd.complete_task(id_of('claims-5'), 'pair', next => true));
SELECT status FROM iwd.task WHERE external_id = 'claims-1';

-- without next (or next => false) the result is the completed task's document, as before
SELECT iwd.next_task('solo') ->> 'externalId';
SELECT j ->> 'externalId', j ->> 'status', j ? 'next', j ? 'completed'
FROM iwd.complete_task(id_of('inv-20'), 'solo', next => false) j;
SELECT task('inv-10', '{"priority": 10, "skills": {"invoices": 1}}') > 0;
SELECT iwd.next_task('solo') ->> 'externalId';
SELECT j ->> 'externalId', j ->> 'status', j ? 'next' FROM iwd.complete_task(id_of('inv-10'), 'solo') j;
SELECT held('solo');

DROP FUNCTION err(text);
DROP FUNCTION task(text, jsonb);
DROP FUNCTION id_of(text);
DROP FUNCTION brief(jsonb);
DROP FUNCTION held(text);
DROP EXTENSION iwd CASCADE;
