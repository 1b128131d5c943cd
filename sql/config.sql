-- iwd configuration: departments, processes, calendars, categories, rules and agents (JSON shapes,
-- upsert, get, list, delete) and the default configuration.

-- ---------------------------------------------------------------------------------------------
-- Configuration: JSON shapes, upsert, get, list, delete
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION iwd.department_json(d iwd.department) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT pg_catalog.jsonb_build_object('name', d.name, 'description', d.description)
$$;

CREATE FUNCTION iwd.process_json(p iwd.process) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT pg_catalog.jsonb_build_object('name', p.name, 'department', p.department, 'description', p.description)
$$;

CREATE FUNCTION iwd.calendar_json(c iwd.calendar) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT pg_catalog.jsonb_build_object('name', c.name, 'timeZone', c.time_zone,
                              'workStart', pg_catalog.to_char(c.work_start, 'HH24:MI'),
                              'workEnd', pg_catalog.to_char(c.work_end, 'HH24:MI'),
                              'workDays', pg_catalog.to_jsonb(c.work_days), 'holidays', pg_catalog.to_jsonb(c.holidays))
$$;

CREATE FUNCTION iwd.category_json(c iwd.category) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT pg_catalog.jsonb_build_object(
        'name', c.name, 'department', c.department, 'process', c.process, 'priority', c.priority,
        'businessValue', c.business_value, 'slaMinutes', c.sla_minutes, 'calendar', c.calendar,
        'skills', c.skills, 'queue', c.queue, 'mediaType', c.media_type,
        'reprioritize', CASE WHEN c.reprioritize_every_min IS NOT NULL THEN
            pg_catalog.jsonb_build_object('step', c.reprioritize_step, 'everyMinutes', c.reprioritize_every_min,
                               'max', c.reprioritize_max) END,
        'urgency', CASE WHEN c.urgency_within_min IS NOT NULL THEN
            pg_catalog.jsonb_build_object('withinMinutes', c.urgency_within_min, 'step', c.urgency_step) END)
        OPERATOR(pg_catalog.||) CASE WHEN c.service_level_seconds IS NOT NULL THEN
            pg_catalog.jsonb_build_object('serviceLevelSeconds', c.service_level_seconds) ELSE '{}' END
$$;

CREATE FUNCTION iwd.rule_json(r iwd.rule) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT pg_catalog.jsonb_build_object('kind', r.kind, 'name', r.name, 'order', r.ord, 'department', r.department,
                              'process', r.process, 'enabled', r.enabled, 'when', r.cond, 'set', r.effect)
$$;

CREATE FUNCTION iwd.agent_json(a iwd.agent) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT pg_catalog.jsonb_build_object('id', a.id, 'name', a.name, 'skills', a.skills, 'capacity', a.capacity,
                              'state', a.state)
$$;

-- Create or replace a department {"name","description"}.
CREATE FUNCTION iwd.upsert_department(department jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
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
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
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
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
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
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    c iwd.category;
    v_re jsonb := category -> 'reprioritize';
    v_ur jsonb := category -> 'urgency';
    v_department text := iwd._str(category, 'department', 'category');
    v_process text := iwd._str(category, 'process', 'category');
    v_calendar text := iwd._str(category, 'calendar', 'category');
BEGIN
    PERFORM iwd._check_object(category, 'category',
        '{name,department,process,priority,businessValue,slaMinutes,calendar,skills,queue,mediaType,'
        'reprioritize,urgency,serviceLevelSeconds}',
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
                              urgency_within_min, urgency_step, service_level_seconds, updated_at)
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
            iwd._int(category, 'serviceLevelSeconds', 'category', 1, 86400),
            now())
    ON CONFLICT (name) DO UPDATE SET department = EXCLUDED.department, process = EXCLUDED.process,
        priority = EXCLUDED.priority, business_value = EXCLUDED.business_value,
        sla_minutes = EXCLUDED.sla_minutes, calendar = EXCLUDED.calendar, skills = EXCLUDED.skills,
        queue = EXCLUDED.queue, media_type = EXCLUDED.media_type,
        reprioritize_step = EXCLUDED.reprioritize_step, reprioritize_every_min = EXCLUDED.reprioritize_every_min,
        reprioritize_max = EXCLUDED.reprioritize_max, urgency_within_min = EXCLUDED.urgency_within_min,
        urgency_step = EXCLUDED.urgency_step, service_level_seconds = EXCLUDED.service_level_seconds,
        updated_at = EXCLUDED.updated_at
    RETURNING * INTO c;
    RETURN iwd.category_json(c);
END $$;

-- Create or replace a rule {"kind","name","order","department","process","enabled","when","set"}.
CREATE FUNCTION iwd.upsert_rule(rule jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
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
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
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
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE AS $$
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
            LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
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
            LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
                SELECT coalesce(jsonb_agg(iwd.%1$s_json(x) ORDER BY %4$s), '[]') FROM iwd.%1$s x
            $$;
            COMMENT ON FUNCTION iwd.list_%2$s() IS 'Every %1$s, as a JSON array.';

            CREATE FUNCTION iwd.delete_%1$s(%3$s text) RETURNS jsonb
            LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE AS $$
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
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
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
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_agg(iwd.rule_json(x) ORDER BY x.kind,
                              CASE WHEN x.process IS NOT NULL THEN 2 WHEN x.department IS NOT NULL THEN 1 ELSE 0 END,
                              x.ord, x.name), '[]')
    FROM iwd.rule x WHERE list_rules.kind IS NULL OR x.kind = list_rules.kind
$$;

-- Delete a rule and return it; P0002 when none.
CREATE FUNCTION iwd.delete_rule(kind text, name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE AS $$
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
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
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
