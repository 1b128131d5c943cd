-- iwd core API: configuration, tasks, lifecycle, queue, search, history and the scheduler pass.
-- Every function takes and returns jsonb in the REST shape (camelCase keys), so that each REST
-- call of iwd-sidecar is one SQL call. Errors: 22023 invalid input (naming the field), P0002
-- unknown object, 55000 illegal transition.

-- ---------------------------------------------------------------------------------------------
-- Input checking helpers
-- ---------------------------------------------------------------------------------------------

-- Raise 22023 unless doc is an object whose keys are all allowed and required ones present.
CREATE FUNCTION iwd._check_object(doc jsonb, what text, allowed text[], required text[] DEFAULT '{}')
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
BEGIN
    IF doc IS NULL OR jsonb_typeof(doc) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT key INTO k FROM jsonb_object_keys(doc) AS key WHERE key <> ALL (allowed) ORDER BY key LIMIT 1;
    IF k IS NOT NULL THEN
        RAISE EXCEPTION 'unknown key "%" in %', k, what USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Allowed keys: %s.', array_to_string(allowed, ', '));
    END IF;
    FOREACH k IN ARRAY required LOOP
        IF coalesce(jsonb_typeof(doc -> k), 'null') = 'null' THEN
            RAISE EXCEPTION '% field "%" is required', what, k USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
END $$;

-- A string member of doc of at most max_len bytes (NULL when absent or null), or 22023 naming it. Names
-- and ids take at most 256 bytes (IWD_NAME_MAX, extension/task.h), descriptions 16 KB (IWD_TEXT_MAX).
CREATE FUNCTION iwd._str(doc jsonb, key text, what text, max_len int DEFAULT 256) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF coalesce(jsonb_typeof(doc -> key), 'null') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION '% field "%" must be a string', what, key USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF doc ->> key = '' THEN
        RAISE EXCEPTION '% field "%" must not be empty', what, key USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(doc ->> key) > max_len THEN
        RAISE EXCEPTION '% field "%" is longer than % bytes', what, key, max_len
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It has %s bytes.', octet_length(doc ->> key));
    END IF;
    RETURN doc ->> key;
END $$;

-- An integer member of doc within [lo, hi] (NULL when absent or null), or 22023 naming it.
CREATE FUNCTION iwd._int(doc jsonb, key text, what text, lo bigint DEFAULT -2147483648,
                         hi bigint DEFAULT 2147483647) RETURNS int
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n numeric;
BEGIN
    IF coalesce(jsonb_typeof(doc -> key), 'null') = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(doc -> key) <> 'number' OR (doc ->> key)::numeric <> trunc((doc ->> key)::numeric) THEN
        RAISE EXCEPTION '% field "%" must be an integer', what, key USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := (doc ->> key)::numeric;
    IF n < lo OR n > hi THEN
        RAISE EXCEPTION '% field "%" is out of range', what, key USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('The value must be between %s and %s.', lo, hi);
    END IF;
    RETURN n::int;
END $$;

-- A boolean member of doc (NULL when absent or null), or 22023 naming it.
CREATE FUNCTION iwd._bool(doc jsonb, key text, what text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF coalesce(jsonb_typeof(doc -> key), 'null') NOT IN ('boolean', 'null') THEN
        RAISE EXCEPTION '% field "%" must be true or false', what, key USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (doc -> key)::boolean;
END $$;

-- An object member of doc mapping at most max_count names (1 to max_name bytes each) to integer levels
-- in [0, hi] (NULL when absent), or 22023 naming the field. The callers pass the bounds of
-- extension/task.h (README, Security: Limits).
CREATE FUNCTION iwd._levels(doc jsonb, key text, what text, hi int, max_count int, max_name int) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'iwd_levels' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Raise P0002 for an object that does not exist.
CREATE FUNCTION iwd._not_found(what text, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF what = 'task' THEN
        RAISE EXCEPTION 'task % does not exist', name USING ERRCODE = 'no_data_found';
    END IF;
    RAISE EXCEPTION '% "%" does not exist', what, name USING ERRCODE = 'no_data_found';
END $$;

-- A timestamp in the REST shape: ISO 8601 in UTC with a "Z". (Inlined, per row: left unpinned with every
-- name qualified, as are the *_json shapes below; see sql/security.sql.)
CREATE FUNCTION iwd._ts(t timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.to_char(t AT TIME ZONE 'UTC',
                   CASE WHEN extract(microseconds FROM t)::bigint OPERATOR(pg_catalog.%) 1000000
                             OPERATOR(pg_catalog.=) 0
                        THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END)
$$;

-- ---------------------------------------------------------------------------------------------
-- Business calendars
-- ---------------------------------------------------------------------------------------------

-- start + minutes of working time in the calendar (working days and hours, holidays, time zone).
CREATE FUNCTION iwd.business_time_add(start timestamptz, minutes int, calendar text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    c iwd.calendar;
    v_local timestamp;
    v_day date;
    v_left interval := make_interval(mins => minutes);
    v_open timestamp;
    v_close timestamp;
BEGIN
    SELECT * INTO c FROM iwd.calendar k WHERE k.name = business_time_add.calendar;
    IF NOT FOUND THEN
        PERFORM iwd._not_found('calendar', calendar);
    END IF;
    IF minutes < 0 THEN
        RAISE EXCEPTION 'minutes must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_local := start AT TIME ZONE c.time_zone;
    -- at most ten years of days: a calendar whose every day is a holiday never ends
    FOR i IN 1 .. 3660 LOOP
        v_day := v_local::date;
        IF extract(isodow FROM v_day)::int = ANY (c.work_days) AND NOT v_day = ANY (c.holidays) THEN
            v_open := v_day + c.work_start;
            v_close := v_day + c.work_end;
            v_local := greatest(v_local, v_open);
            IF v_local < v_close THEN
                IF v_local + v_left <= v_close THEN
                    RETURN (v_local + v_left) AT TIME ZONE c.time_zone;
                END IF;
                v_left := v_left - (v_close - v_local);
            END IF;
        END IF;
        v_local := (v_day + 1)::timestamp;
    END LOOP;
    RAISE EXCEPTION 'calendar "%" has no working time in the next ten years', calendar
        USING ERRCODE = 'invalid_parameter_value';
END $$;

-- ---------------------------------------------------------------------------------------------
-- Configuration: JSON shapes, upsert, get, list, delete
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION iwd.department_json(d iwd.department) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_build_object('name', d.name, 'description', d.description)
$$;

CREATE FUNCTION iwd.process_json(p iwd.process) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_build_object('name', p.name, 'department', p.department, 'description', p.description)
$$;

CREATE FUNCTION iwd.calendar_json(c iwd.calendar) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_build_object('name', c.name, 'timeZone', c.time_zone,
                              'workStart', pg_catalog.to_char(c.work_start, 'HH24:MI'),
                              'workEnd', pg_catalog.to_char(c.work_end, 'HH24:MI'),
                              'workDays', pg_catalog.to_jsonb(c.work_days), 'holidays', pg_catalog.to_jsonb(c.holidays))
$$;

CREATE FUNCTION iwd.category_json(c iwd.category) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_build_object(
        'name', c.name, 'department', c.department, 'process', c.process, 'priority', c.priority,
        'businessValue', c.business_value, 'slaMinutes', c.sla_minutes, 'calendar', c.calendar,
        'skills', c.skills, 'queue', c.queue, 'mediaType', c.media_type,
        'reprioritize', CASE WHEN c.reprioritize_every_min IS NOT NULL THEN
            pg_catalog.jsonb_build_object('step', c.reprioritize_step, 'everyMinutes', c.reprioritize_every_min,
                               'max', c.reprioritize_max) END,
        'urgency', CASE WHEN c.urgency_within_min IS NOT NULL THEN
            pg_catalog.jsonb_build_object('withinMinutes', c.urgency_within_min, 'step', c.urgency_step) END)
$$;

CREATE FUNCTION iwd.rule_json(r iwd.rule) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_build_object('kind', r.kind, 'name', r.name, 'order', r.ord, 'department', r.department,
                              'process', r.process, 'enabled', r.enabled, 'when', r.cond, 'set', r.effect)
$$;

CREATE FUNCTION iwd.agent_json(a iwd.agent) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_build_object('id', a.id, 'name', a.name, 'skills', a.skills, 'capacity', a.capacity,
                              'state', a.state)
$$;

-- Create or replace a department {"name","description"}.
CREATE FUNCTION iwd.upsert_department(department jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    d iwd.department;
BEGIN
    PERFORM iwd._check_object(department, 'department', '{name,description}', '{name}');
    INSERT INTO iwd.department (name, description)
    VALUES (iwd._str(department, 'name', 'department'), iwd._str(department, 'description', 'department', 16384))
    ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description
    RETURNING * INTO d;
    RETURN iwd.department_json(d);
END $$;

-- Create or replace a process {"name","department","description"}.
CREATE FUNCTION iwd.upsert_process(process jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    p iwd.process;
    v_department text := iwd._str(process, 'department', 'process');
BEGIN
    PERFORM iwd._check_object(process, 'process', '{name,department,description}', '{name,department}');
    IF NOT EXISTS (SELECT 1 FROM iwd.department WHERE name = v_department) THEN
        RAISE EXCEPTION 'process field "department": department "%" does not exist', v_department
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO iwd.process (name, department, description)
    VALUES (iwd._str(process, 'name', 'process'), v_department, iwd._str(process, 'description', 'process', 16384))
    ON CONFLICT (name) DO UPDATE SET department = EXCLUDED.department, description = EXCLUDED.description
    RETURNING * INTO p;
    RETURN iwd.process_json(p);
END $$;

-- Create or replace a business calendar {"name","timeZone","workStart","workEnd","workDays","holidays"}.
CREATE FUNCTION iwd.upsert_calendar(calendar jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c iwd.calendar;
    v_tz text;
BEGIN
    PERFORM iwd._check_object(calendar, 'calendar', '{name,timeZone,workStart,workEnd,workDays,holidays}', '{name}');
    v_tz := coalesce(iwd._str(calendar, 'timeZone', 'calendar'), 'UTC');
    IF NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = v_tz) THEN
        RAISE EXCEPTION 'calendar field "timeZone": unknown time zone "%"', v_tz
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(jsonb_typeof(calendar -> 'workDays'), 'array') <> 'array'
       OR coalesce(jsonb_typeof(calendar -> 'holidays'), 'array') <> 'array' THEN
        RAISE EXCEPTION 'calendar fields "workDays" and "holidays" must be arrays'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- every SLA due time walks the days of the calendar and looks each up in both lists
    IF jsonb_array_length(coalesce(calendar -> 'workDays', '[]')) > 7 THEN
        RAISE EXCEPTION 'calendar field "workDays" has more than 7 days' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_array_length(coalesce(calendar -> 'holidays', '[]')) > 1000 THEN
        RAISE EXCEPTION 'calendar field "holidays" has more than 1000 dates' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It has %s.', jsonb_array_length(calendar -> 'holidays'));
    END IF;
    IF coalesce(iwd._str(calendar, 'workStart', 'calendar')::time, '09:00')
       >= coalesce(iwd._str(calendar, 'workEnd', 'calendar')::time, '17:00') THEN
        RAISE EXCEPTION 'calendar "workStart" must be before "workEnd"' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO iwd.calendar AS k (name, time_zone, work_start, work_end, work_days, holidays)
    VALUES (iwd._str(calendar, 'name', 'calendar'), v_tz,
            coalesce(iwd._str(calendar, 'workStart', 'calendar')::time, '09:00'),
            coalesce(iwd._str(calendar, 'workEnd', 'calendar')::time, '17:00'),
            coalesce((SELECT array_agg(e::int) FROM jsonb_array_elements_text(calendar -> 'workDays') e),
                     '{1,2,3,4,5}'),
            coalesce((SELECT array_agg(e::date) FROM jsonb_array_elements_text(calendar -> 'holidays') e), '{}'))
    ON CONFLICT (name) DO UPDATE SET time_zone = EXCLUDED.time_zone, work_start = EXCLUDED.work_start,
        work_end = EXCLUDED.work_end, work_days = EXCLUDED.work_days, holidays = EXCLUDED.holidays
    RETURNING * INTO c;
    RETURN iwd.calendar_json(c);
END $$;

-- Create or replace a category (DESIGN shape, plus "calendar" and "mediaType").
CREATE FUNCTION iwd.upsert_category(category jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c iwd.category;
    v_re jsonb := category -> 'reprioritize';
    v_ur jsonb := category -> 'urgency';
    v_department text := iwd._str(category, 'department', 'category');
    v_process text := iwd._str(category, 'process', 'category');
    v_calendar text := iwd._str(category, 'calendar', 'category');
BEGIN
    PERFORM iwd._check_object(category, 'category',
        '{name,department,process,priority,businessValue,slaMinutes,calendar,skills,queue,mediaType,reprioritize,urgency}',
        '{name}');
    IF coalesce(jsonb_typeof(v_re), 'null') = 'null' THEN
        v_re := NULL;
    ELSE
        PERFORM iwd._check_object(v_re, 'category reprioritize', '{step,everyMinutes,max}', '{step,everyMinutes}');
    END IF;
    IF coalesce(jsonb_typeof(v_ur), 'null') = 'null' THEN
        v_ur := NULL;
    ELSE
        PERFORM iwd._check_object(v_ur, 'category urgency', '{withinMinutes,step}', '{withinMinutes,step}');
    END IF;
    IF v_department IS NOT NULL AND NOT EXISTS (SELECT 1 FROM iwd.department WHERE name = v_department) THEN
        RAISE EXCEPTION 'category field "department": department "%" does not exist', v_department
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_process IS NOT NULL AND NOT EXISTS (SELECT 1 FROM iwd.process WHERE name = v_process) THEN
        RAISE EXCEPTION 'category field "process": process "%" does not exist', v_process
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_calendar IS NOT NULL AND NOT EXISTS (SELECT 1 FROM iwd.calendar WHERE name = v_calendar) THEN
        RAISE EXCEPTION 'category field "calendar": calendar "%" does not exist', v_calendar
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO iwd.category (name, department, process, priority, business_value, sla_minutes, calendar, skills,
                              queue, media_type, reprioritize_step, reprioritize_every_min, reprioritize_max,
                              urgency_within_min, urgency_step, updated_at)
    VALUES (iwd._str(category, 'name', 'category'), v_department, v_process,
            coalesce(iwd._int(category, 'priority', 'category'), 0),
            coalesce(iwd._int(category, 'businessValue', 'category'), 0),
            iwd._int(category, 'slaMinutes', 'category', 1),
            v_calendar,
            coalesce(iwd._levels(category, 'skills', 'category', 10, 64, 128), '{}'),
            iwd._str(category, 'queue', 'category'),
            iwd._str(category, 'mediaType', 'category'),
            coalesce(iwd._int(v_re, 'step', 'category reprioritize'), 0),
            iwd._int(v_re, 'everyMinutes', 'category reprioritize', 1),
            iwd._int(v_re, 'max', 'category reprioritize'),
            iwd._int(v_ur, 'withinMinutes', 'category urgency', 1),
            coalesce(iwd._int(v_ur, 'step', 'category urgency'), 0),
            now())
    ON CONFLICT (name) DO UPDATE SET department = EXCLUDED.department, process = EXCLUDED.process,
        priority = EXCLUDED.priority, business_value = EXCLUDED.business_value,
        sla_minutes = EXCLUDED.sla_minutes, calendar = EXCLUDED.calendar, skills = EXCLUDED.skills,
        queue = EXCLUDED.queue, media_type = EXCLUDED.media_type,
        reprioritize_step = EXCLUDED.reprioritize_step, reprioritize_every_min = EXCLUDED.reprioritize_every_min,
        reprioritize_max = EXCLUDED.reprioritize_max, urgency_within_min = EXCLUDED.urgency_within_min,
        urgency_step = EXCLUDED.urgency_step, updated_at = EXCLUDED.updated_at
    RETURNING * INTO c;
    RETURN iwd.category_json(c);
END $$;

-- Create or replace a rule {"kind","name","order","department","process","enabled","when","set"}.
CREATE FUNCTION iwd.upsert_rule(rule jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r iwd.rule;
    v_kind text := iwd._str(rule, 'kind', 'rule');
BEGIN
    PERFORM iwd._check_object(rule, 'rule', '{kind,name,order,department,process,enabled,when,set}',
                              '{kind,name,set}');
    IF v_kind NOT IN ('classification', 'prioritization') THEN
        RAISE EXCEPTION 'rule field "kind" must be "classification" or "prioritization"'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_kind = 'classification' AND (rule ? 'department' OR rule ? 'process') THEN
        RAISE EXCEPTION 'a classification rule has no "department" or "process" scope'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Scopes apply to prioritization rules; a classification rule sets them.';
    END IF;
    INSERT INTO iwd.rule (kind, name, ord, department, process, enabled, cond, effect, updated_at)
    VALUES (v_kind, iwd._str(rule, 'name', 'rule'), coalesce(iwd._int(rule, 'order', 'rule'), 0),
            iwd._str(rule, 'department', 'rule'), iwd._str(rule, 'process', 'rule'),
            coalesce(iwd._bool(rule, 'enabled', 'rule'), true), coalesce(rule -> 'when', '{}'), rule -> 'set', now())
    ON CONFLICT (kind, name) DO UPDATE SET ord = EXCLUDED.ord, department = EXCLUDED.department,
        process = EXCLUDED.process, enabled = EXCLUDED.enabled, cond = EXCLUDED.cond, effect = EXCLUDED.effect,
        updated_at = EXCLUDED.updated_at
    RETURNING * INTO r;
    RETURN iwd.rule_json(r);
END $$;

-- Create or replace an agent {"id","name","skills","capacity","state"}; an absent state is kept.
CREATE FUNCTION iwd.upsert_agent(agent jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    a iwd.agent;
    v_state text := iwd._str(agent, 'state', 'agent');
BEGIN
    PERFORM iwd._check_object(agent, 'agent', '{id,name,skills,capacity,state}', '{id}');
    IF v_state NOT IN ('ready', 'not_ready') THEN
        RAISE EXCEPTION 'agent field "state" must be "ready" or "not_ready"' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO iwd.agent AS x (id, name, skills, capacity, state, updated_at)
    VALUES (iwd._str(agent, 'id', 'agent'), iwd._str(agent, 'name', 'agent'),
            coalesce(iwd._levels(agent, 'skills', 'agent', 10, 256, 128), '{}'),
            coalesce(iwd._levels(agent, 'capacity', 'agent', 1000, 64, 256), '{"workitem": 1}'),
            coalesce(v_state, 'not_ready'), now())
    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, skills = EXCLUDED.skills, capacity = EXCLUDED.capacity,
        state = CASE WHEN v_state IS NULL THEN x.state ELSE EXCLUDED.state END, updated_at = EXCLUDED.updated_at
    RETURNING * INTO a;
    RETURN iwd.agent_json(a);
END $$;

-- Set an agent ready (it receives tasks from iwd.next_task) or not_ready.
CREATE FUNCTION iwd.set_agent_state(agent text, state text) RETURNS jsonb
LANGUAGE plpgsql STRICT AS $$
DECLARE
    a iwd.agent;
BEGIN
    IF state NOT IN ('ready', 'not_ready') THEN
        RAISE EXCEPTION 'agent state must be "ready" or "not_ready"' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Got "%s".', state);
    END IF;
    UPDATE iwd.agent x SET state = set_agent_state.state, updated_at = now() WHERE x.id = agent RETURNING * INTO a;
    IF NOT FOUND THEN
        PERFORM iwd._not_found('agent', agent);
    END IF;
    RETURN iwd.agent_json(a);
END $$;

-- get_<object>(key) (P0002 when none), list_<plural>() (a JSON array) and delete_<object>(key)
-- (returns what it removed; P0002 when none) for departments, processes, calendars, categories and
-- agents: one definition, instantiated per object.
DO $do$
DECLARE
    o record;
BEGIN
    FOR o IN SELECT * FROM (VALUES ('department', 'departments', 'name', 'name'),
                                   ('process', 'processes', 'name', 'department, name'),
                                   ('calendar', 'calendars', 'name', 'name'),
                                   ('category', 'categories', 'name', 'name'),
                                   ('agent', 'agents', 'id', 'id')) v(obj, plural, arg, sort) LOOP
        EXECUTE format($f$
            CREATE FUNCTION iwd.get_%1$s(%3$s text) RETURNS jsonb
            LANGUAGE plpgsql STABLE STRICT AS $$
            DECLARE
                v jsonb;
            BEGIN
                SELECT iwd.%1$s_json(x) INTO v FROM iwd.%1$s x WHERE x.%3$s = get_%1$s.%3$s;
                IF v IS NULL THEN
                    PERFORM iwd._not_found(%1$L, %3$s);
                END IF;
                RETURN v;
            END $$;
            COMMENT ON FUNCTION iwd.get_%1$s(text) IS 'The %1$s with this %3$s; P0002 when none.';

            CREATE FUNCTION iwd.list_%2$s() RETURNS jsonb
            LANGUAGE sql STABLE AS $$
                SELECT coalesce(jsonb_agg(iwd.%1$s_json(x) ORDER BY %4$s), '[]') FROM iwd.%1$s x
            $$;
            COMMENT ON FUNCTION iwd.list_%2$s() IS 'Every %1$s, as a JSON array.';

            CREATE FUNCTION iwd.delete_%1$s(%3$s text) RETURNS jsonb
            LANGUAGE plpgsql STRICT AS $$
            DECLARE
                x iwd.%1$s;
            BEGIN
                DELETE FROM iwd.%1$s d WHERE d.%3$s = delete_%1$s.%3$s RETURNING * INTO x;
                IF NOT FOUND THEN
                    PERFORM iwd._not_found(%1$L, %3$s);
                END IF;
                RETURN iwd.%1$s_json(x);
            END $$;
            COMMENT ON FUNCTION iwd.delete_%1$s(text) IS 'Delete a %1$s and return it; P0002 when none.';
            $f$, o.obj, o.plural, o.arg, o.sort);
    END LOOP;
END $do$;

-- The rule of this kind and name; P0002 when none.
CREATE FUNCTION iwd.get_rule(kind text, name text) RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    v jsonb;
BEGIN
    SELECT iwd.rule_json(x) INTO v FROM iwd.rule x WHERE x.kind = get_rule.kind AND x.name = get_rule.name;
    IF v IS NULL THEN
        PERFORM iwd._not_found(kind || ' rule', name);
    END IF;
    RETURN v;
END $$;

-- Every rule (of one kind when given), in evaluation order, as a JSON array.
CREATE FUNCTION iwd.list_rules(kind text DEFAULT NULL) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(iwd.rule_json(x) ORDER BY x.kind,
                              CASE WHEN x.process IS NOT NULL THEN 2 WHEN x.department IS NOT NULL THEN 1 ELSE 0 END,
                              x.ord, x.name), '[]')
    FROM iwd.rule x WHERE list_rules.kind IS NULL OR x.kind = list_rules.kind
$$;

-- Delete a rule and return it; P0002 when none.
CREATE FUNCTION iwd.delete_rule(kind text, name text) RETURNS jsonb
LANGUAGE plpgsql STRICT AS $$
DECLARE
    x iwd.rule;
BEGIN
    DELETE FROM iwd.rule d WHERE d.kind = delete_rule.kind AND d.name = delete_rule.name RETURNING * INTO x;
    IF NOT FOUND THEN
        PERFORM iwd._not_found(kind || ' rule', name);
    END IF;
    RETURN iwd.rule_json(x);
END $$;


-- Seed a default configuration (idempotent: existing objects are kept). Returns what it created.
CREATE FUNCTION iwd.seed_defaults() RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    n_dep int; n_proc int; n_cal int; n_cat int; n_rule int;
BEGIN
    INSERT INTO iwd.department (name, description) VALUES ('General', 'Work not assigned to a department')
        ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n_dep = ROW_COUNT;
    INSERT INTO iwd.process (name, department, description) VALUES ('General', 'General', 'Default process')
        ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n_proc = ROW_COUNT;
    INSERT INTO iwd.calendar (name) VALUES ('business-hours') ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n_cal = ROW_COUNT;
    INSERT INTO iwd.category (name, department, process, priority, business_value, sla_minutes, queue,
                              reprioritize_step, reprioritize_every_min, reprioritize_max,
                              urgency_within_min, urgency_step)
    VALUES ('General', 'General', 'General', 10, 100, 1440, 'general', 1, 60, 50, 60, 20)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n_cat = ROW_COUNT;
    INSERT INTO iwd.rule (kind, name, ord, cond, effect)
    VALUES ('classification', 'default category', 1000, '{}', '{"category": "General"}'),
           ('prioritization', 'gold customers first', 10,
            '{"field": "customerSegment", "op": "=", "value": "gold"}', '{"priority": "+10"}')
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n_rule = ROW_COUNT;
    RETURN jsonb_build_object('departments', n_dep, 'processes', n_proc, 'calendars', n_cal,
                              'categories', n_cat, 'rules', n_rule);
END $$;

-- ---------------------------------------------------------------------------------------------
-- Tasks
-- ---------------------------------------------------------------------------------------------

-- The search document of a task's text: the first 256 KB of subject and description and the string and
-- number values of attributes, in the 'simple' configuration. Bounded whatever the task holds, so that
-- search never makes a capture fail (extension/task.c).
CREATE FUNCTION iwd._document(subject text, description text, attributes jsonb) RETURNS tsvector
    AS 'MODULE_PATHNAME', 'iwd_document' LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- The task in the REST shape.
CREATE FUNCTION iwd.task_json(t iwd.task) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'iwd_task_json' LANGUAGE C STABLE STRICT;
-- Tasks in the REST shape, as one JSON array in the array's order.
CREATE FUNCTION iwd._tasks_json(tasks iwd.task[]) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'iwd_tasks_json' LANGUAGE C STABLE STRICT;

-- Append an event (same transaction as the change); with iwd.notify = event, announce it on
-- iwd_task_event (otherwise the scheduler worker announces new events in batches).
CREATE FUNCTION iwd._event(task_id bigint, at timestamptz, event text, actor text, status_before text,
                           status_after text, detail jsonb DEFAULT '{}') RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO iwd.task_event (task_id, at, event, actor, status_before, status_after, detail)
    VALUES (task_id, at, event, actor, status_before, status_after, coalesce(detail, '{}'));
    IF current_setting('iwd.notify', true) = 'event' THEN
        PERFORM pg_notify('iwd_task_event', task_id || ':' || event);
    END IF;
END $$;

-- Lock a task (open or closed) for a lifecycle change; P0002 when it does not exist.
CREATE FUNCTION iwd._lock_task(id bigint) RETURNS iwd.task
LANGUAGE plpgsql AS $$
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

-- Store a changed task: open tasks live in iwd.task, terminal ones in iwd.task_closed.
CREATE FUNCTION iwd._save_task(status_before text, t iwd.task) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF iwd.is_terminal(status_before) = iwd.is_terminal(t.status) THEN
        IF iwd.is_terminal(t.status) THEN
            UPDATE iwd.task_closed SET (
                id, external_id, capture_point, media_type, department, process, category, queue,
                customer_segment, priority, business_value, priority_override, business_value_override,
                subject, description, skills, attributes, status, created_at, aging_from, activation_at,
                due_at, expires_at, assigned_to, reserved_until, accepted_at, hold_reason, error_reason,
                completed_at, updated_at, reprioritize_at, overdue_flagged, classified_by, customer_id,
                product_type, product_subtype, requested_agent, requested_skill, source_created_at,
                source_due_at, source_process_type, result_code)
            = (
                t.id, t.external_id, t.capture_point, t.media_type, t.department, t.process, t.category,
                t.queue, t.customer_segment, t.priority, t.business_value, t.priority_override,
                t.business_value_override, t.subject, t.description, t.skills, t.attributes, t.status,
                t.created_at, t.aging_from, t.activation_at, t.due_at, t.expires_at, t.assigned_to,
                t.reserved_until, t.accepted_at, t.hold_reason, t.error_reason, t.completed_at, t.updated_at,
                t.reprioritize_at, t.overdue_flagged, t.classified_by, t.customer_id, t.product_type,
                t.product_subtype, t.requested_agent, t.requested_skill, t.source_created_at,
                t.source_due_at, t.source_process_type, t.result_code)
            WHERE id = t.id;
        ELSE
            UPDATE iwd.task SET (
                id, external_id, capture_point, media_type, department, process, category, queue,
                customer_segment, priority, business_value, priority_override, business_value_override,
                subject, description, skills, attributes, status, created_at, aging_from, activation_at,
                due_at, expires_at, assigned_to, reserved_until, accepted_at, hold_reason, error_reason,
                completed_at, updated_at, reprioritize_at, overdue_flagged, classified_by, customer_id,
                product_type, product_subtype, requested_agent, requested_skill, source_created_at,
                source_due_at, source_process_type, result_code)
            = (
                t.id, t.external_id, t.capture_point, t.media_type, t.department, t.process, t.category,
                t.queue, t.customer_segment, t.priority, t.business_value, t.priority_override,
                t.business_value_override, t.subject, t.description, t.skills, t.attributes, t.status,
                t.created_at, t.aging_from, t.activation_at, t.due_at, t.expires_at, t.assigned_to,
                t.reserved_until, t.accepted_at, t.hold_reason, t.error_reason, t.completed_at, t.updated_at,
                t.reprioritize_at, t.overdue_flagged, t.classified_by, t.customer_id, t.product_type,
                t.product_subtype, t.requested_agent, t.requested_skill, t.source_created_at,
                t.source_due_at, t.source_process_type, t.result_code)
            WHERE id = t.id;
        END IF;
    ELSIF iwd.is_terminal(t.status) THEN
        DELETE FROM iwd.task WHERE id = t.id;
        INSERT INTO iwd.task_closed (
            id, external_id, capture_point, media_type, department, process, category, queue,
            customer_segment, priority, business_value, priority_override, business_value_override, subject,
            description, skills, attributes, status, created_at, aging_from, activation_at, due_at,
            expires_at, assigned_to, reserved_until, accepted_at, hold_reason, error_reason, completed_at,
            updated_at, reprioritize_at, overdue_flagged, classified_by, customer_id, product_type,
            product_subtype, requested_agent, requested_skill, source_created_at, source_due_at,
            source_process_type, result_code)
        VALUES (
            t.id, t.external_id, t.capture_point, t.media_type, t.department, t.process, t.category, t.queue,
            t.customer_segment, t.priority, t.business_value, t.priority_override, t.business_value_override,
            t.subject, t.description, t.skills, t.attributes, t.status, t.created_at, t.aging_from,
            t.activation_at, t.due_at, t.expires_at, t.assigned_to, t.reserved_until, t.accepted_at,
            t.hold_reason, t.error_reason, t.completed_at, t.updated_at, t.reprioritize_at,
            t.overdue_flagged, t.classified_by, t.customer_id, t.product_type, t.product_subtype,
            t.requested_agent, t.requested_skill, t.source_created_at, t.source_due_at,
            t.source_process_type, t.result_code);
    ELSE
        DELETE FROM iwd.task_closed WHERE id = t.id;
        INSERT INTO iwd.task (
            id, external_id, capture_point, media_type, department, process, category, queue,
            customer_segment, priority, business_value, priority_override, business_value_override, subject,
            description, skills, attributes, status, created_at, aging_from, activation_at, due_at,
            expires_at, assigned_to, reserved_until, accepted_at, hold_reason, error_reason, completed_at,
            updated_at, reprioritize_at, overdue_flagged, classified_by, customer_id, product_type,
            product_subtype, requested_agent, requested_skill, source_created_at, source_due_at,
            source_process_type, result_code)
        VALUES (
            t.id, t.external_id, t.capture_point, t.media_type, t.department, t.process, t.category, t.queue,
            t.customer_segment, t.priority, t.business_value, t.priority_override, t.business_value_override,
            t.subject, t.description, t.skills, t.attributes, t.status, t.created_at, t.aging_from,
            t.activation_at, t.due_at, t.expires_at, t.assigned_to, t.reserved_until, t.accepted_at,
            t.hold_reason, t.error_reason, t.completed_at, t.updated_at, t.reprioritize_at,
            t.overdue_flagged, t.classified_by, t.customer_id, t.product_type, t.product_subtype,
            t.requested_agent, t.requested_skill, t.source_created_at, t.source_due_at,
            t.source_process_type, t.result_code);
    END IF;
END $$;

-- The detail of a task's "created" event.
-- STABLE, as jsonb_build_object is: an IMMUTABLE SQL function calling it would not be inlined, and each
-- call would parse and plan its body again.
CREATE FUNCTION iwd._created_detail(t iwd.task) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('priority', t.priority,
        'businessValue', t.business_value, 'category', t.category, 'errorReason', t.error_reason))
$$;

-- Create one task (see create_task) and return it with "created" telling whether it is new. The capture
-- path: left unpinned (no GUC save and restore per task), so every function and operator is qualified
-- (sql/security.sql).
CREATE FUNCTION iwd._create_task(task jsonb, at timestamptz, OUT created boolean, OUT result jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    t iwd.task;
    v_id bigint;
BEGIN
    created := false;
    IF pg_catalog.jsonb_typeof(task OPERATOR(pg_catalog.->) 'capturePoint') OPERATOR(pg_catalog.=) 'string'
       AND pg_catalog.jsonb_typeof(task OPERATOR(pg_catalog.->) 'externalId') OPERATOR(pg_catalog.=) 'string' THEN
        SELECT k.task_id INTO v_id FROM iwd.task_key k
        WHERE k.capture_point OPERATOR(pg_catalog.=) (task OPERATOR(pg_catalog.->>) 'capturePoint')
          AND k.external_id OPERATOR(pg_catalog.=) (task OPERATOR(pg_catalog.->>) 'externalId');
        IF FOUND THEN
            result := iwd.get_task(v_id);
            RETURN;
        END IF;
    END IF;
    t := iwd._prepare_task(task, NULL, at);
    t.id := pg_catalog.nextval('iwd.task_id_seq');
    t.updated_at := at;
    -- the key decides between concurrent submissions of the same work: the loser returns the winner's task
    INSERT INTO iwd.task_key (capture_point, external_id, task_id) VALUES (t.capture_point, t.external_id, t.id)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT k.task_id INTO v_id FROM iwd.task_key k
        WHERE k.capture_point OPERATOR(pg_catalog.=) t.capture_point
          AND k.external_id OPERATOR(pg_catalog.=) t.external_id;
        result := iwd.get_task(v_id);
        RETURN;
    END IF;
    INSERT INTO iwd.task (
        id, external_id, capture_point, media_type, department, process, category, queue, customer_segment,
        priority, business_value, priority_override, business_value_override, subject, description, skills,
        attributes, status, created_at, aging_from, activation_at, due_at, expires_at, assigned_to,
        reserved_until, accepted_at, hold_reason, error_reason, completed_at, updated_at, reprioritize_at,
        overdue_flagged, classified_by, customer_id, product_type, product_subtype, requested_agent,
        requested_skill, source_created_at, source_due_at, source_process_type, result_code)
    VALUES (
        t.id, t.external_id, t.capture_point, t.media_type, t.department, t.process, t.category, t.queue,
        t.customer_segment, t.priority, t.business_value, t.priority_override, t.business_value_override,
        t.subject, t.description, t.skills, t.attributes, t.status, t.created_at, t.aging_from,
        t.activation_at, t.due_at, t.expires_at, t.assigned_to, t.reserved_until, t.accepted_at,
        t.hold_reason, t.error_reason, t.completed_at, t.updated_at, t.reprioritize_at, t.overdue_flagged,
        t.classified_by, t.customer_id, t.product_type, t.product_subtype, t.requested_agent,
        t.requested_skill, t.source_created_at, t.source_due_at, t.source_process_type, t.result_code);
    INSERT INTO iwd.task_document (task_id, document)
    VALUES (t.id, iwd._document(t.subject, t.description, t.attributes));
    -- iwd._event, written out: capture is a hot path, and a nested PL/pgSQL call costs a fifth of it
    INSERT INTO iwd.task_event (task_id, at, event, status_after, detail)
    VALUES (t.id, at, 'created', t.status, iwd._created_detail(t));
    IF pg_catalog.current_setting('iwd.notify', true) OPERATOR(pg_catalog.=) 'event' THEN
        PERFORM pg_catalog.pg_notify('iwd_task_event', t.id OPERATOR(pg_catalog.||) ':created');
    END IF;
    created := true;
    result := iwd.task_json(t);
END $$;

-- Capture a task: validate, classify, score, queue (or hold until activationAt). Re-submitting the same
-- (capturePoint, externalId) returns the existing task unchanged.
CREATE FUNCTION iwd.create_task(task jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT (iwd._create_task(task, iwd.now())).result
$$;

-- Capture a batch of new tasks set-wise: one statement per table instead of one per task and table.
-- NULL (nothing written) when the batch is not plainly new work: an element without capturePoint and
-- externalId, a key already known or repeated in the batch, an element that fails validation, or a
-- key taken concurrently; the caller then captures element by element.
CREATE FUNCTION iwd._create_tasks_new(tasks jsonb, at timestamptz) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_n int := jsonb_array_length(tasks);
    v_tasks iwd.task[];
BEGIN
    IF v_n < 2 OR EXISTS (
        SELECT 1 FROM jsonb_array_elements(tasks) e
        WHERE jsonb_typeof(e -> 'capturePoint') IS DISTINCT FROM 'string'
           OR jsonb_typeof(e -> 'externalId') IS DISTINCT FROM 'string') THEN
        RETURN NULL;
    END IF;
    BEGIN
        WITH p AS MATERIALIZED (
            SELECT x.ord, iwd._prepare_task(x.e, NULL, at) AS t
            FROM jsonb_array_elements(tasks) WITH ORDINALITY x(e, ord))
        -- each prepared task with its id and update time (jsonb_populate_record keeps the other fields)
        SELECT array_agg(jsonb_populate_record(p.t, jsonb_build_object('id', nextval('iwd.task_id_seq'),
                                                                      'updated_at', at)) ORDER BY p.ord)
        INTO v_tasks FROM p;
        -- the keys decide: when one is known already, repeated in the batch or taken concurrently (the
        -- insert waits for the other transaction), the unique violation undoes the whole block (no
        -- separate check beforehand: the insert finds all three)
        INSERT INTO iwd.task_key (capture_point, external_id, task_id)
        SELECT t.capture_point, t.external_id, t.id FROM unnest(v_tasks) t;
    EXCEPTION WHEN OTHERS THEN
        RETURN NULL;
    END;
    INSERT INTO iwd.task SELECT * FROM unnest(v_tasks);
    INSERT INTO iwd.task_document (task_id, document)
    SELECT t.id, iwd._document(t.subject, t.description, t.attributes) FROM unnest(v_tasks) t;
    INSERT INTO iwd.task_event (task_id, at, event, actor, status_before, status_after, detail)
    SELECT t.id, at, 'created', NULL, NULL, t.status, iwd._created_detail(t)
    FROM unnest(v_tasks) t;
    IF current_setting('iwd.notify', true) = 'event' THEN
        PERFORM pg_notify('iwd_task_event', t.id || ':created') FROM unnest(v_tasks) t;
    END IF;
    -- in input order (v_tasks is; ids ascend in it)
    RETURN iwd._tasks_json(v_tasks);
END $$;

-- Capture a JSON array of tasks, all or nothing; an error names the failing element's index.
CREATE FUNCTION iwd.create_tasks(tasks jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
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
    AS 'MODULE_PATHNAME', 'iwd_get_task' LANGUAGE C STABLE STRICT;

-- The keys whose values differ between two task documents.
CREATE FUNCTION iwd._changed_keys(before jsonb, after jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_agg(a.key ORDER BY a.key), '[]')
    FROM jsonb_each(after) a
    WHERE a.key NOT IN ('updatedAt') AND a.value IS DISTINCT FROM before -> a.key
$$;

-- Change a task's fields; re-classifies and re-scores when relevant fields change.
CREATE FUNCTION iwd.update_task(id bigint, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
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

-- An agent acts only on the tasks it holds: P0002 when the agent does not exist, 55000 when the task
-- (in status, assigned to assigned_to) is not assigned to it.
CREATE FUNCTION iwd._check_holder(task_id bigint, op text, agent text, status text, assigned_to text)
RETURNS void LANGUAGE plpgsql STABLE AS $$
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
-- the agent that did it, NULL for a supervisor's or the tenant's action).
CREATE FUNCTION iwd._transition(id bigint, op text, event text, actor text, detail jsonb,
                                hold_reason text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
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
    PERFORM iwd._event(id, v_now, event, actor, v_before, t.status, jsonb_strip_nulls(detail));
    RETURN iwd.task_json(t);
END $$;

-- Park a task (supervisor hold) until iwd.resume_task.
CREATE FUNCTION iwd.hold_task(id bigint, reason text DEFAULT NULL) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT iwd._transition(id, 'hold', 'held', NULL, jsonb_build_object('reason', reason),
                           coalesce(reason, 'held by supervisor'))
$$;

-- Return a held or errorHeld task to the queue (an errorHeld task is classified again first).
CREATE FUNCTION iwd.resume_task(id bigint) RETURNS jsonb
LANGUAGE plpgsql STRICT AS $$
DECLARE
    v_now timestamptz := iwd.now();
    t iwd.task := iwd._lock_task(id);
    n iwd.task;
BEGIN
    PERFORM iwd._check_transition(id, t.status, 'resume');
    IF t.status = 'held' THEN
        RETURN iwd._transition(id, 'resume', 'resumed', NULL, '{}');
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
    PERFORM iwd._event(id, v_now, 'resumed', NULL, t.status, n.status);
    RETURN iwd.task_json(n);
END $$;

-- Cancel an open task (terminal).
CREATE FUNCTION iwd.cancel_task(id bigint, reason text DEFAULT NULL) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT iwd._transition(id, 'cancel', 'canceled', NULL, jsonb_build_object('reason', reason))
$$;

-- Complete a task (terminal). With an agent: the task must be assigned to that agent (P0002 for an unknown
-- agent, 55000 for a task it does not hold); without: a supervisor's action, from any open status.
-- (C: one statement moves the row to iwd.task_closed and records the event; see extension/claim.c)
CREATE FUNCTION iwd.complete_task(id bigint, agent text DEFAULT NULL) RETURNS jsonb
AS 'MODULE_PATHNAME', 'iwd_complete_task' LANGUAGE C;

-- Reject a task (terminal), e.g. when the work cannot be done; agent as in complete_task.
CREATE FUNCTION iwd.reject_task(id bigint, agent text DEFAULT NULL, reason text DEFAULT NULL) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT iwd._transition(id, 'reject', 'rejected', agent, jsonb_build_object('reason', reason))
$$;

-- Bring a terminal task back: it is classified and scored again and re-enters the queue.
CREATE FUNCTION iwd.restart_task(id bigint) RETURNS jsonb
LANGUAGE plpgsql STRICT AS $$
DECLARE
    v_now timestamptz := iwd.now();
    t iwd.task := iwd._lock_task(id);
    v_before text := t.status;
    n iwd.task;
BEGIN
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
    PERFORM iwd._event(id, v_now, 'restarted', NULL, v_before, n.status);
    RETURN iwd.task_json(n);
END $$;

-- Set a task's priority (and business value); rules, aging and urgency still apply on top.
CREATE FUNCTION iwd.reprioritize_task(id bigint, priority int, business_value int DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := iwd.now();
    t iwd.task := iwd._lock_task(id);
    n iwd.task;
BEGIN
    PERFORM iwd._check_transition(id, t.status, 'reprioritize');
    IF priority IS NULL AND business_value IS NULL THEN
        RAISE EXCEPTION 'reprioritize needs a priority or a business value' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t.priority_override := coalesce(priority, t.priority_override);
    t.business_value_override := coalesce(business_value, t.business_value_override);
    n := iwd._rescore(t, v_now);
    n.updated_at := v_now;
    PERFORM iwd._save_task(t.status, n);
    PERFORM iwd._event(id, v_now, 'reprioritized', NULL, t.status, n.status,
                       jsonb_build_object('priority', jsonb_build_object('from', t.priority, 'to', n.priority),
                                          'businessValue', jsonb_build_object('from', t.business_value,
                                                                              'to', n.business_value)));
    RETURN iwd.task_json(n);
END $$;

-- Confirm a reservation made by iwd.next_task: the task stays with the agent until it is finished.
CREATE FUNCTION iwd.accept_task(id bigint, agent text) RETURNS jsonb
LANGUAGE plpgsql STRICT AS $$
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

-- ---------------------------------------------------------------------------------------------
-- The universal queue, search and history
-- ---------------------------------------------------------------------------------------------

-- A filter document as an SQL condition over alias t (values quoted as literals).
CREATE FUNCTION iwd._task_where(filter jsonb, default_statuses text[]) RETURNS text
LANGUAGE plpgsql STABLE AS $$
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
              AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(filter -> v_key) e WHERE jsonb_typeof(e) <> 'string') THEN
            v_values := ARRAY(SELECT jsonb_array_elements_text(filter -> v_key));
        ELSE
            RAISE EXCEPTION 'filter field "%" must be a string or an array of strings', v_key
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_key = 'status' THEN
            IF NOT v_values <@ ARRAY['new', 'queued', 'assigned', 'held', 'errorHeld', 'completed', 'canceled',
                                     'rejected', 'expired'] THEN
                RAISE EXCEPTION 'filter field "status" has an unknown status' USING ERRCODE = 'invalid_parameter_value',
                    DETAIL = 'Statuses: new, queued, assigned, held, errorHeld, completed, canceled, rejected, expired.';
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
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements_text(
                               CASE jsonb_typeof(filter -> 'status') WHEN 'array' THEN filter -> 'status'
                                    WHEN 'string' THEN jsonb_build_array(filter -> 'status') ELSE '[]' END) s
                             WHERE iwd.is_terminal(s))
                THEN 'iwd.task_all' ELSE 'iwd.task' END
$$;

-- Raise 22023 unless 1 <= lim <= 1000.
CREATE FUNCTION iwd._check_limit(lim int) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF lim IS NULL OR lim < 1 OR lim > 1000 THEN
        RAISE EXCEPTION 'limit must be between 1 and 1000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- The universal queue (Global Task List) in distribution order, filtered, with keyset pagination
-- ("afterId": the id of the last task of the previous page).
CREATE FUNCTION iwd.queue(filter jsonb DEFAULT '{}', lim int DEFAULT 50) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE AS $$
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
            ' AND (-t.priority::bigint, -t.business_value::bigint, coalesce(t.due_at, ''infinity''), t.created_at, t.id)'
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
LANGUAGE plpgsql STABLE AS $$
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
LANGUAGE plpgsql STABLE STRICT AS $$
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
LANGUAGE sql STABLE AS $$
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
-- The scheduler pass
-- ---------------------------------------------------------------------------------------------

-- One batch of each scheduler step at "at"; "more" tells whether a step filled its batch.
CREATE FUNCTION iwd._tick_batch(at timestamptz, batch int) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    n_act int; n_exp int; n_timeout int; n_overdue int; n_repri int;
BEGIN
    WITH c AS (SELECT id FROM iwd.task
               WHERE status = 'held' AND activation_at IS NOT NULL AND activation_at <= at AND hold_reason IS NULL
               ORDER BY activation_at LIMIT batch FOR UPDATE SKIP LOCKED),
         u AS (UPDATE iwd.task t SET status = 'queued', updated_at = at FROM c WHERE t.id = c.id RETURNING t.id),
         e AS (INSERT INTO iwd.task_event (task_id, at, event, status_before, status_after)
               SELECT u.id, at, 'activated', 'held', 'queued' FROM u RETURNING 1)
    SELECT count(*) INTO n_act FROM e;

    WITH c AS (SELECT id, assigned_to FROM iwd.task
               WHERE status = 'assigned' AND accepted_at IS NULL AND reserved_until <= at
               ORDER BY reserved_until LIMIT batch FOR UPDATE SKIP LOCKED),
         u AS (UPDATE iwd.task t SET status = 'queued', assigned_to = NULL, reserved_until = NULL, updated_at = at
               FROM c WHERE t.id = c.id RETURNING t.id, c.assigned_to),
         e AS (INSERT INTO iwd.task_event (task_id, at, event, actor, status_before, status_after)
               SELECT u.id, at, 'reservation_timeout', u.assigned_to, 'assigned', 'queued' FROM u RETURNING 1)
    SELECT count(*) INTO n_timeout FROM e;
    PERFORM iwd._count('reservation_timeouts', n_timeout);

    WITH c AS (SELECT id FROM iwd.task
               WHERE expires_at IS NOT NULL AND expires_at <= at AND status <> 'assigned'
               ORDER BY expires_at LIMIT batch FOR UPDATE SKIP LOCKED),
         d AS (DELETE FROM iwd.task t USING c WHERE t.id = c.id RETURNING t.*),
         i AS (INSERT INTO iwd.task_closed (
             id, external_id, capture_point, media_type, department, process, category, queue,
             customer_segment, priority, business_value, priority_override, business_value_override, subject,
             description, skills, attributes, status, created_at, aging_from, activation_at, due_at,
             expires_at, assigned_to, reserved_until, accepted_at, hold_reason, error_reason, completed_at,
             updated_at, reprioritize_at, overdue_flagged, classified_by, customer_id, product_type,
             product_subtype, requested_agent, requested_skill, source_created_at, source_due_at,
             source_process_type, result_code)
               SELECT
                   d.id, d.external_id, d.capture_point, d.media_type, d.department, d.process, d.category,
                   d.queue, d.customer_segment, d.priority, d.business_value, d.priority_override,
                   d.business_value_override, d.subject, d.description, d.skills, d.attributes, 'expired',
                   d.created_at, d.aging_from, d.activation_at, d.due_at, d.expires_at, d.assigned_to,
                   d.reserved_until, d.accepted_at, d.hold_reason, d.error_reason, at, at, d.reprioritize_at,
                   d.overdue_flagged, d.classified_by, d.customer_id, d.product_type, d.product_subtype,
                   d.requested_agent, d.requested_skill, d.source_created_at, d.source_due_at,
                   d.source_process_type, d.result_code
               FROM d),
         e AS (INSERT INTO iwd.task_event (task_id, at, event, status_before, status_after)
               SELECT d.id, at, 'expired', d.status, 'expired' FROM d RETURNING 1)
    SELECT count(*) INTO n_exp FROM e;

    WITH c AS (SELECT id FROM iwd.task
               WHERE NOT overdue_flagged AND due_at IS NOT NULL AND due_at < at
               ORDER BY due_at LIMIT batch FOR UPDATE SKIP LOCKED),
         u AS (UPDATE iwd.task t SET overdue_flagged = true FROM c WHERE t.id = c.id RETURNING t.id, t.status, t.due_at),
         e AS (INSERT INTO iwd.task_event (task_id, at, event, status_before, status_after, detail)
               SELECT u.id, at, 'overdue', u.status, u.status, jsonb_build_object('dueAt', iwd._ts(u.due_at))
               FROM u RETURNING 1)
    SELECT count(*) INTO n_overdue FROM e;

    -- reprioritization changes scores, not states: it writes no events (the schedule is the record)
    WITH c AS (SELECT t FROM iwd.task t
               WHERE reprioritize_at IS NOT NULL AND reprioritize_at <= at AND status <> 'assigned'
               ORDER BY reprioritize_at LIMIT batch FOR UPDATE SKIP LOCKED),
         r AS (SELECT (c.t).id AS id, s.priority, s.business_value, s.reprioritize_at
               FROM c, LATERAL iwd._rescore(c.t, at) s)
    UPDATE iwd.task t SET priority = r.priority, business_value = r.business_value, reprioritize_at = r.reprioritize_at
    FROM r WHERE t.id = r.id;
    GET DIAGNOSTICS n_repri = ROW_COUNT;

    IF n_act + n_exp + n_timeout + n_overdue > 0 AND current_setting('iwd.notify', true) = 'event' THEN
        PERFORM pg_notify('iwd_task_event', 'tick');
    END IF;
    RETURN jsonb_build_object('activated', n_act, 'expired', n_exp, 'reservationTimeouts', n_timeout,
                              'overdue', n_overdue, 'reprioritized', n_repri,
                              'more', greatest(n_act, n_exp, n_timeout, n_overdue, n_repri) >= batch);
END $$;

-- When the scheduler pass next has work (the earliest of the times _tick_batch compares with "at"); NULL when
-- nothing is due. Each step is one probe of its partial index; the tenant's worker reads it after its work.
CREATE FUNCTION iwd._next_due() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT least(
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
         WHERE reprioritize_at IS NOT NULL AND status <> 'assigned' ORDER BY reprioritize_at LIMIT 1))
$$;

-- Run one full scheduler pass at "at" (batches of iwd.batch_size) and return the counts.
CREATE FUNCTION iwd.tick(at timestamptz DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
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
