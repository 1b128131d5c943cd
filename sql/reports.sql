-- iwd reports for the Workload Manager's dashboard (GET /iwd/v3/reports/...): the Data Mart's intraday
-- figures per interval and the open work per category, each with the contact-centre service level measured
-- against the category's own threshold (iwd.category.service_level_seconds, else the Data Mart's
-- iwd_dm.service_level_threshold). Read-only; the Data Mart is read through its report views.

-- Where a task's wait in the queue ended (its first reservation, or its end without one): the service
-- level's intervals read the facts by it.
CREATE INDEX task_fact_wait_end_idx ON iwd_dm.task_fact ((coalesce(first_assigned_at, finished_at)));

-- The service-level threshold of a category: its own, else the Data Mart's default.
CREATE FUNCTION iwd.service_level_threshold(category text) RETURNS interval
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT coalesce((SELECT make_interval(secs => c.service_level_seconds) FROM iwd.category c
                     WHERE c.name = service_level_threshold.category), iwd_dm.service_level_threshold())
$$;

-- The longest range of a report per level, so that a report has at most some 750 intervals.
CREATE FUNCTION iwd._report_range_max(level text) RETURNS interval
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE level WHEN '15min' THEN interval '7 days' WHEN 'hour' THEN interval '31 days'
                      WHEN 'day' THEN interval '731 days' END
$$;

-- The Data Mart's figures per interval of a level (15min, hour or day) in [from, to), for the tasks the
-- filter {department, process, queue} names (all without one): [{"intervalStart", "entered",
-- "completed", "finishedOverdue", "offered", "withinThreshold", "serviceLevelPct"}] in time order, the
-- intervals with any of them only. entered, completed and finishedOverdue come from
-- iwd_dm.intraday_backlog (as of the Data Mart's last run); the service level counts the tasks whose wait
-- in the queue ended in the interval ("offered") and those of them first reserved within their category's
-- threshold (iwd.service_level_threshold; the category's current setting). 22023 for a level, range or
-- filter it does not take.
CREATE FUNCTION iwd.report_intervals("from" timestamptz, "to" timestamptz, level text DEFAULT '15min',
                                     filter jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v_department text;
    v_process text;
    v_queue text;
BEGIN
    level := coalesce(level, '15min');
    filter := coalesce(filter, '{}');
    IF iwd._report_range_max(level) IS NULL THEN
        RAISE EXCEPTION 'unknown report level "%"', level USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'Levels: 15min, hour, day.';
    END IF;
    IF "from" IS NULL OR "to" IS NULL OR "to" <= "from" THEN
        RAISE EXCEPTION 'a report needs a range from < to' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It has from %s and to %s.', coalesce("from"::text, 'null'), coalesce("to"::text, 'null'));
    END IF;
    IF "to" - "from" > iwd._report_range_max(level) THEN
        RAISE EXCEPTION 'a report of level % spans at most % days', level,
                extract(day FROM iwd._report_range_max(level))
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The range from %s to %s is longer.', "from", "to"),
                  HINT = 'Ask for a coarser level or a shorter range.';
    END IF;
    PERFORM iwd._check_object(filter, 'filter', '{department,process,queue}');
    v_department := iwd._str(filter, 'department', 'filter');
    v_process := iwd._str(filter, 'process', 'filter');
    v_queue := iwd._str(filter, 'queue', 'filter');
    RETURN (
        WITH flows AS (
            SELECT iwd_dm.interval_start(level, b.interval_start) AS b, sum(b.entered) AS entered,
                   sum(b.completed) AS completed, sum(b.finished_overdue) AS finished_overdue
            FROM iwd_dm.intraday_backlog b
            WHERE b.interval_start >= iwd_dm.interval_start('15min', "from") AND b.interval_start < "to"
              AND (v_department IS NULL OR b.department = v_department)
              AND (v_process IS NULL OR b.process = v_process)
              AND (v_queue IS NULL OR b.queue = v_queue)
            GROUP BY 1),
        waits AS (
            SELECT iwd_dm.interval_start(level, coalesce(d.first_assigned_at, d.finished_at)) AS b,
                   count(*) AS offered,
                   count(*) FILTER (WHERE d.first_assigned_at - d.created_at
                                          <= iwd.service_level_threshold(d.category)) AS within
            FROM iwd_dm.task_detail d
            WHERE coalesce(d.first_assigned_at, d.finished_at) >= "from"
              AND coalesce(d.first_assigned_at, d.finished_at) < "to"
              AND (v_department IS NULL OR d.department = v_department)
              AND (v_process IS NULL OR d.process = v_process)
              AND (v_queue IS NULL OR d.queue = v_queue)
            GROUP BY 1)
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'intervalStart', iwd._ts(coalesce(f.b, w.b)), 'entered', coalesce(f.entered, 0),
                   'completed', coalesce(f.completed, 0), 'finishedOverdue', coalesce(f.finished_overdue, 0),
                   'offered', coalesce(w.offered, 0), 'withinThreshold', coalesce(w.within, 0),
                   'serviceLevelPct', round(100.0 * w.within / nullif(w.offered, 0), 2))
                   ORDER BY coalesce(f.b, w.b)), '[]')
        FROM flows f FULL JOIN waits w ON w.b = f.b);
END $$;

-- The open work per category now, with today's service level (the day in the Data Mart's time zone):
-- [{"category", "queued", "assigned", "held", "overdue", "oldestQueuedSeconds", "serviceLevelSeconds",
-- "offered", "withinThreshold", "serviceLevelPct"}] by category (null last: tasks without one); a category
-- is listed when it is configured or has open tasks. serviceLevelSeconds is the threshold applied.
CREATE FUNCTION iwd.category_stats() RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    WITH open_work AS (
        SELECT t.category, count(*) FILTER (WHERE t.status = 'queued') AS queued,
               count(*) FILTER (WHERE t.status = 'assigned') AS assigned,
               count(*) FILTER (WHERE t.status IN ('held', 'errorHeld')) AS held,
               count(*) FILTER (WHERE t.due_at < iwd.now()) AS overdue,
               coalesce(extract(epoch FROM iwd.now() - min(t.created_at) FILTER (WHERE t.status = 'queued')),
                        0)::float8 AS oldest
        FROM iwd.task t GROUP BY t.category),
    today AS (
        SELECT d.category, count(*) AS offered,
               count(*) FILTER (WHERE d.first_assigned_at - d.created_at
                                      <= iwd.service_level_threshold(d.category)) AS within
        FROM iwd_dm.task_detail d
        WHERE coalesce(d.first_assigned_at, d.finished_at) >= iwd_dm.interval_start('day', iwd.now())
        GROUP BY d.category),
    categories AS (
        SELECT c.name AS category FROM iwd.category c
        UNION SELECT o.category FROM open_work o)
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'category', k.category, 'queued', coalesce(o.queued, 0), 'assigned', coalesce(o.assigned, 0),
               'held', coalesce(o.held, 0), 'overdue', coalesce(o.overdue, 0),
               'oldestQueuedSeconds', coalesce(o.oldest, 0),
               'serviceLevelSeconds', extract(epoch FROM iwd.service_level_threshold(k.category))::float8,
               'offered', coalesce(s.offered, 0), 'withinThreshold', coalesce(s.within, 0),
               'serviceLevelPct', round(100.0 * s.within / nullif(s.offered, 0), 2))
               ORDER BY k.category NULLS LAST), '[]')
    FROM categories k
    LEFT JOIN open_work o ON o.category IS NOT DISTINCT FROM k.category
    LEFT JOIN today s ON s.category IS NOT DISTINCT FROM k.category
$$;
