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
    updated_at             timestamptz NOT NULL DEFAULT now(),
    -- the contact-centre service level's threshold of its tasks (sql/reports.sql); NULL: the Data Mart's
    service_level_seconds  int CHECK (service_level_seconds BETWEEN 1 AND 86400)
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
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- the end of the agent's latest decline (iwd.decline_task): until then its claims skip what it declined
    declined_until timestamptz
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

-- Declared from iwd.task: the task row has one declaration, above (iwd._derive_from_task, sql/tasks.sql,
-- keeps the two alike and makes what copies the row).
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
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
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
    AS 'MODULE_PATHNAME', 'iwd_now' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;

-- Validate, classify and score a task document (current IS NULL: a new task). Writes nothing.
CREATE FUNCTION iwd._prepare_task(input jsonb, current iwd.task, at timestamptz) RETURNS iwd.task
    AS 'MODULE_PATHNAME', 'iwd_prepare_task' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- The task with priority, business value and next reprioritization time recomputed at "at".
CREATE FUNCTION iwd._rescore(task iwd.task, at timestamptz) RETURNS iwd.task
    AS 'MODULE_PATHNAME', 'iwd_rescore' LANGUAGE C STABLE STRICT PARALLEL UNSAFE;

-- Raise 22023 when a rule's condition or effect is invalid.
CREATE FUNCTION iwd._validate_rule(kind text, cond jsonb, effect jsonb) RETURNS void
    AS 'MODULE_PATHNAME', 'iwd_validate_rule' LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- Statement trigger: invalidate every backend's cached configuration.
CREATE FUNCTION iwd._config_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'iwd_config_changed' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- The status an operation leads to, or SQLSTATE 55000 naming the current and requested state.
CREATE FUNCTION iwd._check_transition(id bigint, status text, op text) RETURNS text
    AS 'MODULE_PATHNAME', 'iwd_check_transition' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- completed, canceled, rejected and expired are terminal.
CREATE FUNCTION iwd.is_terminal(status text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'iwd_is_terminal' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- The task's row as it is stored when it closes with this status at "at": status, completed_at and
-- updated_at set, every other column as it was (found by name: the row follows iwd.task's declaration).
CREATE FUNCTION iwd._closed_row(t iwd.task, status text, at timestamptz) RETURNS iwd.task
    AS 'MODULE_PATHNAME', 'iwd_closed_row' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

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

-- The routing key registry: every routing key a task has had, with the skills it names (skill: the first
-- required skill, NULL for ''; paired_with: the second, for a pair), so that a claim reads only the
-- agent's buckets that may hold work. Written by the trigger below in the transaction that writes the
-- task; never changed or emptied (it stays as small as skills x levels and skill pairs). Each session
-- remembers it, and forgets it when a row is added (the relcache invalidation of routing_keys_changed).
CREATE TABLE iwd.routing_keys (
    key         text PRIMARY KEY,
    skill       text,
    paired_with text
);
CREATE FUNCTION iwd._note_routing_key() RETURNS trigger
    AS 'MODULE_PATHNAME', 'iwd_note_routing_key' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
CREATE TRIGGER task_routing_key BEFORE INSERT OR UPDATE OF skills ON iwd.task
    FOR EACH ROW EXECUTE FUNCTION iwd._note_routing_key();
CREATE TRIGGER routing_keys_changed AFTER INSERT ON iwd.routing_keys
    FOR EACH ROW EXECUTE FUNCTION iwd._config_changed();
CREATE TRIGGER routing_keys_grow_only BEFORE UPDATE OR DELETE ON iwd.routing_keys
    FOR EACH ROW EXECUTE FUNCTION iwd.forbid_change(
        'iwd.routing_keys only grows',
        'Sessions remember which routing keys exist; a removed key would hide its tasks from claims.');
CREATE TRIGGER routing_keys_no_truncate BEFORE TRUNCATE ON iwd.routing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION iwd.forbid_change(
        'iwd.routing_keys only grows',
        'Sessions remember which routing keys exist; a removed key would hide its tasks from claims.');

-- The claimer's lock on a task, taken by the claim statement of iwd.next_task and iwd.complete_task(next =>
-- true) for the candidate it reserves (false: another claimer holds it); refused outside a claim (55000), so
-- that no login can hold claimers' locks.
CREATE FUNCTION iwd._claim_lock(id bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'iwd_claim_lock' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

-- Reserve the next best task for an agent (NULL when nothing fits).
-- The claim must walk the claim index in order whatever the statistics say (after a bulk load they
-- may describe a small table, and a sort of a whole skill bucket would be chosen): the plan settings
-- below leave the planner only that path (the merge of the few candidates is still sorted), and match
-- the agent's buckets (registered keys only, see extension/claim.c) one by one; the lateral read of
-- each bucket stays a nested loop, the only way to run it. With
-- enable_sort off every plan looks expensive, so JIT is turned off: compiling would cost far more
-- than the claim itself.
CREATE FUNCTION iwd.next_task(agent text, reserve_seconds int DEFAULT 30) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'iwd_next_task' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE
    SET enable_sort = off SET enable_bitmapscan = off SET enable_nestloop = off SET jit = off;

-- Cumulative counters of this database since server start.
CREATE FUNCTION iwd._counters(OUT claims bigint, OUT reservation_timeouts bigint)
    AS 'MODULE_PATHNAME', 'iwd_counters' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

CREATE FUNCTION iwd._count(kind text, n bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'iwd_count' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE TRIGGER category_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON iwd.category
    FOR EACH STATEMENT EXECUTE FUNCTION iwd._config_changed();
CREATE TRIGGER rule_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON iwd.rule
    FOR EACH STATEMENT EXECUTE FUNCTION iwd._config_changed();
CREATE TRIGGER calendar_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON iwd.calendar
    FOR EACH STATEMENT EXECUTE FUNCTION iwd._config_changed();

-- Rules written with plain SQL are validated like those written through iwd.upsert_rule().
CREATE FUNCTION iwd.validate_rule_row() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
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
