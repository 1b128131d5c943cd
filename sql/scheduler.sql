-- iwd scheduler pass: one batch of each step, the next due time and the full pass (iwd.tick).

-- ---------------------------------------------------------------------------------------------
-- The scheduler pass
-- ---------------------------------------------------------------------------------------------

-- One batch of each scheduler step at "at"; "more" tells whether a step filled its batch.
CREATE FUNCTION iwd._tick_batch(at timestamptz, batch int) RETURNS jsonb
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    SELECT iwd._tick_steps(at, batch, 31)
$$;

-- One batch of the scheduler steps in "steps" at "at", a bit per step in the order of iwd._next_due_steps():
-- 1 activation, 2 reservation timeouts, 4 expiry, 8 overdue flags, 16 reprioritization. A tenant's worker
-- runs only the steps due: a statement not run is not planned, and planning them all in a worker started
-- for one reservation timeout cost more than the timeout itself.
CREATE FUNCTION iwd._tick_steps(at timestamptz, batch int, steps int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    n_act int := 0; n_exp int := 0; n_timeout int := 0; n_overdue int := 0; n_repri int := 0;
BEGIN
  IF steps & 1 <> 0 THEN
    WITH c AS (SELECT id FROM iwd.task
               WHERE status = 'held' AND activation_at IS NOT NULL AND activation_at <= at AND hold_reason IS NULL
               ORDER BY activation_at LIMIT batch FOR UPDATE SKIP LOCKED),
         u AS (UPDATE iwd.task t SET status = 'queued', updated_at = at FROM c WHERE t.id = c.id RETURNING t.id),
         e AS (INSERT INTO iwd.task_event (task_id, at, event, status_before, status_after)
               SELECT u.id, at, 'activated', 'held', 'queued' FROM u RETURNING 1)
    SELECT count(*) INTO n_act FROM e;
  END IF;
  IF steps & 2 <> 0 THEN

    WITH c AS (SELECT id, assigned_to FROM iwd.task
               WHERE status = 'assigned' AND accepted_at IS NULL AND reserved_until <= at
               ORDER BY reserved_until LIMIT batch FOR UPDATE SKIP LOCKED),
         u AS (UPDATE iwd.task t SET status = 'queued', assigned_to = NULL, reserved_until = NULL, updated_at = at
               FROM c WHERE t.id = c.id RETURNING t.id, c.assigned_to),
         e AS (INSERT INTO iwd.task_event (task_id, at, event, actor, status_before, status_after)
               SELECT u.id, at, 'reservation_timeout', u.assigned_to, 'assigned', 'queued' FROM u RETURNING 1)
    SELECT count(*) INTO n_timeout FROM e;
    PERFORM iwd._count('reservation_timeouts', n_timeout);
  END IF;
  IF steps & 4 <> 0 THEN

    WITH c AS (SELECT id FROM iwd.task
               WHERE expires_at IS NOT NULL AND expires_at <= at AND status <> 'assigned'
               ORDER BY expires_at LIMIT batch FOR UPDATE SKIP LOCKED),
         d AS (DELETE FROM iwd.task t USING c WHERE t.id = c.id RETURNING t),
         -- the whole row, closed: iwd.task_closed has iwd.task's columns in its order (iwd._derive_from_task);
         -- OFFSET 0 computes each closed row once, not once per column
         i AS (INSERT INTO iwd.task_closed
               SELECT (x.t).* FROM (SELECT iwd._closed_row(d.t, 'expired', at) AS t FROM d OFFSET 0) x),
         e AS (INSERT INTO iwd.task_event (task_id, at, event, status_before, status_after)
               SELECT (d.t).id, at, 'expired', (d.t).status, 'expired' FROM d RETURNING 1)
    SELECT count(*) INTO n_exp FROM e;
  END IF;
  IF steps & 8 <> 0 THEN

    WITH c AS (SELECT id FROM iwd.task
               WHERE NOT overdue_flagged AND due_at IS NOT NULL AND due_at < at
               ORDER BY due_at LIMIT batch FOR UPDATE SKIP LOCKED),
         u AS (UPDATE iwd.task t SET overdue_flagged = true FROM c WHERE t.id = c.id RETURNING t.id, t.status, t.due_at),
         e AS (INSERT INTO iwd.task_event (task_id, at, event, status_before, status_after, detail)
               SELECT u.id, at, 'overdue', u.status, u.status, jsonb_build_object('dueAt', iwd._ts(u.due_at))
               FROM u RETURNING 1)
    SELECT count(*) INTO n_overdue FROM e;
  END IF;
  IF steps & 16 <> 0 THEN

    -- reprioritization changes scores, not states: it writes no events (the schedule is the record)
    WITH c AS (SELECT t FROM iwd.task t
               WHERE reprioritize_at IS NOT NULL AND reprioritize_at <= at AND status <> 'assigned'
               ORDER BY reprioritize_at LIMIT batch FOR UPDATE SKIP LOCKED),
         r AS (SELECT (c.t).id AS id, s.priority, s.business_value, s.reprioritize_at
               FROM c, LATERAL iwd._rescore(c.t, at) s)
    UPDATE iwd.task t SET priority = r.priority, business_value = r.business_value, reprioritize_at = r.reprioritize_at
    FROM r WHERE t.id = r.id;
    GET DIAGNOSTICS n_repri = ROW_COUNT;
  END IF;

    IF n_act + n_exp + n_timeout + n_overdue > 0 AND current_setting('iwd.notify', true) = 'event' THEN
        PERFORM pg_notify('iwd_task_event', 'tick');
    END IF;
    RETURN jsonb_build_object('activated', n_act, 'expired', n_exp, 'reservationTimeouts', n_timeout,
                              'overdue', n_overdue, 'reprioritized', n_repri,
                              'more', greatest(n_act, n_exp, n_timeout, n_overdue, n_repri) >= batch);
END $$;

-- When the scheduler pass next has work (the earliest of the times _tick_batch compares with "at"); NULL when
-- nothing is due.
CREATE FUNCTION iwd._next_due() RETURNS timestamptz
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT least(d[1], d[2], d[3], d[4], d[5]) FROM iwd._next_due_steps() d
$$;

-- When each scheduler step next has work, in the order of iwd._tick_steps' bits (activation, reservation
-- timeouts, expiry, overdue flags, reprioritization); NULL for a step with nothing due. Each is one probe
-- of its partial index; the tenant's worker reads them after its work and runs the steps due.
CREATE FUNCTION iwd._next_due_steps() RETURNS timestamptz[]
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT ARRAY[
        (SELECT activation_at FROM iwd.task
         WHERE status = 'held' AND activation_at IS NOT NULL AND hold_reason IS NULL
         ORDER BY activation_at LIMIT 1),
        (SELECT reserved_until FROM iwd.task
         WHERE status = 'assigned' AND accepted_at IS NULL ORDER BY reserved_until LIMIT 1),
        (SELECT expires_at FROM iwd.task
         WHERE expires_at IS NOT NULL AND status <> 'assigned' ORDER BY expires_at LIMIT 1),
        (SELECT due_at FROM iwd.task
         WHERE NOT overdue_flagged AND due_at IS NOT NULL ORDER BY due_at LIMIT 1),
        (SELECT reprioritize_at FROM iwd.task
         WHERE reprioritize_at IS NOT NULL AND status <> 'assigned' ORDER BY reprioritize_at LIMIT 1)]
$$;

-- Run one full scheduler pass at "at" (batches of iwd.batch_size) and return the counts.
CREATE FUNCTION iwd.tick(at timestamptz DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_at timestamptz := coalesce(at, iwd.now());
    v_batch int := coalesce(current_setting('iwd.batch_size', true), '1000')::int;
    r jsonb;
    total jsonb := '{"activated": 0, "expired": 0, "reservationTimeouts": 0, "overdue": 0, "reprioritized": 0}';
    k text;
BEGIN
    LOOP
        r := iwd._tick_batch(v_at, v_batch);
        FOR k IN SELECT jsonb_object_keys(total) LOOP
            total := jsonb_set(total, ARRAY[k], to_jsonb((total ->> k)::int + (r ->> k)::int));
        END LOOP;
        EXIT WHEN NOT (r ->> 'more')::boolean;
    END LOOP;
    RETURN total;
END $$;
