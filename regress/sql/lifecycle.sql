-- The task lifecycle: every legal transition and a sample of illegal ones.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
CREATE FUNCTION err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE FUNCTION new_task(ext text) RETURNS bigint LANGUAGE sql AS $$
    SELECT (iwd.create_task(jsonb_build_object('externalId', ext, 'capturePoint', 'test')) ->> 'id')::bigint
$$;
CREATE FUNCTION st(j jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(' ', j ->> 'status', j ->> 'assignedTo', j ->> 'holdReason', j ->> 'completedAt')
$$;
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
SELECT iwd.upsert_agent('{"id": "a1", "state": "ready"}') IS NOT NULL;
SELECT iwd.upsert_agent('{"id": "a2", "state": "ready"}') IS NOT NULL;

-- queued -> held -> queued (hold, resume)
SELECT new_task('T1');
SELECT st(iwd.hold_task(1, 'waiting for documents'));
SELECT st(iwd.resume_task(1));
SELECT st(iwd.hold_task(1));
SELECT st(iwd.resume_task(1));
-- queued -> assigned (next_task) -> accepted -> completed
SELECT st(iwd.next_task('a1'));
SELECT st(iwd.accept_task(1, 'a1'));
SELECT st(iwd.accept_task(1, 'a1'));
SELECT st(iwd.complete_task(1, 'a1'));
-- completed -> restart -> queued
SELECT st(iwd.restart_task(1));
-- queued -> canceled; canceled -> restart
SELECT st(iwd.cancel_task(1, 'duplicate'));
SELECT st(iwd.restart_task(1));
-- queued -> rejected; assigned -> held; held -> canceled
SELECT new_task('T2');
SELECT st(iwd.reject_task(2, NULL, 'cannot be done'));
SELECT new_task('T3');
SELECT st(iwd.next_task('a2'));
SELECT st(iwd.next_task('a2'));
SELECT st(iwd.hold_task(1, 'escalated'));
SELECT st(iwd.cancel_task(1));
-- assigned -> completed without accept, by the assigned agent; assigned -> rejected
SELECT st(iwd.next_task('a2'));
SELECT st(iwd.complete_task(3, 'a2'));
SELECT new_task('T4');
SELECT st(iwd.next_task('a1'));
SELECT st(iwd.reject_task(4, 'a1'));
-- a queued task completed directly (work done outside the desktop)
SELECT new_task('T5');
SELECT st(iwd.complete_task(5));
-- reprioritize an open task
SELECT new_task('T6');
SELECT t ->> 'priority', t ->> 'businessValue' FROM iwd.reprioritize_task(6, 40, 70) t;
SELECT t ->> 'priority', t ->> 'businessValue' FROM iwd.reprioritize_task(6, 45) t;
-- update an open task
SELECT t ->> 'subject', t -> 'attributes' FROM iwd.update_task(6, '{"subject": "new subject", "attributes": {"k": 1}}') t;

-- illegal transitions: 55000 naming the current and requested state
SELECT err('SELECT iwd.resume_task(6)');
SELECT err('SELECT iwd.accept_task(6, ''a1'')');
SELECT err('SELECT iwd.restart_task(6)');
SELECT err('SELECT iwd.complete_task(5)');
SELECT err('SELECT iwd.cancel_task(5)');
SELECT err('SELECT iwd.hold_task(5)');
SELECT err('SELECT iwd.update_task(5, ''{"subject": "x"}'')');
SELECT err('SELECT iwd.reprioritize_task(5, 1)');
SELECT err('SELECT iwd.hold_task(1)');
SELECT st(iwd.hold_task(6, 'x'));
SELECT err('SELECT iwd.hold_task(6)');
SELECT st(iwd.resume_task(6));
SELECT st(iwd.next_task('a1'));
SELECT err('SELECT iwd.accept_task(6, ''a2'')');
SELECT err('SELECT iwd.complete_task(6, ''a2'')');
SELECT err('SELECT iwd.reject_task(6, ''a2'')');
-- an agent finishes only the tasks it holds (55000), and must exist (P0002), even for a task assigned
-- under its name; without an agent it is a supervisor's action, from any open status (actor NULL)
SELECT err('SELECT iwd.complete_task(6, ''nobody'')');
SELECT err('SELECT iwd.reject_task(6, ''nobody'')');
SELECT err('SELECT iwd.accept_task(6, ''nobody'')');
SELECT new_task('T7');
SELECT err('SELECT iwd.complete_task(7, ''a2'')');
SELECT err('SELECT iwd.reject_task(7, ''a2'')');
SELECT st(iwd.hold_task(7, 'waiting'));
SELECT err('SELECT iwd.complete_task(7, ''a2'')');
SELECT st(iwd.complete_task(7));
SELECT err('SELECT iwd.complete_task(7, ''a2'')');
SELECT iwd.upsert_agent('{"id": "a3", "state": "ready"}') IS NOT NULL;
SELECT new_task('T8');
SELECT st(iwd.next_task('a3'));
SELECT iwd.delete_agent('a3') ->> 'id';
SELECT err('SELECT iwd.complete_task(8, ''a3'')');
SELECT err('SELECT iwd.reject_task(8, ''a3'')');
SELECT err('SELECT iwd.accept_task(8, ''a3'')');
SELECT st(iwd.reject_task(8, NULL, 'agent left'));
-- reasons are bounded (1024 bytes)
SELECT err(format('SELECT iwd.hold_task(6, %L)', repeat('r', 1025)));
SELECT err(format('SELECT iwd.cancel_task(6, %L)', repeat('r', 1025)));
-- invalid input and unknown ids
SELECT err('SELECT iwd.reprioritize_task(6, NULL, NULL)');
SELECT err('SELECT iwd.update_task(6, ''"x"'')');
SELECT err('SELECT iwd.update_task(6, ''{"externalId": "other"}'')');
SELECT err('SELECT iwd.update_task(6, ''{"status": "queued"}'')');
SELECT err('SELECT iwd.hold_task(999)');
SELECT err('SELECT iwd.complete_task(999)');
SELECT err('SELECT iwd.next_task(''nobody'')');
SELECT err('SELECT iwd.next_task(''a1'', 0)');
-- the failed calls changed nothing
SELECT st(iwd.get_task(6));

-- terminal tasks live in task_closed, open ones in task
SELECT id, status FROM iwd.task ORDER BY id;
SELECT id, status FROM iwd.task_closed ORDER BY id;
-- every change is in the event history, in order
SELECT task_id, event, actor, status_before, status_after FROM iwd.task_event ORDER BY id;

DROP FUNCTION err(text);
DROP FUNCTION new_task(text);
DROP FUNCTION st(jsonb);
DROP EXTENSION iwd CASCADE;
