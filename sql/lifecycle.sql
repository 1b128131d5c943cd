-- iwd task lifecycle: hold, resume, cancel, complete, reject, restart, reprioritize, accept and decline.

-- An agent acts only on the tasks it holds: P0002 when the agent does not exist, 55000 when the task
-- (in status, assigned to assigned_to) is not assigned to it.
CREATE FUNCTION iwd._check_holder(task_id bigint, op text, agent text, status text, assigned_to text)
RETURNS void LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM iwd.agent x WHERE x.id = agent) THEN
        PERFORM iwd._not_found('agent', agent);
    END IF;
    IF status = 'assigned' AND assigned_to IS DISTINCT FROM agent THEN
        RAISE EXCEPTION 'cannot % task %: it is assigned to "%"', op, task_id, assigned_to
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF status IS DISTINCT FROM 'assigned' THEN
        RAISE EXCEPTION 'cannot % task %: it is not assigned to "%"', op, task_id, agent
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It is %s; an agent finishes only the tasks it holds.', status),
                  HINT = 'A supervisor finishes it without naming an agent.';
    END IF;
END $$;

-- Apply a simple transition: check it, set the status, clear the reservation, record the event (actor:
-- the agent that did it; for a supervisor's or the tenant's action NULL, and the event's actor is done_by,
-- who did it when known).
CREATE FUNCTION iwd._transition(id bigint, op text, event text, actor text, detail jsonb,
                                hold_reason text DEFAULT NULL, done_by text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_now timestamptz := iwd.now();
    t iwd.task := iwd._lock_task(id);
    v_before text := t.status;
BEGIN
    IF octet_length(coalesce(detail ->> 'reason', hold_reason)) > 1024 THEN
        RAISE EXCEPTION 'reason is longer than 1024 bytes' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It has %s bytes.', octet_length(coalesce(detail ->> 'reason', hold_reason)));
    END IF;
    t.status := iwd._check_transition(id, t.status, op);
    IF op IN ('complete', 'reject') AND actor IS NOT NULL THEN
        PERFORM iwd._check_holder(id, op, actor, v_before, t.assigned_to);
    END IF;
    IF iwd.is_terminal(t.status) THEN
        t.assigned_to := coalesce(actor, t.assigned_to);
        t.completed_at := v_now;
        t.reserved_until := NULL;
    ELSE
        t.assigned_to := NULL;
        t.reserved_until := NULL;
        t.accepted_at := NULL;
    END IF;
    t.hold_reason := hold_reason;
    t.updated_at := v_now;
    PERFORM iwd._save_task(v_before, t);
    PERFORM iwd._event(id, v_now, event, coalesce(actor, done_by), v_before, t.status, jsonb_strip_nulls(detail));
    RETURN iwd.task_json(t);
END $$;

-- Raise 22023 unless an actor (who did a supervisor's action) is NULL or up to 256 bytes.
CREATE FUNCTION iwd._check_actor(actor text) RETURNS void
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
BEGIN
    IF octet_length(actor) > 256 THEN
        RAISE EXCEPTION 'actor is longer than 256 bytes' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It has %s bytes.', octet_length(actor));
    END IF;
END $$;

-- Park a task (supervisor hold) until iwd.resume_task. actor (here and in resume, cancel, restart and
-- reprioritize): who did it, recorded as the event's actor (the sidecar passes the tenant's ccid).
CREATE FUNCTION iwd.hold_task(id bigint, reason text DEFAULT NULL, actor text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    PERFORM iwd._check_actor(actor);
    RETURN iwd._transition(id, 'hold', 'held', NULL, jsonb_build_object('reason', reason),
                           coalesce(reason, 'held by supervisor'), actor);
END $$;

-- Return a held or errorHeld task to the queue (an errorHeld task is classified again first).
CREATE FUNCTION iwd.resume_task(id bigint, actor text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_now timestamptz := iwd.now();
    t iwd.task := iwd._lock_task(id);
    n iwd.task;
BEGIN
    PERFORM iwd._check_actor(actor);
    PERFORM iwd._check_transition(id, t.status, 'resume');
    IF t.status = 'held' THEN
        RETURN iwd._transition(id, 'resume', 'resumed', NULL, '{}', NULL, actor);
    END IF;
    n := iwd._prepare_task(NULL, t, v_now);
    IF n.status = 'errorHeld' THEN
        RAISE EXCEPTION 'cannot resume task %: it is still in error', id
            USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = n.error_reason,
                  HINT = 'Fix the configuration or the task (iwd.update_task), then resume it.';
    END IF;
    n.status := 'queued';
    n.updated_at := v_now;
    PERFORM iwd._save_task(t.status, n);
    PERFORM iwd._event(id, v_now, 'resumed', actor, t.status, n.status);
    RETURN iwd.task_json(n);
END $$;

-- Cancel an open task (terminal).
CREATE FUNCTION iwd.cancel_task(id bigint, reason text DEFAULT NULL, actor text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    PERFORM iwd._check_actor(actor);
    RETURN iwd._transition(id, 'cancel', 'canceled', NULL, jsonb_build_object('reason', reason), NULL, actor);
END $$;

-- Complete a task (terminal). With an agent: the task must be assigned to that agent (P0002 for an unknown
-- agent, 55000 for a task it does not hold); without: a supervisor's action, from any open status, its event
-- recording actor (who did it). (C: one statement moves the row to iwd.task_closed and records the event; see
-- extension/claim.c)
-- With next => true (an agent's loop in one round trip; agent required) the agent's next task is reserved in
-- the same transaction, after the completion, as iwd.next_task(agent, reserve_seconds) would: the result is
-- {"completed": <task>, "next": <task or null>}. A completion that fails reserves nothing.
CREATE FUNCTION iwd.complete_task(id bigint, agent text DEFAULT NULL, actor text DEFAULT NULL,
                                  next boolean DEFAULT false, reserve_seconds int DEFAULT 30) RETURNS jsonb
AS 'MODULE_PATHNAME', 'iwd_complete_task' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- Reject a task (terminal), e.g. when the work cannot be done; agent and actor as in complete_task.
CREATE FUNCTION iwd.reject_task(id bigint, agent text DEFAULT NULL, reason text DEFAULT NULL,
                                actor text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    PERFORM iwd._check_actor(actor);
    RETURN iwd._transition(id, 'reject', 'rejected', agent, jsonb_build_object('reason', reason), NULL, actor);
END $$;

-- Bring a terminal task back: it is classified and scored again and re-enters the queue.
CREATE FUNCTION iwd.restart_task(id bigint, actor text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_now timestamptz := iwd.now();
    t iwd.task := iwd._lock_task(id);
    v_before text := t.status;
    n iwd.task;
BEGIN
    PERFORM iwd._check_actor(actor);
    PERFORM iwd._check_transition(id, t.status, 'restart');
    t.status := 'new';
    t.assigned_to := NULL;
    t.reserved_until := NULL;
    t.accepted_at := NULL;
    t.completed_at := NULL;
    t.hold_reason := NULL;
    t.overdue_flagged := false;
    t.aging_from := v_now;
    n := iwd._prepare_task(NULL, t, v_now);
    n.updated_at := v_now;
    PERFORM iwd._save_task(v_before, n);
    PERFORM iwd._event(id, v_now, 'restarted', actor, v_before, n.status);
    RETURN iwd.task_json(n);
END $$;

-- Set a task's priority (and business value); rules, aging and urgency still apply on top.
CREATE FUNCTION iwd.reprioritize_task(id bigint, priority int, business_value int DEFAULT NULL,
                                      actor text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_now timestamptz := iwd.now();
    t iwd.task := iwd._lock_task(id);
    n iwd.task;
BEGIN
    PERFORM iwd._check_actor(actor);
    PERFORM iwd._check_transition(id, t.status, 'reprioritize');
    IF priority IS NULL AND business_value IS NULL THEN
        RAISE EXCEPTION 'reprioritize needs a priority or a business value' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t.priority_override := coalesce(priority, t.priority_override);
    t.business_value_override := coalesce(business_value, t.business_value_override);
    n := iwd._rescore(t, v_now);
    n.updated_at := v_now;
    PERFORM iwd._save_task(t.status, n);
    PERFORM iwd._event(id, v_now, 'reprioritized', actor, t.status, n.status,
                       jsonb_build_object('priority', jsonb_build_object('from', t.priority, 'to', n.priority),
                                          'businessValue', jsonb_build_object('from', t.business_value,
                                                                              'to', n.business_value)));
    RETURN iwd.task_json(n);
END $$;

-- Confirm a reservation made by iwd.next_task: the task stays with the agent until it is finished.
CREATE FUNCTION iwd.accept_task(id bigint, agent text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE AS $$
DECLARE
    v_now timestamptz := iwd.now();
    t iwd.task := iwd._lock_task(id);
BEGIN
    PERFORM iwd._check_transition(id, t.status, 'accept');
    IF NOT EXISTS (SELECT 1 FROM iwd.agent x WHERE x.id = agent) THEN
        PERFORM iwd._not_found('agent', agent);
    END IF;
    IF t.assigned_to <> agent THEN
        RAISE EXCEPTION 'cannot accept task %: it is reserved for "%"', id, t.assigned_to
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF t.accepted_at IS NOT NULL THEN
        RETURN iwd.task_json(t);
    END IF;
    t.accepted_at := v_now;
    t.reserved_until := NULL;
    t.updated_at := v_now;
    PERFORM iwd._save_task(t.status, t);
    PERFORM iwd._event(id, v_now, 'accepted', agent, t.status, t.status);
    RETURN iwd.task_json(t);
END $$;

-- The tasks agents declined and until when the claim skips each for that agent (iwd.decline_task). The
-- agent's row keeps the end of its latest decline (iwd.agent.declined_until), which the claim reads anyway:
-- an agent without an active decline costs the claim nothing more. Rows of past declines are deleted by
-- the agent's next decline.
CREATE TABLE iwd.task_decline (
    agent   text NOT NULL REFERENCES iwd.agent (id) ON DELETE CASCADE,
    task_id bigint NOT NULL,
    until   timestamptz NOT NULL,
    PRIMARY KEY (agent, task_id)
);

-- An agent hands back a task reserved to it that it cannot take: the task is queued again for the others,
-- and not offered to this agent for iwd.decline_for. Errors as complete_task's with an agent.
CREATE FUNCTION iwd.decline_task(id bigint, agent text, reason text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_now timestamptz := iwd.now();
    t iwd.task := iwd._lock_task(id);
    v_until timestamptz := v_now + current_setting('iwd.decline_for')::interval;
BEGIN
    IF agent IS NULL OR agent = '' THEN
        RAISE EXCEPTION 'decline needs an agent' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'Only the agent a task is reserved to declines it; a supervisor holds or cancels it.';
    END IF;
    IF octet_length(reason) > 1024 THEN
        RAISE EXCEPTION 'reason is longer than 1024 bytes' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It has %s bytes.', octet_length(reason));
    END IF;
    PERFORM iwd._check_holder(id, 'decline', agent, t.status, t.assigned_to);
    t.status := 'queued';
    t.assigned_to := NULL;
    t.reserved_until := NULL;
    t.accepted_at := NULL;
    t.updated_at := v_now;
    PERFORM iwd._save_task('assigned', t);
    DELETE FROM iwd.task_decline d WHERE d.agent = decline_task.agent AND d.until <= v_now;
    INSERT INTO iwd.task_decline AS d (agent, task_id, until) VALUES (decline_task.agent, id, v_until)
    ON CONFLICT ON CONSTRAINT task_decline_pkey DO UPDATE SET until = EXCLUDED.until;
    UPDATE iwd.agent a SET declined_until = greatest(a.declined_until, v_until) WHERE a.id = decline_task.agent;
    PERFORM iwd._event(id, v_now, 'declined', agent, 'assigned', 'queued',
                       jsonb_strip_nulls(jsonb_build_object('reason', reason, 'until', iwd._ts(v_until))));
    RETURN iwd.task_json(t);
END $$;
