-- iwd events out: the outbox of task events, the event feed in commit order, webhooks and their deliveries
-- (README, Events). The sidecar's event stream reads the feed; its webhook delivery claims deliveries here.

-- ---------------------------------------------------------------------------------------------
-- Event types and filters
-- ---------------------------------------------------------------------------------------------

-- The public event types, in the order of the README.
CREATE FUNCTION iwd.event_types() RETURNS text[]
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT ARRAY['task.created', 'task.updated', 'task.reprioritized', 'task.held', 'task.resumed', 'task.reserved',
                 'task.accepted', 'task.reservation_timed_out', 'task.completed', 'task.canceled', 'task.rejected',
                 'task.expired', 'task.restarted', 'task.error_held', 'task.declined']
$$;

-- The public type of a history event: "task." and its name, except the scheduler's own events: a
-- reservation timeout is task.reservation_timed_out, a deferred task's activation (held -> queued) is
-- task.resumed, and the overdue flag and the email events (a message received into the task, a reply sent:
-- sql/email.sql) are task.updated (the task document changed). Inlined into the outbox
-- trigger (not STRICT: a CASE is not, and a STRICT function's body must be to be inlined): left unpinned,
-- every operator qualified (sql/security.sql).
CREATE FUNCTION iwd._event_type(event text) RETURNS text
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT CASE WHEN event OPERATOR(pg_catalog.=) 'reservation_timeout' THEN 'task.reservation_timed_out'
                WHEN event OPERATOR(pg_catalog.=) 'activated' THEN 'task.resumed'
                WHEN event OPERATOR(pg_catalog.=) ANY ('{overdue,email_received,email_replied}'::pg_catalog.text[])
                THEN 'task.updated'
                ELSE 'task.' OPERATOR(pg_catalog.||) event END
$$;

-- A list of event types checked (22023 naming "what": empty, an unknown type or more than the known
-- types), without duplicates; NULL (all types) stays NULL.
CREATE FUNCTION iwd._check_event_types(types text[], what text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v_unknown text;
BEGIN
    IF types IS NULL THEN
        RETURN NULL;
    END IF;
    IF cardinality(types) = 0 THEN
        RAISE EXCEPTION '% must not be empty', what USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'Omit it to receive every event type.';
    END IF;
    SELECT t INTO v_unknown FROM unnest(types) t WHERE t IS NULL OR t <> ALL (iwd.event_types()) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '% has an unknown event type "%"', what, coalesce(v_unknown, 'null')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Event types: %s.', array_to_string(iwd.event_types(), ', '));
    END IF;
    RETURN ARRAY(SELECT DISTINCT t FROM unnest(types) t ORDER BY t);
END $$;

-- An event filter checked and normalized: the keys of the GET /tasks filters, each a string or an array of
-- at most 100 strings, as {"key": [values]} with the task document's key names (22023 naming the field).
CREATE FUNCTION iwd._event_filter(filter jsonb, what text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v_out jsonb := '{}';
    v_key text;
    v_value jsonb;
BEGIN
    IF filter IS NULL OR filter = 'null' THEN
        RETURN '{}';
    END IF;
    PERFORM iwd._check_object(filter, what,
        '{department,process,category,queue,status,mediaType,customerSegment,capturePoint,assignedTo}');
    FOR v_key, v_value IN SELECT key, value FROM jsonb_each(filter) ORDER BY key LOOP
        CONTINUE WHEN v_value = 'null';
        IF jsonb_typeof(v_value) = 'string' THEN
            v_value := jsonb_build_array(v_value);
        ELSIF jsonb_typeof(v_value) <> 'array' OR jsonb_array_length(v_value) = 0
              OR EXISTS (SELECT 1 FROM jsonb_array_elements(v_value) e WHERE jsonb_typeof(e) <> 'string') THEN
            RAISE EXCEPTION '% field "%" must be a string or a non-empty array of strings', what, v_key
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF jsonb_array_length(v_value) > 100 THEN
            RAISE EXCEPTION '% field "%" has more than 100 values', what, v_key
                USING ERRCODE = 'invalid_parameter_value',
                DETAIL = format('It has %s.', jsonb_array_length(v_value));
        END IF;
        IF EXISTS (SELECT 1 FROM jsonb_array_elements_text(v_value) e WHERE octet_length(e) > 256) THEN
            RAISE EXCEPTION '% field "%" has a value longer than 256 bytes', what, v_key
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_out := v_out || jsonb_build_object(v_key, v_value);
    END LOOP;
    RETURN v_out;
END $$;

-- Does a task document match a normalized event filter (every key: the task's value is one of the listed)?
CREATE FUNCTION iwd._event_matches(filter jsonb, task jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT filter = '{}' OR NOT EXISTS (
        SELECT 1 FROM jsonb_each(filter) f
        WHERE NOT coalesce(f.value @> jsonb_build_array(task -> f.key), false))
$$;

-- ---------------------------------------------------------------------------------------------
-- The outbox: every history event, written in the transaction that writes the event
-- ---------------------------------------------------------------------------------------------

-- The document of each event, written once, by the transaction that writes the event: the event document
-- without its public id ("task": the task document after the event). The outbox and the feed name events
-- by event_id; the document stays here until retention removes its published event (iwd._expire_events).
-- Rows of a transaction that rolls back go with it.
CREATE TABLE iwd.event_document (
    event_id bigint PRIMARY KEY,
    doc      jsonb NOT NULL
);

-- An event waiting for its publication, by id (its document is in iwd.event_document), with what
-- publication numbers and routes it by. No index: each publication takes what is there, and an index
-- would keep an entry of every event published until a vacuum, which every publication would walk again.
CREATE TABLE iwd.event_outbox (
    event_id bigint NOT NULL,
    type     text NOT NULL,
    task_id  bigint NOT NULL
);
-- the scheduler worker vacuums it with iwd.task (iwd.vacuum_threshold); autovacuum too, at every visit with
-- a thousand rows published, whatever the table's size
ALTER TABLE iwd.event_outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

-- The document of a task event without its id ("task": the task document now), in one pass; NULL when the
-- task does not exist (extension/taskjson.c).
CREATE FUNCTION iwd._event_document(task_id bigint, type text, at timestamptz, agent text) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'iwd_event_document' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;

-- Statement trigger on iwd.task_event: the documents and outbox rows of the statement's events, in one
-- statement (the task, open or closed, is read after the change: the writers record an event after saving
-- its task; an event written by hand for a task that does not exist has no document and is not published;
-- an event that has its document already is one a logical backup restores with its document and its
-- outbox or feed row: restored, not announced again, as pg_restore loads iwd.event_document before
-- iwd.task_event). The task is read by primary key and a document found by its key (the insertion's
-- conflict), neither joined: the trigger runs under its caller's plan settings, and iwd.next_task's
-- (enable_nestloop off) would make a join read whole tables.
-- With iwd.notify = event it also notifies iwd_events (delivered at commit; PostgreSQL folds duplicates),
-- so that a listener publishes at once; but PostgreSQL serializes the commits of notifying transactions,
-- which costs capture and claims much of their throughput at a few clients. By default (batch) the
-- tenant's scheduler worker publishes within iwd.notify_interval of the commit, and its publication
-- notifies iwd_events. Runs in every capture and claim: left unpinned (a SET clause costs a search path
-- change and its undoing per statement), so every function, operator and type is qualified
-- (sql/security.sql).
CREATE FUNCTION iwd._outbox_events() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    WITH d AS (SELECT e.id, e.type, e.task_id, iwd._event_document(e.task_id, e.type, e.at, e.actor) AS doc
               FROM (SELECT n.id, iwd._event_type(n.event) AS type, n.task_id, n.at, n.actor FROM new_events n) e),
         k AS (INSERT INTO iwd.event_document AS k (event_id, doc) SELECT d.id, d.doc FROM d WHERE d.doc IS NOT NULL
               ON CONFLICT (event_id) DO NOTHING RETURNING k.event_id)
    INSERT INTO iwd.event_outbox (event_id, type, task_id)
    SELECT d.id, d.type, d.task_id FROM d JOIN k ON k.event_id OPERATOR(pg_catalog.=) d.id;
    IF pg_catalog.current_setting('iwd.notify', true) OPERATOR(pg_catalog.=) 'event' THEN
        PERFORM pg_catalog.pg_notify('iwd_events', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER task_event_outbox AFTER INSERT ON iwd.task_event
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION iwd._outbox_events();

-- ---------------------------------------------------------------------------------------------
-- The event feed: published events, numbered in the order they become visible
-- ---------------------------------------------------------------------------------------------

CREATE SEQUENCE iwd.event_feed_id_seq;

-- id: the public event id, given at publication by one publisher at a time, so that ids increase in the
-- order readers can see the events (an event that commits late gets a later id: a reader resuming after
-- id N misses nothing). A narrow row: the event's document is read from iwd.event_document by event_id.
CREATE TABLE iwd.event_feed (
    id           bigint PRIMARY KEY,
    event_id     bigint NOT NULL,
    type         text NOT NULL,
    task_id      bigint NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);
-- retention's: publication times follow the ids, so a block range index finds the old events at little cost
-- per publication
CREATE INDEX event_feed_published_idx ON iwd.event_feed USING brin (published_at);

-- The last published event id (0 when none).
CREATE FUNCTION iwd.events_head() RETURNS bigint
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT coalesce(max(id), 0) FROM iwd.event_feed
$$;

-- Take the publication lock until the transaction ends; false at once when another transaction has it.
-- Only the publishers' roles may take it (sql/security.sql): held in a long transaction, it stops publication.
CREATE FUNCTION iwd._try_lock_publication() RETURNS boolean
    AS 'MODULE_PATHNAME', 'iwd_try_lock_publication' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE EXECUTE ON FUNCTION iwd._try_lock_publication() FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Webhooks
-- ---------------------------------------------------------------------------------------------

-- events NULL: every type. filter: normalized (iwd._event_filter). from_feed_id: the last published event
-- id when the webhook was created; it receives the events published after it. The secret signs the
-- deliveries and is never shown: only iwd.claim_deliveries reads it (sql/security.sql).
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

-- One delivery of one event to one webhook; its id is the X-Iwd-Delivery header, the same on every
-- attempt. retried_at: the last manual retry (the retry window counts from it).
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

-- Webhook changes reach the webhook delivery at once, however they are made (REST or SQL). A statement that
-- changes webhooks counts its transaction, at commit, in the server's count of webhook changes
-- (iwd.webhook_changes, extension/events.c): a dispatcher that keeps no connection to this database reads it
-- on another of the server and probes the databases it does not know to have webhooks. A webhook deleted
-- or disabled is also named on iwd_webhooks (at commit), so that the dispatchers delivering for this
-- database drop the deliveries of it that they hold and have not attempted yet.
CREATE FUNCTION iwd._webhooks_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'iwd_webhooks_changed' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

CREATE TRIGGER webhooks_changed AFTER INSERT OR UPDATE OR DELETE ON iwd.webhook
    FOR EACH STATEMENT EXECUTE FUNCTION iwd._webhooks_changed();

-- Row trigger on iwd.webhook: the name of a webhook deleted or disabled, on iwd_webhooks.
CREATE FUNCTION iwd._webhook_stopped() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    IF TG_OP = 'DELETE' OR (OLD.enabled AND NOT NEW.enabled) THEN
        PERFORM pg_catalog.pg_notify('iwd_webhooks', OLD.name);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_stopped AFTER UPDATE OR DELETE ON iwd.webhook
    FOR EACH ROW EXECUTE FUNCTION iwd._webhook_stopped();

-- The server's count of committed transactions that changed webhooks, in any of its databases, since it
-- started; NULL when iwd is not in shared_preload_libraries. It only ever grows while the server runs.
CREATE FUNCTION iwd.webhook_changes() RETURNS bigint
    AS 'MODULE_PATHNAME', 'iwd_webhook_changes' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL SAFE;

-- The webhook in the REST shape (no secret: "hasSecret").
CREATE FUNCTION iwd.webhook_json(w iwd.webhook) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT jsonb_build_object('name', w.name, 'url', w.url, 'events', to_jsonb(w.events), 'enabled', w.enabled,
                              'filter', w.filter, 'hasSecret', true, 'createdAt', iwd._ts(w.created_at))
$$;

-- Create or replace a webhook (PUT semantics: omitted fields take their defaults, except the secret, which
-- an update keeps when omitted). At most 100 webhooks per tenant. Returns it without its secret.
CREATE FUNCTION iwd.upsert_webhook(webhook jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_name text;
    v_url text;
    v_secret text;
    v_events text[];
    v_enabled boolean;
    v_filter jsonb;
BEGIN
    PERFORM iwd._check_object(webhook, 'webhook', '{name,url,events,secret,enabled,filter,hasSecret,createdAt}',
                              '{name,url}');
    v_name := iwd._str(webhook, 'name', 'webhook', 128);
    IF v_name !~ '^[A-Za-z0-9._-]+$' THEN
        RAISE EXCEPTION 'webhook field "name" may only hold letters, digits, ".", "_" and "-"'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It is "%s".', v_name);
    END IF;
    v_url := iwd._str(webhook, 'url', 'webhook', 2048);
    IF v_url !~* '^https?://[^[:space:][:cntrl:]/?#@]+' OR v_url ~ '[[:space:][:cntrl:]]' THEN
        RAISE EXCEPTION 'webhook field "url" must be an http or https URL' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'It must start with http:// or https:// and a host, and hold no spaces or control characters.';
    END IF;
    IF coalesce(jsonb_typeof(webhook -> 'events'), 'null') NOT IN ('array', 'null')
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(CASE jsonb_typeof(webhook -> 'events')
                                                       WHEN 'array' THEN webhook -> 'events' ELSE '[]' END) e
                  WHERE jsonb_typeof(e) <> 'string') THEN
        RAISE EXCEPTION 'webhook field "events" must be an array of event types'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(webhook -> 'events') = 'array' THEN
        v_events := iwd._check_event_types(ARRAY(SELECT jsonb_array_elements_text(webhook -> 'events')),
                                           'webhook field "events"');
    END IF;
    v_secret := iwd._str(webhook, 'secret', 'webhook', 256);
    v_enabled := coalesce(iwd._bool(webhook, 'enabled', 'webhook'), true);
    v_filter := iwd._event_filter(webhook -> 'filter', 'webhook field "filter"');
    -- the name is the lock: concurrent upserts of one webhook take turns
    PERFORM pg_advisory_xact_lock(hashtext('iwd.webhook'), hashtext(v_name));
    IF NOT EXISTS (SELECT 1 FROM iwd.webhook x WHERE x.name = v_name) THEN
        IF v_secret IS NULL THEN
            RAISE EXCEPTION 'webhook field "secret" is required' USING ERRCODE = 'invalid_parameter_value',
                DETAIL = 'A new webhook needs the secret that signs its deliveries.';
        END IF;
        IF (SELECT count(*) FROM iwd.webhook) >= 100 THEN
            RAISE EXCEPTION 'too many webhooks' USING ERRCODE = 'program_limit_exceeded',
                DETAIL = 'A tenant may have at most 100 webhooks; delete one first.';
        END IF;
        INSERT INTO iwd.webhook (name, url, events, secret, enabled, filter, from_feed_id)
        VALUES (v_name, v_url, v_events, v_secret, v_enabled, v_filter, iwd.events_head());
    ELSE
        UPDATE iwd.webhook x SET url = v_url, events = v_events, enabled = v_enabled, filter = v_filter
        WHERE x.name = v_name;
        IF v_secret IS NOT NULL THEN
            UPDATE iwd.webhook x SET secret = v_secret WHERE x.name = v_name;
        END IF;
    END IF;
    RETURN iwd.get_webhook(v_name);
END $$;

-- The webhook with this name (no secret); P0002 when none.
CREATE FUNCTION iwd.get_webhook(name text) RETURNS jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v_webhook jsonb;
BEGIN
    SELECT iwd.webhook_json(ROW(x.name, x.url, x.events, NULL, x.enabled, x.filter, x.created_at,
                                x.from_feed_id)::iwd.webhook)
    INTO v_webhook FROM iwd.webhook x WHERE x.name = get_webhook.name;
    IF NOT FOUND THEN
        PERFORM iwd._not_found('webhook', name);
    END IF;
    RETURN v_webhook;
END $$;

-- Every webhook (no secrets), by name.
CREATE FUNCTION iwd.list_webhooks() RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_agg(iwd.webhook_json(ROW(x.name, x.url, x.events, NULL, x.enabled, x.filter, x.created_at,
                                                   x.from_feed_id)::iwd.webhook) ORDER BY x.name), '[]')
    FROM iwd.webhook x
$$;

-- Delete a webhook and its deliveries; false when there was none.
CREATE FUNCTION iwd.delete_webhook(name text) RETURNS boolean
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    WITH d AS (DELETE FROM iwd.webhook x WHERE x.name = delete_webhook.name RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM d)
$$;

-- ---------------------------------------------------------------------------------------------
-- Publication and retention
-- ---------------------------------------------------------------------------------------------

-- Publish up to "max" committed outbox events: each gets the next feed id (in history order within the
-- batch) in a narrow feed row (its document stays where its transaction wrote it), and one delivery per
-- enabled webhook whose types and filter match, in this transaction. An event that commits after a later
-- one was published gets a later feed id. One publisher at a time
-- (iwd's own lock); a caller that cannot take it at once returns without waiting (the holder publishes).
-- When it published something it notifies iwd_events, so that every listener reads the new events.
-- Returns the last published id.
CREATE FUNCTION iwd.publish_events(max int DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_last bigint;
BEGIN
    IF max IS NULL OR max < 1 OR max > 100000 THEN
        RAISE EXCEPTION 'max must be between 1 and 100000' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It is %s.', coalesce(max::text, 'null'));
    END IF;
    IF NOT iwd._try_lock_publication() THEN
        RETURN iwd.events_head();
    END IF;
    -- one statement, one snapshot: a batch of at most "max" committed events, as the outbox stores them
    -- (about the order they were written), numbered in history order; the webhooks that get deliveries
    -- are those visible with these events. A document is read only for a webhook with a filter.
    WITH o AS (DELETE FROM iwd.event_outbox x
               WHERE x.ctid = ANY (ARRAY(SELECT y.ctid FROM iwd.event_outbox y LIMIT max))
               RETURNING x.event_id, x.type, x.task_id),
         f AS (INSERT INTO iwd.event_feed (id, event_id, type, task_id)
               SELECT nextval('iwd.event_feed_id_seq'), s.event_id, s.type, s.task_id
               FROM (SELECT o.event_id, o.type, o.task_id FROM o ORDER BY o.event_id) s
               RETURNING id, event_id, type, task_id),
         d AS (INSERT INTO iwd.webhook_delivery (webhook, feed_id, task_id, type, created_at, next_attempt_at)
               SELECT w.name, f.id, f.task_id, f.type, iwd.now(), iwd.now()
               FROM f JOIN iwd.webhook w ON w.enabled AND f.id > w.from_feed_id
                                            AND (w.events IS NULL OR f.type = ANY (w.events))
                                            AND (w.filter = '{}' OR iwd._event_matches(w.filter, (
                                                     SELECT k.doc -> 'task' FROM iwd.event_document k
                                                     WHERE k.event_id = f.event_id))))
    SELECT pg_catalog.max(f.id) INTO v_last FROM f;
    IF v_last IS NULL THEN
        RETURN iwd.events_head();
    END IF;
    PERFORM pg_notify('iwd_events', v_last::text);
    RETURN v_last;
END $$;

-- Delete up to "batch" feed events published longer than iwd.event_retention ago (never the last one: it
-- holds the head; never one a pending delivery still has to send), with their documents, and as many
-- settled deliveries older than that; returns how many feed events and deliveries went. The scheduler
-- worker calls it on its passes.
CREATE FUNCTION iwd._expire_events(batch int) RETURNS bigint
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_before timestamptz := now() - coalesce(current_setting('iwd.event_retention', true), '7 days')::interval;
    v_feed bigint;
    v_deliveries bigint;
BEGIN
    WITH c AS (SELECT f.id FROM iwd.event_feed f
               WHERE f.published_at < v_before AND f.id < (SELECT max(l.id) FROM iwd.event_feed l)
                 AND NOT EXISTS (SELECT 1 FROM iwd.webhook_delivery d WHERE d.feed_id = f.id AND d.status = 'pending')
               ORDER BY f.published_at LIMIT batch),
         f AS (DELETE FROM iwd.event_feed f USING c WHERE f.id = c.id RETURNING f.event_id),
         k AS (DELETE FROM iwd.event_document k USING f WHERE k.event_id = f.event_id)
    SELECT count(*) INTO v_feed FROM f;
    WITH c AS (SELECT d.id FROM iwd.webhook_delivery d
               WHERE d.status <> 'pending' AND d.created_at < v_before ORDER BY d.created_at LIMIT batch)
    DELETE FROM iwd.webhook_delivery d USING c WHERE d.id = c.id;
    GET DIAGNOSTICS v_deliveries = ROW_COUNT;
    RETURN v_feed + v_deliveries;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Reading the feed
-- ---------------------------------------------------------------------------------------------

-- Up to "lim" (1 to 1000) events published after id "after", oldest first, of the given types (NULL: all)
-- whose task document matches the filter (the keys of the GET /tasks filters):
-- {"events": [event documents], "next": where to resume}. A call examines at most 100 x lim published
-- events (at least lim, at most 10,000), so that a selective filter costs a bounded scan per call: "next"
-- is the last event returned, or "after" when none was, except when the scan stopped at that bound with
-- fewer matches than lim: then it is the last event examined, so that the next call goes on past them.
-- Resuming after "next" misses no matching event. An
-- "after" older than the feed keeps (iwd.event_retention) continues from the oldest event kept.
CREATE FUNCTION iwd.events_after(after bigint, lim int DEFAULT 100, types text[] DEFAULT NULL,
                                 filter jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v_types text[] := iwd._check_event_types(types, 'types');
    v_filter jsonb := iwd._event_filter(filter, 'filter');
    v_scan int;
    v_events jsonb;
    v_count int;
    v_next bigint;
    v_examined int;
    v_last bigint;
BEGIN
    IF after IS NULL OR after < 0 THEN
        RAISE EXCEPTION 'after must be an event id (0 or more)' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It is %s.', coalesce(after::text, 'null'));
    END IF;
    PERFORM iwd._check_limit(lim);
    v_scan := greatest(lim, least(100 * lim, 10000));
    -- the scan stops at the lim-th match or after v_scan events, whichever comes first
    -- (a document is read, by its key, for each event of the types asked, once: OFFSET 0 keeps the
    -- subquery that reads it from being merged into the filter that uses it)
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', e.id) || e.doc ORDER BY e.id), '[]'), count(*), max(e.id)
    INTO v_events, v_count, v_next
    FROM (SELECT s.id, s.doc
          FROM (SELECT f.id, (SELECT k.doc FROM iwd.event_document k WHERE k.event_id = f.event_id) AS doc
                FROM (SELECT f.id, f.event_id, f.type FROM iwd.event_feed f WHERE f.id > after
                      ORDER BY f.id LIMIT v_scan) f
                WHERE v_types IS NULL OR f.type = ANY (v_types)
                OFFSET 0) s
          WHERE iwd._event_matches(v_filter, s.doc -> 'task')
          ORDER BY s.id LIMIT lim) e;
    IF v_count < lim THEN
        -- fewer matches than asked. A scan that reached the newest event leaves next at the last event
        -- returned (or after); one that stopped at its bound moves next past what it examined, or a caller
        -- resuming from next would examine the same events again, forever
        SELECT count(*), max(s.id) INTO v_examined, v_last
        FROM (SELECT f.id FROM iwd.event_feed f WHERE f.id > after ORDER BY f.id LIMIT v_scan) s;
        IF v_examined = v_scan THEN
            v_next := v_last;
        END IF;
    END IF;
    RETURN jsonb_build_object('events', v_events, 'next', coalesce(v_next, after));
END $$;

-- ---------------------------------------------------------------------------------------------
-- Deliveries
-- ---------------------------------------------------------------------------------------------

-- Claim up to "lim" (1 to 1000) due deliveries for "owner" (a sidecar replica's id) for "lease" (1 s to
-- 1 h): pending, due, not leased (or the lease ran out), of an enabled webhook, and the oldest pending
-- delivery of its (webhook, task), so that one endpoint gets one task's events in order, one at a time.
-- Concurrent claimers skip each other's rows. body: the exact text to POST (the event document).
-- Reads the due deliveries in the order they came due and stops at "lim" (passing over the leased ones,
-- as many as are in flight), whatever the backlog, and updates the claimed rows by their ctid: enable_sort
-- and enable_seqscan off, because the statistics of a table that grew in a burst since its last analyze
-- would have the planner read every due delivery and sort them, or every delivery to find the claimed
-- ones; jit off (plans that look that expensive would be compiled). SECURITY DEFINER: it returns the
-- webhook's secret, which its callers cannot read (sql/security.sql).
CREATE FUNCTION iwd.claim_deliveries(owner text, lim int DEFAULT 32, lease interval DEFAULT '60 s')
RETURNS TABLE (id uuid, webhook text, url text, secret text, feed_id bigint, type text, body text)
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER
SET enable_sort = off SET enable_seqscan = off SET jit = off AS $$
DECLARE
    v_now timestamptz := iwd.now();
    v_enabled text[];
    v_claimed tid[];
BEGIN
    IF owner IS NULL OR owner = '' OR octet_length(owner) > 256 THEN
        RAISE EXCEPTION 'owner must be a non-empty string of at most 256 bytes'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM iwd._check_limit(lim);
    IF lease IS NULL OR lease < interval '1 s' OR lease > interval '1 h' THEN
        RAISE EXCEPTION 'lease must be between 1 second and 1 hour' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It is %s.', coalesce(lease::text, 'null'));
    END IF;
    v_enabled := ARRAY(SELECT w.name FROM iwd.webhook w WHERE w.enabled);
    -- the rows stay locked until the transaction ends: their ctids do not change meanwhile
    v_claimed := ARRAY(SELECT d.ctid FROM iwd.webhook_delivery d
                       WHERE d.status = 'pending' AND d.next_attempt_at <= v_now AND d.webhook = ANY (v_enabled)
                         AND (d.lease_until IS NULL OR d.lease_until <= v_now)
                         AND NOT EXISTS (SELECT 1 FROM iwd.webhook_delivery o
                                         WHERE o.webhook = d.webhook AND o.task_id = d.task_id
                                           AND o.status = 'pending' AND o.feed_id < d.feed_id)
                       ORDER BY d.next_attempt_at, d.feed_id LIMIT lim
                       FOR UPDATE OF d SKIP LOCKED);
    RETURN QUERY
    WITH u AS (UPDATE iwd.webhook_delivery d SET lease_owner = owner, lease_until = v_now + lease
               WHERE d.ctid = ANY (v_claimed)
               RETURNING d.id, d.webhook, d.feed_id, d.type, d.next_attempt_at)
    SELECT u.id, u.webhook, w.url, w.secret, u.feed_id, u.type, (jsonb_build_object('id', f.id) || k.doc)::text
    FROM u JOIN iwd.webhook w ON w.name = u.webhook JOIN iwd.event_feed f ON f.id = u.feed_id
           JOIN iwd.event_document k ON k.event_id = f.event_id
    ORDER BY u.next_attempt_at, u.feed_id;
END $$;
REVOKE EXECUTE ON FUNCTION iwd.claim_deliveries(text, int, interval) FROM PUBLIC;

-- The delivery in the REST shape.
CREATE FUNCTION iwd.delivery_json(d iwd.webhook_delivery) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT jsonb_build_object('id', d.id, 'eventId', d.feed_id, 'type', d.type, 'taskId', d.task_id,
                              'status', d.status, 'attempts', d.attempts,
                              'lastAttemptAt', iwd._ts(d.last_attempt_at), 'lastStatus', d.last_status,
                              'lastError', d.last_error,
                              'nextAttemptAt', CASE WHEN d.status = 'pending' THEN iwd._ts(d.next_attempt_at) END)
$$;

-- Record the attempts of deliveries claimed by "owner", in one statement: "outcomes" is a JSON array of at
-- most 1000 {"id": delivery id, "status": HTTP status or null, "error": text or null}. A 2xx status
-- delivers it; anything else (null: no answer, "error" says why) schedules the next attempt
-- 1 s x 2^(attempts - 1) later (at most 10 min), or fails it once iwd.webhook_retry_for has passed since its
-- creation (or its last manual retry). Releases the lease. Returns each id given with its new status (those
-- recorded first), or 'lost' when the delivery is no longer this owner's (unknown, settled, or leased to
-- another since); an id given twice is recorded once, with its first outcome. 22023 for what is not such
-- an array (a status outside 100 to 599, an id that is not a uuid). The deliveries are found by id whatever
-- the statistics say (enable_seqscan off, jit off: see iwd.claim_deliveries).
CREATE FUNCTION iwd.finish_deliveries(owner text, outcomes jsonb)
RETURNS TABLE (id uuid, status text)
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET enable_seqscan = off SET jit = off AS $$
DECLARE
    v_now timestamptz := iwd.now();
    v_retry_for interval := coalesce(current_setting('iwd.webhook_retry_for', true), '24 hours')::interval;
    v_bad jsonb;
    v_ids uuid[];
    v_statuses text[];
BEGIN
    IF jsonb_typeof(outcomes) IS DISTINCT FROM 'array' OR jsonb_array_length(outcomes) > 1000 THEN
        RAISE EXCEPTION 'outcomes must be an array of at most 1000 attempts'
            USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It is %s.', CASE jsonb_typeof(outcomes) WHEN 'array'
                                         THEN jsonb_array_length(outcomes) || ' attempts'
                                         ELSE coalesce(jsonb_typeof(outcomes), 'null') END);
    END IF;
    SELECT o INTO v_bad FROM jsonb_array_elements(outcomes) o
    WHERE jsonb_typeof(o) <> 'object' OR jsonb_typeof(o -> 'id') IS DISTINCT FROM 'string'
       OR (o -> 'id') #>> '{}' !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$'
       OR coalesce(jsonb_typeof(o -> 'status'), 'null') NOT IN ('number', 'null')
       OR (jsonb_typeof(o -> 'status') = 'number'
           AND ((o ->> 'status') !~ '^[0-9]{3}$' OR (o ->> 'status')::int NOT BETWEEN 100 AND 599))
       OR coalesce(jsonb_typeof(o -> 'error'), 'null') NOT IN ('string', 'null')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'outcomes has a malformed attempt' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Each is {"id": a delivery id, "status": an HTTP status code (100 to 599) or null, '
                            '"error": a string or null}; one is %s.', left(v_bad::text, 200));
    END IF;
    WITH o AS (SELECT DISTINCT ON (x.id) x.id, x.status, left(x.error, 1024) AS error
               FROM jsonb_array_elements(outcomes) WITH ORDINALITY AS e(outcome, n),
                    jsonb_to_record(e.outcome) AS x(id uuid, status int, error text)
               ORDER BY x.id, e.n),
         u AS (UPDATE iwd.webhook_delivery d
               SET attempts = d.attempts + 1, last_attempt_at = v_now, last_status = o.status, last_error = o.error,
                   status = CASE WHEN o.status BETWEEN 200 AND 299 THEN 'delivered'
                                 WHEN v_now >= coalesce(d.retried_at, d.created_at) + v_retry_for THEN 'failed'
                                 ELSE 'pending' END,
                   next_attempt_at = CASE WHEN o.status BETWEEN 200 AND 299
                                            OR v_now >= coalesce(d.retried_at, d.created_at) + v_retry_for THEN NULL
                                          ELSE v_now + least(interval '1 s' * power(2, least(d.attempts, 20)),
                                                             interval '10 min') END,
                   lease_owner = NULL, lease_until = NULL
               FROM o WHERE d.id = o.id AND d.status = 'pending' AND d.lease_owner = owner
               RETURNING d.id, d.status)
    SELECT array_agg(u.id), array_agg(u.status) INTO v_ids, v_statuses FROM u;
    RETURN QUERY SELECT r.id, r.status FROM unnest(v_ids, v_statuses) AS r(id, status);
    -- the rest were lost (a comparison per pair: at most a million, in C)
    RETURN QUERY SELECT DISTINCT x.id, 'lost'::text FROM jsonb_to_recordset(outcomes) AS x(id uuid)
                 WHERE x.id <> ALL (coalesce(v_ids, '{}'));
END $$;

-- Record one attempt of a delivery claimed by "owner" (iwd.finish_deliveries for one; 22023 for an
-- http_status outside 100 to 599). Returns the new status, or 'lost' when the delivery is no longer this
-- owner's.
CREATE FUNCTION iwd.finish_delivery(id uuid, owner text, http_status int, error text) RETURNS text
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    IF http_status IS NOT NULL AND (http_status < 100 OR http_status > 599) THEN
        RAISE EXCEPTION 'http_status must be an HTTP status code (100 to 599)'
            USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('It is %s.', http_status);
    END IF;
    IF id IS NULL THEN
        RETURN 'lost';
    END IF;
    RETURN (SELECT f.status FROM iwd.finish_deliveries(owner, jsonb_build_array(jsonb_build_object(
                'id', id, 'status', http_status, 'error', error))) f);
END $$;

-- A webhook's deliveries, newest first, optionally of one status, "lim" (1 to 1000) per page:
-- {"deliveries": [...], "next": the cursor of the next page, or null after the last}. P0002 for an
-- unknown webhook, 22023 for an unknown status or a malformed cursor.
CREATE FUNCTION iwd.webhook_deliveries(name text, status text DEFAULT NULL, lim int DEFAULT 100,
                                       cursor text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v_before bigint;
    v_page jsonb;
    v_count int;
    v_last bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM iwd.webhook w WHERE w.name = webhook_deliveries.name) THEN
        PERFORM iwd._not_found('webhook', name);
    END IF;
    IF status IS NOT NULL AND status NOT IN ('pending', 'delivered', 'failed') THEN
        RAISE EXCEPTION 'unknown delivery status "%"', status USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'Statuses: pending, delivered, failed.';
    END IF;
    PERFORM iwd._check_limit(lim);
    IF cursor IS NOT NULL THEN
        IF cursor !~ '^[0-9]{1,18}$' THEN
            RAISE EXCEPTION 'malformed deliveries cursor' USING ERRCODE = 'invalid_parameter_value',
                DETAIL = 'Pass the "next" value of the previous page unchanged.';
        END IF;
        v_before := cursor::bigint;
    END IF;
    SELECT coalesce(jsonb_agg(iwd.delivery_json(p) ORDER BY p.feed_id DESC), '[]'), count(*), min(p.feed_id)
    INTO v_page, v_count, v_last
    FROM (SELECT d.* FROM iwd.webhook_delivery d
          WHERE d.webhook = webhook_deliveries.name AND (v_before IS NULL OR d.feed_id < v_before)
            AND (webhook_deliveries.status IS NULL OR d.status = webhook_deliveries.status)
          ORDER BY d.feed_id DESC LIMIT lim) p;
    RETURN jsonb_build_object('deliveries', v_page, 'next', CASE WHEN v_count = lim THEN v_last::text END);
END $$;

-- Make a failed (or pending) delivery pending and due now, with a new retry window; P0002 when the
-- webhook or the delivery is unknown, 55000 when it was delivered. Returns the delivery.
CREATE FUNCTION iwd.retry_delivery(name text, id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_now timestamptz := iwd.now();
    d iwd.webhook_delivery;
BEGIN
    SELECT x.* INTO d FROM iwd.webhook_delivery x
    WHERE x.webhook = retry_delivery.name AND x.id = retry_delivery.id FOR UPDATE;
    IF NOT FOUND THEN
        IF NOT EXISTS (SELECT 1 FROM iwd.webhook w WHERE w.name = retry_delivery.name) THEN
            PERFORM iwd._not_found('webhook', name);
        END IF;
        PERFORM iwd._not_found('delivery', coalesce(id::text, 'null'));
    END IF;
    IF d.status = 'delivered' THEN
        RAISE EXCEPTION 'delivery % was delivered', id USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = 'Only a failed or pending delivery can be retried.';
    END IF;
    UPDATE iwd.webhook_delivery x SET status = 'pending', next_attempt_at = v_now, retried_at = v_now
    WHERE x.id = d.id RETURNING x.* INTO d;
    RETURN iwd.delivery_json(d);
END $$;

-- The pending deliveries of every webhook (the sidecar's iwd_webhook_pending metric).
CREATE FUNCTION iwd.webhook_stats() RETURNS TABLE (webhook text, pending bigint)
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT w.name, count(d.id) FROM iwd.webhook w
    LEFT JOIN iwd.webhook_delivery d ON d.webhook = w.name AND d.status = 'pending'
    GROUP BY w.name ORDER BY w.name
$$;

-- Logical backups keep the tenant's events, webhooks and deliveries (see sql/iwd.sql).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['iwd.event_document', 'iwd.event_outbox', 'iwd.event_feed', 'iwd.event_feed_id_seq',
                             'iwd.webhook', 'iwd.webhook_delivery'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(t::regclass, '');
    END LOOP;
END $$;
