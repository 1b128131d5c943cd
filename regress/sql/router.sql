-- Router sync: the configuration (secrets never shown), the lease (one replica at a time), the plan (the best
-- maxInFlight queued tasks, displacement, stops for iwd's actions and reprioritization), the answers
-- recorded, the router's changes applied once whatever a pull repeats, mapped back through the lifecycle,
-- and the bad inputs.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
CREATE FUNCTION router_err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE FUNCTION router_task(ext text, priority int) RETURNS bigint LANGUAGE sql AS $$
    SELECT (iwd.create_task(jsonb_build_object('externalId', ext, 'capturePoint', 'test', 'priority', priority))
            ->> 'id')::bigint
$$;
-- a plan as task ids: the stops' and the submissions'
CREATE FUNCTION plan(owner text) RETURNS text LANGUAGE sql AS $$
    SELECT 'stop ' || coalesce((SELECT string_agg(e ->> 'taskId', ',' ORDER BY (e ->> 'taskId')::int)
                                FROM jsonb_array_elements(p -> 'stop') e), '-')
        || ' submit ' || coalesce((SELECT string_agg(e ->> 'taskId', ',' ORDER BY (e ->> 'taskId')::int)
                                   FROM jsonb_array_elements(p -> 'submit') e), '-')
    FROM (SELECT iwd.router_plan(owner, 100) AS p) x
$$;
-- the router's answers to every submission not yet answered: routerId "r<task id>"
CREATE FUNCTION answer_all(owner text) RETURNS int LANGUAGE sql AS $$
    SELECT iwd.router_submitted(owner, coalesce(jsonb_agg(jsonb_build_object('taskId', task_id, 'submission',
                                                                             submission, 'routerId', 'r' || task_id)),
                                                '[]'))
    FROM iwd.router_task WHERE state = 'submitting'
$$;

-- the configuration
SELECT router_err($$SELECT iwd.get_router()$$);
SELECT router_err($$SELECT iwd.upsert_router('{"url": "http://r", "clientId": "c"}')$$);
SELECT router_err($$SELECT iwd.upsert_router('{"url": "ftp://r", "clientId": "c", "clientSecret": "s"}')$$);
SELECT router_err($$SELECT iwd.upsert_router('{"url": "http://r", "clientId": "c", "clientSecret": "s", "x": 1}')$$);
SELECT router_err($$SELECT iwd.upsert_router('{"url": "http://r", "clientId": "c", "clientSecret": "s",
                                              "maxInFlight": 0}')$$);
SELECT iwd.upsert_router('{"url": "http://r/api/", "clientId": "c", "clientSecret": "sealed-s", "maxInFlight": 2}')
       - 'createdAt' - 'updatedAt' - 'status';
SELECT iwd.upsert_router('{"url": "http://r/api", "clientId": "c", "apiKey": "sealed-k", "maxInFlight": 2}')
       ->> 'hasClientSecret' AS kept;
SELECT client_secret, api_key FROM iwd.router;

-- the lease: one replica at a time
SELECT iwd.router_claim('A', 15) - 'keyPrefix';
SELECT iwd.router_claim('B', 15);
SELECT router_err($$SELECT iwd.router_plan('B', 10)$$);

-- the best maxInFlight queued tasks, then a better one displaces the lowest (stopped first)
SELECT router_task('t10', 10), router_task('t30', 30), router_task('t20', 20);
SELECT plan('A');
SELECT plan('A') AS again_the_same_submissions;
SELECT answer_all('A');
SELECT router_task('t90', 90);
SELECT plan('A') AS displaced;
SELECT iwd.router_stopped('A', '[{"taskId": 3, "routerId": "r3"}]');
SELECT plan('A') AS better_submitted;
SELECT answer_all('A');
-- the router's changes: applied once, in the lifecycle
SELECT iwd.router_apply('A', '[{"id": "r2", "state": "offered", "agent": "ag1", "version": 1},
                               {"id": "r2", "state": "offered", "agent": "ag1", "version": 1},
                               {"id": "unknown", "state": "offered", "agent": "ag1", "version": 1}]', 'c1')
       - 'lagSeconds';
SELECT status, assigned_to, reserved_until FROM iwd.task WHERE id = 2;
SELECT state FROM iwd.agent WHERE id = 'ag1';
SELECT iwd.router_apply('A', '[{"id": "r2", "state": "accepted", "agent": "ag1", "version": 2},
                               {"id": "r2", "state": "completed", "agent": "ag1", "version": 3},
                               {"id": "r2", "state": "accepted", "agent": "ag1", "version": 2}]', 'c2')
       - 'lagSeconds';
SELECT status FROM iwd.task_all WHERE id = 2;
SELECT event, actor, status_before, status_after FROM iwd.task_event WHERE task_id = 2 ORDER BY id;
SELECT cursor FROM iwd.router;
-- rejected by the router: queued again (declined), not submitted again at once
SELECT iwd.router_apply('A', '[{"id": "r4", "state": "offered", "agent": "ag2", "version": 1}]', 'c3') ->> 'applied';
SELECT router_err($$SELECT iwd.router_apply('B', '[]', 'c4')$$);
SELECT iwd.router_apply('A', '[{"id": "r4", "state": "rejected", "agent": "ag2", "version": 2}]', 'c4') ->> 'applied';
SELECT id, status, assigned_to FROM iwd.task WHERE id = 4;
SELECT event, actor FROM iwd.task_event WHERE task_id = 4 ORDER BY id DESC LIMIT 1;
SELECT state, router_id, retry_at > now() AS waits FROM iwd.router_task WHERE task_id = 4;
SELECT plan('A') AS the_next_two_without_the_rejected_one;
SELECT answer_all('A');
-- hold in iwd stops a task at the router; reprioritize stops it to submit it again
SELECT iwd.hold_task(3) ->> 'status';
SELECT iwd.reprioritize_task(1, 15) ->> 'priority';
SELECT plan('A') AS held_and_reprioritized;
SELECT iwd.router_stopped('A', '[{"taskId": 1, "routerId": "r1"}, {"taskId": 3, "routerId": "r3"}]');
SELECT plan('A') AS reprioritized_submitted_again;
-- a bad change is skipped and named, the ones after it applied
SELECT answer_all('A');
SELECT iwd.router_apply('A', '[{"id": "r1", "state": "lost", "version": 5},
                               {"id": "r1", "state": "offered", "agent": "ag1", "version": 6}]', 'c5')
       - 'lagSeconds';
SELECT status, assigned_to FROM iwd.task WHERE id = 1;
SELECT router_err($$SELECT iwd.router_apply('A', '{}', 'c6')$$);
SELECT iwd.router_report('A', 'the router is not reachable') AS in_flight;
SELECT iwd.get_router() #>> '{status,state}' AS state, iwd.get_router() #>> '{status,lastError}' AS error;
SELECT iwd.router_report('A', NULL) AS in_flight;
SELECT iwd.get_router() #>> '{status,state}' AS state;
SELECT iwd.delete_router(), iwd.delete_router();
SELECT count(*) FROM iwd.router_task;

-- a task the router holds is not claimed by iwd's own agents (iwd.next_task) until it is given back
SELECT iwd.upsert_router('{"url": "http://r", "clientId": "c", "clientSecret": "s", "maxInFlight": 1}')
       ->> 'maxInFlight' AS max_in_flight;
SELECT iwd.router_claim('A', 15) ->> 'held' AS held;
SELECT router_task('t99', 99) > 0 AS t99, router_task('t98', 98) > 0 AS t98, router_task('t97', 97) > 0 AS t97;
SELECT e ->> 'task' IS NOT NULL AS submitted, e #>> '{task,externalId}' AS external_id
FROM jsonb_array_elements(iwd.router_plan('A', 10) -> 'submit') e;
SELECT iwd.upsert_agent('{"id": "local", "capacity": {"workitem": 5}, "state": "ready"}') IS NOT NULL;
SELECT iwd.next_task('local') ->> 'externalId' AS claimed_while_submitting;
SELECT answer_all('A');
SELECT iwd.next_task('local') ->> 'externalId' AS claimed_while_at_the_router;
SELECT iwd.router_stopped('A', jsonb_build_array(jsonb_build_object('taskId', id, 'routerId', 'r' || id)))
FROM iwd.task WHERE external_id = 't99';
SELECT iwd.next_task('local') ->> 'externalId' AS claimed_once_stopped;
SELECT iwd.router_plan('A', 10) -> 'submit' -> 0 #>> '{task,externalId}' AS the_next_submitted;
SELECT iwd.delete_router();
SELECT iwd.next_task('local') ->> 'externalId' AS claimed_once_the_router_is_deleted;
-- a plan's submissions come in queue order, best first (the order the sync sends them in, one at a time),
-- those not answered yet among the new ones
CREATE FUNCTION submit_order(owner text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(e #>> '{task,externalId}', ' ' ORDER BY n)
    FROM jsonb_array_elements(iwd.router_plan(owner, 10) -> 'submit') WITH ORDINALITY AS x(e, n)
$$;
SELECT iwd.upsert_router('{"url": "http://r", "clientId": "c", "clientSecret": "s", "maxInFlight": 2}') IS NOT NULL;
SELECT iwd.router_claim('A', 15) ->> 'held' AS held;
SELECT router_task('o40', 40) > 0 AS o40, router_task('o60', 60) > 0 AS o60, router_task('o50', 50) > 0 AS o50;
SELECT submit_order('A') AS in_queue_order;
SELECT router_task('o55', 55) > 0 AS o55;
SELECT iwd.upsert_router('{"url": "http://r", "clientId": "c", "maxInFlight": 3}') IS NOT NULL;
SELECT submit_order('A') AS unanswered_and_new_in_queue_order;
SELECT iwd.delete_router();
DROP FUNCTION submit_order(text);

DROP FUNCTION router_err(text);
DROP FUNCTION router_task(text, int);
DROP FUNCTION plan(text);
DROP FUNCTION answer_all(text);
DROP EXTENSION iwd CASCADE;
