-- iwd router sync (README, Router): a tenant may hand distribution to an external router (GWS). The
-- sidecar's sync (sidecar/router.c) submits the best queued tasks to it, stops those iwd no longer wants
-- there, and pulls the router's changes back; this file keeps everything the sync knows, so that a replica
-- that dies loses nothing and another one carries on: the configuration (secrets sealed by the sidecar),
-- the submitted set with each task's routerId, the pull cursor and the lease that lets one replica at a
-- time sync the tenant. Router states come back through the lifecycle API (iwd.accept_task,
-- iwd.complete_task, iwd.decline_task) and the claim's reservation event, so history, the Data Mart,
-- webhooks and the event stream see them like any other change.

-- ---------------------------------------------------------------------------------------------
-- Configuration and state
-- ---------------------------------------------------------------------------------------------

-- The tenant's router (one row at most). client_secret and api_key are sealed by the sidecar under its
-- IWD_SECRET_KEY (the database never holds them in clear) and never returned by iwd.get_router. cursor:
-- the router's cursor after the last change applied (written in the same transaction as the changes).
-- lease_owner / lease_until: the replica syncing the tenant and until when (iwd.router_claim). key_prefix:
-- random, starts every idempotency key of the tenant's submissions, so that the keys of tenants (or iwd
-- installations) sharing one router never meet.
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

-- A task handed to the router. submission numbers its submissions (iwd.router_submission, never
-- reused): the idempotency key of a submission is "<key_prefix>-<task id>-<submission>", committed here
-- before the request is sent, so that a submission repeated after a crash or a timeout names the same work
-- item.
-- router_id: NULL until the router answered. state: what the router last said (submitting: not yet
-- answered; returned: no longer at the router, kept until retry_at so that it is not submitted again at
-- once). agent: the router's agent it was offered to. version: the router's version of the work item
-- last applied (a change repeated by a pull is applied once). priority, business_value: as submitted (a
-- change resubmits it).
-- A task in state submitting or queued is held by the router: the claim (iwd.next_task, extension/claim.c's
-- pick) passes it by, so that iwd's own agents never take what the router may hand out; it is claimable
-- again once given back (rejected or stopped there, stopped by the sync: returned; the router deleted or
-- its url changed: the row gone). A claim that meets a task in the very instant the sync records its
-- submission may still take it: the sync then stops it at the router (iwd.router_plan).
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
-- the claim's probe (is this candidate held by the router?), the best plan whatever the statistics say
CREATE INDEX router_task_held_idx ON iwd.router_task (task_id) WHERE state IN ('submitting', 'queued');

-- How long a task the router rejected or stopped waits before it is submitted again.
CREATE FUNCTION iwd._router_retry_after() RETURNS interval
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT interval '30 seconds'
$$;

-- The router in the REST shape: no secret ("hasClientSecret", "hasApiKey") and its sync status.
CREATE FUNCTION iwd.router_json(r iwd.router) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'url', r.url, 'authUrl', r.auth_url, 'clientId', r.client_id,
        'hasClientSecret', r.client_secret IS NOT NULL, 'hasApiKey', r.api_key IS NOT NULL,
        'maxInFlight', r.max_in_flight, 'enabled', r.enabled,
        'status', jsonb_build_object(
            'state', CASE WHEN NOT r.enabled THEN 'disabled'
                          WHEN r.last_error_at IS NOT NULL
                               AND (r.last_sync_at IS NULL OR r.last_sync_at < r.last_error_at) THEN 'failing'
                          WHEN r.last_sync_at IS NULL THEN 'starting' ELSE 'syncing' END,
            'lastSyncAt', iwd._ts(r.last_sync_at), 'lastError', r.last_error,
            'lastErrorAt', iwd._ts(r.last_error_at), 'lagSeconds', r.lag_s, 'cursor', r.cursor,
            'syncedBy', CASE WHEN r.lease_until > now() THEN r.lease_owner END,
            'inFlight', (SELECT count(*) FROM iwd.router_task x WHERE x.state <> 'returned'),
            'submitting', (SELECT count(*) FROM iwd.router_task x WHERE x.state = 'submitting'),
            'offered', (SELECT count(*) FROM iwd.router_task x WHERE x.state = 'offered'),
            'accepted', (SELECT count(*) FROM iwd.router_task x WHERE x.state = 'accepted')),
        'createdAt', iwd._ts(r.created_at), 'updatedAt', iwd._ts(r.updated_at))
$$;

-- The tenant's router; P0002 when none is configured.
CREATE FUNCTION iwd.get_router() RETURNS jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    r iwd.router;
BEGIN
    SELECT x.* INTO r FROM iwd.router x;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no router is configured' USING ERRCODE = 'no_data_found',
            HINT = 'PUT /iwd/v3/router configures one.';
    END IF;
    RETURN iwd.router_json(r);
END $$;

-- Forget what was handed to the router: tasks it had offered (and not accepted) are queued again
-- (iwd.decline_task), the submitted set and the cursor are cleared. The work items stay at the router.
CREATE FUNCTION iwd._router_forget() RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    x record;
BEGIN
    FOR x IN SELECT r.task_id, r.agent FROM iwd.router_task r JOIN iwd.task t ON t.id = r.task_id
             WHERE r.state = 'offered' AND t.status = 'assigned' AND t.assigned_to = r.agent
               AND t.accepted_at IS NULL LOOP
        PERFORM iwd.decline_task(x.task_id, x.agent, 'the router configuration changed');
    END LOOP;
    DELETE FROM iwd.router_task;
    UPDATE iwd.router SET cursor = NULL;
END $$;

-- A URL of the router configuration, or 22023 naming the field.
CREATE FUNCTION iwd._router_url(doc jsonb, key text) RETURNS text
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v text := iwd._str(doc, key, 'router', 2048);
BEGIN
    IF v IS NOT NULL AND (v !~* '^https?://[^[:space:][:cntrl:]/?#@]+' OR v ~ '[[:space:][:cntrl:]?#]') THEN
        RAISE EXCEPTION 'router field "%" must be an http or https URL', key USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'It must start with http:// or https:// and a host, and hold no spaces, query or fragment.';
    END IF;
    RETURN rtrim(v, '/');
END $$;

-- Create or replace the router configuration (PUT semantics: omitted fields take their defaults, except
-- the secrets, which an update keeps when omitted; authUrl defaults to url). clientSecret and apiKey
-- arrive sealed by the sidecar. A new url forgets what was handed to the old router (iwd._router_forget).
-- Returns the configuration without its secrets.
CREATE FUNCTION iwd.upsert_router(router jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_url text;
    v_auth_url text;
    v_client_id text;
    v_secret text;
    v_api_key text;
    v_max int;
    v_enabled boolean;
    v_old iwd.router;
BEGIN
    PERFORM iwd._check_object(router, 'router', '{url,authUrl,clientId,clientSecret,apiKey,maxInFlight,enabled,'
                              'hasClientSecret,hasApiKey,status,createdAt,updatedAt}', '{url,clientId}');
    v_url := iwd._router_url(router, 'url');
    v_auth_url := coalesce(iwd._router_url(router, 'authUrl'), v_url);
    v_client_id := iwd._str(router, 'clientId', 'router', 256);
    v_secret := iwd._str(router, 'clientSecret', 'router', 2048);
    v_api_key := iwd._str(router, 'apiKey', 'router', 2048);
    v_max := coalesce(iwd._int(router, 'maxInFlight', 'router', 1, 10000), 10);
    v_enabled := coalesce(iwd._bool(router, 'enabled', 'router'), true);
    SELECT x.* INTO v_old FROM iwd.router x FOR UPDATE;
    IF NOT FOUND THEN
        IF v_secret IS NULL THEN
            RAISE EXCEPTION 'router field "clientSecret" is required' USING ERRCODE = 'invalid_parameter_value',
                DETAIL = 'A new router needs the client secret of its OAuth2 client credentials.';
        END IF;
        INSERT INTO iwd.router (url, auth_url, client_id, client_secret, api_key, max_in_flight, enabled)
        VALUES (v_url, v_auth_url, v_client_id, v_secret, v_api_key, v_max, v_enabled);
        DELETE FROM iwd.router_task;
    ELSE
        IF v_old.url IS DISTINCT FROM v_url THEN
            PERFORM iwd._router_forget();
        END IF;
        UPDATE iwd.router x SET url = v_url, auth_url = v_auth_url, client_id = v_client_id,
            client_secret = coalesce(v_secret, x.client_secret), api_key = coalesce(v_api_key, x.api_key),
            max_in_flight = v_max, enabled = v_enabled, last_error = NULL, last_error_at = NULL,
            updated_at = now();
    END IF;
    RETURN iwd.get_router();
END $$;

-- Delete the router configuration (iwd._router_forget first); false when there was none.
CREATE FUNCTION iwd.delete_router() RETURNS boolean
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM iwd.router FOR UPDATE) THEN
        RETURN false;
    END IF;
    PERFORM iwd._router_forget();
    DELETE FROM iwd.router;
    RETURN true;
END $$;

-- ---------------------------------------------------------------------------------------------
-- The sync (sidecar/router.c): claim, plan, report
-- ---------------------------------------------------------------------------------------------

-- Take or renew the lease of the tenant's sync for owner (a replica's id) for lease_s seconds: the
-- configuration with its sealed secrets and the cursor, {"held": false, "syncedBy"} when another replica
-- holds an unexpired lease, or NULL when no router is configured. A replica that dies stops renewing:
-- another takes over once its lease has passed.
CREATE FUNCTION iwd.router_claim(owner text, lease_s int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    r iwd.router;
BEGIN
    SELECT x.* INTO r FROM iwd.router x FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF r.lease_owner IS DISTINCT FROM owner AND r.lease_until > now() THEN
        RETURN jsonb_build_object('held', false, 'syncedBy', r.lease_owner);
    END IF;
    UPDATE iwd.router x SET lease_owner = owner, lease_until = now() + make_interval(secs => lease_s);
    RETURN jsonb_build_object('held', true, 'url', r.url, 'authUrl', r.auth_url, 'clientId', r.client_id,
                              'clientSecret', r.client_secret, 'apiKey', r.api_key, 'maxInFlight', r.max_in_flight,
                              'enabled', r.enabled, 'cursor', r.cursor, 'keyPrefix', r.key_prefix);
END $$;

-- The router row locked for owner's change; 55000 when another replica holds the lease (or no router).
CREATE FUNCTION iwd._router_lease(owner text) RETURNS iwd.router
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    r iwd.router;
BEGIN
    SELECT x.* INTO r FROM iwd.router x FOR UPDATE;
    IF NOT FOUND OR r.lease_owner IS DISTINCT FROM owner THEN
        RAISE EXCEPTION 'the router sync lease is not held by %', owner
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It is held by %s.', coalesce(r.lease_owner, 'no one'));
    END IF;
    RETURN r;
END $$;

-- What the sync does next, for owner (who holds the lease): {"stop": [{"taskId", "routerId"}], "submit":
-- [{"taskId", "submission", "task"}]}. The window is the best maxInFlight queued tasks in queue order,
-- less the tasks the router has offered or accepted. Stopped: a submitted task outside the window
-- (displaced by a better one, held, canceled, completed, expired, claimed in iwd) or whose priority or
-- business value changed (it is submitted again), and an offered or accepted one iwd no longer has
-- assigned to that agent; with the router disabled, the offered ones too. Submitted: the submissions not
-- yet answered (the same submission: idempotent), then the window's tasks that are not at the router,
-- while fewer than maxInFlight are (a displaced task is stopped first, its successor submitted by the next
-- plan). At most lim of each; the new submissions are recorded (state submitting) before the plan is
-- returned. The submissions come in queue order, best first (the order the sync sends them in).
CREATE FUNCTION iwd.router_plan(owner text, lim int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    r iwd.router := iwd._router_lease(owner);
    v_now timestamptz := now();
    v_fixed int;
    v_live int;
    v_window bigint[];
    v_stop jsonb;
    v_submit jsonb;
BEGIN
    IF lim IS NULL OR lim < 1 OR lim > 10000 THEN
        RAISE EXCEPTION 'lim must be between 1 and 10000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM iwd.router_task x WHERE x.state = 'returned' AND x.retry_at <= v_now;
    SELECT count(*) FILTER (WHERE x.state IN ('offered', 'accepted')), count(*)
    INTO v_fixed, v_live FROM iwd.router_task x WHERE x.state <> 'returned';
    v_window := ARRAY(
        SELECT t.id FROM iwd.task t
        WHERE t.status = 'queued'
          AND NOT EXISTS (SELECT 1 FROM iwd.router_task x WHERE x.task_id = t.id AND x.state = 'returned')
        ORDER BY t.priority DESC, t.business_value DESC, t.due_at ASC NULLS LAST, t.created_at, t.id
        LIMIT CASE WHEN r.enabled THEN greatest(r.max_in_flight - v_fixed, 0) ELSE 0 END);
    SELECT coalesce(jsonb_agg(jsonb_build_object('taskId', s.task_id, 'routerId', s.router_id)), '[]')
    INTO v_stop
    FROM (SELECT x.task_id, x.router_id FROM iwd.router_task x LEFT JOIN iwd.task t ON t.id = x.task_id
          WHERE x.router_id IS NOT NULL
            AND ((x.state = 'queued'
                  AND (x.task_id <> ALL (v_window)
                       OR (t.priority, t.business_value) IS DISTINCT FROM (x.priority, x.business_value)))
                 OR (x.state IN ('offered', 'accepted')
                     AND (t.id IS NULL OR t.status <> 'assigned' OR t.assigned_to IS DISTINCT FROM x.agent))
                 OR (x.state = 'offered' AND NOT r.enabled))
          ORDER BY x.task_id LIMIT lim) s;
    WITH fresh AS (
        SELECT w.id, w.n FROM unnest(v_window) WITH ORDINALITY AS w(id, n)
        WHERE NOT EXISTS (SELECT 1 FROM iwd.router_task x WHERE x.task_id = w.id)
        ORDER BY w.n LIMIT least(greatest(r.max_in_flight - v_live, 0), lim)),
    recorded AS (
        INSERT INTO iwd.router_task (task_id, submission, state, priority, business_value, changed_at)
        SELECT t.id, nextval('iwd.router_submission'), 'submitting', t.priority, t.business_value, v_now
        FROM fresh f JOIN iwd.task t ON t.id = f.id ORDER BY f.n
        RETURNING task_id, submission)
    SELECT coalesce(jsonb_agg(jsonb_build_object('taskId', s.task_id, 'submission', s.submission, 'task', s.doc)
                              ORDER BY s.priority DESC, s.business_value DESC, s.due_at ASC NULLS LAST, s.created_at,
                                       s.task_id), '[]')
    INTO v_submit
    FROM (SELECT o.task_id, o.submission,
                 coalesce((SELECT iwd.task_json(t) FROM iwd.task t WHERE t.id = o.task_id),
                          (SELECT iwd.task_json(ROW(c.*)::iwd.task) FROM iwd.task_closed c WHERE c.id = o.task_id))
                     AS doc,
                 coalesce(t.priority, c.priority) AS priority, coalesce(t.business_value, c.business_value)
                     AS business_value, coalesce(t.due_at, c.due_at) AS due_at,
                 coalesce(t.created_at, c.created_at) AS created_at
          FROM (SELECT x.task_id, x.submission FROM iwd.router_task x WHERE x.state = 'submitting'
                ORDER BY x.changed_at, x.task_id LIMIT lim) o
          LEFT JOIN iwd.task t ON t.id = o.task_id LEFT JOIN iwd.task_closed c ON c.id = o.task_id
          UNION ALL
          SELECT d.task_id, d.submission, iwd.task_json(t), t.priority, t.business_value, t.due_at, t.created_at
          FROM recorded d JOIN iwd.task t ON t.id = d.task_id) s
    WHERE s.doc IS NOT NULL;
    RETURN jsonb_build_object('stop', v_stop, 'submit', v_submit);
END $$;

-- The router's answers to submissions: [{"taskId", "submission", "routerId"}]; an answer to a submission
-- no longer current is ignored. Returns the number recorded.
CREATE FUNCTION iwd.router_submitted(owner text, results jsonb) RETURNS int
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    n int;
BEGIN
    PERFORM iwd._router_lease(owner);
    UPDATE iwd.router_task x SET router_id = s."routerId", state = 'queued', changed_at = now()
    FROM jsonb_to_recordset(results) AS s("taskId" bigint, submission bigint, "routerId" text)
    WHERE x.task_id = s."taskId" AND x.submission = s.submission AND x.state = 'submitting'
      AND s."routerId" IS NOT NULL AND octet_length(s."routerId") BETWEEN 1 AND 256;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- The router's answers to stops: [{"taskId", "routerId"}] no longer at the router. A task it had offered
-- and iwd still has reserved to that agent is queued again (iwd.decline_task). Returns the number recorded.
CREATE FUNCTION iwd.router_stopped(owner text, results jsonb) RETURNS int
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    x record;
    n int := 0;
BEGIN
    PERFORM iwd._router_lease(owner);
    FOR x IN SELECT r.task_id, r.state, r.agent, t.status, t.assigned_to, t.accepted_at
             FROM jsonb_to_recordset(results) AS s("taskId" bigint, "routerId" text)
             JOIN iwd.router_task r ON r.task_id = s."taskId" AND r.router_id = s."routerId"
             LEFT JOIN iwd.task t ON t.id = r.task_id
             WHERE r.state <> 'returned' FOR UPDATE OF r LOOP
        IF x.state = 'offered' AND x.status = 'assigned' AND x.assigned_to = x.agent AND x.accepted_at IS NULL THEN
            PERFORM iwd.decline_task(x.task_id, x.agent, 'stopped at the router');
        END IF;
        UPDATE iwd.router_task r SET state = 'returned', router_id = NULL, agent = NULL, retry_at = now(),
            changed_at = now()
        WHERE r.task_id = x.task_id;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- Make sure a router agent is known to iwd (the lifecycle names it); new ones are not ready (they never
-- pull tasks from iwd themselves).
CREATE FUNCTION iwd._router_agent(agent text) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    IF agent IS NULL OR agent = '' OR octet_length(agent) > 256 THEN
        RAISE EXCEPTION 'a router change needs an agent of 1 to 256 bytes' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO iwd.agent (id) VALUES (agent) ON CONFLICT (id) DO NOTHING;
END $$;

-- Reserve a queued task to a router agent, as the claim does (the "reserved" event), without a timeout:
-- the router decides when an offer ends. A task still offered to previous (the router's agent before) is
-- declined by it first.
CREATE FUNCTION iwd._router_reserve(task_id bigint, agent text, router_id text, previous text) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_now timestamptz := iwd.now();
    t iwd.task := iwd._lock_task(task_id);
BEGIN
    PERFORM iwd._router_agent(agent);
    IF t.status = 'assigned' AND t.assigned_to = previous AND previous <> agent AND t.accepted_at IS NULL THEN
        PERFORM iwd.decline_task(task_id, previous, 'offered to another agent by the router');
        t := iwd._lock_task(task_id);
    END IF;
    IF t.status <> 'queued' THEN
        RETURN;
    END IF;
    UPDATE iwd.task x SET status = 'assigned', assigned_to = agent, reserved_until = NULL, accepted_at = NULL,
        updated_at = v_now
    WHERE x.id = task_id;
    PERFORM iwd._event(task_id, v_now, 'reserved', agent, 'queued', 'assigned',
                       jsonb_build_object('routerId', router_id));
END $$;

-- What the router says an agent did with a work item, done in iwd: the task reserved to the agent
-- (iwd._router_reserve), then, when it is that agent's, accepted (state 'accepted') or completed
-- ('completed'); an offer ('offered') is the reservation alone.
CREATE FUNCTION iwd._router_take(x iwd.router_task, state text, agent text) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    t iwd.task;
BEGIN
    PERFORM iwd._router_reserve(x.task_id, agent, x.router_id, x.agent);
    IF state = 'offered' THEN
        RETURN;
    END IF;
    SELECT k.* INTO t FROM iwd.task k WHERE k.id = x.task_id;
    IF t.status = 'assigned' AND t.assigned_to = agent THEN
        IF state = 'accepted' THEN
            PERFORM iwd.accept_task(x.task_id, agent);
        ELSE
            PERFORM iwd.complete_task(x.task_id, agent);
        END IF;
    END IF;
END $$;

-- Apply one router change to its task (iwd.router_apply).
CREATE FUNCTION iwd._router_change(x iwd.router_task, state text, agent text) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    t iwd.task;
    v_open boolean;
BEGIN
    SELECT k.* INTO t FROM iwd.task k WHERE k.id = x.task_id FOR UPDATE;
    v_open := FOUND;
    IF state IN ('offered', 'accepted', 'completed') AND agent IS NULL THEN
        agent := x.agent;
    END IF;
    CASE state
    WHEN 'queued' THEN
        IF v_open AND t.status = 'assigned' AND t.assigned_to = x.agent AND t.accepted_at IS NULL THEN
            PERFORM iwd.decline_task(x.task_id, x.agent, 'the router queued it again');
        END IF;
        UPDATE iwd.router_task r SET state = 'queued', agent = NULL WHERE r.task_id = x.task_id;
    WHEN 'offered', 'accepted', 'completed' THEN
        IF v_open THEN
            PERFORM iwd._router_take(x, state, agent);
        END IF;
        IF state = 'completed' THEN
            DELETE FROM iwd.router_task r WHERE r.task_id = x.task_id;
        ELSE
            UPDATE iwd.router_task r SET state = _router_change.state, agent = _router_change.agent
            WHERE r.task_id = x.task_id;
        END IF;
    WHEN 'rejected', 'stopped' THEN
        IF v_open AND t.status = 'assigned' AND t.assigned_to = x.agent AND t.accepted_at IS NULL THEN
            PERFORM iwd.decline_task(x.task_id, x.agent, state || ' by the router');
        ELSIF v_open AND t.status = 'assigned' AND t.assigned_to = x.agent THEN
            -- accepted, then given up at the router: back to the queue like a reservation that ended
            UPDATE iwd.task k SET status = 'queued', assigned_to = NULL, reserved_until = NULL, accepted_at = NULL,
                updated_at = iwd.now() WHERE k.id = x.task_id;
            PERFORM iwd._event(x.task_id, iwd.now(), 'declined', x.agent, 'assigned', 'queued',
                               jsonb_build_object('reason', state || ' by the router'));
        END IF;
        UPDATE iwd.router_task r SET state = 'returned', router_id = NULL, agent = NULL,
            retry_at = now() + iwd._router_retry_after()
        WHERE r.task_id = x.task_id;
    ELSE
        RAISE EXCEPTION 'unknown router state "%"', state USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'States: queued, offered, accepted, completed, rejected, stopped.';
    END CASE;
END $$;

-- Apply a page of the router's changes, [{"id": routerId, "state", "agent", "version", "changedAt"}], and
-- keep cursor (the router's cursor after them) in the same transaction: a restart pulls from there. A
-- change to a work item iwd does not know as current, or whose version is not above the last one applied
-- to it, is skipped (a repeated pull applies nothing twice); a change that cannot be applied is skipped
-- and named in "errors". Returns {"applied", "skipped", "errors": [...], "lagSeconds": the longest time
-- between a change at the router (changedAt) and now, or null}.
CREATE FUNCTION iwd.router_apply(owner text, changes jsonb, cursor text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    c record;
    x iwd.router_task;
    n_applied int := 0;
    n_skipped int := 0;
    v_errors jsonb := '[]';
    v_lag double precision;
BEGIN
    PERFORM iwd._router_lease(owner);
    IF changes IS NULL OR jsonb_typeof(changes) <> 'array' THEN
        RAISE EXCEPTION 'router changes must be a JSON array' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(cursor) > 1024 THEN
        RAISE EXCEPTION 'the router cursor is longer than 1024 bytes' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR c IN SELECT e ->> 'id' AS router_id, e ->> 'state' AS state, e ->> 'agent' AS agent,
                    CASE WHEN jsonb_typeof(e -> 'version') = 'number' THEN (e ->> 'version')::numeric END AS version,
                    e ->> 'changedAt' AS changed_at
             FROM jsonb_array_elements(changes) e LOOP
        SELECT r.* INTO x FROM iwd.router_task r WHERE r.router_id = c.router_id FOR UPDATE;
        IF NOT FOUND OR c.version IS NULL OR c.version <= x.version OR c.version > 9223372036854775807 THEN
            n_skipped := n_skipped + 1;
            CONTINUE;
        END IF;
        BEGIN
            UPDATE iwd.router_task r SET version = c.version::bigint, changed_at = now() WHERE r.task_id = x.task_id;
            PERFORM iwd._router_change(x, c.state, c.agent);
            n_applied := n_applied + 1;
            BEGIN
                v_lag := greatest(v_lag, extract(epoch FROM now() - c.changed_at::timestamptz));
            EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
                NULL;
            END;
        EXCEPTION WHEN OTHERS THEN
            -- recorded as skipped: a change that cannot apply must not stop the ones after it
            UPDATE iwd.router_task r SET version = c.version::bigint WHERE r.task_id = x.task_id;
            n_skipped := n_skipped + 1;
            IF jsonb_array_length(v_errors) < 20 THEN
                v_errors := v_errors || jsonb_build_object('routerId', c.router_id, 'taskId', x.task_id,
                                                           'error', SQLERRM);
            END IF;
        END;
    END LOOP;
    UPDATE iwd.router SET cursor = router_apply.cursor, lag_s = coalesce(v_lag, lag_s);
    RETURN jsonb_build_object('applied', n_applied, 'skipped', n_skipped, 'errors', v_errors, 'lagSeconds', v_lag);
END $$;

-- The work items the router holds for the tenant, for owner (who holds the lease): [{"taskId", "routerId"}]
-- (answered submissions not given back), at most lim from after task id after (NULL: the first), in task
-- id order. The sync retrieves each (GET /workitems/{routerId}) when the router no longer knows its cursor.
CREATE FUNCTION iwd.router_held(owner text, after bigint, lim int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    PERFORM iwd._router_lease(owner);
    IF lim IS NULL OR lim < 1 OR lim > 10000 THEN
        RAISE EXCEPTION 'lim must be between 1 and 10000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object('taskId', x.task_id, 'routerId', x.router_id)
                                      ORDER BY x.task_id), '[]')
            FROM (SELECT r.task_id, r.router_id FROM iwd.router_task r
                  WHERE r.router_id IS NOT NULL AND r.state <> 'returned' AND r.task_id > coalesce(after, 0)
                  ORDER BY r.task_id LIMIT lim) x);
END $$;

-- A sync round's outcome for the status: error NULL for a round that went through (lastSyncAt), else
-- what failed (lastError, lastErrorAt). Returns the tasks at the router (inFlight).
CREATE FUNCTION iwd.router_report(owner text, error text) RETURNS int
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    PERFORM iwd._router_lease(owner);
    IF error IS NULL THEN
        UPDATE iwd.router SET last_sync_at = now();
    ELSE
        UPDATE iwd.router SET last_error = left(error, 1024), last_error_at = now();
    END IF;
    RETURN (SELECT count(*) FROM iwd.router_task x WHERE x.state <> 'returned');
END $$;

-- The secrets sealed again (under a new IWD_SECRET_KEY, by the lease's owner); NULL keeps one as it is.
CREATE FUNCTION iwd.router_reseal(owner text, client_secret text, api_key text) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    PERFORM iwd._router_lease(owner);
    UPDATE iwd.router x SET client_secret = coalesce(router_reseal.client_secret, x.client_secret),
        api_key = coalesce(router_reseal.api_key, x.api_key);
END $$;

-- Give the lease up (a replica that stops), so that another takes over at once.
CREATE FUNCTION iwd.router_release(owner text) RETURNS void
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    UPDATE iwd.router SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = owner
$$;
