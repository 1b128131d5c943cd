-- iwd tasks: the task row's JSON shape, events, storing a task, capture (one and batch), get and update.

-- ---------------------------------------------------------------------------------------------
-- Tasks
-- ---------------------------------------------------------------------------------------------

-- The search document of a task's text: the first 256 KB of subject and description and the string and
-- number values of attributes, in the 'simple' configuration. Bounded whatever the task holds, so that
-- search never makes a capture fail (extension/search.c).
CREATE FUNCTION iwd._document(subject text, description text, attributes jsonb) RETURNS tsvector
    AS 'MODULE_PATHNAME', 'iwd_document' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;

-- The task in the REST shape.
CREATE FUNCTION iwd.task_json(t iwd.task) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'iwd_task_json' LANGUAGE C STABLE STRICT PARALLEL SAFE;
-- Tasks in the REST shape, as one JSON array in the array's order.
CREATE FUNCTION iwd._tasks_json(tasks iwd.task[]) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'iwd_tasks_json' LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- Append an event (same transaction as the change); with iwd.notify = event, announce it on
-- iwd_task_event (otherwise the scheduler worker announces new events in batches).
CREATE FUNCTION iwd._event(task_id bigint, at timestamptz, event text, actor text, status_before text,
                           status_after text, detail jsonb DEFAULT '{}') RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    INSERT INTO iwd.task_event (task_id, at, event, actor, status_before, status_after, detail)
    VALUES (task_id, at, event, actor, status_before, status_after, coalesce(detail, '{}'));
    IF current_setting('iwd.notify', true) = 'event' THEN
        PERFORM pg_notify('iwd_task_event', task_id || ':' || event);
    END IF;
END $$;

-- Lock a task (open or closed) for a lifecycle change; P0002 when it does not exist.
CREATE FUNCTION iwd._lock_task(id bigint) RETURNS iwd.task
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    t iwd.task;
BEGIN
    SELECT x.* INTO t FROM iwd.task x WHERE x.id = _lock_task.id FOR UPDATE;
    IF FOUND THEN
        RETURN t;
    END IF;
    SELECT x.* INTO t FROM iwd.task_closed x WHERE x.id = _lock_task.id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM iwd._not_found('task', id::text);
    END IF;
    RETURN t;
END $$;

-- The task row is declared once, by CREATE TABLE iwd.task (sql/iwd.sql); what copies it whole follows that
-- declaration. This function makes from the catalog what must name every column: the columns of
-- iwd.task_closed (a column iwd.task has and it lacks is added, with its type, collation, default, NOT NULL
-- and CHECK constraints; the two must then list the same columns in the same order), the view
-- iwd.task_all and iwd._save_task below. It runs once here, again in every upgrade (sql/upgrade), and by
-- hand after an ALTER TABLE iwd.task ADD COLUMN (README, Architecture: adding a task column). The other
-- copies name no column: completion builds its list from iwd.task_closed's descriptor (extension/claim.c),
-- capture, expiry and the draft (extension/draft.c) copy whole rows.
CREATE FUNCTION iwd._derive_from_task() RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $derive$
DECLARE
    c record;
    v_task text[];
    v_closed text[];
    v_columns text;
    v_values text;
BEGIN
    FOR c IN
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid) AS default_expr,
               CASE WHEN a.attcollation <> ty.typcollation
                    THEN format(' COLLATE %I.%I', cn.nspname, co.collname) END AS collation
        FROM pg_attribute a
        JOIN pg_type ty ON ty.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
        WHERE a.attrelid = 'iwd.task'::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND NOT EXISTS (SELECT 1 FROM pg_attribute b WHERE b.attrelid = 'iwd.task_closed'::regclass
                          AND b.attname = a.attname AND NOT b.attisdropped)
        ORDER BY a.attnum
    LOOP
        EXECUTE format('ALTER TABLE iwd.task_closed ADD COLUMN %I %s%s%s%s', c.attname, c.type,
                       coalesce(c.collation, ''), coalesce(' DEFAULT ' || c.default_expr, ''),
                       CASE WHEN c.attnotnull THEN ' NOT NULL' ELSE '' END);
    END LOOP;
    FOR c IN
        SELECT x.conname, pg_get_constraintdef(x.oid) AS def FROM pg_constraint x
        WHERE x.conrelid = 'iwd.task'::regclass AND x.contype = 'c'
          AND NOT EXISTS (SELECT 1 FROM pg_constraint y WHERE y.conrelid = 'iwd.task_closed'::regclass
                          AND y.conname = x.conname)
    LOOP
        EXECUTE format('ALTER TABLE iwd.task_closed ADD CONSTRAINT %I %s', c.conname, c.def);
    END LOOP;
    SELECT array_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
    INTO v_task FROM pg_attribute a WHERE a.attrelid = 'iwd.task'::regclass AND a.attnum > 0 AND NOT a.attisdropped;
    SELECT array_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
    INTO v_closed FROM pg_attribute a
    WHERE a.attrelid = 'iwd.task_closed'::regclass AND a.attnum > 0 AND NOT a.attisdropped;
    IF v_task IS DISTINCT FROM v_closed THEN
        RAISE EXCEPTION 'iwd.task_closed does not have the columns of iwd.task'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('iwd.task has (%s); iwd.task_closed has (%s).', array_to_string(v_task, ', '),
                                  array_to_string(v_closed, ', ')),
                  HINT = 'Closed tasks are copied whole: change both tables the same way (a column is dropped '
                         'from both, or its type changed in both).';
    END IF;
    CREATE OR REPLACE VIEW iwd.task_all AS
        SELECT * FROM iwd.task
        UNION ALL
        SELECT * FROM iwd.task_closed;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum),
           string_agg('t.' || quote_ident(a.attname), ', ' ORDER BY a.attnum)
    INTO v_columns, v_values
    FROM pg_attribute a WHERE a.attrelid = 'iwd.task'::regclass AND a.attnum > 0 AND NOT a.attisdropped;
    -- Store a changed task: open tasks live in iwd.task, terminal ones in iwd.task_closed.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION iwd._save_task(status_before text, t iwd.task) RETURNS void
        LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
        SET search_path = pg_catalog, iwd, iwd_dm, pg_temp AS $$
        BEGIN
            IF iwd.is_terminal(status_before) = iwd.is_terminal(t.status) THEN
                IF iwd.is_terminal(t.status) THEN
                    UPDATE iwd.task_closed SET (%1$s) = (%2$s) WHERE id = t.id;
                ELSE
                    UPDATE iwd.task SET (%1$s) = (%2$s) WHERE id = t.id;
                END IF;
            ELSIF iwd.is_terminal(t.status) THEN
                DELETE FROM iwd.task WHERE id = t.id;
                INSERT INTO iwd.task_closed (%1$s) VALUES (%2$s);
            ELSE
                DELETE FROM iwd.task_closed WHERE id = t.id;
                INSERT INTO iwd.task (%1$s) VALUES (%2$s);
            END IF;
        END $$;
        COMMENT ON FUNCTION iwd._save_task(text, iwd.task) IS
            'Store a changed task: open tasks live in iwd.task, terminal ones in iwd.task_closed.';
        $f$, v_columns, v_values);
END $derive$;
REVOKE EXECUTE ON FUNCTION iwd._derive_from_task() FROM PUBLIC;
SELECT iwd._derive_from_task();

-- Create one task (see create_task) at "at" and return it with "created" telling whether it is new
-- (extension/capture.c).
CREATE FUNCTION iwd._create_task(task jsonb, at timestamptz, OUT created boolean, OUT result jsonb)
    AS 'MODULE_PATHNAME', 'iwd_create_task_at' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- Capture a task: validate, classify, score, queue (or hold until activationAt). Re-submitting the same
-- (capturePoint, externalId) returns the existing task unchanged (extension/capture.c).
CREATE FUNCTION iwd.create_task(task jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'iwd_create_task' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- Capture a batch of new tasks set-wise: each element prepared in C, then one statement for the keys and one
-- for the tasks, search documents and events of the whole batch (extension/capture.c). NULL (nothing
-- written) when the batch is not plainly new work: an element without capturePoint and externalId, a key
-- already known or repeated in the batch, an element that fails validation, or a key taken concurrently;
-- the caller then captures element by element.
CREATE FUNCTION iwd._create_tasks_new(tasks jsonb, at timestamptz) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'iwd_create_tasks_new' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- Capture a JSON array of tasks, all or nothing; an error names the failing element's index.
CREATE FUNCTION iwd.create_tasks(tasks jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_now timestamptz := iwd.now();
    v_batch jsonb;
    v_out jsonb[] := '{}';
    v_i int := 0;
    v_state text;
    v_msg text;
    v_detail text;
    v_hint text;
BEGIN
    IF tasks IS NULL OR jsonb_typeof(tasks) <> 'array' THEN
        RAISE EXCEPTION 'tasks must be a JSON array' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the common case, a batch of new tasks, is captured set-wise; anything else (a known or repeated
    -- key, an element without a key, an invalid element, a concurrent submission) takes the loop below,
    -- which returns existing tasks and names the failing element
    v_batch := iwd._create_tasks_new(tasks, v_now);
    IF v_batch IS NOT NULL THEN
        RETURN v_batch;
    END IF;
    BEGIN
        FOR i IN 0 .. jsonb_array_length(tasks) - 1 LOOP
            v_i := i;
            v_out := v_out || (iwd._create_task(tasks -> i, v_now)).result;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL,
                                v_hint = PG_EXCEPTION_HINT;
        v_detail := nullif(v_detail, '');
        v_hint := nullif(v_hint, '');
        IF v_detail IS NOT NULL THEN
            RAISE EXCEPTION 'tasks[%]: %', v_i, v_msg USING ERRCODE = v_state, DETAIL = v_detail;
        ELSIF v_hint IS NOT NULL THEN
            RAISE EXCEPTION 'tasks[%]: %', v_i, v_msg USING ERRCODE = v_state, HINT = v_hint;
        END IF;
        RAISE EXCEPTION 'tasks[%]: %', v_i, v_msg USING ERRCODE = v_state;
    END;
    RETURN to_jsonb(v_out);
END $$;

-- The task with this id, open or closed; P0002 when none.
CREATE FUNCTION iwd.get_task(id bigint) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'iwd_get_task' LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- The keys whose values differ between two task documents.
CREATE FUNCTION iwd._changed_keys(before jsonb, after jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_agg(a.key ORDER BY a.key), '[]')
    FROM jsonb_each(after) a
    WHERE a.key NOT IN ('updatedAt') AND a.value IS DISTINCT FROM before -> a.key
$$;

-- Change a task's fields; re-classifies and re-scores when relevant fields change.
CREATE FUNCTION iwd.update_task(id bigint, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_now timestamptz := iwd.now();
    t iwd.task := iwd._lock_task(id);
    n iwd.task;
    v_before jsonb;
    v_after jsonb;
BEGIN
    PERFORM iwd._check_transition(id, t.status, 'update');
    IF patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN
        RAISE EXCEPTION 'a task patch must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := iwd._prepare_task(patch, t, v_now);
    IF n.status <> 'assigned' THEN
        n.assigned_to := NULL;
        n.reserved_until := NULL;
        n.accepted_at := NULL;
    END IF;
    n.updated_at := v_now;
    PERFORM iwd._save_task(t.status, n);
    IF (n.subject, n.description, n.attributes) IS DISTINCT FROM (t.subject, t.description, t.attributes) THEN
        UPDATE iwd.task_document SET document = iwd._document(n.subject, n.description, n.attributes)
        WHERE task_id = n.id;
    END IF;
    v_before := iwd.task_json(t);
    v_after := iwd.task_json(n);
    PERFORM iwd._event(id, v_now, 'updated', NULL, t.status, n.status,
                       jsonb_build_object('changed', iwd._changed_keys(v_before, v_after)));
    IF n.status = 'errorHeld' AND t.status <> 'errorHeld' THEN
        PERFORM iwd._event(id, v_now, 'error_held', NULL, t.status, n.status,
                           jsonb_build_object('errorReason', n.error_reason));
    END IF;
    RETURN v_after;
END $$;
