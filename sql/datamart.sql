-- iwd Data Mart: facts, dimensions and aggregates built from the event history, inside the tenant
-- database. Every step is idempotent and crash-safe: events are loaded in batches (one transaction
-- each when the worker runs them), facts are recomputed from the full history of the tasks a batch
-- touches, and the intervals a batch touches are marked dirty and re-aggregated from the facts, so a
-- run interrupted anywhere leaves nothing wrong and the next run converges to what a clean run gives.

CREATE SCHEMA iwd_dm;

-- ---------------------------------------------------------------------------------------------
-- Job state and loading position
-- ---------------------------------------------------------------------------------------------

CREATE TABLE iwd_dm.job_status (
    execution_chain text PRIMARY KEY CHECK (execution_chain IN ('initialize', 'intraday', 'historical', 'full')),
    last_start      timestamptz,
    last_success    timestamptz,
    last_fail       timestamptz,
    last_error      text,
    last_summary    jsonb
);
INSERT INTO iwd_dm.job_status (execution_chain) VALUES ('initialize'), ('intraday'), ('historical'), ('full');

-- Events are loaded in id order. Ids commit out of order, so an id below the highest loaded one may
-- still appear: every gap in the loaded ids is remembered and re-read until it fills or is older than
-- any transaction could be (then its ids belonged to transactions that rolled back).
CREATE TABLE iwd_dm.watermark (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_event_id bigint NOT NULL DEFAULT 0,
    -- the latest time of the events loaded (read only while last_event_id > 0)
    last_event_at timestamptz
);
INSERT INTO iwd_dm.watermark DEFAULT VALUES;

CREATE TABLE iwd_dm.event_gap (
    from_id bigint NOT NULL,
    to_id   bigint NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (from_id)
);

-- Intervals whose aggregates must be recomputed, per level.
CREATE TABLE iwd_dm.dirty (
    level          text NOT NULL CHECK (level IN ('15min', 'hour', 'day', 'week', 'month')),
    interval_start timestamptz NOT NULL,
    PRIMARY KEY (level, interval_start)
);

-- ---------------------------------------------------------------------------------------------
-- Dimensions
-- ---------------------------------------------------------------------------------------------

CREATE TABLE iwd_dm.dim_date (
    date        date PRIMARY KEY,
    year        int NOT NULL,
    quarter     int NOT NULL,
    month       int NOT NULL,
    iso_week    int NOT NULL,
    day_of_week int NOT NULL,
    week_start  date NOT NULL,
    month_start date NOT NULL
);

CREATE TABLE iwd_dm.dim_interval (
    interval_start time PRIMARY KEY,
    hour           int NOT NULL,
    quarter_hour   int NOT NULL
);

DO $$
DECLARE
    d text;
BEGIN
    FOREACH d IN ARRAY ARRAY['department', 'process', 'category', 'queue', 'media_type', 'customer_segment',
                             'agent', 'status', 'capture_point'] LOOP
        EXECUTE format('CREATE TABLE iwd_dm.dim_%s (id serial PRIMARY KEY, name text NOT NULL UNIQUE)', d);
    END LOOP;
END $$;

CREATE TABLE iwd_dm.dim_priority_range (
    id    int PRIMARY KEY,
    name  text NOT NULL UNIQUE,
    low   int,
    high  int
);
INSERT INTO iwd_dm.dim_priority_range VALUES
    (1, '< 0', NULL, -1), (2, '0-24', 0, 24), (3, '25-49', 25, 49), (4, '50-74', 50, 74), (5, '75-99', 75, 99),
    (6, '>= 100', 100, NULL);

CREATE TABLE iwd_dm.dim_business_value_range (
    id    int PRIMARY KEY,
    name  text NOT NULL UNIQUE,
    low   int,
    high  int
);
INSERT INTO iwd_dm.dim_business_value_range VALUES
    (1, '< 100', NULL, 99), (2, '100-499', 100, 499), (3, '500-999', 500, 999), (4, '1000-4999', 1000, 4999),
    (5, '>= 5000', 5000, NULL);

-- ---------------------------------------------------------------------------------------------
-- Facts
-- ---------------------------------------------------------------------------------------------

-- One row per event: the history itself, read in place (iwd.task_event is append-only, so a copy would
-- only repeat it; the history's (task_id, id) index serves the facts' lookups by task).
CREATE VIEW iwd_dm.task_event_fact AS
    SELECT id AS event_id, task_id, at, event, actor, status_before, status_after, detail FROM iwd.task_event;

-- One row per task: its lifecycle timestamps and durations (seconds).
CREATE TABLE iwd_dm.task_fact (
    task_id             bigint PRIMARY KEY,
    external_id         text,
    capture_point       text,
    department          text,
    process             text,
    category            text,
    queue               text,
    media_type          text,
    customer_segment    text,
    priority            int,
    business_value      int,
    priority_range      text,
    business_value_range text,
    status              text,
    agent               text,
    created_at          timestamptz,
    first_assigned_at   timestamptz,
    accepted_at         timestamptz,
    finished_at         timestamptz,
    due_at              timestamptz,
    time_to_first_assignment_s double precision,
    queue_s             double precision,
    handle_s            double precision,
    age_s               double precision,
    overdue             boolean,
    completed_in_sla    boolean
);
CREATE INDEX ON iwd_dm.task_fact (created_at);
CREATE INDEX ON iwd_dm.task_fact (finished_at);
-- when a task with a due time starts to count as pending overdue (aggregation reads a range of it)
CREATE INDEX task_fact_overdue_from_idx ON iwd_dm.task_fact ((greatest(created_at, due_at))) WHERE due_at IS NOT NULL;
-- until when a reserved task may have reservations (the aggregation of a short range finds them from it)
CREATE INDEX task_fact_reserved_until_idx ON iwd_dm.task_fact ((coalesce(finished_at, 'infinity')))
    WHERE first_assigned_at IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- Aggregates: one table per level, one row per interval and grouping
-- ---------------------------------------------------------------------------------------------

DO $$
DECLARE
    lvl text;
BEGIN
    FOREACH lvl IN ARRAY ARRAY['15min', 'hour', 'day', 'week', 'month'] LOOP
        EXECUTE format($t$
            CREATE TABLE iwd_dm.agg_%s (
                interval_start           timestamptz NOT NULL,
                department               text,
                process                  text,
                category                 text,
                queue                    text,
                media_type               text,
                customer_segment         text,
                created                  bigint NOT NULL DEFAULT 0,
                assigned                 bigint NOT NULL DEFAULT 0,
                completed                bigint NOT NULL DEFAULT 0,
                canceled                 bigint NOT NULL DEFAULT 0,
                rejected                 bigint NOT NULL DEFAULT 0,
                expired                  bigint NOT NULL DEFAULT 0,
                overdue                  bigint NOT NULL DEFAULT 0,
                completed_in_sla         bigint NOT NULL DEFAULT 0,
                backlog_end              bigint NOT NULL DEFAULT 0,
                pending_overdue          bigint NOT NULL DEFAULT 0,
                avg_age_s                double precision,
                max_age_s                double precision,
                avg_queue_s              double precision,
                avg_handle_s             double precision,
                business_value_completed bigint NOT NULL DEFAULT 0,
                sl_offered               bigint NOT NULL DEFAULT 0,
                sl_within                bigint NOT NULL DEFAULT 0,
                UNIQUE NULLS NOT DISTINCT (interval_start, department, process, category, queue, media_type,
                                           customer_segment)
            )$t$, lvl);
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Time
-- ---------------------------------------------------------------------------------------------

-- Durations are summed as exact integer microseconds (a duration in seconds comes from two timestamps,
-- so it is a whole number of them) and divided once, in numeric: an average is then the same to the last
-- bit whatever the order in which rows were summed (a batched run and a single run group them
-- differently; floating-point sums depend on that order).
CREATE FUNCTION iwd_dm._us(seconds double precision) RETURNS bigint
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT pg_catalog.round(seconds OPERATOR(pg_catalog.*) 1000000)::bigint
$$;

-- The mean in seconds of n durations summing to sum_us microseconds; NULL when n is 0 or NULL.
CREATE FUNCTION iwd_dm._avg_s(sum_us numeric, n numeric) RETURNS double precision
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT (sum_us OPERATOR(pg_catalog./) CASE WHEN n OPERATOR(pg_catalog.<>) 0 THEN n END
            OPERATOR(pg_catalog./) 1000000)::double precision
$$;

-- Hold the chain's lock until the end of the transaction (one of iwd's own locks: see iwd.h).
CREATE FUNCTION iwd_dm._lock_chain(chain text) RETURNS void
    AS 'MODULE_PATHNAME', 'iwd_dm_lock_chain' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE EXECUTE ON FUNCTION iwd_dm._lock_chain(text) FROM PUBLIC;

-- The reporting time zone (iwd_dm.time_zone, default UTC). Called per row (report views): left
-- unpinned and inlined, every name qualified (see sql/security.sql).
CREATE FUNCTION iwd_dm.time_zone() RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_catalog.current_setting('iwd_dm.time_zone', true) OPERATOR(pg_catalog.<>) ''
                THEN pg_catalog.current_setting('iwd_dm.time_zone', true) ELSE 'UTC' END
$$;

-- The start of the interval of a level that contains t, aligned in the reporting time zone
-- (weeks start on Monday). Called per row (report views): left unpinned, every name qualified (see
-- sql/security.sql); a quarter hour is the hour's start binned by 15 minutes.
CREATE FUNCTION iwd_dm.interval_start(level text, t timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
DECLARE
    tz pg_catalog.text := iwd_dm.time_zone();
    local timestamp := t AT TIME ZONE tz;
BEGIN
    RETURN CASE
        WHEN level OPERATOR(pg_catalog.=) '15min'
            THEN pg_catalog.date_bin('15 minutes', local, pg_catalog.date_trunc('hour', local))
        WHEN level OPERATOR(pg_catalog.=) ANY ('{hour,day,week,month}') THEN pg_catalog.date_trunc(level, local)
    END AT TIME ZONE tz;
END $$;

-- The end (exclusive) of the interval of a level that starts at s.
CREATE FUNCTION iwd_dm.interval_end(level text, s timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT ((s AT TIME ZONE iwd_dm.time_zone()) + CASE level WHEN '15min' THEN interval '15 minutes'
        WHEN 'hour' THEN interval '1 hour' WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '1 week'
        WHEN 'month' THEN interval '1 month' END) AT TIME ZONE iwd_dm.time_zone()
$$;

-- ---------------------------------------------------------------------------------------------
-- Loading
-- ---------------------------------------------------------------------------------------------

-- A load into an empty fact table (a Data Mart built from scratch by iwd_dm.run) maintains its primary
-- key, whose keys arrive in order, but not its other indexes: they are dropped before the load and
-- built after it, in one sort each, which costs a third of maintaining them row by row. Only the
-- table's owner may (the scheduled chain, which runs as iwd_worker, loads row by row). The indexes
-- are gone only inside the loading transaction: a failure restores them with everything else.
CREATE FUNCTION iwd_dm._bulk_load(t regclass) RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid = t
$$;

-- Drop the indexes of table t that are neither unique nor its primary key; returns the statements that
-- build them again, with their names and definitions.
CREATE FUNCTION iwd_dm._drop_indexes(t regclass) RETURNS text[]
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE AS $$
DECLARE
    defs text[] := '{}';
    i record;
BEGIN
    FOR i IN SELECT x.indexrelid, pg_catalog.pg_get_indexdef(x.indexrelid) AS def
             FROM pg_catalog.pg_index x WHERE x.indrelid = t AND NOT x.indisunique ORDER BY x.indexrelid LOOP
        defs := defs || i.def;
        EXECUTE format('DROP INDEX %s', i.indexrelid::regclass);
    END LOOP;
    RETURN defs;
END $$;
REVOKE EXECUTE ON FUNCTION iwd_dm._drop_indexes(regclass) FROM PUBLIC;

-- Recompute the facts of these tasks (ids may repeat) from their whole history and current row. A
-- batch's few thousand tasks are looked up by index; the planner is given the ids themselves only for
-- a larger load (then it scans once with the ids hashed), as estimating each id costs more than the
-- lookups of a small batch. Into an empty table (a load from scratch), rows are inserted without the
-- conflict check, and by its owner with the other indexes built after (iwd_dm._bulk_load).
CREATE FUNCTION iwd_dm._refresh_task_facts(ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    large_batch constant int := 20000;  -- ids (events), above which the planner sees them
    empty constant boolean := NOT EXISTS (SELECT 1 FROM iwd_dm.task_fact);
    indexes text[];
    index_def text;
BEGIN
    IF empty AND iwd_dm._bulk_load('iwd_dm.task_fact') THEN
        indexes := iwd_dm._drop_indexes('iwd_dm.task_fact');
    END IF;
    EXECUTE format($q$
    WITH history AS (
        SELECT x.task_id,
               min(x.at) FILTER (WHERE x.event = 'reserved') AS first_assigned_at,
               max(x.at) FILTER (WHERE x.event = 'reserved') AS last_assigned_at,
               max(x.at) FILTER (WHERE x.event = 'accepted') AS accepted_at
        FROM iwd_dm.task_event_fact x
        WHERE x.task_id = ANY (%1$s) AND x.event IN ('reserved', 'accepted')
        GROUP BY x.task_id)
    INSERT INTO iwd_dm.task_fact AS f
    SELECT t.id, t.external_id, t.capture_point, t.department, t.process, t.category, t.queue, t.media_type,
           t.customer_segment, t.priority, t.business_value,
           (SELECT r.name FROM iwd_dm.dim_priority_range r
             WHERE t.priority >= coalesce(r.low, t.priority) AND t.priority <= coalesce(r.high, t.priority)),
           (SELECT r.name FROM iwd_dm.dim_business_value_range r
             WHERE t.business_value >= coalesce(r.low, t.business_value)
               AND t.business_value <= coalesce(r.high, t.business_value)),
           t.status, t.assigned_to, t.created_at, e.first_assigned_at, e.accepted_at,
           CASE WHEN iwd.is_terminal(t.status) THEN t.completed_at END, t.due_at,
           extract(epoch FROM e.first_assigned_at - t.created_at),
           extract(epoch FROM coalesce(e.first_assigned_at, CASE WHEN iwd.is_terminal(t.status) THEN t.completed_at END)
                              - t.created_at),
           CASE WHEN t.status = 'completed' THEN extract(epoch FROM t.completed_at
                                                          - coalesce(e.accepted_at, e.last_assigned_at)) END,
           CASE WHEN iwd.is_terminal(t.status) THEN extract(epoch FROM t.completed_at - t.created_at) END,
           t.status = 'completed' AND t.due_at IS NOT NULL AND t.completed_at > t.due_at,
           t.status = 'completed' AND (t.due_at IS NULL OR t.completed_at <= t.due_at)
    FROM iwd.task_all t
    LEFT JOIN history e ON e.task_id = t.id
    WHERE t.id = ANY (%1$s)
    ORDER BY t.id
    %2$s
    $q$, CASE WHEN cardinality(ids) > large_batch THEN '$1' ELSE '(SELECT $1)::bigint[]' END,
    CASE WHEN NOT empty THEN $c$
    ON CONFLICT (task_id) DO UPDATE SET
        external_id = EXCLUDED.external_id, capture_point = EXCLUDED.capture_point,
        department = EXCLUDED.department, process = EXCLUDED.process, category = EXCLUDED.category,
        queue = EXCLUDED.queue, media_type = EXCLUDED.media_type, customer_segment = EXCLUDED.customer_segment,
        priority = EXCLUDED.priority, business_value = EXCLUDED.business_value,
        priority_range = EXCLUDED.priority_range, business_value_range = EXCLUDED.business_value_range,
        status = EXCLUDED.status, agent = EXCLUDED.agent, created_at = EXCLUDED.created_at,
        first_assigned_at = EXCLUDED.first_assigned_at, accepted_at = EXCLUDED.accepted_at,
        finished_at = EXCLUDED.finished_at, due_at = EXCLUDED.due_at,
        time_to_first_assignment_s = EXCLUDED.time_to_first_assignment_s, queue_s = EXCLUDED.queue_s,
        handle_s = EXCLUDED.handle_s, age_s = EXCLUDED.age_s, overdue = EXCLUDED.overdue,
        completed_in_sla = EXCLUDED.completed_in_sla
    $c$ END)
    USING ids;
    FOREACH index_def IN ARRAY coalesce(indexes, '{}') LOOP
        EXECUTE index_def;
    END LOOP;
END $$;

-- Mark dirty every interval of every level between two times.
CREATE FUNCTION iwd_dm._mark_dirty(first_at timestamptz, last_at timestamptz) RETURNS void
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    INSERT INTO iwd_dm.dirty (level, interval_start)
    SELECT DISTINCT l.level, iwd_dm.interval_start(l.level, g)
    FROM (VALUES ('15min', interval '15 minutes'), ('hour', interval '1 hour'), ('day', interval '1 day'),
                 ('week', interval '1 week'), ('month', interval '1 month')) l(level, step)
    CROSS JOIN LATERAL generate_series(iwd_dm.interval_start(l.level, first_at), last_at, l.step) g
    WHERE first_at IS NOT NULL AND last_at IS NOT NULL
    ON CONFLICT DO NOTHING
$$;

-- Load one batch of events (those of the gaps that have committed since, then the next ones after the
-- watermark): facts of the touched tasks, dirty intervals of every level from each touched task's
-- creation to now. The events are read in place, in one statement (one snapshot) that also finds the
-- ids it did not see: the gaps are recomputed from the very ids read. Returns the events loaded.
CREATE FUNCTION iwd_dm._load_batch(batch int) RETURNS int
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET jit = off AS $$
DECLARE
    mark bigint;
    prev_last_at timestamptz;
    loaded int;
    loaded_after_mark bigint;
    first_new bigint;
    new_max bigint;
    gap_ids bigint[];
    hole_from bigint[];
    hole_to bigint[];
    touched bigint[];
    first_at timestamptz;
    last_at timestamptz;
BEGIN
    -- one loader at a time; concurrent runs wait here rather than interleave (a row lock: only roles
    -- that may update the watermark can take it, so no other login can stall the loader)
    SELECT w.last_event_id, CASE WHEN w.last_event_id > 0 THEN w.last_event_at END INTO mark, prev_last_at
    FROM iwd_dm.watermark w FOR UPDATE;
    -- gaps older than any transaction can be are closed: their ids were rolled back
    DELETE FROM iwd_dm.event_gap WHERE seen_at < clock_timestamp() - interval '15 minutes';
    -- the events: those now in the gaps, and the next batch after the mark with the holes between them
    SELECT count(*), count(*) FILTER (WHERE NOT e.gap), min(e.id) FILTER (WHERE NOT e.gap), max(e.id),
           array_agg(e.id) FILTER (WHERE e.gap), array_agg(e.id + 1) FILTER (WHERE e.next_id > e.id + 1),
           array_agg(e.next_id - 1) FILTER (WHERE e.next_id > e.id + 1), array_agg(e.task_id), min(e.at), max(e.at)
    INTO loaded, loaded_after_mark, first_new, new_max, gap_ids, hole_from, hole_to, touched, first_at, last_at
    FROM (SELECT x.id, x.task_id, x.at, true AS gap, NULL::bigint AS next_id
          FROM iwd_dm.event_gap g JOIN iwd.task_event x ON x.id BETWEEN g.from_id AND g.to_id
          UNION ALL
          SELECT n.id, n.task_id, n.at, false, lead(n.id) OVER (ORDER BY n.id)
          FROM (SELECT x.id, x.task_id, x.at FROM iwd.task_event x WHERE x.id > mark ORDER BY x.id LIMIT batch) n) e;
    IF loaded = 0 THEN
        RETURN 0;
    END IF;
    -- each gap read into is split around the ids read in it (the rest stays a gap, as old as it was)
    IF gap_ids IS NOT NULL THEN
        WITH old AS (DELETE FROM iwd_dm.event_gap RETURNING from_id, to_id, seen_at),
        bounds AS (
            SELECT o.seen_at, b.id, lead(b.id) OVER (PARTITION BY o.from_id ORDER BY b.id) AS next_id
            FROM old o
            CROSS JOIN LATERAL (SELECT o.from_id - 1 AS id UNION ALL SELECT o.to_id + 1
                                UNION ALL SELECT i FROM unnest(gap_ids) i WHERE i BETWEEN o.from_id AND o.to_id) b)
        INSERT INTO iwd_dm.event_gap (from_id, to_id, seen_at)
        SELECT id + 1, next_id - 1, seen_at FROM bounds WHERE next_id > id + 1;
    END IF;
    IF new_max > mark THEN
        -- the ids above the mark that were not there: before the first read, and between two read
        INSERT INTO iwd_dm.event_gap (from_id, to_id)
        SELECT mark + 1, first_new - 1 WHERE first_new > mark + 1
        UNION ALL
        SELECT * FROM unnest(hole_from, hole_to)
        ON CONFLICT DO NOTHING;
        UPDATE iwd_dm.watermark SET last_event_id = new_max, last_event_at = greatest(prev_last_at, last_at);
    END IF;
    PERFORM iwd_dm._refresh_task_facts(touched);
    -- an event changes its task from the event's time on, so every interval from there to the latest
    -- event is dirty; so is every interval the latest event time moved over (their backlogs are new)
    PERFORM iwd_dm._mark_dirty(least(first_at, prev_last_at), greatest(last_at, prev_last_at));
    RETURN loaded;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Aggregation
-- ---------------------------------------------------------------------------------------------

-- The one statement that recomputes a set of intervals (iwd_dm._aggregate_intervals, which explains
-- it) is assembled from the pieces below, each a function returning SQL text. A level is known by its
-- number lvl, its position in ARRAY['15min', 'hour', 'day', 'week', 'month']; bit lvl - 1 of a mask stands
-- for it. Values enter the text as literals (%L), so that the statement reads as it runs and the planner
-- sees every bound; timestamps are written while DateStyle is ISO (set by the caller), a form that reads
-- back exactly whatever the time zone. grouping_cols is the column list department … customer_segment.

-- "t is in [lo, hi)" for a time expression t.
CREATE FUNCTION iwd_dm._in_range_sql(t text, lo timestamptz, hi timestamptz) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT format('(%1$s) >= %2$L::timestamptz AND (%1$s) < %3$L::timestamptz', t, lo, hi)
$$;

-- The select list "q, mask" of time expression t: its local quarter hour in time zone tz (a timestamp
-- without time zone, so that every level's interval is a date_trunc of it), and the picked levels lvls
-- whose range [los[i], his[i]) holds t, as bit lvl - 1.
-- The contact-centre service level's threshold (iwd_dm.service_level_threshold): a task counts as answered
-- within it when its first reservation came at most this long after its creation.
CREATE FUNCTION iwd_dm.service_level_threshold() RETURNS interval
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT coalesce(nullif(current_setting('iwd_dm.service_level_threshold', true), ''), '20 s')::interval
$$;

CREATE FUNCTION iwd_dm._quarter_sql(t text, tz text, lvls int[], los timestamptz[], his timestamptz[])
RETURNS text LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT format('date_bin(''15 minutes'', (%s) AT TIME ZONE %L, timestamp ''2000-01-03'') AS q, ', t, tz)
           || string_agg(format('CASE WHEN %s THEN %s ELSE 0 END', iwd_dm._in_range_sql(t, r.lo, r.hi),
                                1 << (r.lvl - 1)), ' | ' ORDER BY r.lvl)
           || ' AS mask'
    FROM unnest(lvls, los, his) r(lvl, lo, hi)
$$;

-- CTE "fine": the flows of every fact in the picked ranges, hashed by grouping, local quarter hour and
-- mask. A task adds +1 created and +1 backlog when created; its outcome, durations and value and -1
-- backlog when finished (and -1 pending overdue if it was); +1 pending overdue when it falls overdue
-- open; +1 assigned per reservation.
CREATE FUNCTION iwd_dm._fine_sql(grouping_cols text, tz text, lvls int[], los timestamptz[], his timestamptz[])
RETURNS text LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    -- every fact counted has its time in [lo, hi), the union of the picked ranges
    lo constant timestamptz := (SELECT min(x) FROM unnest(los) x);
    hi constant timestamptz := (SELECT max(x) FROM unnest(his) x);
BEGIN
    RETURN format($q$
        fine AS MATERIALIZED (
            SELECT %1$s, q, mask,
                   sum(created) AS created, sum(assigned) AS assigned, sum(completed) AS completed,
                   sum(canceled) AS canceled, sum(rejected) AS rejected, sum(expired) AS expired,
                   sum(overdue) AS overdue, sum(in_sla) AS in_sla, sum(backlog_delta) AS backlog_delta,
                   sum(po_delta) AS po_delta, sum(iwd_dm._us(age_s)) AS sum_age_us, count(age_s) AS n_age_s,
                   max(age_s) AS max_age_s, sum(iwd_dm._us(queue_s)) AS sum_queue_us, count(queue_s) AS n_queue_s,
                   sum(iwd_dm._us(handle_s)) AS sum_handle_us, count(handle_s) AS n_handle_s, sum(value) AS value,
                   sum(sl_offered) AS sl_offered, sum(sl_within) AS sl_within
            FROM (
                SELECT %1$s, %2$s, 1 AS created, 0 AS assigned, 0 AS completed, 0 AS canceled, 0 AS rejected,
                       0 AS expired, 0 AS overdue, 0 AS in_sla, 1 AS backlog_delta, 0 AS po_delta,
                       NULL::float8 AS age_s, NULL::float8 AS queue_s, NULL::float8 AS handle_s, 0 AS value,
                       0 AS sl_offered, 0 AS sl_within
                FROM iwd_dm.task_fact WHERE %3$s
                UNION ALL
                SELECT %1$s, %4$s, 0, 0, (status = 'completed')::int, (status = 'canceled')::int,
                       (status = 'rejected')::int, (status = 'expired')::int, overdue::int, completed_in_sla::int, -1,
                       -(due_at IS NOT NULL AND finished_at >= greatest(created_at, due_at))::int,
                       CASE WHEN status = 'completed' THEN age_s END, CASE WHEN status = 'completed' THEN queue_s END,
                       CASE WHEN status = 'completed' THEN handle_s END,
                       CASE WHEN status = 'completed' THEN business_value ELSE 0 END,
                       (first_assigned_at IS NULL)::int, 0
                FROM iwd_dm.task_fact WHERE %5$s
                UNION ALL
                SELECT %1$s, %6$s, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, NULL, NULL, NULL, 0, 0, 0
                FROM iwd_dm.task_fact
                WHERE due_at IS NOT NULL AND %7$s
                  AND (finished_at IS NULL OR finished_at >= greatest(created_at, due_at))
                UNION ALL
                -- each reservation with its task (the history read in place): over a range of a week or less,
                -- from the facts of the tasks reserved by its end and not finished before its start (a task
                -- is reserved before it finishes), each task's history by its key (OFFSET 0 and the lateral
                -- lookup keep the planner, which overestimates those tasks, from hashing the whole history
                -- for the few reservations of an intraday run); over a longer range, hashed
                SELECT f.department, f.process, f.category, f.queue, f.media_type, f.customer_segment, %8$s,
                       0, 1, 0, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL, 0, (x.at = f.first_assigned_at)::int,
                       (x.at = f.first_assigned_at
                        AND f.time_to_first_assignment_s <= coalesce(th.service_level_seconds, %10$s))::int
                FROM %11$s
                -- the category's own threshold, where it has one (iwd.category.service_level_seconds)
                LEFT JOIN (SELECT name, service_level_seconds FROM iwd.category
                           WHERE service_level_seconds IS NOT NULL) th ON th.name = f.category
                WHERE x.event = 'reserved' AND %9$s) r
            WHERE mask <> 0
            GROUP BY %1$s, q, mask)$q$,
        grouping_cols,
        iwd_dm._quarter_sql('created_at', tz, lvls, los, his), iwd_dm._in_range_sql('created_at', lo, hi),
        iwd_dm._quarter_sql('finished_at', tz, lvls, los, his), iwd_dm._in_range_sql('finished_at', lo, hi),
        iwd_dm._quarter_sql('greatest(created_at, due_at)', tz, lvls, los, his),
        iwd_dm._in_range_sql('greatest(created_at, due_at)', lo, hi),
        iwd_dm._quarter_sql('x.at', tz, lvls, los, his), iwd_dm._in_range_sql('x.at', lo, hi),
        extract(epoch FROM iwd_dm.service_level_threshold()),
        CASE WHEN hi - lo <= interval '7 days' THEN format($f$(SELECT task_id, department, process, category, queue,
                                         media_type, customer_segment, first_assigned_at, time_to_first_assignment_s
                      FROM iwd_dm.task_fact
                      WHERE first_assigned_at IS NOT NULL AND first_assigned_at < %2$L::timestamptz
                        AND coalesce(finished_at, 'infinity') >= %1$L::timestamptz
                      OFFSET 0) f
                CROSS JOIN LATERAL (SELECT x.at, x.event FROM iwd_dm.task_event_fact x
                                    WHERE x.task_id = f.task_id AND x.event = 'reserved' OFFSET 0) x$f$, lo, hi)
             ELSE 'iwd_dm.task_event_fact x JOIN iwd_dm.task_fact f ON f.task_id = x.task_id' END);
END $$;

-- One level's part of CTE "open_at_start": the tasks open at lo, the start of the level's first picked
-- interval, whose counts are the starting values of its stocks (po: pending overdue at lo).
CREATE FUNCTION iwd_dm._open_at_sql(grouping_cols text, lvl int, lo timestamptz) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT format($q$
                SELECT %1$s AS lvl, %2$L::timestamptz AS b, %3$s,
                       (due_at IS NOT NULL AND greatest(created_at, due_at) < %2$L::timestamptz)::int AS po
                FROM iwd_dm.task_fact
                WHERE created_at < %2$L::timestamptz AND (finished_at IS NULL OR finished_at >= %2$L::timestamptz)$q$,
                  lvl, lo, grouping_cols)
$$;

-- CTEs "rolled_<lvl>" and "flows": the quarter hours of "fine", numbered by grouping (rolled_1), rolled
-- up level by level: an hour sums its quarter hours, a day its hours, a week and a month their days
-- (rolled_2 … rolled_5, each only when a picked level needs it), so that every fact row is counted
-- once, in the finest level, and each coarser level sums the few rows of the level below. A row keeps
-- the bits of the picked levels whose range holds it (its mask), reduced at each step to the levels
-- still to come. Then per level, grouping number and interval start b, the sums of the rows of the
-- level's own step whose mask has its bit ("flows"), and the open tasks at the level's first interval
-- (they add to the stocks only). A level's interval is its date_trunc of the local quarter hour.
CREATE FUNCTION iwd_dm._flows_sql(grouping_cols text, tz text, lvls int[]) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    WITH step(lvl, level, parent, later) AS (
        -- each coarser level, the step it sums, and the bits of it and of the levels summed from it
        VALUES (2, 'hour', 1, 30), (3, 'day', 2, 28), (4, 'week', 3, 8), (5, 'month', 3, 16)),
    needed AS (
        SELECT s.* FROM step s
        WHERE EXISTS (SELECT 1 FROM unnest(lvls) l(lvl) WHERE (1 << (l.lvl - 1)) & s.later <> 0)),
    -- equality of the grouping columns with NULLs equal, as hash join keys
    same_grouping(cond) AS (
        SELECT string_agg(format('(f.%1$s IS NULL) = (n.%1$s IS NULL) AND coalesce(f.%1$s, '''') = '
                                 'coalesce(n.%1$s, '''')', c), ' AND ')
        FROM unnest(string_to_array(grouping_cols, ', ')) c)
    SELECT format($q$
        rolled_1 AS MATERIALIZED (
            SELECT n.gid, f.q, f.mask, f.created, f.assigned, f.completed, f.canceled, f.rejected, f.expired,
                   f.overdue, f.in_sla, f.backlog_delta, f.po_delta, f.sum_age_us, f.n_age_s, f.max_age_s,
                   f.sum_queue_us, f.n_queue_s, f.sum_handle_us, f.n_handle_s, f.value, f.sl_offered, f.sl_within
            FROM fine f JOIN groupings n ON %1$s)$q$, (SELECT cond FROM same_grouping))
    || coalesce((SELECT string_agg(format($q$,
        rolled_%1$s AS MATERIALIZED (
            SELECT gid, date_trunc(%2$L, q) AS q, mask & %4$s AS mask, sum(created)::bigint AS created,
                   sum(assigned)::bigint AS assigned, sum(completed)::bigint AS completed,
                   sum(canceled)::bigint AS canceled, sum(rejected)::bigint AS rejected,
                   sum(expired)::bigint AS expired, sum(overdue)::bigint AS overdue, sum(in_sla)::bigint AS in_sla,
                   sum(backlog_delta)::bigint AS backlog_delta, sum(po_delta)::bigint AS po_delta,
                   sum(sum_age_us) AS sum_age_us, sum(n_age_s)::bigint AS n_age_s, max(max_age_s) AS max_age_s,
                   sum(sum_queue_us) AS sum_queue_us, sum(n_queue_s)::bigint AS n_queue_s,
                   sum(sum_handle_us) AS sum_handle_us, sum(n_handle_s)::bigint AS n_handle_s,
                   sum(value)::bigint AS value, sum(sl_offered)::bigint AS sl_offered,
                   sum(sl_within)::bigint AS sl_within
            FROM rolled_%3$s WHERE mask & %4$s <> 0
            GROUP BY 1, 2, 3)$q$, n.lvl, n.level, n.parent, n.later), '' ORDER BY n.lvl) FROM needed n), '')
    || format($q$,
        flows AS MATERIALIZED (
            SELECT lvl, gid, b, sum(created)::bigint AS created, sum(assigned)::bigint AS assigned,
                   sum(completed)::bigint AS completed, sum(canceled)::bigint AS canceled,
                   sum(rejected)::bigint AS rejected, sum(expired)::bigint AS expired,
                   sum(overdue)::bigint AS overdue, sum(in_sla)::bigint AS in_sla,
                   sum(backlog_delta)::bigint AS backlog_delta, sum(po_delta)::bigint AS po_delta,
                   iwd_dm._avg_s(sum(sum_age_us), sum(n_age_s)) AS avg_age_s, max(max_age_s) AS max_age_s,
                   iwd_dm._avg_s(sum(sum_queue_us), sum(n_queue_s)) AS avg_queue_s,
                   iwd_dm._avg_s(sum(sum_handle_us), sum(n_handle_s)) AS avg_handle_s,
                   sum(value)::bigint AS value, sum(sl_offered)::bigint AS sl_offered,
                   sum(sl_within)::bigint AS sl_within
            FROM (%1$s
                  UNION ALL
                  SELECT f.lvl, n.gid, f.b, 0, 0, 0, 0, 0, 0, 0, 0, f.backlog_delta, f.po_delta, NULL, 0, NULL,
                         NULL, 0, NULL, 0, 0, 0, 0
                  FROM open_at_start f JOIN groupings n ON %2$s) x
            GROUP BY lvl, gid, b)$q$,
        (SELECT string_agg(format($q$SELECT %1$s AS lvl, gid, q AT TIME ZONE %2$L AS b, created, assigned,
                         completed, canceled, rejected, expired, overdue, in_sla, backlog_delta, po_delta,
                         sum_age_us, n_age_s, max_age_s, sum_queue_us, n_queue_s, sum_handle_us, n_handle_s,
                         value, sl_offered, sl_within
                  FROM rolled_%1$s WHERE mask & %3$s <> 0$q$, l.lvl, tz, 1 << (l.lvl - 1)),
                          E'\n                  UNION ALL\n                  ' ORDER BY l.lvl)
         FROM unnest(lvls) l(lvl)),
        (SELECT cond FROM same_grouping))
$$;

-- One level's CTE "ins_<level>": its rows of "result" into its aggregate, in the order of its unique index.
CREATE FUNCTION iwd_dm._insert_sql(lvl int, level text) RETURNS text
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT format($q$
        %1$I AS (
            INSERT INTO iwd_dm.%2$I
            SELECT b, department, process, category, queue, media_type, customer_segment, created, assigned,
                   completed, canceled, rejected, expired, overdue, in_sla, backlog_end, pending_overdue,
                   avg_age_s, max_age_s, avg_queue_s, avg_handle_s, value, sl_offered, sl_within
            FROM result WHERE lvl = %3$s
            ORDER BY b, department COLLATE "C", process COLLATE "C", category COLLATE "C", queue COLLATE "C",
                     media_type COLLATE "C", customer_segment COLLATE "C")$q$, 'ins_' || level, 'agg_' || level, lvl)
$$;

-- Recompute the aggregates of a set of intervals, of one or more levels, from the facts in one pass:
-- picked_levels[i] and picked_starts[i] name the i-th interval.
--
-- Flows (created, assigned, finished, durations, value) are grouped by interval. Stocks at an
-- interval's end are running sums: a task is in the backlog at end e when created < e <= finished,
-- and pending overdue when greatest(created, due) < e <= finished; so each task adds +1 at its start
-- and -1 at its finish, and the stock at e is the count open at the level's first interval's start
-- plus the running sum of the changes up to e.
--
-- One scan of the facts serves every level ("fine"): the fact rows are hashed into flows per grouping
-- (department … customer_segment), local quarter hour (every interval of every level is a union of
-- those) and the set of levels whose range holds the row; each level's flows are sums of those
-- ("flows"; averages are sums over counts). Only then are the groupings numbered ("groupings"), and the
-- running sums ("stocks") sort (level, number, interval): sorting the facts on six text columns in the
-- database collation, once per level, cost more than everything else together. The number is attached
-- with a hash join on (column IS NULL, coalesce(column, '')) pairs, which is equality with NULLs equal.
-- Rows are inserted in the order of each aggregate's unique index so that each index page is visited
-- once. (JIT compilation of this large statement costs more than it saves. The planner cannot estimate
-- the twelve-column join nor the number of flows: it would sort both sides for a merge join rather
-- than hash a few hundred groupings, and group the facts by sorting them on text rather than hash.)
CREATE FUNCTION iwd_dm._aggregate_intervals(picked_levels text[], picked_starts timestamptz[]) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET jit = off SET enable_mergejoin = off SET enable_sort = off SET DateStyle = 'ISO' AS $$
DECLARE
    tz constant text := iwd_dm.time_zone();
    grouping_cols constant text := 'department, process, category, queue, media_type, customer_segment';
    pick record;
    -- per picked level: its number and the range [lo, hi) of its picked intervals
    lvls int[] := '{}';
    los timestamptz[] := '{}';
    his timestamptz[] := '{}';
    -- every picked interval as (level number, start)
    picked_lvls int[] := '{}';
    picked_ss timestamptz[] := '{}';
    open_at_start text[] := '{}';
    inserts text[] := '{}';
BEGIN
    FOR pick IN
        SELECT l.lvl, l.level, array_agg(p.s) AS starts, min(p.s) AS lo, iwd_dm.interval_end(l.level, max(p.s)) AS hi
        FROM unnest(picked_levels, picked_starts) p(level, s)
        JOIN unnest(ARRAY['15min', 'hour', 'day', 'week', 'month']) WITH ORDINALITY l(level, lvl) USING (level)
        GROUP BY l.lvl, l.level ORDER BY l.lvl
    LOOP
        EXECUTE format('DELETE FROM iwd_dm.%I WHERE interval_start = ANY ($1)', 'agg_' || pick.level)
        USING pick.starts;
        lvls := lvls || pick.lvl::int;
        los := los || pick.lo;
        his := his || pick.hi;
        picked_lvls := picked_lvls || array_fill(pick.lvl::int, ARRAY[cardinality(pick.starts)]);
        picked_ss := picked_ss || pick.starts;
        open_at_start := open_at_start || iwd_dm._open_at_sql(grouping_cols, pick.lvl::int, pick.lo);
        inserts := inserts || iwd_dm._insert_sql(pick.lvl::int, pick.level);
    END LOOP;
    IF cardinality(lvls) = 0 THEN
        RETURN;
    END IF;
    EXECUTE 'WITH' || array_to_string(ARRAY[
        iwd_dm._fine_sql(grouping_cols, tz, lvls, los, his),
        format($q$
        open_at_start AS MATERIALIZED (
            SELECT lvl, b, %1$s, count(*) AS backlog_delta, sum(po) AS po_delta
            FROM (%2$s) o
            GROUP BY lvl, b, %1$s)$q$, grouping_cols, array_to_string(open_at_start, E'\n                UNION ALL')),
        format($q$
        groupings AS MATERIALIZED (
            SELECT row_number() OVER () AS gid, *
            FROM (SELECT %1$s FROM fine UNION SELECT %1$s FROM open_at_start) d)$q$, grouping_cols),
        format($q$
        picked AS (SELECT lvl, s FROM unnest(%L::int[], %L::timestamptz[]) p(lvl, s))$q$, picked_lvls, picked_ss),
        iwd_dm._flows_sql(grouping_cols, tz, lvls),
        format($q$
        running AS MATERIALIZED (
            -- the stocks at each interval with flows: running sums of the changes up to its end
            SELECT f.*, sum(f.backlog_delta) OVER w AS backlog_end, sum(f.po_delta) OVER w AS pending_overdue,
                   lead(f.b) OVER w AS next_b
            FROM flows f
            WINDOW w AS (PARTITION BY lvl, gid ORDER BY b)),
        stocks AS (
            SELECT lvl, gid, b, created, assigned, completed, canceled, rejected, expired, overdue, in_sla,
                   avg_age_s, max_age_s, avg_queue_s, avg_handle_s, value, sl_offered, sl_within, backlog_end,
                   pending_overdue
            FROM running
            UNION ALL
            -- the intervals between two with flows of a grouping (or after its last, up to the level's last
            -- picked one) while it has open tasks: no flows, the stocks carried over. They are stepped in
            -- local time, as the intervals are aligned; a local time that does not exist (the hour skipped
            -- in spring) names an instant of another interval, hence the distinct and the bounds.
            SELECT r.lvl, r.gid, g.b, 0, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, 0, 0, 0, r.backlog_end,
                   r.pending_overdue
            FROM running r
            JOIN (SELECT lvl, max(s) AS last FROM picked GROUP BY lvl) l USING (lvl)
            CROSS JOIN LATERAL (
                SELECT DISTINCT t AT TIME ZONE %1$L AS b
                FROM generate_series(r.b AT TIME ZONE %1$L, coalesce(r.next_b, l.last) AT TIME ZONE %1$L,
                                     CASE r.lvl WHEN 1 THEN interval '15 minutes' WHEN 2 THEN interval '1 hour'
                                                WHEN 3 THEN interval '1 day' WHEN 4 THEN interval '1 week'
                                                ELSE interval '1 month' END) t) g
            WHERE r.backlog_end > 0 AND g.b > r.b AND (g.b < r.next_b OR r.next_b IS NULL)
              -- (none between an interval and the grouping's next one with flows when that one follows it)
              AND (r.next_b IS NULL OR r.next_b AT TIME ZONE %1$L > (r.b AT TIME ZONE %1$L)
                   + CASE r.lvl WHEN 1 THEN interval '15 minutes' WHEN 2 THEN interval '1 hour'
                                WHEN 3 THEN interval '1 day' WHEN 4 THEN interval '1 week'
                                ELSE interval '1 month' END))$q$, tz),
        $q$
        result AS MATERIALIZED (
            -- the picked intervals with something to report
            SELECT s.lvl, s.b, n.department, n.process, n.category, n.queue, n.media_type, n.customer_segment,
                   s.created, s.assigned, s.completed, s.canceled, s.rejected, s.expired, s.overdue, s.in_sla,
                   s.backlog_end, s.pending_overdue, s.avg_age_s, s.max_age_s, s.avg_queue_s, s.avg_handle_s, s.value,
                   s.sl_offered, s.sl_within
            FROM stocks s JOIN groupings n USING (gid) JOIN picked p ON p.lvl = s.lvl AND p.s = s.b
            WHERE (s.created + s.assigned + s.completed + s.canceled + s.rejected + s.expired + s.backlog_end) > 0)$q$
        ] || inserts, ',') || E'\n        SELECT 1';
END $$;

-- Aggregate up to batch dirty intervals of each of the given levels, all in one pass; returns how many.
CREATE FUNCTION iwd_dm._aggregate_batch(levels text[], batch int) RETURNS int
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    picked_levels text[];
    picked_starts timestamptz[];
BEGIN
    SELECT array_agg(d.level), array_agg(d.interval_start) INTO picked_levels, picked_starts
    FROM unnest(levels) l(level)
    CROSS JOIN LATERAL (SELECT level, interval_start FROM iwd_dm.dirty
                        WHERE level = l.level ORDER BY interval_start LIMIT batch FOR UPDATE SKIP LOCKED) d;
    IF picked_levels IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM iwd_dm._aggregate_intervals(picked_levels, picked_starts);
    DELETE FROM iwd_dm.dirty d USING unnest(picked_levels, picked_starts) p(level, s)
    WHERE d.level = p.level AND d.interval_start = p.s;
    RETURN cardinality(picked_levels);
END $$;

-- Dimensions from the configuration and the facts; the calendar around the facts.
CREATE FUNCTION iwd_dm._initialize() RETURNS int
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    n int := 0;
BEGIN
    -- the facts' members of every dimension from one scan of the facts (their few distinct combinations)
    EXECUTE (SELECT format('WITH members AS MATERIALIZED (SELECT DISTINCT %s FROM iwd_dm.task_fact), ',
                           string_agg(d, ', '))
                    || string_agg(format('ins_%1$s AS (INSERT INTO iwd_dm.dim_%1$s (name) SELECT DISTINCT %1$s
                                          FROM members WHERE %1$s IS NOT NULL ON CONFLICT DO NOTHING RETURNING 1)',
                                         d), ', ')
                    || ' SELECT ' || string_agg(format('(SELECT count(*) FROM ins_%s)', d), ' + ')
             FROM unnest(ARRAY['department', 'process', 'category', 'queue', 'media_type', 'customer_segment',
                               'capture_point']) d)
    INTO n;
    INSERT INTO iwd_dm.dim_department (name) SELECT name FROM iwd.department ON CONFLICT DO NOTHING;
    INSERT INTO iwd_dm.dim_process (name) SELECT name FROM iwd.process ON CONFLICT DO NOTHING;
    INSERT INTO iwd_dm.dim_category (name) SELECT name FROM iwd.category ON CONFLICT DO NOTHING;
    INSERT INTO iwd_dm.dim_agent (name) SELECT id FROM iwd.agent ON CONFLICT DO NOTHING;
    INSERT INTO iwd_dm.dim_agent (name) SELECT DISTINCT agent FROM iwd_dm.task_fact WHERE agent IS NOT NULL
        ON CONFLICT DO NOTHING;
    INSERT INTO iwd_dm.dim_status (name)
    SELECT unnest(ARRAY['new', 'queued', 'assigned', 'held', 'errorHeld', 'completed', 'canceled', 'rejected',
                        'expired']) ON CONFLICT DO NOTHING;
    INSERT INTO iwd_dm.dim_interval
    SELECT t::time, extract(hour FROM t)::int, (extract(minute FROM t) / 15)::int
    FROM generate_series(timestamp '2000-01-01', timestamp '2000-01-01 23:45', interval '15 minutes') t
    ON CONFLICT DO NOTHING;
    INSERT INTO iwd_dm.dim_date
    SELECT d::date, extract(year FROM d)::int, extract(quarter FROM d)::int, extract(month FROM d)::int,
           extract(week FROM d)::int, extract(isodow FROM d)::int, date_trunc('week', d)::date,
           date_trunc('month', d)::date
    FROM generate_series(
        coalesce((SELECT min(created_at) FROM iwd_dm.task_fact), now())::date - 31,
        greatest(coalesce((SELECT max(created_at) FROM iwd_dm.task_fact), now()), now())::date + 366,
        interval '1 day') d
    ON CONFLICT DO NOTHING;
    RETURN n;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Execution chains
-- ---------------------------------------------------------------------------------------------

-- Refresh the planner's statistics of the facts after a load that changed them noticeably (a tenth of
-- the events or more; aggregation plans depend on them). A routine intraday load leaves them to
-- autovacuum: analyzing a million events costs more than the load itself. SECURITY DEFINER: only a
-- table's owner may analyze it, and the scheduled chain runs as iwd_worker (executable by it alone; its
-- search_path is pinned like every function's, sql/security.sql).
CREATE FUNCTION iwd_dm._analyze(events bigint) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER AS $$
BEGIN
    IF events >= 10000 AND events * 10 >= (SELECT reltuples FROM pg_class WHERE oid = 'iwd.task_event'::regclass) THEN
        ANALYZE iwd_dm.task_fact;
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION iwd_dm._analyze(bigint) FROM PUBLIC;

-- The steps of a chain: initialize, load events, aggregate levels.
CREATE FUNCTION iwd_dm._chain_levels(chain text) RETURNS text[]
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT CASE chain WHEN 'intraday' THEN ARRAY['15min'] WHEN 'historical' THEN ARRAY['hour', 'day', 'week', 'month']
                      WHEN 'full' THEN ARRAY['15min', 'hour', 'day', 'week', 'month'] ELSE ARRAY[]::text[] END
$$;

-- Record the start, success or failure of a chain (the worker calls it in its own transactions).
CREATE FUNCTION iwd_dm._job(chain text, what text, summary jsonb DEFAULT NULL, error text DEFAULT NULL)
RETURNS void LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    UPDATE iwd_dm.job_status SET
        last_start = CASE WHEN what = 'start' THEN clock_timestamp() ELSE last_start END,
        last_success = CASE WHEN what = 'success' THEN clock_timestamp() ELSE last_success END,
        last_fail = CASE WHEN what = 'fail' THEN clock_timestamp() ELSE last_fail END,
        last_error = CASE WHEN what = 'fail' THEN error WHEN what = 'success' THEN NULL ELSE last_error END,
        last_summary = coalesce(summary, last_summary)
    WHERE execution_chain = chain
$$;

-- Run an execution chain now (initialize, intraday, historical or full) and return a summary. A failure
-- is recorded in iwd_dm.job_status and returned ({"status": "failed", "error": ...}); its partial work
-- is undone. The chain is one transaction here, so batches only bound the work per statement: events
-- are loaded a million at a time (a history loaded from scratch takes one statement per table).
CREATE FUNCTION iwd_dm.run(chain text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    started timestamptz := clock_timestamp();
    batch int := coalesce(nullif(current_setting('iwd_dm.batch_size', true), '')::int, 10000);
    load_batch constant int := greatest(batch, 1000000);
    events bigint := 0;
    intervals bigint := 0;
    dims int := 0;
    k int;
    summary jsonb;
    err text;
BEGIN
    IF chain IS NULL OR chain NOT IN ('initialize', 'intraday', 'historical', 'full') THEN
        RAISE EXCEPTION 'unknown execution chain "%"', chain USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Chains: initialize, intraday, historical, full.';
    END IF;
    -- held while the chain runs (iwddm_job_active reads it): one of iwd's own locks, which no login can
    -- take to stall the chain
    PERFORM iwd_dm._lock_chain(chain);
    PERFORM iwd_dm._job(chain, 'start');
    BEGIN
        IF chain IN ('intraday', 'full') THEN
            -- the interval of "now" is reported even when no event fell in it (its backlog)
            PERFORM iwd_dm._mark_dirty(iwd.now(), iwd.now());
            LOOP
                k := iwd_dm._load_batch(load_batch);
                events := events + k;
                EXIT WHEN k = 0;
            END LOOP;
        END IF;
        PERFORM iwd_dm._analyze(events);
        IF chain IN ('initialize', 'full') THEN
            dims := iwd_dm._initialize();
        END IF;
        LOOP
            k := iwd_dm._aggregate_batch(iwd_dm._chain_levels(chain), batch);
            intervals := intervals + k;
            EXIT WHEN k = 0;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
        PERFORM iwd_dm._job(chain, 'fail', NULL, err);
        RETURN jsonb_build_object('chain', chain, 'status', 'failed', 'error', err);
    END;
    summary := jsonb_build_object('chain', chain, 'status', 'succeeded', 'events', events,
                                  'intervals', intervals, 'dimensionRows', dims,
                                  'ms', round(extract(epoch FROM clock_timestamp() - started) * 1000));
    PERFORM iwd_dm._job(chain, 'success', summary);
    RETURN summary;
END $$;

-- The documented job metrics in the Prometheus text format, for the sidecar's /metrics and pushes.
CREATE FUNCTION iwd_dm.prometheus_metrics(tenant text) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    WITH s AS (
        SELECT j.execution_chain AS chain,
               EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
                         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                         AND l.objsubid = 3 AND l.classid = 2
                         AND l.objid = array_position(ARRAY['initialize', 'intraday', 'historical', 'full'],
                                                      j.execution_chain))
                 AS active,
               coalesce(extract(epoch FROM j.last_start), 0) AS last_start,
               coalesce(extract(epoch FROM j.last_success), 0) AS last_success,
               coalesce(extract(epoch FROM j.last_fail), 0) AS last_fail
        FROM iwd_dm.job_status j),
    m(name, help, col) AS (VALUES
        ('iwddm_job_active', 'Whether the Data Mart execution chain is running.', 1),
        ('iwddm_job_last_start', 'Start of the last run of the chain (Unix time).', 2),
        ('iwddm_job_last_success', 'End of the last successful run of the chain (Unix time).', 3),
        ('iwddm_job_last_fail', 'Time of the last failed run of the chain (Unix time).', 4))
    SELECT string_agg(format(E'# HELP %s %s\n# TYPE %s gauge\n', m.name, m.help, m.name)
                      || (SELECT string_agg(format(E'%s{tenant="%s",job="iwddm_metrics",execution_chain="%s"} %s\n',
                                                   m.name,
                                                   replace(replace(replace(tenant, '\', '\\'), '"', '\"'), E'\n', '\n'),
                                                   s.chain,
                                                   CASE m.col WHEN 1 THEN s.active::int::text
                                                              WHEN 2 THEN s.last_start::text
                                                              WHEN 3 THEN s.last_success::text
                                                              ELSE s.last_fail::text END), '' ORDER BY s.chain)
                          FROM s), '' ORDER BY m.col)
    FROM m
$$;

-- ---------------------------------------------------------------------------------------------
-- Report views (stable column names; see README, Data Mart)
-- ---------------------------------------------------------------------------------------------

-- Intraday Process Dashboard: per 15 minutes and queue.
CREATE VIEW iwd_dm.intraday_backlog AS
    SELECT interval_start, department, process, queue,
           sum(created) AS entered, sum(completed) AS completed, sum(backlog_end) AS pending,
           sum(pending_overdue) AS pending_overdue, sum(overdue) AS finished_overdue
    FROM iwd_dm.agg_15min GROUP BY interval_start, department, process, queue;

-- Queue activity per day.
CREATE VIEW iwd_dm.queue_activity AS
    SELECT interval_start AS day, queue, sum(created) AS entered, sum(assigned) AS assigned,
           sum(completed) AS completed, sum(canceled) AS canceled, sum(rejected) AS rejected,
           sum(expired) AS expired, sum(backlog_end) AS pending, sum(pending_overdue) AS pending_overdue,
           sum(overdue) AS finished_overdue,
           iwd_dm._avg_s(sum(iwd_dm._us(avg_age_s * completed)),
                         sum(completed) FILTER (WHERE avg_age_s IS NOT NULL)) AS avg_finish_s,
           iwd_dm._avg_s(sum(iwd_dm._us(avg_queue_s * completed)),
                         sum(completed) FILTER (WHERE avg_queue_s IS NOT NULL)) AS avg_accept_s,
           iwd_dm._avg_s(sum(iwd_dm._us(avg_handle_s * completed)),
                         sum(completed) FILTER (WHERE avg_handle_s IS NOT NULL)) AS avg_handle_s
    FROM iwd_dm.agg_day GROUP BY interval_start, queue;

-- Customer Segment Service Level per day.
CREATE VIEW iwd_dm.customer_segment_service_level AS
    SELECT interval_start AS day, customer_segment, sum(completed) AS completed,
           sum(completed_in_sla) AS completed_on_time,
           round(100.0 * sum(completed_in_sla) / nullif(sum(completed), 0), 2) AS pct_on_time
    FROM iwd_dm.agg_day GROUP BY interval_start, customer_segment;

-- The contact-centre service level per quarter hour and queue: of the tasks whose wait in the queue ended
-- in the interval (first reserved, or finished without a reservation), the share reserved within the
-- threshold of their creation ("80 % within 20 s"): their category's own (iwd.category.service_level_seconds,
-- as it was when the interval was aggregated), else iwd_dm.service_level_threshold. threshold: the one in force
-- now. Coarser levels: agg_hour … agg_month.
CREATE VIEW iwd_dm.service_level_report AS
    SELECT a.interval_start, a.department, a.process, a.category, a.queue, sum(a.sl_offered) AS offered,
           sum(a.sl_within) AS within_threshold,
           round(100.0 * sum(a.sl_within) / nullif(sum(a.sl_offered), 0), 2) AS service_level_pct,
           coalesce((SELECT make_interval(secs => c.service_level_seconds) FROM iwd.category c
                     WHERE c.name = a.category), iwd_dm.service_level_threshold()) AS threshold
    FROM iwd_dm.agg_15min a GROUP BY a.interval_start, a.department, a.process, a.category, a.queue;

-- Capture Point Task Duration and business value per day of completion.
CREATE VIEW iwd_dm.capture_point_business_value AS
    SELECT iwd_dm.interval_start('day', finished_at) AS day, capture_point,
           count(*) AS completed, sum(business_value) AS business_value_completed,
           iwd_dm._avg_s(sum(iwd_dm._us(age_s)), count(age_s)) AS avg_duration_s, max(age_s) AS max_duration_s
    FROM iwd_dm.task_fact WHERE status = 'completed' GROUP BY 1, 2;

-- Resource (agent) Performance per day: the events agents do. A completion or rejection counts for its actor
-- only when that actor held the task (reserved it before): a supervisor's completion or rejection records the
-- supervisor as its actor and is no agent's work.
CREATE VIEW iwd_dm.agent_activity AS
    SELECT iwd_dm.interval_start('day', e.at) AS day, e.actor AS agent,
           count(*) FILTER (WHERE e.event = 'reserved') AS assigned,
           count(*) FILTER (WHERE e.event = 'accepted') AS accepted,
           count(*) FILTER (WHERE e.event = 'completed') AS completed,
           count(*) FILTER (WHERE e.event = 'rejected') AS rejected,
           count(*) FILTER (WHERE e.event = 'reservation_timeout') AS reservation_timeouts,
           iwd_dm._avg_s(sum(iwd_dm._us(f.handle_s)) FILTER (WHERE e.event = 'completed'),
                         count(f.handle_s) FILTER (WHERE e.event = 'completed')) AS avg_handle_s,
           coalesce(sum(f.business_value) FILTER (WHERE e.event = 'completed'), 0) AS business_value_completed
    FROM iwd_dm.task_event_fact e LEFT JOIN iwd_dm.task_fact f ON f.task_id = e.task_id
    WHERE e.actor IS NOT NULL
      AND e.event IN ('reserved', 'accepted', 'completed', 'rejected', 'reservation_timeout')
      AND (e.event NOT IN ('completed', 'rejected')
           OR EXISTS (SELECT 1 FROM iwd_dm.task_event_fact r
                      WHERE r.task_id = e.task_id AND r.event = 'reserved' AND r.actor = e.actor
                        AND r.event_id < e.event_id))
    GROUP BY 1, 2;

-- Task detail.
CREATE VIEW iwd_dm.task_detail AS
    SELECT task_id, external_id, capture_point, department, process, category, queue, media_type,
           customer_segment, priority, business_value, status, agent, created_at, first_assigned_at, accepted_at,
           finished_at, due_at, queue_s, handle_s, age_s, overdue, completed_in_sla
    FROM iwd_dm.task_fact;

-- Logical backups carry the Data Mart's facts, aggregates and pending work (its loading position and
-- job state are not dumped: after a restore the next run reloads the history idempotently).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['iwd_dm.task_fact', 'iwd_dm.dirty', 'iwd_dm.event_gap',
                  'iwd_dm.agg_15min', 'iwd_dm.agg_hour', 'iwd_dm.agg_day', 'iwd_dm.agg_week', 'iwd_dm.agg_month',
                  'iwd_dm.dim_date', 'iwd_dm.dim_interval', 'iwd_dm.dim_department', 'iwd_dm.dim_process',
                  'iwd_dm.dim_category', 'iwd_dm.dim_queue', 'iwd_dm.dim_media_type', 'iwd_dm.dim_customer_segment',
                  'iwd_dm.dim_agent', 'iwd_dm.dim_status', 'iwd_dm.dim_capture_point'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(t::regclass, '');
    END LOOP;
END $$;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['iwd_dm.dim_department_id_seq', 'iwd_dm.dim_process_id_seq', 'iwd_dm.dim_category_id_seq',
                  'iwd_dm.dim_queue_id_seq', 'iwd_dm.dim_media_type_id_seq', 'iwd_dm.dim_customer_segment_id_seq',
                  'iwd_dm.dim_agent_id_seq', 'iwd_dm.dim_status_id_seq', 'iwd_dm.dim_capture_point_id_seq'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(t::regclass, '');
    END LOOP;
END $$;
