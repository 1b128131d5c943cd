-- iwd core: configuration, tasks, events, lifecycle, queue and distribution.
\echo Use "CREATE EXTENSION iwd" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Configuration
-- ---------------------------------------------------------------------------------------------

CREATE TABLE iwd.department (
    name        text PRIMARY KEY CHECK (name <> ''),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE iwd.process (
    name        text PRIMARY KEY CHECK (name <> ''),
    department  text NOT NULL REFERENCES iwd.department (name) ON UPDATE CASCADE,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON iwd.process (department);

-- Business calendars: working hours per ISO weekday (1 = Monday) in a time zone, plus holidays.
CREATE TABLE iwd.calendar (
    name        text PRIMARY KEY CHECK (name <> ''),
    time_zone   text NOT NULL DEFAULT 'UTC',
    work_start  time NOT NULL DEFAULT '09:00',
    work_end    time NOT NULL DEFAULT '17:00',
    work_days   int[] NOT NULL DEFAULT '{1,2,3,4,5}',
    holidays    date[] NOT NULL DEFAULT '{}',
    CHECK (work_start < work_end),
    CHECK (work_days <@ ARRAY[1,2,3,4,5,6,7] AND cardinality(work_days) > 0)
);

CREATE TABLE iwd.category (
    name                   text PRIMARY KEY CHECK (name <> ''),
    department             text REFERENCES iwd.department (name) ON UPDATE CASCADE,
    process                text REFERENCES iwd.process (name) ON UPDATE CASCADE,
    priority               int NOT NULL DEFAULT 0,
    business_value         int NOT NULL DEFAULT 0,
    sla_minutes            int CHECK (sla_minutes > 0),
    calendar               text REFERENCES iwd.calendar (name) ON UPDATE CASCADE,
    skills                 jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(skills) = 'object'),
    queue                  text,
    media_type             text,
    reprioritize_step      int NOT NULL DEFAULT 0,
    reprioritize_every_min int CHECK (reprioritize_every_min > 0),
    reprioritize_max       int,
    urgency_within_min     int CHECK (urgency_within_min > 0),
    urgency_step           int NOT NULL DEFAULT 0,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- Classification and prioritization rules. "when" is a condition tree, "set" the effect
-- (see README, Rules). Prioritization rules run global -> department -> process, each by "ord".
CREATE TABLE iwd.rule (
    kind       text NOT NULL CHECK (kind IN ('classification', 'prioritization')),
    name       text NOT NULL CHECK (name <> ''),
    ord        int NOT NULL DEFAULT 0,
    department text,
    process    text,
    enabled    boolean NOT NULL DEFAULT true,
    cond       jsonb NOT NULL DEFAULT '{}',
    effect     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);

CREATE TABLE iwd.agent (
    id         text PRIMARY KEY CHECK (id <> ''),
    name       text,
    skills     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(skills) = 'object'),
    capacity   jsonb NOT NULL DEFAULT '{"workitem": 1}' CHECK (jsonb_typeof(capacity) = 'object'),
    state      text NOT NULL DEFAULT 'not_ready' CHECK (state IN ('ready', 'not_ready')),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------
-- Tasks. iwd.task holds open work only (new, queued, assigned, held, errorHeld): the claim path
-- stays small whatever the history. Terminal tasks move to iwd.task_closed in the same
-- transaction as their last transition; iwd.task_key keeps (capture_point, external_id) unique
-- across both so that re-submission is idempotent even after a task has been closed.
-- ---------------------------------------------------------------------------------------------

CREATE SEQUENCE iwd.task_id_seq;

CREATE TABLE iwd.task (
    id                  bigint PRIMARY KEY DEFAULT nextval('iwd.task_id_seq'),
    external_id         text NOT NULL,
    capture_point       text NOT NULL,
    media_type          text NOT NULL DEFAULT 'workitem',
    department          text,
    process             text,
    category            text,
    queue               text,
    customer_segment    text,
    priority            int NOT NULL DEFAULT 0,
    business_value      int NOT NULL DEFAULT 0,
    priority_override   int,
    business_value_override int,
    subject             text,
    description         text,
    skills              jsonb NOT NULL DEFAULT '{}',
    attributes          jsonb NOT NULL DEFAULT '{}',
    status              text NOT NULL,
    created_at          timestamptz NOT NULL,
    aging_from          timestamptz NOT NULL,
    activation_at       timestamptz,
    due_at              timestamptz,
    expires_at          timestamptz,
    assigned_to         text,
    reserved_until      timestamptz,
    accepted_at         timestamptz,
    hold_reason         text,
    error_reason        text,
    completed_at        timestamptz,
    updated_at          timestamptz NOT NULL,
    reprioritize_at     timestamptz,
    overdue_flagged     boolean NOT NULL DEFAULT false,
    classified_by       text,
    customer_id         text,
    product_type        text,
    product_subtype     text,
    requested_agent     text,
    requested_skill     text,
    source_created_at   timestamptz,
    source_due_at       timestamptz,
    source_process_type text,
    result_code         text
) WITH (fillfactor = 80);

CREATE TABLE iwd.task_closed (LIKE iwd.task INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE iwd.task_closed ADD PRIMARY KEY (id);

CREATE TABLE iwd.task_key (
    capture_point text NOT NULL,
    external_id   text NOT NULL,
    task_id       bigint NOT NULL,
    PRIMARY KEY (capture_point, external_id)
);

-- The universal queue: only queued rows, in distribution order.
CREATE INDEX task_queue_idx ON iwd.task
    (priority DESC, business_value DESC, due_at ASC NULLS LAST, created_at, id) WHERE status = 'queued';
CREATE INDEX task_assigned_idx ON iwd.task (assigned_to) WHERE status = 'assigned';
CREATE INDEX task_reserved_idx ON iwd.task (reserved_until) WHERE status = 'assigned' AND accepted_at IS NULL;
CREATE INDEX task_activation_idx ON iwd.task (activation_at) WHERE status = 'held' AND activation_at IS NOT NULL;
CREATE INDEX task_expires_idx ON iwd.task (expires_at) WHERE expires_at IS NOT NULL;
-- assigned work is not reprioritized (its place in the queue does not matter while an agent has it), so a
-- claim does not add an entry here
CREATE INDEX task_reprioritize_idx ON iwd.task (reprioritize_at)
    WHERE reprioritize_at IS NOT NULL AND status <> 'assigned';
CREATE INDEX task_due_idx ON iwd.task (due_at) WHERE NOT overdue_flagged AND due_at IS NOT NULL;
CREATE INDEX task_closed_completed_idx ON iwd.task_closed (completed_at);

-- The full-text search document of every task, open or closed (subject, description and attribute
-- values). It is written when those change, never on a status change, so claims and completions do no
-- text-search work, and it stays put when the task moves between iwd.task and iwd.task_closed.
CREATE TABLE iwd.task_document (
    task_id  bigint PRIMARY KEY,
    document tsvector NOT NULL
);
CREATE INDEX task_document_idx ON iwd.task_document USING gin (document);

-- Every task, open or closed.
CREATE VIEW iwd.task_all AS
    SELECT * FROM iwd.task
    UNION ALL
    SELECT * FROM iwd.task_closed;

-- ---------------------------------------------------------------------------------------------
-- Event history: append-only, written in the same transaction as the change it records.
-- It feeds the Data Mart (iwd_dm), webhooks and audit.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE iwd.task_event (
    id            bigserial PRIMARY KEY,
    task_id       bigint NOT NULL,
    at            timestamptz NOT NULL,
    event         text NOT NULL,
    actor         text,
    status_before text,
    status_after  text,
    detail        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX task_event_task_idx ON iwd.task_event (task_id, id);

-- Trigger: refuse the change (42501) with the message and detail given as the trigger's arguments.
CREATE FUNCTION iwd.forbid_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'insufficient_privilege', DETAIL = TG_ARGV[1];
END $$;

CREATE TRIGGER task_event_append_only BEFORE UPDATE OR DELETE ON iwd.task_event
    FOR EACH ROW EXECUTE FUNCTION iwd.forbid_change(
        'iwd.task_event is append-only',
        'Events are the audit trail and the Data Mart input; they are never changed.');
CREATE TRIGGER task_event_no_truncate BEFORE TRUNCATE ON iwd.task_event
    FOR EACH STATEMENT EXECUTE FUNCTION iwd.forbid_change(
        'iwd.task_event is append-only',
        'Events are the audit trail and the Data Mart input; they are never changed.');

-- ---------------------------------------------------------------------------------------------
-- C functions (iwd.so)
-- ---------------------------------------------------------------------------------------------

-- The iwd clock: iwd.simulated_time when set, else the transaction start time.
CREATE FUNCTION iwd.now() RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'iwd_now' LANGUAGE C STABLE PARALLEL SAFE;

-- Validate, classify and score a task document (current IS NULL: a new task). Writes nothing.
CREATE FUNCTION iwd._prepare_task(input jsonb, current iwd.task, at timestamptz) RETURNS iwd.task
    AS 'MODULE_PATHNAME', 'iwd_prepare_task' LANGUAGE C STABLE;

-- The task with priority, business value and next reprioritization time recomputed at "at".
CREATE FUNCTION iwd._rescore(task iwd.task, at timestamptz) RETURNS iwd.task
    AS 'MODULE_PATHNAME', 'iwd_rescore' LANGUAGE C STABLE STRICT;

-- Raise 22023 when a rule's condition or effect is invalid.
CREATE FUNCTION iwd._validate_rule(kind text, cond jsonb, effect jsonb) RETURNS void
    AS 'MODULE_PATHNAME', 'iwd_validate_rule' LANGUAGE C STABLE STRICT;

-- Statement trigger: invalidate every backend's cached configuration.
CREATE FUNCTION iwd._config_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'iwd_config_changed' LANGUAGE C;

-- The status an operation leads to, or SQLSTATE 55000 naming the current and requested state.
CREATE FUNCTION iwd._check_transition(id bigint, status text, op text) RETURNS text
    AS 'MODULE_PATHNAME', 'iwd_check_transition' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- completed, canceled, rejected and expired are terminal.
CREATE FUNCTION iwd.is_terminal(status text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'iwd_is_terminal' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Does an agent with skill levels "agent" meet every level in "required"?
CREATE FUNCTION iwd.skills_met(required jsonb, agent jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'iwd_skills_met' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION iwd.routing_key(skills jsonb) RETURNS text
    AS 'MODULE_PATHNAME', 'iwd_routing_key' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- The claim index: the universal queue's order within buckets of the first required skill and its
-- level, so that an agent reads only the heads of the buckets it qualifies for (see extension/claim.c).
CREATE INDEX task_claim_idx ON iwd.task
    (iwd.routing_key(skills), priority DESC, business_value DESC, due_at ASC NULLS LAST, created_at, id)
    WHERE status = 'queued';

-- The routing key registry: every routing key a task has had, so that a claim reads only the agent's
-- buckets that may hold work. Written by the trigger below in the transaction that writes the task;
-- never changed or emptied (it stays as small as skills x levels and skill pairs).
CREATE TABLE iwd.routing_keys (
    key text PRIMARY KEY
);
CREATE FUNCTION iwd._note_routing_key() RETURNS trigger
    AS 'MODULE_PATHNAME', 'iwd_note_routing_key' LANGUAGE C;
CREATE TRIGGER task_routing_key BEFORE INSERT OR UPDATE OF skills ON iwd.task
    FOR EACH ROW EXECUTE FUNCTION iwd._note_routing_key();
CREATE TRIGGER routing_keys_grow_only BEFORE UPDATE OR DELETE ON iwd.routing_keys
    FOR EACH ROW EXECUTE FUNCTION iwd.forbid_change(
        'iwd.routing_keys only grows',
        'Sessions remember which routing keys exist; a removed key would hide its tasks from claims.');
CREATE TRIGGER routing_keys_no_truncate BEFORE TRUNCATE ON iwd.routing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION iwd.forbid_change(
        'iwd.routing_keys only grows',
        'Sessions remember which routing keys exist; a removed key would hide its tasks from claims.');

-- Reserve the next best task for an agent (NULL when nothing fits).
-- The claim must walk the claim index in order whatever the statistics say (after a bulk load they
-- may describe a small table, and a sort of a whole skill bucket would be chosen): the plan settings
-- below leave the planner only that path (the merge of the few candidates is still sorted), and match
-- the agent's buckets with the routing key registry by hashing (a nested loop would compare every
-- bucket with every key); the lateral read of each bucket stays a nested loop, the only way to run it. With
-- enable_sort off every plan looks expensive, so JIT is turned off: compiling would cost far more
-- than the claim itself.
CREATE FUNCTION iwd.next_task(agent text, reserve_seconds int DEFAULT 30) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'iwd_next_task' LANGUAGE C VOLATILE STRICT
    SET enable_sort = off SET enable_bitmapscan = off SET enable_nestloop = off SET jit = off;

-- Cumulative counters of this database since server start.
CREATE FUNCTION iwd._counters(OUT claims bigint, OUT reservation_timeouts bigint)
    AS 'MODULE_PATHNAME', 'iwd_counters' LANGUAGE C VOLATILE;

CREATE FUNCTION iwd._count(kind text, n bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'iwd_count' LANGUAGE C VOLATILE STRICT;

CREATE TRIGGER category_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON iwd.category
    FOR EACH STATEMENT EXECUTE FUNCTION iwd._config_changed();
CREATE TRIGGER rule_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON iwd.rule
    FOR EACH STATEMENT EXECUTE FUNCTION iwd._config_changed();
CREATE TRIGGER calendar_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON iwd.calendar
    FOR EACH STATEMENT EXECUTE FUNCTION iwd._config_changed();

-- Rules written with plain SQL are validated like those written through iwd.upsert_rule().
CREATE FUNCTION iwd.validate_rule_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM iwd._validate_rule(NEW.kind, NEW.cond, NEW.effect);
    RETURN NEW;
END $$;

CREATE TRIGGER rule_valid BEFORE INSERT OR UPDATE ON iwd.rule
    FOR EACH ROW EXECUTE FUNCTION iwd.validate_rule_row();

-- pg_dump dumps the rows of extension tables only when asked: every table that holds a tenant's data
-- (and the sequences that number it) is registered, so that a logical backup restores everything.
-- iwd.routing_keys is not: restoring the rows of iwd.task fills it again through its trigger (dumped as
-- well, its rows could meet those written by the trigger, in whichever order pg_restore loads them).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['iwd.department', 'iwd.process', 'iwd.calendar', 'iwd.category', 'iwd.rule', 'iwd.agent',
                  'iwd.task', 'iwd.task_closed', 'iwd.task_key', 'iwd.task_document', 'iwd.task_event',
                  'iwd.task_id_seq', 'iwd.task_event_id_seq'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(t::regclass, '');
    END LOOP;
END $$;
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

-- A string member of doc (NULL when absent or null), or 22023 naming it.
CREATE FUNCTION iwd._str(doc jsonb, key text, what text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF coalesce(jsonb_typeof(doc -> key), 'null') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION '% field "%" must be a string', what, key USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF doc ->> key = '' THEN
        RAISE EXCEPTION '% field "%" must not be empty', what, key USING ERRCODE = 'invalid_parameter_value';
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

-- An object member of doc mapping names to integer levels in [0, hi] (NULL when absent), or 22023.
CREATE FUNCTION iwd._levels(doc jsonb, key text, what text, hi int) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
BEGIN
    IF coalesce(jsonb_typeof(doc -> key), 'null') = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(doc -> key) <> 'object' THEN
        RAISE EXCEPTION '% field "%" must be an object of levels', what, key
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k IN SELECT jsonb_object_keys(doc -> key) LOOP
        IF k = '' THEN
            RAISE EXCEPTION '% field "%" has an empty name', what, key USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM iwd._int(doc -> key, k, format('%s %s', what, key), 0, hi);
        IF jsonb_typeof(doc -> key -> k) <> 'number' THEN
            RAISE EXCEPTION '% field "%.%" must be an integer', what, key, k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    RETURN doc -> key;
END $$;

-- Raise P0002 for an object that does not exist.
CREATE FUNCTION iwd._not_found(what text, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF what = 'task' THEN
        RAISE EXCEPTION 'task % does not exist', name USING ERRCODE = 'no_data_found';
    END IF;
    RAISE EXCEPTION '% "%" does not exist', what, name USING ERRCODE = 'no_data_found';
END $$;

-- A timestamp in the REST shape: ISO 8601 in UTC with a "Z".
CREATE FUNCTION iwd._ts(t timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC',
                   CASE WHEN extract(microseconds FROM t)::bigint % 1000000 = 0
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
    SELECT jsonb_build_object('name', d.name, 'description', d.description)
$$;

CREATE FUNCTION iwd.process_json(p iwd.process) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('name', p.name, 'department', p.department, 'description', p.description)
$$;

CREATE FUNCTION iwd.calendar_json(c iwd.calendar) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('name', c.name, 'timeZone', c.time_zone,
                              'workStart', to_char(c.work_start, 'HH24:MI'), 'workEnd', to_char(c.work_end, 'HH24:MI'),
                              'workDays', to_jsonb(c.work_days), 'holidays', to_jsonb(c.holidays))
$$;

CREATE FUNCTION iwd.category_json(c iwd.category) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'name', c.name, 'department', c.department, 'process', c.process, 'priority', c.priority,
        'businessValue', c.business_value, 'slaMinutes', c.sla_minutes, 'calendar', c.calendar,
        'skills', c.skills, 'queue', c.queue, 'mediaType', c.media_type,
        'reprioritize', CASE WHEN c.reprioritize_every_min IS NOT NULL THEN
            jsonb_build_object('step', c.reprioritize_step, 'everyMinutes', c.reprioritize_every_min,
                               'max', c.reprioritize_max) END,
        'urgency', CASE WHEN c.urgency_within_min IS NOT NULL THEN
            jsonb_build_object('withinMinutes', c.urgency_within_min, 'step', c.urgency_step) END)
$$;

CREATE FUNCTION iwd.rule_json(r iwd.rule) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('kind', r.kind, 'name', r.name, 'order', r.ord, 'department', r.department,
                              'process', r.process, 'enabled', r.enabled, 'when', r.cond, 'set', r.effect)
$$;

CREATE FUNCTION iwd.agent_json(a iwd.agent) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', a.id, 'name', a.name, 'skills', a.skills, 'capacity', a.capacity,
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
    VALUES (iwd._str(department, 'name', 'department'), iwd._str(department, 'description', 'department'))
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
    VALUES (iwd._str(process, 'name', 'process'), v_department, iwd._str(process, 'description', 'process'))
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
            coalesce(iwd._levels(category, 'skills', 'category', 10), '{}'),
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
            coalesce(iwd._levels(agent, 'skills', 'agent', 10), '{}'),
            coalesce(iwd._levels(agent, 'capacity', 'agent', 1000), '{"workitem": 1}'),
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

-- The search document of a task's text.
CREATE FUNCTION iwd._document(subject text, description text, attributes jsonb) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsvector('simple', coalesce(subject, '') || ' ' || coalesce(description, ''))
           || jsonb_to_tsvector('simple', coalesce(attributes, '{}'), '["string", "numeric"]')
$$;

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
    SELECT jsonb_strip_nulls(jsonb_build_object('priority', t.priority, 'businessValue', t.business_value,
                                                'category', t.category, 'errorReason', t.error_reason))
$$;

-- Create one task (see create_task) and return it with "created" telling whether it is new.
CREATE FUNCTION iwd._create_task(task jsonb, at timestamptz, OUT created boolean, OUT result jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    t iwd.task;
    v_id bigint;
BEGIN
    created := false;
    IF jsonb_typeof(task -> 'capturePoint') = 'string' AND jsonb_typeof(task -> 'externalId') = 'string' THEN
        SELECT k.task_id INTO v_id FROM iwd.task_key k
        WHERE k.capture_point = task ->> 'capturePoint' AND k.external_id = task ->> 'externalId';
        IF FOUND THEN
            result := iwd.get_task(v_id);
            RETURN;
        END IF;
    END IF;
    t := iwd._prepare_task(task, NULL, at);
    t.id := nextval('iwd.task_id_seq');
    t.updated_at := at;
    -- the key decides between concurrent submissions of the same work: the loser returns the winner's task
    INSERT INTO iwd.task_key (capture_point, external_id, task_id) VALUES (t.capture_point, t.external_id, t.id)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT k.task_id INTO v_id FROM iwd.task_key k
        WHERE k.capture_point = t.capture_point AND k.external_id = t.external_id;
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
    IF current_setting('iwd.notify', true) = 'event' THEN
        PERFORM pg_notify('iwd_task_event', t.id || ':created');
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

-- Apply a simple transition: check it, set the status, clear the reservation, record the event.
CREATE FUNCTION iwd._transition(id bigint, op text, event text, actor text, detail jsonb,
                                hold_reason text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := iwd.now();
    t iwd.task := iwd._lock_task(id);
    v_before text := t.status;
BEGIN
    t.status := iwd._check_transition(id, t.status, op);
    IF op IN ('complete', 'reject') AND actor IS NOT NULL AND t.assigned_to IS NOT NULL AND t.assigned_to <> actor THEN
        RAISE EXCEPTION 'cannot % task %: it is assigned to "%"', op, id, t.assigned_to
            USING ERRCODE = 'object_not_in_prerequisite_state';
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

-- Complete a task (terminal); agent, when given, must be the one it is assigned to.
-- (C: one statement moves the row to iwd.task_closed and records the event; see extension/claim.c)
CREATE FUNCTION iwd.complete_task(id bigint, agent text DEFAULT NULL) RETURNS jsonb
AS 'MODULE_PATHNAME', 'iwd_complete_task' LANGUAGE C;

-- Reject a task (terminal), e.g. when the work cannot be done.
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
    last_event_id bigint NOT NULL DEFAULT 0
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

CREATE TABLE iwd_dm.task_event_fact (
    event_id      bigint PRIMARY KEY,
    task_id       bigint NOT NULL,
    at            timestamptz NOT NULL,
    event         text NOT NULL,
    actor         text,
    status_before text,
    status_after  text,
    detail        jsonb NOT NULL
);
CREATE INDEX ON iwd_dm.task_event_fact (task_id);
CREATE INDEX ON iwd_dm.task_event_fact (at);

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
                UNIQUE NULLS NOT DISTINCT (interval_start, department, process, category, queue, media_type,
                                           customer_segment)
            )$t$, lvl);
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Time
-- ---------------------------------------------------------------------------------------------

-- The reporting time zone (iwd_dm.time_zone, default UTC).
CREATE FUNCTION iwd_dm.time_zone() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('iwd_dm.time_zone', true), ''), 'UTC')
$$;

-- The start of the interval of a level that contains t, aligned in the reporting time zone
-- (weeks start on Monday).
CREATE FUNCTION iwd_dm.interval_start(level text, t timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    tz text := iwd_dm.time_zone();
    local timestamp := t AT TIME ZONE tz;
BEGIN
    RETURN CASE level
        WHEN '15min' THEN (date_trunc('hour', local) + floor(extract(minute FROM local) / 15) * interval '15 minutes')
        WHEN 'hour' THEN date_trunc('hour', local)
        WHEN 'day' THEN date_trunc('day', local)
        WHEN 'week' THEN date_trunc('week', local)
        WHEN 'month' THEN date_trunc('month', local)
    END AT TIME ZONE tz;
END $$;

-- The end (exclusive) of the interval of a level that starts at s.
CREATE FUNCTION iwd_dm.interval_end(level text, s timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE STRICT AS $$
    SELECT ((s AT TIME ZONE iwd_dm.time_zone()) + CASE level WHEN '15min' THEN interval '15 minutes'
        WHEN 'hour' THEN interval '1 hour' WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '1 week'
        WHEN 'month' THEN interval '1 month' END) AT TIME ZONE iwd_dm.time_zone()
$$;

-- ---------------------------------------------------------------------------------------------
-- Loading
-- ---------------------------------------------------------------------------------------------

-- Recompute the facts of these tasks (ids may repeat) from their whole history and current row. A
-- batch's few thousand tasks are looked up by index; the planner is given the ids themselves only for
-- a larger load (then it scans once with the ids hashed), as estimating each id costs more than the
-- lookups of a small batch. Into an empty table (a load from scratch), rows are inserted without the
-- conflict check.
CREATE FUNCTION iwd_dm._refresh_task_facts(ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    large_batch constant int := 20000;  -- ids (events), above which the planner sees them
BEGIN
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
    CASE WHEN EXISTS (SELECT 1 FROM iwd_dm.task_fact) THEN $c$
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
END $$;

-- Mark dirty every interval of every level between two times.
CREATE FUNCTION iwd_dm._mark_dirty(first_at timestamptz, last_at timestamptz) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO iwd_dm.dirty (level, interval_start)
    SELECT DISTINCT l.level, iwd_dm.interval_start(l.level, g)
    FROM (VALUES ('15min', interval '15 minutes'), ('hour', interval '1 hour'), ('day', interval '1 day'),
                 ('week', interval '1 week'), ('month', interval '1 month')) l(level, step)
    CROSS JOIN LATERAL generate_series(iwd_dm.interval_start(l.level, first_at), last_at, l.step) g
    WHERE first_at IS NOT NULL AND last_at IS NOT NULL
    ON CONFLICT DO NOTHING
$$;

-- Load one batch of events (the gaps first, then after the watermark): facts of the touched tasks,
-- dirty intervals of every level from each touched task's creation to now. Returns the events loaded.
CREATE FUNCTION iwd_dm._load_batch(batch int) RETURNS int
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    mark bigint;
    loaded int;
    new_max bigint;
    loaded_after_mark bigint;
    touched bigint[];
    first_at timestamptz;
    last_at timestamptz;
    prev_last_at timestamptz;
BEGIN
    -- one loader at a time; concurrent runs wait here rather than interleave
    PERFORM pg_advisory_xact_lock(hashtext('iwd_dm load'));
    SELECT last_event_id INTO mark FROM iwd_dm.watermark;
    SELECT max(at) INTO prev_last_at FROM iwd_dm.task_event_fact;
    -- gaps older than any transaction can be are closed: their ids were rolled back
    DELETE FROM iwd_dm.event_gap WHERE seen_at < clock_timestamp() - interval '15 minutes';
    -- Events after the watermark cannot have been loaded, unless the facts were restored without their
    -- watermark: only then, and for the gaps, does the insert check each event for a conflict.
    EXECUTE format($q$
        WITH gap_events AS (
            INSERT INTO iwd_dm.task_event_fact (event_id, task_id, at, event, actor, status_before, status_after,
                                                detail)
            SELECT e.id, e.task_id, e.at, e.event, e.actor, e.status_before, e.status_after, e.detail
            FROM iwd_dm.event_gap g JOIN iwd.task_event e ON e.id BETWEEN g.from_id AND g.to_id
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id, task_id, at),
        new_events AS (
            INSERT INTO iwd_dm.task_event_fact (event_id, task_id, at, event, actor, status_before, status_after,
                                                detail)
            SELECT e.id, e.task_id, e.at, e.event, e.actor, e.status_before, e.status_after, e.detail
            FROM iwd.task_event e WHERE e.id > $1 ORDER BY e.id LIMIT $2
            %s
            RETURNING event_id, task_id, at)
        SELECT count(*), count(*) FILTER (WHERE event_id > $1), max(event_id), array_agg(task_id), min(at), max(at)
        FROM (SELECT * FROM gap_events UNION ALL SELECT * FROM new_events) ins
        $q$, CASE WHEN EXISTS (SELECT 1 FROM iwd_dm.task_event_fact WHERE event_id > mark)
                  THEN 'ON CONFLICT (event_id) DO NOTHING' END)
    INTO loaded, loaded_after_mark, new_max, touched, first_at, last_at
    USING mark, batch;
    IF loaded = 0 THEN
        RETURN 0;
    END IF;
    -- remember the gaps below the new watermark, forget the filled ones
    IF new_max > mark THEN
        -- as many events loaded above the mark as there are ids up to the new one: no gap to look for
        IF loaded_after_mark < new_max - mark THEN
            INSERT INTO iwd_dm.event_gap (from_id, to_id)
            SELECT id + 1, next_id - 1
            FROM (SELECT event_id AS id, lead(event_id) OVER (ORDER BY event_id) AS next_id
                  FROM iwd_dm.task_event_fact WHERE event_id >= mark AND event_id <= new_max) s
            WHERE next_id > id + 1 AND id + 1 > mark
            ON CONFLICT DO NOTHING;
        END IF;
        UPDATE iwd_dm.watermark SET last_event_id = new_max;
    END IF;
    DELETE FROM iwd_dm.event_gap g
    WHERE (SELECT count(*) FROM iwd_dm.task_event_fact f WHERE f.event_id BETWEEN g.from_id AND g.to_id)
          = g.to_id - g.from_id + 1;
    PERFORM iwd_dm._refresh_task_facts(touched);
    -- an event changes its task from the event's time on, so every interval from there to the latest
    -- event is dirty; so is every interval the latest event time moved over (their backlogs are new)
    PERFORM iwd_dm._mark_dirty(least(first_at, prev_last_at), greatest(last_at, prev_last_at));
    RETURN loaded;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Aggregation
-- ---------------------------------------------------------------------------------------------

-- The select list q, mask of time expression t: its local quarter hour in time zone tz (a timestamp
-- without time zone, so that every level's interval is a date_trunc of it), and the levels whose
-- range [$1[i], $2[i]) holds t, as bit i - 1.
CREATE FUNCTION iwd_dm._quarter_sql(t text, tz text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('date_bin(''15 minutes'', (%1$s) AT TIME ZONE %2$L, timestamp ''2000-01-03'') AS q, ', t, tz)
           || string_agg(format('CASE WHEN (%1$s) >= $1[%2$s] AND (%1$s) < $2[%2$s] THEN %3$s ELSE 0 END', t, i,
                                1 << (i - 1)), ' | ') || ' AS mask'
    FROM generate_series(1, 5) i
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
-- One scan of the facts serves every level: the fact rows are hashed into flows per grouping
-- (department … customer_segment), local quarter hour (every interval of every level is a union of
-- those) and the set of levels whose range holds the row; each level's flows are sums of those
-- (averages are sums over counts). Only then are the groupings numbered, and the running sums sort
-- (level, number, interval): sorting the facts on six text columns in the database collation, once
-- per level, cost more than everything else together. The number is attached with a hash join on
-- (column IS NULL, coalesce(column, '')) pairs, which is equality with NULLs equal. Rows are inserted
-- in the order of each aggregate's unique index so that each index page is visited once.
-- (JIT compilation of these large statements costs more than it saves. The planner cannot estimate
-- the twelve-column join nor the number of flows: it would sort both sides for a merge join rather
-- than hash a few hundred groupings, and group the facts by sorting them on text rather than hash.)
CREATE FUNCTION iwd_dm._aggregate_intervals(picked_levels text[], picked_starts timestamptz[]) RETURNS void
LANGUAGE plpgsql SET jit = off SET enable_mergejoin = off SET enable_sort = off AS $$
DECLARE
    tz text := iwd_dm.time_zone();
    levels constant text[] := ARRAY['15min', 'hour', 'day', 'week', 'month'];
    g constant text := 'department, process, category, queue, media_type, customer_segment';
    same_grouping text := (SELECT string_agg(format('(f.%1$s IS NULL) = (n.%1$s IS NULL) AND '
                                                    'coalesce(f.%1$s, '''') = coalesce(n.%1$s, '''')', c), ' AND ')
                           FROM unnest(string_to_array(g, ', ')) c);
    lo timestamptz[];
    hi timestamptz[];
    present int[];
    open_at_lo text := '';
    inserts text := '';
    i int;
BEGIN
    SELECT array_agg(b.lo ORDER BY l.i), array_agg(b.hi ORDER BY l.i),
           array_agg(l.i ORDER BY l.i) FILTER (WHERE b.lo IS NOT NULL)
    INTO lo, hi, present
    FROM unnest(levels) WITH ORDINALITY l(level, i)
    LEFT JOIN (SELECT p.level, min(p.s) AS lo, iwd_dm.interval_end(p.level, max(p.s)) AS hi
               FROM unnest(picked_levels, picked_starts) p(level, s) GROUP BY p.level) b USING (level);
    IF present IS NULL THEN
        RETURN;
    END IF;
    FOREACH i IN ARRAY present LOOP
        EXECUTE format('DELETE FROM iwd_dm.agg_%s WHERE interval_start = ANY ($1)', levels[i])
        USING (SELECT array_agg(s) FROM unnest(picked_levels, picked_starts) p(level, s) WHERE level = levels[i]);
        open_at_lo := open_at_lo || format($q$%1$s
                SELECT %2$s AS lvl, %3$s, (due_at IS NOT NULL AND greatest(created_at, due_at) < $1[%2$s])::int AS po
                FROM iwd_dm.task_fact
                WHERE created_at < $1[%2$s] AND (finished_at IS NULL OR finished_at >= $1[%2$s])$q$,
            CASE WHEN open_at_lo = '' THEN '' ELSE E'\n                UNION ALL' END, i, g);
        inserts := inserts || format($q$,
        ins_%1$s AS (
            INSERT INTO iwd_dm.agg_%1$s
            SELECT b, department, process, category, queue, media_type, customer_segment, created, assigned,
                   completed, canceled, rejected, expired, overdue, in_sla, backlog_end, pending_overdue,
                   avg_age_s, max_age_s, avg_queue_s, avg_handle_s, value
            FROM result WHERE lvl = %2$s
            ORDER BY b, department COLLATE "C", process COLLATE "C", category COLLATE "C", queue COLLATE "C",
                     media_type COLLATE "C", customer_segment COLLATE "C")$q$, levels[i], i);
    END LOOP;
    EXECUTE format($q$
        WITH fine AS MATERIALIZED (
            SELECT %1$s, q, mask,
                   sum(created) AS created, sum(assigned) AS assigned, sum(completed) AS completed,
                   sum(canceled) AS canceled, sum(rejected) AS rejected, sum(expired) AS expired,
                   sum(overdue) AS overdue, sum(in_sla) AS in_sla, sum(backlog_delta) AS backlog_delta,
                   sum(po_delta) AS po_delta, sum(age_s) AS sum_age_s, count(age_s) AS n_age_s,
                   max(age_s) AS max_age_s, sum(queue_s) AS sum_queue_s, count(queue_s) AS n_queue_s,
                   sum(handle_s) AS sum_handle_s, count(handle_s) AS n_handle_s, sum(value) AS value
            FROM (
                SELECT %1$s, %3$s, 1 AS created, 0 AS assigned, 0 AS completed, 0 AS canceled, 0 AS rejected,
                       0 AS expired, 0 AS overdue, 0 AS in_sla, 1 AS backlog_delta, 0 AS po_delta,
                       NULL::float8 AS age_s, NULL::float8 AS queue_s, NULL::float8 AS handle_s, 0 AS value
                FROM iwd_dm.task_fact WHERE created_at >= $3 AND created_at < $4
                UNION ALL
                SELECT %1$s, %4$s, 0, 0, (status = 'completed')::int, (status = 'canceled')::int,
                       (status = 'rejected')::int, (status = 'expired')::int, overdue::int, completed_in_sla::int, -1,
                       -(due_at IS NOT NULL AND finished_at >= greatest(created_at, due_at))::int,
                       CASE WHEN status = 'completed' THEN age_s END, CASE WHEN status = 'completed' THEN queue_s END,
                       CASE WHEN status = 'completed' THEN handle_s END,
                       CASE WHEN status = 'completed' THEN business_value ELSE 0 END
                FROM iwd_dm.task_fact WHERE finished_at >= $3 AND finished_at < $4
                UNION ALL
                SELECT %1$s, %5$s, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, NULL, NULL, NULL, 0
                FROM iwd_dm.task_fact
                WHERE due_at IS NOT NULL AND greatest(created_at, due_at) >= $3 AND greatest(created_at, due_at) < $4
                  AND (finished_at IS NULL OR finished_at >= greatest(created_at, due_at))
                UNION ALL
                -- each reservation's task by its key (OFFSET 0 keeps the planner from hashing all the
                -- facts for the few reservations of an intraday run)
                SELECT f.department, f.process, f.category, f.queue, f.media_type, f.customer_segment, %6$s,
                       0, 1, 0, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL, 0
                FROM iwd_dm.task_event_fact x
                CROSS JOIN LATERAL (SELECT department, process, category, queue, media_type, customer_segment
                                    FROM iwd_dm.task_fact WHERE task_id = x.task_id OFFSET 0) f
                WHERE x.event = 'reserved' AND x.at >= $3 AND x.at < $4) r
            WHERE mask <> 0
            GROUP BY %1$s, q, mask),
        open_at_lo AS MATERIALIZED (
            -- per level: the tasks open at its first interval's start, the stocks' starting values
            SELECT lvl, %1$s, count(*) AS backlog_delta, sum(po) AS po_delta
            FROM (%7$s) o
            GROUP BY lvl, %1$s),
        groupings AS MATERIALIZED (
            SELECT row_number() OVER () AS gid, * FROM (SELECT %1$s FROM fine UNION SELECT %1$s FROM open_at_lo) d),
        picked AS (
            SELECT array_position($5::text[], p.level) AS lvl, p.s FROM unnest($6::text[], $7::timestamptz[]) p(level, s)),
        flows AS MATERIALIZED (
            -- per level, grouping and interval: the sums of the quarter hours, and the open tasks at the
            -- level's first interval (they add to the stocks only)
            SELECT lvl, gid, b, sum(created)::bigint AS created, sum(assigned)::bigint AS assigned,
                   sum(completed)::bigint AS completed, sum(canceled)::bigint AS canceled,
                   sum(rejected)::bigint AS rejected, sum(expired)::bigint AS expired,
                   sum(overdue)::bigint AS overdue, sum(in_sla)::bigint AS in_sla,
                   sum(backlog_delta)::bigint AS backlog_delta, sum(po_delta)::bigint AS po_delta,
                   sum(sum_age_s) / nullif(sum(n_age_s), 0)::float8 AS avg_age_s, max(max_age_s) AS max_age_s,
                   sum(sum_queue_s) / nullif(sum(n_queue_s), 0)::float8 AS avg_queue_s,
                   sum(sum_handle_s) / nullif(sum(n_handle_s), 0)::float8 AS avg_handle_s,
                   sum(value)::bigint AS value
            FROM (SELECT l.lvl, f.gid,
                         CASE l.lvl WHEN 1 THEN f.q AT TIME ZONE %8$L
                                    ELSE date_trunc($5[l.lvl], f.q) AT TIME ZONE %8$L END AS b,
                         f.created, f.assigned, f.completed, f.canceled, f.rejected, f.expired, f.overdue, f.in_sla,
                         f.backlog_delta, f.po_delta, f.sum_age_s, f.n_age_s, f.max_age_s, f.sum_queue_s, f.n_queue_s,
                         f.sum_handle_s, f.n_handle_s, f.value
                  FROM (SELECT n.gid, f.* FROM fine f JOIN groupings n ON %2$s) f
                  JOIN unnest($8::int[]) AS l(lvl) ON f.mask & (1 << (l.lvl - 1)) <> 0
                  UNION ALL
                  SELECT f.lvl, n.gid, $1[f.lvl], 0, 0, 0, 0, 0, 0, 0, 0, f.backlog_delta, f.po_delta, NULL, 0, NULL,
                         NULL, 0, NULL, 0, 0
                  FROM open_at_lo f JOIN groupings n ON %2$s) x
            GROUP BY lvl, gid, b),
        stocks AS (
            -- every picked interval of each level's groupings, with or without flows; the running sums
            -- also count the flows of the intervals between them
            SELECT lvl, gid, b, coalesce(f.created, 0) AS created, coalesce(f.assigned, 0) AS assigned,
                   coalesce(f.completed, 0) AS completed, coalesce(f.canceled, 0) AS canceled,
                   coalesce(f.rejected, 0) AS rejected, coalesce(f.expired, 0) AS expired,
                   coalesce(f.overdue, 0) AS overdue, coalesce(f.in_sla, 0) AS in_sla, f.avg_age_s, f.max_age_s,
                   f.avg_queue_s, f.avg_handle_s, coalesce(f.value, 0) AS value,
                   sum(coalesce(f.backlog_delta, 0)) OVER w AS backlog_end,
                   sum(coalesce(f.po_delta, 0)) OVER w AS pending_overdue
            FROM flows f
            FULL JOIN (SELECT ng.lvl, ng.gid, p.s AS b
                       FROM (SELECT DISTINCT lvl, gid FROM flows) ng JOIN picked p USING (lvl)) filler
                USING (lvl, gid, b)
            WINDOW w AS (PARTITION BY lvl, gid ORDER BY b)),
        result AS MATERIALIZED (
            SELECT s.lvl, s.b, n.department, n.process, n.category, n.queue, n.media_type, n.customer_segment,
                   s.created, s.assigned, s.completed, s.canceled, s.rejected, s.expired, s.overdue, s.in_sla,
                   s.backlog_end, s.pending_overdue, s.avg_age_s, s.max_age_s, s.avg_queue_s, s.avg_handle_s, s.value
            FROM stocks s JOIN groupings n USING (gid) JOIN picked p ON p.lvl = s.lvl AND p.s = s.b
            WHERE (s.created + s.assigned + s.completed + s.canceled + s.rejected + s.expired + s.backlog_end) > 0)
        %9$s
        SELECT 1
        $q$, g, same_grouping, iwd_dm._quarter_sql('created_at', tz), iwd_dm._quarter_sql('finished_at', tz),
        iwd_dm._quarter_sql('greatest(created_at, due_at)', tz), iwd_dm._quarter_sql('x.at', tz), open_at_lo, tz,
        inserts)
    USING lo, hi, (SELECT min(x) FROM unnest(lo) x), (SELECT max(x) FROM unnest(hi) x), levels, picked_levels,
          picked_starts, present;
END $$;

-- Aggregate up to batch dirty intervals of each of the given levels, all in one pass; returns how many.
CREATE FUNCTION iwd_dm._aggregate_batch(levels text[], batch int) RETURNS int
LANGUAGE plpgsql AS $$
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
LANGUAGE plpgsql AS $$
DECLARE
    n int := 0;
    k int;
    dim text;
BEGIN
    FOREACH dim IN ARRAY ARRAY['department', 'process', 'category', 'queue', 'media_type', 'customer_segment',
                             'capture_point'] LOOP
        EXECUTE format('INSERT INTO iwd_dm.dim_%1$s (name) SELECT DISTINCT %1$s FROM iwd_dm.task_fact
                        WHERE %1$s IS NOT NULL ON CONFLICT DO NOTHING', dim);
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END LOOP;
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
-- autovacuum: analyzing a million events costs more than the load itself.
CREATE FUNCTION iwd_dm._analyze(events bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF events >= 10000 AND events * 10 >= (SELECT reltuples FROM pg_class
                                           WHERE oid = 'iwd_dm.task_event_fact'::regclass) THEN
        ANALYZE iwd_dm.task_fact;
        ANALYZE iwd_dm.task_event_fact;
    END IF;
END $$;

-- The steps of a chain: initialize, load events, aggregate levels.
CREATE FUNCTION iwd_dm._chain_levels(chain text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE chain WHEN 'intraday' THEN ARRAY['15min'] WHEN 'historical' THEN ARRAY['hour', 'day', 'week', 'month']
                      WHEN 'full' THEN ARRAY['15min', 'hour', 'day', 'week', 'month'] ELSE ARRAY[]::text[] END
$$;

-- Record the start, success or failure of a chain (the worker calls it in its own transactions).
CREATE FUNCTION iwd_dm._job(chain text, what text, summary jsonb DEFAULT NULL, error text DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$
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
LANGUAGE plpgsql AS $$
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
    -- held while the chain runs: iwddm_job_active reads it
    PERFORM pg_advisory_xact_lock(hashtext('iwd_dm chain ' || chain));
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
LANGUAGE sql STABLE AS $$
    WITH s AS (
        SELECT j.execution_chain AS chain,
               EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
                         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                         AND l.objid::bigint = (hashtext('iwd_dm chain ' || j.execution_chain)::bigint & 4294967295))
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
           sum(avg_age_s * completed) / nullif(sum(completed) FILTER (WHERE avg_age_s IS NOT NULL), 0) AS avg_finish_s,
           sum(avg_queue_s * completed) / nullif(sum(completed) FILTER (WHERE avg_queue_s IS NOT NULL), 0) AS avg_accept_s,
           sum(avg_handle_s * completed) / nullif(sum(completed) FILTER (WHERE avg_handle_s IS NOT NULL), 0) AS avg_handle_s
    FROM iwd_dm.agg_day GROUP BY interval_start, queue;

-- Customer Segment Service Level per day.
CREATE VIEW iwd_dm.customer_segment_service_level AS
    SELECT interval_start AS day, customer_segment, sum(completed) AS completed,
           sum(completed_in_sla) AS completed_on_time,
           round(100.0 * sum(completed_in_sla) / nullif(sum(completed), 0), 2) AS pct_on_time
    FROM iwd_dm.agg_day GROUP BY interval_start, customer_segment;

-- Capture Point Task Duration and business value per day of completion.
CREATE VIEW iwd_dm.capture_point_business_value AS
    SELECT iwd_dm.interval_start('day', finished_at) AS day, capture_point,
           count(*) AS completed, sum(business_value) AS business_value_completed,
           avg(age_s) AS avg_duration_s, max(age_s) AS max_duration_s
    FROM iwd_dm.task_fact WHERE status = 'completed' GROUP BY 1, 2;

-- Resource (agent) Performance per day.
CREATE VIEW iwd_dm.agent_activity AS
    SELECT iwd_dm.interval_start('day', e.at) AS day, e.actor AS agent,
           count(*) FILTER (WHERE e.event = 'reserved') AS assigned,
           count(*) FILTER (WHERE e.event = 'accepted') AS accepted,
           count(*) FILTER (WHERE e.event = 'completed') AS completed,
           count(*) FILTER (WHERE e.event = 'rejected') AS rejected,
           count(*) FILTER (WHERE e.event = 'reservation_timeout') AS reservation_timeouts,
           avg(f.handle_s) FILTER (WHERE e.event = 'completed') AS avg_handle_s,
           coalesce(sum(f.business_value) FILTER (WHERE e.event = 'completed'), 0) AS business_value_completed
    FROM iwd_dm.task_event_fact e LEFT JOIN iwd_dm.task_fact f ON f.task_id = e.task_id
    WHERE e.actor IS NOT NULL GROUP BY 1, 2;

-- Task detail.
CREATE VIEW iwd_dm.task_detail AS
    SELECT task_id, external_id, capture_point, department, process, category, queue, media_type,
           customer_segment, priority, business_value, status, agent, created_at, first_assigned_at, accepted_at,
           finished_at, due_at, queue_s, handle_s, age_s, overdue, completed_in_sla
    FROM iwd_dm.task_fact;

-- ---------------------------------------------------------------------------------------------
-- Read-only reporting role: iwd_dm only (roles are cluster-wide; created once)
-- ---------------------------------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iwd_gcxi') THEN
        CREATE ROLE iwd_gcxi NOLOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA iwd_dm TO iwd_gcxi;
GRANT SELECT ON ALL TABLES IN SCHEMA iwd_dm TO iwd_gcxi;

-- Logical backups carry the Data Mart's facts, aggregates and pending work (its loading position and
-- job state are not dumped: after a restore the next run reloads the history idempotently).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['iwd_dm.task_event_fact', 'iwd_dm.task_fact', 'iwd_dm.dirty', 'iwd_dm.event_gap',
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
