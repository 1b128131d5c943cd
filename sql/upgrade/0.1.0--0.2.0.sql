-- iwd 0.1.0 -> 0.2.0: what changed in the schema. The Makefile appends every function, view, trigger,
-- grant and comment of 0.2.0 as CREATE OR REPLACE (sql/upgrade/rerun.awk), so this prelude holds only
-- what that cannot do: new and changed tables, columns, indexes, types and roles, the rows they need, and
-- the objects to drop first: functions removed or whose argument types, argument names or result changed
-- (CREATE OR REPLACE would add an overload or refuse), views whose columns changed other than by adding
-- some at the end. scripts/test-upgrade.sh shows what is missing: the catalog's differences from a fresh
-- install.
\echo Use "ALTER EXTENSION iwd UPDATE TO '0.2.0'" to load this file. \quit

-- Input checking moved to C (iwd._levels) or into the functions that used iwd._str: the old helpers go.
DROP FUNCTION iwd._str(jsonb, text, text);
DROP FUNCTION iwd._levels(jsonb, text, text, integer);
-- the Data Mart's quarter-hour binning takes the levels and their bounds since
DROP FUNCTION iwd_dm._quarter_sql(text, text);
-- supervisors' actions name who did them (an actor argument, recorded as the event's actor)
DROP FUNCTION iwd._transition(bigint, text, text, text, jsonb, text);
DROP FUNCTION iwd.hold_task(bigint, text);
DROP FUNCTION iwd.resume_task(bigint);
DROP FUNCTION iwd.cancel_task(bigint, text);
DROP FUNCTION iwd.restart_task(bigint);
DROP FUNCTION iwd.reprioritize_task(bigint, int, int);
DROP FUNCTION iwd.complete_task(bigint, text);
DROP FUNCTION iwd.reject_task(bigint, text, text);
-- capture builds the created event's detail in C (extension/capture.c)
DROP FUNCTION iwd._created_detail(iwd.task);

-- The routing key registry names the skills of each key (the claim reads them instead of parsing keys).
-- A key's skills come from a task that has it, in the order its skill map lists them, as
-- iwd._note_routing_key writes them; a key no task has any more is read from its text (a single skill
-- "name:level", else the pair "first+second"). The registry only grows: its guard is lifted for this.
ALTER TABLE iwd.routing_keys ADD COLUMN skill text, ADD COLUMN paired_with text;
ALTER TABLE iwd.routing_keys DISABLE TRIGGER routing_keys_grow_only;
UPDATE iwd.routing_keys r SET skill = k.names[1], paired_with = k.names[2]
FROM (SELECT DISTINCT ON (iwd.routing_key(t.skills)) iwd.routing_key(t.skills) AS key,
             ARRAY(SELECT n FROM jsonb_object_keys(t.skills) n LIMIT 2) AS names
      FROM (SELECT skills FROM iwd.task UNION ALL SELECT skills FROM iwd.task_closed) t
      WHERE jsonb_typeof(t.skills) = 'object') k
WHERE r.key = k.key AND r.key <> '';
UPDATE iwd.routing_keys r
SET skill = CASE WHEN r.key ~ ':-?[0-9]+$' THEN regexp_replace(r.key, ':-?[0-9]+$', '')
                 ELSE split_part(r.key, '+', 1) END,
    paired_with = CASE WHEN r.key ~ ':-?[0-9]+$' THEN NULL
                       ELSE substr(r.key, length(split_part(r.key, '+', 1)) + 2) END
WHERE r.skill IS NULL AND r.key <> '';
ALTER TABLE iwd.routing_keys ENABLE TRIGGER routing_keys_grow_only;

-- 0.1.0's reporting role iwd_gcxi read the Data Mart of every database; 0.2.0 gives each database its own,
-- iwd_gcxi_<database> (created below). The shared role keeps its other rights, in the databases not yet
-- updated; grant the new role to the reporting logins of this database.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'iwd_gcxi') THEN
        REVOKE ALL ON ALL TABLES IN SCHEMA iwd_dm FROM iwd_gcxi;
        REVOKE ALL ON SCHEMA iwd_dm FROM iwd_gcxi;
    END IF;
END $$;

-- Events out (sql/events.sql): the outbox of task events, the event feed and its counter, webhooks and their
-- deliveries. The events written before the update are history only: the feed starts with the first event
-- written after it. iwd.event_types() is defined here first: the webhook table's check calls it (the
-- functions that follow define it again, identically).
CREATE FUNCTION iwd.event_types() RETURNS text[]
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT ARRAY['task.created', 'task.updated', 'task.reprioritized', 'task.held', 'task.resumed', 'task.reserved',
                 'task.accepted', 'task.reservation_timed_out', 'task.completed', 'task.canceled', 'task.rejected',
                 'task.expired', 'task.restarted', 'task.error_held', 'task.declined']
$$;

-- Each event's document is stored once, by the transaction that writes the event (iwd.event_document);
-- the outbox and the feed name events by id.
CREATE TABLE iwd.event_document (
    event_id bigint PRIMARY KEY,
    doc      jsonb NOT NULL
);

CREATE TABLE iwd.event_outbox (
    event_id bigint NOT NULL,
    type     text NOT NULL,
    task_id  bigint NOT NULL
);
ALTER TABLE iwd.event_outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

CREATE SEQUENCE iwd.event_feed_id_seq;
-- id: the public event id, given at publication by one publisher at a time, so that ids increase in the
-- order readers can see the events (an event that commits late gets a later id: a reader resuming after
-- id N misses nothing). A narrow row: the document is read from iwd.event_document by event_id.
CREATE TABLE iwd.event_feed (
    id           bigint PRIMARY KEY,
    event_id     bigint NOT NULL,
    type         text NOT NULL,
    task_id      bigint NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_feed_published_idx ON iwd.event_feed USING brin (published_at);

CREATE TABLE iwd.webhook (
    name         text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,128}$'),
    url          text NOT NULL CHECK (url ~* '^https?://[^[:space:][:cntrl:]/?#]+' AND octet_length(url) <= 2048),
    events       text[] CHECK (events <@ iwd.event_types() AND cardinality(events) > 0),
    secret       text NOT NULL CHECK (octet_length(secret) BETWEEN 1 AND 256),
    enabled      boolean NOT NULL DEFAULT true,
    filter       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(filter) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    from_feed_id bigint NOT NULL
);

CREATE TABLE iwd.webhook_delivery (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook         text NOT NULL REFERENCES iwd.webhook (name) ON DELETE CASCADE,
    feed_id         bigint NOT NULL,
    task_id         bigint NOT NULL,
    type            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    last_status     int,
    last_error      text,
    next_attempt_at timestamptz,
    lease_owner     text,
    lease_until     timestamptz,
    retried_at      timestamptz,
    UNIQUE (webhook, feed_id)
) WITH (fillfactor = 50); -- room on each page, so that a claim's lease is written without new index entries
-- the claim: due pending deliveries in the order they came due (read in that order, as many as claimed and
-- in flight), and the oldest pending one of each (webhook, task)
CREATE INDEX webhook_delivery_due_idx ON iwd.webhook_delivery (next_attempt_at, feed_id) WHERE status = 'pending';
CREATE INDEX webhook_delivery_task_idx ON iwd.webhook_delivery (webhook, task_id, feed_id) WHERE status = 'pending';
CREATE INDEX webhook_delivery_created_idx ON iwd.webhook_delivery (created_at) WHERE status <> 'pending';

-- Declines (sql/lifecycle.sql): the end of each agent's latest decline, and the tasks it declined.
ALTER TABLE iwd.agent ADD COLUMN declined_until timestamptz;
CREATE TABLE iwd.task_decline (
    agent   text NOT NULL REFERENCES iwd.agent (id) ON DELETE CASCADE,
    task_id bigint NOT NULL,
    until   timestamptz NOT NULL,
    PRIMARY KEY (agent, task_id)
);

-- The contact-centre service level in the Data Mart's aggregates (sql/datamart.sql): the tasks whose wait
-- ended in the interval and those reserved within iwd_dm.service_level_threshold. Intervals aggregated before
-- the update read 0 until they are aggregated again (README, Data Mart: rebuilding the aggregates).
ALTER TABLE iwd_dm.agg_15min ADD COLUMN sl_offered bigint NOT NULL DEFAULT 0,
    ADD COLUMN sl_within bigint NOT NULL DEFAULT 0;
ALTER TABLE iwd_dm.agg_hour ADD COLUMN sl_offered bigint NOT NULL DEFAULT 0,
    ADD COLUMN sl_within bigint NOT NULL DEFAULT 0;
ALTER TABLE iwd_dm.agg_day ADD COLUMN sl_offered bigint NOT NULL DEFAULT 0,
    ADD COLUMN sl_within bigint NOT NULL DEFAULT 0;
ALTER TABLE iwd_dm.agg_week ADD COLUMN sl_offered bigint NOT NULL DEFAULT 0,
    ADD COLUMN sl_within bigint NOT NULL DEFAULT 0;
ALTER TABLE iwd_dm.agg_month ADD COLUMN sl_offered bigint NOT NULL DEFAULT 0,
    ADD COLUMN sl_within bigint NOT NULL DEFAULT 0;

-- Router sync (sql/router.sql): the tenant's router configuration, the tasks handed to it and the numbers
-- of their submissions.
CREATE TABLE iwd.router (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    url           text NOT NULL CHECK (octet_length(url) <= 2048),
    auth_url      text NOT NULL CHECK (octet_length(auth_url) <= 2048),
    client_id     text NOT NULL CHECK (octet_length(client_id) BETWEEN 1 AND 256),
    client_secret text CHECK (octet_length(client_secret) <= 2048),
    api_key       text CHECK (octet_length(api_key) <= 2048),
    max_in_flight int NOT NULL DEFAULT 10 CHECK (max_in_flight BETWEEN 1 AND 10000),
    enabled       boolean NOT NULL DEFAULT true,
    cursor        text CHECK (octet_length(cursor) <= 1024),
    lease_owner   text,
    lease_until   timestamptz,
    last_sync_at  timestamptz,
    last_error    text,
    last_error_at timestamptz,
    lag_s         double precision,
    key_prefix    text NOT NULL DEFAULT gen_random_uuid()::text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE iwd.router_submission;
CREATE TABLE iwd.router_task (
    task_id        bigint PRIMARY KEY,
    submission     bigint NOT NULL,
    router_id      text CHECK (octet_length(router_id) <= 256),
    state          text NOT NULL CHECK (state IN ('submitting', 'queued', 'offered', 'accepted', 'returned')),
    agent          text,
    priority       int,
    business_value int,
    version        bigint NOT NULL DEFAULT 0,
    retry_at       timestamptz,
    changed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX router_task_router_id_idx ON iwd.router_task (router_id);
CREATE INDEX router_task_live_idx ON iwd.router_task (state) WHERE state <> 'returned';
CREATE INDEX router_task_held_idx ON iwd.router_task (task_id) WHERE state IN ('submitting', 'queued');

-- Email (sql/email.sql): the tenant's mailboxes (passwords sealed by the sidecar), their messages being
-- fetched or kept aside, and the replies waiting to be sent.
CREATE TABLE iwd.mailbox (
    name              text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,128}$'),
    imap              jsonb NOT NULL CHECK (jsonb_typeof(imap) = 'object'),
    imap_password     text NOT NULL CHECK (octet_length(imap_password) <= 2048),
    smtp              jsonb CHECK (jsonb_typeof(smtp) = 'object'),
    smtp_password     text CHECK (octet_length(smtp_password) <= 2048),
    category          text CHECK (octet_length(category) <= 256),
    poll_seconds      int NOT NULL DEFAULT 30 CHECK (poll_seconds BETWEEN 1 AND 86400),
    enabled           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    next_poll_at      timestamptz NOT NULL DEFAULT now(),
    lease_owner       text,
    lease_until       timestamptz,
    last_poll_at      timestamptz,
    last_error        text,
    last_error_at     timestamptz,
    messages_captured bigint NOT NULL DEFAULT 0,
    messages_threaded bigint NOT NULL DEFAULT 0,
    messages_failed   bigint NOT NULL DEFAULT 0
);
CREATE TABLE iwd.mailbox_message (
    mailbox    text NOT NULL REFERENCES iwd.mailbox (name) ON DELETE CASCADE,
    uid        bigint NOT NULL,
    status     text NOT NULL CHECK (status IN ('fetching', 'captured', 'threaded', 'failed')),
    message_id text,
    task_id    bigint,
    error      text,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mailbox, uid)
);
CREATE INDEX mailbox_message_status_idx ON iwd.mailbox_message (mailbox, status, at);
CREATE TABLE iwd.email_reply (
    id              bigserial PRIMARY KEY,
    task_id         bigint NOT NULL,
    mailbox         text NOT NULL REFERENCES iwd.mailbox (name) ON DELETE CASCADE,
    body            text NOT NULL CHECK (octet_length(body) <= 1048576),
    complete        boolean NOT NULL DEFAULT false,
    actor           text,
    message_id      text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    lease_owner     text,
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX email_reply_due_idx ON iwd.email_reply (next_attempt_at) WHERE status = 'pending';
CREATE INDEX email_reply_task_idx ON iwd.email_reply (task_id);

-- The dashboard's reports (sql/reports.sql): a category's own service-level threshold, and the Data Mart's
-- facts read by where a task's wait in the queue ended.
ALTER TABLE iwd.category ADD COLUMN service_level_seconds int CHECK (service_level_seconds BETWEEN 1 AND 86400);
CREATE INDEX task_fact_wait_end_idx ON iwd_dm.task_fact ((coalesce(first_assigned_at, finished_at)));

-- The Data Mart reads the event history in place: its copy of the events goes (iwd_dm.task_event_fact is a view
-- over iwd.task_event since, defined below with the report view that reads it), the watermark keeps the time of
-- the latest event read, and the short ranges' aggregation finds the reservations from the reserved tasks' facts.
ALTER TABLE iwd_dm.watermark ADD COLUMN last_event_at timestamptz;
UPDATE iwd_dm.watermark SET last_event_at = (SELECT max(at) FROM iwd_dm.task_event_fact);
DROP VIEW iwd_dm.agent_activity;
DROP TABLE iwd_dm.task_event_fact;
CREATE INDEX task_fact_reserved_until_idx ON iwd_dm.task_fact ((coalesce(finished_at, 'infinity')))
    WHERE first_assigned_at IS NOT NULL;
