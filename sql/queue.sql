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
    -- a query of thousands of words nests its match too deep for the stack (54001)
    IF octet_length(query) > 1024 THEN
        RAISE EXCEPTION 'search query is longer than 1024 bytes' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It has %s bytes.', octet_length(query));
    END IF;
    v_query := websearch_to_tsquery('simple', coalesce(query, ''));
    IF numnode(v_query) = 0 THEN
        RAISE EXCEPTION 'search query must contain at least one word' USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
