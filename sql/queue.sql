-- iwd universal queue, full-text search, task history and queue statistics.

-- ---------------------------------------------------------------------------------------------
-- The universal queue, search and history
-- ---------------------------------------------------------------------------------------------

-- A filter document as an SQL condition over alias t (values quoted as literals).
CREATE FUNCTION iwd._task_where(filter jsonb, default_statuses text[]) RETURNS text
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v_where text[] := '{}';
    v_key text;
    v_col text;
    v_values text[];
    v_statuses text[] := default_statuses;
BEGIN
    filter := coalesce(filter, '{}');
    PERFORM iwd._check_object(filter, 'filter',
        '{department,process,category,queue,status,mediaType,customerSegment,capturePoint,assignedTo,overdue,afterId}');
    FOR v_key, v_col IN VALUES ('department', 'department'), ('process', 'process'), ('category', 'category'),
            ('queue', 'queue'), ('status', 'status'), ('mediaType', 'media_type'),
            ('customerSegment', 'customer_segment'), ('capturePoint', 'capture_point'), ('assignedTo', 'assigned_to')
    LOOP
        CONTINUE WHEN coalesce(jsonb_typeof(filter -> v_key), 'null') = 'null';
        IF jsonb_typeof(filter -> v_key) = 'string' THEN
            v_values := ARRAY[filter ->> v_key];
        ELSIF jsonb_typeof(filter -> v_key) = 'array'
              AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(filter -> v_key) e
                              WHERE jsonb_typeof(e) <> 'string') THEN
            v_values := ARRAY(SELECT jsonb_array_elements_text(filter -> v_key));
        ELSE
            RAISE EXCEPTION 'filter field "%" must be a string or an array of strings', v_key
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_key = 'status' THEN
            IF NOT v_values <@ ARRAY['new', 'queued', 'assigned', 'held', 'errorHeld', 'completed', 'canceled',
                                     'rejected', 'expired'] THEN
                RAISE EXCEPTION 'filter field "status" has an unknown status'
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = 'Statuses: new, queued, assigned, held, errorHeld, completed, canceled, '
                                   'rejected, expired.';
            END IF;
            v_statuses := v_values;
        ELSE
            v_where := v_where || format('t.%I = ANY (%L::text[])', v_col, v_values);
        END IF;
    END LOOP;
    IF v_statuses IS NOT NULL THEN
        v_where := v_where || format('t.status = ANY (%L::text[])', v_statuses);
    END IF;
    IF iwd._bool(filter, 'overdue', 'filter') IS NOT NULL THEN
        v_where := v_where || format('%s(t.due_at IS NOT NULL AND coalesce(t.completed_at, iwd.now()) > t.due_at)',
                                     CASE WHEN (filter -> 'overdue')::boolean THEN '' ELSE 'NOT ' END);
    END IF;
    RETURN coalesce(nullif(array_to_string(v_where, ' AND '), ''), 'true');
END $$;

-- Does a status list need closed tasks?
CREATE FUNCTION iwd._source(filter jsonb) RETURNS text
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements_text(
                               CASE jsonb_typeof(filter -> 'status') WHEN 'array' THEN filter -> 'status'
                                    WHEN 'string' THEN jsonb_build_array(filter -> 'status') ELSE '[]' END) s
                             WHERE iwd.is_terminal(s))
                THEN 'iwd.task_all' ELSE 'iwd.task' END
$$;

-- Raise 22023 unless 1 <= lim <= 1000.
CREATE FUNCTION iwd._check_limit(lim int) RETURNS void
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
BEGIN
    IF lim IS NULL OR lim < 1 OR lim > 1000 THEN
        RAISE EXCEPTION 'limit must be between 1 and 1000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- The universal queue (Global Task List) in distribution order, filtered, with keyset pagination
-- ("afterId": the id of the last task of the previous page).
CREATE FUNCTION iwd.queue(filter jsonb DEFAULT '{}', lim int DEFAULT 50) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v_where text := iwd._task_where(filter, ARRAY['new', 'queued', 'assigned', 'held', 'errorHeld']);
    v_after bigint := iwd._int(filter, 'afterId', 'filter', 1, 9223372036854775807);
    a record;
BEGIN
    PERFORM iwd._check_limit(lim);
    IF v_after IS NOT NULL THEN
        SELECT priority, business_value, due_at, created_at INTO a FROM iwd.task_all WHERE id = v_after;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'filter field "afterId": task % does not exist', v_after
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_where := v_where || format(
            ' AND (-t.priority::bigint, -t.business_value::bigint, coalesce(t.due_at, ''infinity''),'
            ' t.created_at, t.id)'
            ' > (%s, %s, %L::timestamptz, %L::timestamptz, %s)',
            -a.priority::bigint, -a.business_value::bigint, coalesce(a.due_at, 'infinity'), a.created_at, v_after);
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT iwd.task_json(ROW(t.*)::iwd.task) FROM %s t WHERE %s '
        'ORDER BY t.priority DESC, t.business_value DESC, t.due_at ASC NULLS LAST, t.created_at, t.id LIMIT %s',
        iwd._source(filter), v_where, lim);
END $$;

-- A search query (web-search syntax) as a tsquery: at most 1024 bytes (a query of thousands of words nests its
-- match too deep for the stack, 54001) and at least one word, else 22023.
CREATE FUNCTION iwd._search_query(query text) RETURNS tsquery
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v_query tsquery;
BEGIN
    IF octet_length(query) > 1024 THEN
        RAISE EXCEPTION 'search query is longer than 1024 bytes' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It has %s bytes.', octet_length(query));
    END IF;
    v_query := websearch_to_tsquery('simple', coalesce(query, ''));
    IF numnode(v_query) = 0 THEN
        RAISE EXCEPTION 'search query must contain at least one word' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN v_query;
END $$;

-- Full-text search over subject, description and attributes of every task, best match first.
CREATE FUNCTION iwd.search_tasks(query text, filter jsonb DEFAULT '{}', lim int DEFAULT 50) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v_where text := iwd._task_where(filter, NULL);
    v_query tsquery;
BEGIN
    PERFORM iwd._check_limit(lim);
    IF filter ? 'afterId' THEN
        RAISE EXCEPTION 'search results are ranked: "afterId" does not apply' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_query := iwd._search_query(query);
    RETURN QUERY EXECUTE format(
        'SELECT iwd.task_json(ROW(t.*)::iwd.task) FROM iwd.task_document d JOIN iwd.task_all t ON t.id = d.task_id '
        'WHERE d.document @@ $1 AND %s ORDER BY ts_rank(d.document, $1) DESC, t.id LIMIT %s', v_where, lim)
        USING v_query;
END $$;

-- Every event of a task, oldest first.
CREATE FUNCTION iwd.task_history(id bigint) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM iwd.task WHERE task.id = task_history.id)
       AND NOT EXISTS (SELECT 1 FROM iwd.task_closed c WHERE c.id = task_history.id) THEN
        PERFORM iwd._not_found('task', id::text);
    END IF;
    RETURN QUERY
        SELECT jsonb_build_object('id', e.id, 'taskId', e.task_id, 'at', iwd._ts(e.at), 'event', e.event,
                                  'actor', e.actor, 'statusBefore', e.status_before, 'statusAfter', e.status_after,
                                  'detail', e.detail)
        FROM iwd.task_event e WHERE e.task_id = task_history.id ORDER BY e.id;
END $$;

-- Open work per queue and media type, plus the claim counters since server start.
CREATE FUNCTION iwd.queue_stats() RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    SELECT jsonb_build_object(
        'queues', coalesce((
            SELECT jsonb_agg(jsonb_build_object('queue', s.queue, 'mediaType', s.media_type, 'queued', s.queued,
                                                'assigned', s.assigned, 'held', s.held,
                                                'oldestQueuedSeconds', s.oldest) ORDER BY s.queue, s.media_type)
            FROM (SELECT queue, media_type,
                         count(*) FILTER (WHERE status = 'queued') AS queued,
                         count(*) FILTER (WHERE status = 'assigned') AS assigned,
                         count(*) FILTER (WHERE status IN ('held', 'errorHeld')) AS held,
                         coalesce(extract(epoch FROM iwd.now() - min(created_at) FILTER (WHERE status = 'queued')),
                                  0)::float8 AS oldest
                  FROM iwd.task GROUP BY queue, media_type) s), '[]'),
        'claims', c.claims, 'reservationTimeouts', c.reservation_timeouts)
    FROM iwd._counters() c
$$;

-- ---------------------------------------------------------------------------------------------
-- Batch actions: a supervisor's hold, resume, cancel or reprioritize of many tasks in one call
-- ---------------------------------------------------------------------------------------------

-- A task as one batch action leaves it (the row written back; the status says whether it applies: a
-- resumed errorHeld task still in error stays errorHeld and is skipped).
CREATE FUNCTION iwd._batch_row(action text, t iwd.task, at timestamptz, args jsonb) RETURNS iwd.task
LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE AS $$
BEGIN
    IF action = 'reprioritize' THEN
        t.priority_override := coalesce((args ->> 'priority')::int, t.priority_override);
        t.business_value_override := coalesce((args ->> 'businessValue')::int, t.business_value_override);
        t := iwd._rescore(t, at);
    ELSIF action = 'resume' AND t.status = 'errorHeld' THEN
        t := iwd._prepare_task(NULL, t, at);
        IF t.status = 'errorHeld' THEN
            RETURN t;
        END IF;
        t.status := 'queued';
    ELSIF action = 'cancel' THEN
        -- as iwd.cancel_task: the agent it was with stays on record
        t.status := 'canceled';
        t.completed_at := at;
        t.reserved_until := NULL;
        t.hold_reason := NULL;
    ELSE
        t.status := CASE action WHEN 'hold' THEN 'held' ELSE 'queued' END;
        t.assigned_to := NULL;
        t.reserved_until := NULL;
        t.accepted_at := NULL;
        t.hold_reason := CASE WHEN action = 'hold' THEN coalesce(args ->> 'reason', 'held by supervisor') END;
    END IF;
    t.updated_at := at;
    RETURN t;
END $$;

-- Apply one action to a set of tasks, chosen by id (at most 10,000) or by the queue filter of iwd.queue
-- (the first 10,000 in queue order; "remaining" counts the rest): {"matched": N (tasks chosen), "changed":
-- M, "skipped": [{"id", "reason"}] (the first 100), "remaining": R}. Actions: hold {"reason"}, resume,
-- cancel {"reason"}, reprioritize {"priority", "businessValue"}; args "dryRun": true counts and changes
-- nothing. Set-wise: the tasks are locked, written and their events recorded (actor: who did it) by one
-- statement each, whatever their number.
CREATE FUNCTION iwd.batch_action(action text, ids bigint[] DEFAULT NULL, filter jsonb DEFAULT NULL,
                                 actor text DEFAULT NULL, args jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    c_max_tasks constant int := 10000;
    c_max_skipped constant int := 100;
    v_now timestamptz := iwd.now();
    v_from text[];
    v_event text;
    v_matched bigint;
    v_ids bigint[];
    v_old iwd.task[];
    v_new iwd.task[];
    v_skipped jsonb;
BEGIN
    args := coalesce(args, '{}');
    v_from := CASE action WHEN 'hold' THEN ARRAY['new', 'queued', 'assigned', 'errorHeld']
                          WHEN 'resume' THEN ARRAY['held', 'errorHeld']
                          WHEN 'cancel' THEN ARRAY['new', 'queued', 'assigned', 'held', 'errorHeld']
                          WHEN 'reprioritize' THEN ARRAY['new', 'queued', 'assigned', 'held', 'errorHeld'] END;
    IF v_from IS NULL THEN
        RAISE EXCEPTION 'unknown batch action "%"', action USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'Actions: hold, resume, cancel, reprioritize.';
    END IF;
    v_event := CASE action WHEN 'hold' THEN 'held' WHEN 'resume' THEN 'resumed' WHEN 'cancel' THEN 'canceled'
                           ELSE 'reprioritized' END;
    PERFORM iwd._check_object(args, 'args', CASE action WHEN 'reprioritize' THEN '{priority,businessValue,dryRun}'
                                                         WHEN 'resume' THEN '{dryRun}'
                                                         ELSE '{reason,dryRun}' END::text[]);
    PERFORM iwd._bool(args, 'dryRun', 'args');
    IF args ? 'reason' AND jsonb_typeof(args -> 'reason') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'args field "reason" must be a string' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(args ->> 'reason') > 1024 THEN
        RAISE EXCEPTION 'reason is longer than 1024 bytes' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It has %s bytes.', octet_length(args ->> 'reason'));
    END IF;
    IF action = 'reprioritize' THEN
        IF iwd._int(args, 'priority', 'args') IS NULL AND iwd._int(args, 'businessValue', 'args') IS NULL THEN
            RAISE EXCEPTION 'reprioritize needs a priority or a business value'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF octet_length(actor) > 256 THEN
        RAISE EXCEPTION 'actor is longer than 256 bytes' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (ids IS NULL) = (filter IS NULL) THEN
        RAISE EXCEPTION 'a batch action needs either ids or a filter' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'ids: the tasks to act on; filter: every open task the queue filter matches ({} for all).';
    END IF;

    IF ids IS NOT NULL THEN
        IF cardinality(ids) > c_max_tasks THEN
            RAISE EXCEPTION 'ids holds more than % task ids', c_max_tasks USING ERRCODE = 'invalid_parameter_value',
                DETAIL = format('It holds %s.', cardinality(ids));
        END IF;
        IF array_position(ids, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'ids must not hold null' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_ids := ARRAY(SELECT DISTINCT i FROM unnest(ids) i ORDER BY i);
        v_matched := cardinality(v_ids);
    ELSE
        IF jsonb_typeof(filter) <> 'object' OR filter ? 'afterId' THEN
            RAISE EXCEPTION 'a batch filter must be an object of the queue filter''s fields, without "afterId"'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        EXECUTE format('SELECT count(*) FROM %s t WHERE %s', iwd._source(filter),
                       iwd._task_where(filter, ARRAY['new', 'queued', 'assigned', 'held', 'errorHeld']))
            INTO v_matched;
        EXECUTE format('SELECT ARRAY(SELECT t.id FROM %s t WHERE %s ORDER BY t.priority DESC, t.business_value DESC, '
                       't.due_at ASC NULLS LAST, t.created_at, t.id LIMIT %s)', iwd._source(filter),
                       iwd._task_where(filter, ARRAY['new', 'queued', 'assigned', 'held', 'errorHeld']), c_max_tasks)
            INTO v_ids;
    END IF;

    -- the tasks the action applies to, locked (in id order: two batches never deadlock each other)
    SELECT coalesce(array_agg(x ORDER BY (x).id), '{}') INTO v_old
    FROM (SELECT t AS x FROM iwd.task t WHERE t.id = ANY (v_ids) AND t.status = ANY (v_from)
          ORDER BY t.id FOR UPDATE) s;
    IF action = 'resume' THEN
        -- an errorHeld task still in error after its classification again stays where it is
        SELECT coalesce(array_agg(v_old[r.i] ORDER BY r.i), '{}'), coalesce(array_agg(r.n ORDER BY r.i), '{}')
        INTO v_old, v_new
        FROM (SELECT i, iwd._batch_row(action, v_old[i], v_now, args) AS n FROM generate_subscripts(v_old, 1) i) r
        WHERE (r.n).status <> 'errorHeld';
    ELSE
        v_new := ARRAY(SELECT iwd._batch_row(action, v_old[i], v_now, args) FROM generate_subscripts(v_old, 1) i
                       ORDER BY i);
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', s.id, 'reason', s.reason) ORDER BY s.id), '[]') INTO v_skipped
    FROM (SELECT i.id, CASE WHEN a.id IS NULL THEN 'task does not exist'
                            WHEN a.status = 'errorHeld' AND action = 'resume' THEN 'it is still in error'
                            ELSE format('cannot %s a task that is %s', action, a.status) END AS reason
          FROM unnest(v_ids) i(id) LEFT JOIN iwd.task_all a ON a.id = i.id
          LEFT JOIN unnest(v_old) o ON o.id = i.id
          WHERE o.id IS NULL
          ORDER BY i.id LIMIT c_max_skipped) s;
    IF coalesce(iwd._bool(args, 'dryRun', 'args'), false) THEN
        RETURN jsonb_build_object('matched', v_matched, 'changed', 0, 'wouldChange', cardinality(v_old),
                                  'skipped', v_skipped, 'remaining', v_matched - cardinality(v_ids), 'dryRun', true);
    END IF;

    PERFORM iwd._save_task((v_old[i]).status, v_new[i]) FROM generate_subscripts(v_old, 1) i;
    INSERT INTO iwd.task_event (task_id, at, event, actor, status_before, status_after, detail)
    SELECT (v_old[i]).id, v_now, v_event, batch_action.actor, (v_old[i]).status, (v_new[i]).status,
           jsonb_strip_nulls(CASE action
               WHEN 'reprioritize' THEN
                   jsonb_build_object('priority', jsonb_build_object('from', (v_old[i]).priority,
                                                                     'to', (v_new[i]).priority),
                                      'businessValue', jsonb_build_object('from', (v_old[i]).business_value,
                                                                          'to', (v_new[i]).business_value),
                                      'batch', true)
               ELSE jsonb_build_object('reason', args ->> 'reason', 'batch', true) END)
    FROM generate_subscripts(v_old, 1) i ORDER BY i;
    IF current_setting('iwd.notify', true) = 'event' THEN
        PERFORM pg_notify('iwd_task_event', (v_old[i]).id || ':' || v_event) FROM generate_subscripts(v_old, 1) i;
    END IF;
    RETURN jsonb_build_object('matched', v_matched, 'changed', cardinality(v_old), 'skipped', v_skipped,
                              'remaining', v_matched - cardinality(v_ids));
END $$;

-- Apply one action (as iwd.batch_action) to every open task that a full-text search (iwd.search_tasks'
-- query) and the queue filter match, at most 1,000 of them: a search matching more is refused (22023), as
-- a batch is only ever applied to a set the supervisor can see whole. The answer is batch_action's.
CREATE FUNCTION iwd.batch_search_action(action text, query text, filter jsonb DEFAULT '{}', actor text DEFAULT NULL,
                                        args jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    c_max_tasks constant int := 1000;
    v_query tsquery;
    v_ids bigint[];
BEGIN
    filter := coalesce(filter, '{}');
    IF jsonb_typeof(filter) <> 'object' OR filter ? 'afterId' THEN
        RAISE EXCEPTION 'a batch filter must be an object of the queue filter''s fields, without "afterId"'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_query := iwd._search_query(query);
    EXECUTE format('SELECT ARRAY(SELECT t.id FROM iwd.task_document d JOIN %s t ON t.id = d.task_id '
                   'WHERE d.document @@ $1 AND %s ORDER BY t.id LIMIT %s)', iwd._source(filter),
                   iwd._task_where(filter, ARRAY['new', 'queued', 'assigned', 'held', 'errorHeld']), c_max_tasks + 1)
        INTO v_ids USING v_query;
    IF cardinality(v_ids) > c_max_tasks THEN
        RAISE EXCEPTION 'the search matches more than % open tasks', c_max_tasks
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A batch by search acts on at most %s tasks.', c_max_tasks),
                  HINT = 'Narrow the search or add filters; a batch by filter alone takes up to 10,000.';
    END IF;
    RETURN iwd.batch_action(action, v_ids, NULL, actor, args);
END $$;
