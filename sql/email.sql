-- iwd email (README, Mailboxes): the tenant's IMAP mailboxes, whose messages the sidecar's poller
-- (sidecar/email.c) captures as tasks, and the replies it sends over SMTP. Everything the poller knows lives
-- here, so that a replica that dies loses nothing: the mailboxes (passwords sealed by the sidecar under its
-- IWD_SECRET_KEY, never returned), their status, each message being fetched or kept aside, and the replies
-- waiting to be sent (an outbox: a reply is written in the transaction of the request and sent after it).

-- ---------------------------------------------------------------------------------------------
-- Mailboxes and their messages
-- ---------------------------------------------------------------------------------------------

-- imap: {host, port, tls, user, folder}; smtp: {host, port, tls, user, from} or NULL (no replies).
-- imap_password, smtp_password: sealed by the sidecar. next_poll_at: when the poller polls it next;
-- lease_owner / lease_until: the replica polling it and until when (iwd.claim_mailboxes).
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

-- A message of a mailbox, by its IMAP UID: 'fetching' from before the poller fetches it until its task
-- commits (a poller that dies in between leaves the row, and the next poll fetches the message again
-- whatever its flags), then 'captured' (a new task) or 'threaded' (added to an open task's history), or
-- 'failed': kept aside with its error, never fetched again, shown in the mailbox's status. Rows of
-- captured and threaded messages go after a week (iwd.mailbox_polled).
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

-- A reply to an email task, sent over its mailbox's SMTP: 'pending' until sent (retried with back-off),
-- then 'sent', or 'failed' after 10 attempts. message_id: the reply's Message-ID, drawn when it is asked (a
-- reply sent again after a crash carries the same one). lease_*: the replica sending it.
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

-- One server's settings of a mailbox checked (no password: the sidecar took it out and sealed it), with
-- the defaults filled in: tls "implicit", port 993 / 143 (IMAP) or 465 / 587 (SMTP), folder "INBOX".
CREATE FUNCTION iwd._mail_server(doc jsonb, what text, smtp boolean) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v_host text;
    v_tls text;
    v_port int;
    v_user text;
    v_out jsonb;
BEGIN
    IF jsonb_typeof(doc) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'mailbox field "%" must be an object', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM iwd._check_object(doc, 'mailbox ' || what,
                              CASE WHEN smtp THEN '{host,port,tls,user,from,hasPassword}'
                                   ELSE '{host,port,tls,user,folder,hasPassword}' END::text[],
                              CASE WHEN smtp THEN '{host,from}' ELSE '{host,user}' END::text[]);
    v_host := iwd._str(doc, 'host', 'mailbox ' || what, 253);
    IF v_host !~ '^[A-Za-z0-9.:_-]+$' THEN
        RAISE EXCEPTION 'mailbox field "%.host" must be a host name or address', what
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It is "%s".', v_host);
    END IF;
    v_tls := coalesce(iwd._str(doc, 'tls', 'mailbox ' || what, 16), 'implicit');
    IF v_tls NOT IN ('none', 'starttls', 'implicit') THEN
        RAISE EXCEPTION 'mailbox field "%.tls" must be none, starttls or implicit', what
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It is "%s".', v_tls);
    END IF;
    v_port := coalesce(iwd._int(doc, 'port', 'mailbox ' || what, 1, 65535),
                       CASE WHEN smtp THEN CASE v_tls WHEN 'implicit' THEN 465 ELSE 587 END
                            ELSE CASE v_tls WHEN 'implicit' THEN 993 ELSE 143 END END);
    v_user := iwd._str(doc, 'user', 'mailbox ' || what, 256);
    v_out := jsonb_build_object('host', v_host, 'port', v_port, 'tls', v_tls, 'user', v_user);
    IF smtp THEN
        IF iwd._str(doc, 'from', 'mailbox ' || what, 256)
           !~ '^[^@[:space:][:cntrl:]<>]+@[^@[:space:][:cntrl:]<>]+$' THEN
            RAISE EXCEPTION 'mailbox field "%.from" must be an address user@domain', what
                USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It is "%s".', doc ->> 'from');
        END IF;
        RETURN v_out || jsonb_build_object('from', doc ->> 'from');
    END IF;
    RETURN v_out || jsonb_build_object('folder', coalesce(iwd._str(doc, 'folder', 'mailbox ' || what, 256), 'INBOX'));
END $$;

-- A mailbox in the REST shape: its settings without passwords ("hasPassword") and its status.
CREATE FUNCTION iwd._mailbox_json(name text) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'name', m.name, 'imap', m.imap || jsonb_build_object('hasPassword', true),
        'smtp', m.smtp || jsonb_build_object('hasPassword', m.smtp_password IS NOT NULL),
        'category', m.category, 'pollSeconds', m.poll_seconds, 'enabled', m.enabled,
        'createdAt', iwd._ts(m.created_at), 'updatedAt', iwd._ts(m.updated_at),
        'lastPollAt', iwd._ts(m.last_poll_at), 'lastError', m.last_error, 'lastErrorAt', iwd._ts(m.last_error_at),
        'messagesCaptured', m.messages_captured, 'messagesThreaded', m.messages_threaded,
        'messagesFailed', m.messages_failed,
        'failedMessages', (SELECT coalesce(jsonb_agg(jsonb_build_object('uid', f.uid, 'messageId', f.message_id,
                                                                         'error', f.error, 'at', iwd._ts(f.at))
                                                      ORDER BY f.at DESC), '[]')
                           FROM (SELECT * FROM iwd.mailbox_message x
                                 WHERE x.mailbox = m.name AND x.status = 'failed'
                                 ORDER BY x.at DESC LIMIT 20) f))
    FROM iwd.mailbox m WHERE m.name = _mailbox_json.name
$$;

-- Create or replace a mailbox (PUT semantics: omitted fields take their defaults, except the passwords,
-- which an update keeps when omitted). mailbox: the REST document without its passwords; imap_password,
-- smtp_password: sealed by the sidecar, or NULL when the document had none. At most 100 per tenant.
CREATE FUNCTION iwd.upsert_mailbox(mailbox jsonb, imap_password text, smtp_password text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_name text;
    v_imap jsonb;
    v_smtp jsonb;
    v_category text;
    v_poll int;
    v_enabled boolean;
    v_old iwd.mailbox;
BEGIN
    PERFORM iwd._check_object(mailbox, 'mailbox',
                              '{name,imap,smtp,category,pollSeconds,enabled,createdAt,updatedAt,lastPollAt,'
                              'lastError,lastErrorAt,messagesCaptured,messagesThreaded,messagesFailed,'
                              'failedMessages}', '{name,imap}');
    v_name := iwd._str(mailbox, 'name', 'mailbox', 128);
    IF v_name !~ '^[A-Za-z0-9._-]+$' THEN
        RAISE EXCEPTION 'mailbox field "name" may only hold letters, digits, ".", "_" and "-"'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It is "%s".', v_name);
    END IF;
    v_imap := iwd._mail_server(mailbox -> 'imap', 'imap', false);
    IF jsonb_typeof(mailbox -> 'smtp') IS DISTINCT FROM 'null' AND mailbox ? 'smtp' THEN
        v_smtp := iwd._mail_server(mailbox -> 'smtp', 'smtp', true);
    END IF;
    v_category := iwd._str(mailbox, 'category', 'mailbox', 256);
    v_poll := coalesce(iwd._int(mailbox, 'pollSeconds', 'mailbox', 1, 86400), 30);
    v_enabled := coalesce(iwd._bool(mailbox, 'enabled', 'mailbox'), true);
    -- the name is the lock: concurrent upserts of one mailbox take turns
    PERFORM pg_advisory_xact_lock(hashtext('iwd.mailbox'), hashtext(v_name));
    SELECT * INTO v_old FROM iwd.mailbox x WHERE x.name = v_name FOR UPDATE;
    IF NOT FOUND THEN
        IF imap_password IS NULL THEN
            RAISE EXCEPTION 'mailbox field "imap.password" is required' USING ERRCODE = 'invalid_parameter_value',
                DETAIL = 'A new mailbox needs the password of its IMAP user.';
        END IF;
        IF (SELECT count(*) FROM iwd.mailbox) >= 100 THEN
            RAISE EXCEPTION 'too many mailboxes' USING ERRCODE = 'program_limit_exceeded',
                DETAIL = 'A tenant may have at most 100 mailboxes; delete one first.';
        END IF;
        INSERT INTO iwd.mailbox (name, imap, imap_password, smtp, smtp_password, category, poll_seconds, enabled)
        VALUES (v_name, v_imap, imap_password, v_smtp, smtp_password, v_category, v_poll, v_enabled);
    ELSE
        -- a new server or user needs its password again: a kept one was the old server's
        IF imap_password IS NULL AND (v_old.imap ->> 'host' IS DISTINCT FROM v_imap ->> 'host'
                                      OR v_old.imap ->> 'user' IS DISTINCT FROM v_imap ->> 'user') THEN
            RAISE EXCEPTION 'mailbox field "imap.password" is required' USING ERRCODE = 'invalid_parameter_value',
                DETAIL = 'The IMAP host or user changed: give the password again.';
        END IF;
        UPDATE iwd.mailbox x
        SET imap = v_imap, imap_password = coalesce(upsert_mailbox.imap_password, x.imap_password), smtp = v_smtp,
            smtp_password = CASE WHEN v_smtp IS NULL THEN NULL
                                 WHEN upsert_mailbox.smtp_password IS NOT NULL THEN upsert_mailbox.smtp_password
                                 WHEN x.smtp ->> 'host' IS DISTINCT FROM v_smtp ->> 'host'
                                      OR x.smtp ->> 'user' IS DISTINCT FROM v_smtp ->> 'user' THEN NULL
                                 ELSE x.smtp_password END,
            category = v_category, poll_seconds = v_poll, enabled = v_enabled, updated_at = now(),
            next_poll_at = now()
        WHERE x.name = v_name;
    END IF;
    RETURN iwd._mailbox_json(v_name);
END $$;

-- The mailbox with this name and its status (no password); P0002 when none.
CREATE FUNCTION iwd.get_mailbox(name text) RETURNS jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    v_mailbox jsonb := iwd._mailbox_json(name);
BEGIN
    IF v_mailbox IS NULL THEN
        PERFORM iwd._not_found('mailbox', name);
    END IF;
    RETURN v_mailbox;
END $$;

-- Every mailbox with its status (no passwords), by name.
CREATE FUNCTION iwd.list_mailboxes() RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_agg(iwd._mailbox_json(m.name) ORDER BY m.name), '[]') FROM iwd.mailbox m
$$;

-- Delete a mailbox, its message bookkeeping and its unsent replies; false when there was none. Its tasks
-- stay.
CREATE FUNCTION iwd.delete_mailbox(name text) RETURNS boolean
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    WITH d AS (DELETE FROM iwd.mailbox x WHERE x.name = delete_mailbox.name RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM d)
$$;

-- ---------------------------------------------------------------------------------------------
-- Polling and capture (the sidecar's poller)
-- ---------------------------------------------------------------------------------------------

-- Claim the enabled mailboxes due for a poll for owner (a replica) for lease, at most lim: each with its
-- settings, its sealed password, and the UIDs of messages whose fetch did not end (fetched again, whatever
-- their flags).
CREATE FUNCTION iwd.claim_mailboxes(owner text, lease interval, lim int)
RETURNS TABLE (name text, imap jsonb, imap_password text, category text, unfinished bigint[])
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    WITH due AS (
        SELECT x.name FROM iwd.mailbox x
        WHERE x.enabled AND x.next_poll_at <= now() AND (x.lease_until IS NULL OR x.lease_until < now())
        ORDER BY x.next_poll_at LIMIT lim FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE iwd.mailbox x SET lease_owner = owner, lease_until = now() + lease
        FROM due WHERE x.name = due.name
        RETURNING x.name, x.imap, x.imap_password, x.category)
    SELECT c.name, c.imap, c.imap_password, c.category,
           ARRAY(SELECT m.uid FROM iwd.mailbox_message m
                 WHERE m.mailbox = c.name AND m.status = 'fetching' ORDER BY m.uid LIMIT 1000)
    FROM claimed c
$$;

-- Extend owner's lease of a mailbox it polls (before each message: a poll may outlast one lease);
-- 55P03 when the lease was lost (another replica polls it now).
CREATE FUNCTION iwd.mailbox_renew(mailbox text, owner text, lease interval) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    UPDATE iwd.mailbox x SET lease_until = now() + lease
    WHERE x.name = mailbox_renew.mailbox AND x.lease_owner = owner AND x.lease_until >= now();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the lease of mailbox "%" is lost', mailbox USING ERRCODE = 'lock_not_available',
            DETAIL = 'Another replica polls it now.';
    END IF;
END $$;

-- What the poller does with the UIDs a search found (the unseen messages) before fetching them: those
-- kept aside are skipped; those already captured or threaded (their \Seen flag was not set: the poller
-- stopped after the commit) are only flagged; the others are recorded as being fetched (a poller that dies
-- before their task commits leaves them to the next poll). {"fetch": [...], "flag": [...]}; 55P03 when
-- owner's lease was lost.
CREATE FUNCTION iwd.mailbox_fetching(mailbox text, owner text, uids bigint[], lease interval) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
BEGIN
    PERFORM iwd.mailbox_renew(mailbox, owner, lease);
    INSERT INTO iwd.mailbox_message (mailbox, uid, status)
    SELECT mailbox_fetching.mailbox, u, 'fetching' FROM unnest(uids) u
    ON CONFLICT DO NOTHING;
    RETURN jsonb_build_object(
        'fetch', (SELECT coalesce(jsonb_agg(m.uid ORDER BY m.uid), '[]') FROM iwd.mailbox_message m
                  WHERE m.mailbox = mailbox_fetching.mailbox AND m.uid = ANY (uids) AND m.status = 'fetching'),
        'flag', (SELECT coalesce(jsonb_agg(m.uid ORDER BY m.uid), '[]') FROM iwd.mailbox_message m
                 WHERE m.mailbox = mailbox_fetching.mailbox AND m.uid = ANY (uids)
                   AND m.status IN ('captured', 'threaded')));
END $$;

-- The open task a message answers: the task of the first of its In-Reply-To and References ids that
-- this mailbox knows (a message captured or threaded here, or a reply sent from here), when still open.
CREATE FUNCTION iwd._email_thread(mailbox text, refs text[]) RETURNS bigint
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT t.id
    FROM unnest(refs) WITH ORDINALITY r(ref, ord)
    JOIN LATERAL (SELECT k.task_id FROM iwd.task_key k
                  WHERE k.capture_point = 'email:' || mailbox AND k.external_id = r.ref
                  UNION ALL
                  SELECT e.task_id FROM iwd.email_reply e WHERE e.message_id = r.ref) k ON true
    JOIN iwd.task t ON t.id = k.task_id
    ORDER BY r.ord LIMIT 1
$$;

-- Capture a message of a mailbox, fetched by the poller and decoded by it: email is {messageId, subject,
-- body, from, to, cc, date, inReplyTo, references, attachments}. A reply to an open task of the mailbox
-- is added to that task's history (event "email_received"); any other message becomes a task (mediaType
-- "email", capturePoint "email:<mailbox>", externalId the Message-ID: a message fetched twice is one task).
-- Returns {"taskId", "outcome": "created" | "threaded" | "duplicate"}.
CREATE FUNCTION iwd.capture_email(mailbox text, uid bigint, email jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    v_box iwd.mailbox;
    v_point text := 'email:' || mailbox;
    v_message_id text := email ->> 'messageId';
    v_attrs jsonb := jsonb_build_object(
        'from', email -> 'from', 'to', coalesce(email -> 'to', '[]'), 'cc', coalesce(email -> 'cc', '[]'),
        'date', email -> 'date', 'messageId', v_message_id, 'inReplyTo', email -> 'inReplyTo',
        'subject', email -> 'subject', 'attachments', coalesce(email -> 'attachments', '[]'));
    v_refs text[];
    v_task bigint;
    v_captured record;
    v_outcome text;
BEGIN
    SELECT * INTO v_box FROM iwd.mailbox x WHERE x.name = capture_email.mailbox;
    IF NOT FOUND THEN
        PERFORM iwd._not_found('mailbox', mailbox);
    END IF;
    IF v_message_id IS NULL OR octet_length(v_message_id) > 256 THEN
        RAISE EXCEPTION 'an email needs a Message-ID of at most 256 bytes' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- a message fetched again (its \Seen flag not set yet) changes nothing
    SELECT k.task_id INTO v_task FROM iwd.task_key k WHERE k.capture_point = v_point AND k.external_id = v_message_id;
    IF FOUND THEN
        v_outcome := 'duplicate';
    ELSE
        v_refs := ARRAY(SELECT x FROM (SELECT email ->> 'inReplyTo' AS x, 0 AS ord
                                       UNION ALL
                                       SELECT r.x, r.ord FROM jsonb_array_elements_text(
                                           CASE jsonb_typeof(email -> 'references') WHEN 'array'
                                                THEN email -> 'references' ELSE '[]' END)
                                           WITH ORDINALITY r(x, ord)) s
                        WHERE x IS NOT NULL ORDER BY (ord = 0) DESC, ord DESC);
        v_task := iwd._email_thread(mailbox, v_refs);
        IF v_task IS NOT NULL THEN
            -- the message's id now names this task too: fetched again it is a duplicate, answered it threads
            INSERT INTO iwd.task_key (capture_point, external_id, task_id) VALUES (v_point, v_message_id, v_task)
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                PERFORM iwd._event(v_task, iwd.now(), 'email_received', NULL, t.status, t.status,
                                   jsonb_build_object('email', v_attrs, 'body', left(email ->> 'body', 65536)))
                FROM iwd.task t WHERE t.id = v_task;
                v_outcome := 'threaded';
            ELSE
                v_outcome := 'duplicate';
            END IF;
        ELSE
            v_captured := iwd._create_task(jsonb_strip_nulls(jsonb_build_object(
                'externalId', v_message_id, 'capturePoint', v_point, 'mediaType', 'email',
                'category', v_box.category, 'subject', left(coalesce(email ->> 'subject', ''), 16384),
                'description', email ->> 'body'))
                || jsonb_build_object('attributes', jsonb_build_object('email', v_attrs)),
                iwd.now());
            v_task := (v_captured.result ->> 'id')::bigint;
            v_outcome := CASE WHEN v_captured.created THEN 'created' ELSE 'duplicate' END;
        END IF;
    END IF;
    INSERT INTO iwd.mailbox_message AS m (mailbox, uid, status, message_id, task_id)
    VALUES (mailbox, uid, CASE v_outcome WHEN 'threaded' THEN 'threaded' ELSE 'captured' END, v_message_id, v_task)
    ON CONFLICT ON CONSTRAINT mailbox_message_pkey
    DO UPDATE SET status = EXCLUDED.status, message_id = EXCLUDED.message_id, task_id = EXCLUDED.task_id,
                  error = NULL, at = now();
    UPDATE iwd.mailbox x
    SET messages_captured = x.messages_captured + (v_outcome = 'created')::int,
        messages_threaded = x.messages_threaded + (v_outcome = 'threaded')::int
    WHERE x.name = mailbox;
    RETURN jsonb_build_object('taskId', v_task, 'outcome', v_outcome);
END $$;

-- Replace a mailbox's sealed password (which: 'imap' or 'smtp') by the same password sealed under the
-- sidecar's current secret, unless it changed meanwhile (a secret rotation: README, operations).
CREATE FUNCTION iwd.mailbox_reseal(mailbox text, which text, sealed_before text, sealed text) RETURNS void
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    UPDATE iwd.mailbox x
    SET imap_password = CASE WHEN which = 'imap' AND x.imap_password = sealed_before THEN sealed
                             ELSE x.imap_password END,
        smtp_password = CASE WHEN which = 'smtp' AND x.smtp_password = sealed_before THEN sealed
                             ELSE x.smtp_password END
    WHERE x.name = mailbox_reseal.mailbox
$$;

-- Capture a batch of decoded messages of a mailbox in one transaction: emails is [{"uid", "email"}], each
-- as in iwd.capture_email; all or nothing (the poller captures them one by one when a message's error
-- undoes the batch). Returns the results in order.
CREATE FUNCTION iwd.capture_emails(mailbox text, emails jsonb) RETURNS jsonb
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    SELECT coalesce(jsonb_agg(iwd.capture_email(mailbox, (e ->> 'uid')::bigint, e -> 'email') ORDER BY ord), '[]')
    FROM jsonb_array_elements(emails) WITH ORDINALITY x(e, ord)
$$;

-- Keep a message aside: it could not be captured (error says why); it is not fetched again and shows in
-- the mailbox's status, and the mailbox goes on with its other messages.
CREATE FUNCTION iwd.email_failed(mailbox text, uid bigint, message_id text, error text) RETURNS void
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    INSERT INTO iwd.mailbox_message AS m (mailbox, uid, status, message_id, error)
    VALUES (mailbox, uid, 'failed', left(message_id, 1024), left(error, 1024))
    ON CONFLICT ON CONSTRAINT mailbox_message_pkey
    DO UPDATE SET status = 'failed', message_id = EXCLUDED.message_id, error = EXCLUDED.error, at = now();
    UPDATE iwd.mailbox x
    SET messages_failed = x.messages_failed + 1,
        last_error = format('message %s kept aside: %s', uid, left(error, 1024)),
        last_error_at = now()
    WHERE x.name = email_failed.mailbox;
$$;

-- The end of a poll by owner: its error (NULL: the poll went well, a previous error is cleared unless a
-- message was kept aside in this poll), the next poll now when more messages wait (more), else after
-- pollSeconds, and the lease released. Bookkeeping of captured messages older than a week goes.
CREATE FUNCTION iwd.mailbox_polled(mailbox text, owner text, error text, more boolean) RETURNS void
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    UPDATE iwd.mailbox x
    SET last_poll_at = now(),
        last_error = CASE WHEN error IS NOT NULL THEN left(error, 1024)
                          WHEN x.last_error LIKE 'message % kept aside: %'
                               AND x.last_error_at >= coalesce(x.last_poll_at, '-infinity') THEN x.last_error END,
        last_error_at = CASE WHEN error IS NOT NULL THEN now() ELSE x.last_error_at END,
        next_poll_at = CASE WHEN more AND error IS NULL THEN now()
                            ELSE now() + make_interval(secs => x.poll_seconds) END,
        lease_owner = NULL, lease_until = NULL
    WHERE x.name = mailbox_polled.mailbox AND x.lease_owner = owner;
    DELETE FROM iwd.mailbox_message m
    WHERE m.mailbox = mailbox_polled.mailbox AND m.status IN ('captured', 'threaded')
      AND m.at < now() - interval '7 days';
$$;

-- ---------------------------------------------------------------------------------------------
-- Replies
-- ---------------------------------------------------------------------------------------------

-- Ask for a reply to an email task over its mailbox's SMTP: request is {"body": text, "complete": bool}.
-- The reply is written here and sent by the sidecar after this transaction (an outbox): the answer is the
-- reply, "pending"; once sent, the task's history has "email_replied" (and the task is completed when
-- asked). 22023 for a task that did not come by email or whose mailbox cannot send.
CREATE FUNCTION iwd.reply_task(id bigint, request jsonb, actor text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    t iwd.task := iwd._lock_task(id);
    v_box iwd.mailbox;
    v_body text;
    v_complete boolean;
    v_reply iwd.email_reply;
BEGIN
    PERFORM iwd._check_object(request, 'reply', '{body,complete}', '{body}');
    v_body := iwd._str(request, 'body', 'reply', 1048576);
    v_complete := coalesce(iwd._bool(request, 'complete', 'reply'), false);
    IF t.capture_point NOT LIKE 'email:%' THEN
        RAISE EXCEPTION 'task % did not come by email', id USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'Only a task captured from a mailbox can be answered by email.';
    END IF;
    SELECT * INTO v_box FROM iwd.mailbox x WHERE x.name = substr(t.capture_point, 7);
    IF NOT FOUND OR v_box.smtp IS NULL THEN
        RAISE EXCEPTION 'mailbox "%" cannot send replies', substr(t.capture_point, 7)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = CASE WHEN NOT FOUND THEN 'The mailbox was deleted.' ELSE 'It has no "smtp" settings.' END;
    END IF;
    IF t.status IN ('completed', 'canceled', 'rejected', 'expired') THEN
        RAISE EXCEPTION 'task % is %', id, t.status USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'A closed task is not answered; restart it first.';
    END IF;
    INSERT INTO iwd.email_reply (task_id, mailbox, body, complete, actor, message_id)
    VALUES (id, v_box.name, v_body, v_complete, actor,
            format('<iwd.%s.%s@%s>', id, replace(gen_random_uuid()::text, '-', ''),
                   split_part(v_box.smtp ->> 'from', '@', 2)))
    RETURNING * INTO v_reply;
    RETURN iwd._reply_json(v_reply);
END $$;

-- A reply in the REST shape.
CREATE FUNCTION iwd._reply_json(r iwd.email_reply) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT jsonb_build_object('id', r.id, 'taskId', r.task_id, 'mailbox', r.mailbox, 'messageId', r.message_id,
                              'status', r.status, 'complete', r.complete, 'attempts', r.attempts,
                              'lastError', r.last_error, 'createdAt', iwd._ts(r.created_at),
                              'sentAt', iwd._ts(r.sent_at))
$$;

-- The replies of a task, newest first; P0002 when the task does not exist.
CREATE FUNCTION iwd.task_replies(id bigint) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT CASE WHEN iwd.get_task(id) IS NOT NULL THEN
        (SELECT coalesce(jsonb_agg(iwd._reply_json(r) ORDER BY r.id DESC), '[]') FROM iwd.email_reply r
         WHERE r.task_id = task_replies.id) END
$$;

-- Claim the replies due for sending for owner (a replica) for lease, at most lim, each with what its
-- message needs: the mailbox's SMTP settings and sealed password, the addressee (the sender of the task's
-- message), the subject, the ids it answers.
CREATE FUNCTION iwd.claim_replies(owner text, lease interval, lim int)
RETURNS TABLE (id bigint, smtp jsonb, smtp_password text, message_id text, body text, mail jsonb, mailbox text)
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    WITH due AS (
        SELECT r.id FROM iwd.email_reply r
        WHERE r.status = 'pending' AND r.next_attempt_at <= now()
        ORDER BY r.next_attempt_at LIMIT lim FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE iwd.email_reply r SET lease_owner = owner, lease_until = now() + lease,
                                     next_attempt_at = now() + lease
        FROM due WHERE r.id = due.id
        RETURNING r.*)
    SELECT c.id, m.smtp, m.smtp_password, c.message_id, c.body,
           jsonb_build_object('to', t.attributes #> '{email,from}', 'subject', t.subject,
                              'inReplyTo', t.external_id,
                              'references', to_jsonb(ARRAY(SELECT x FROM (
                                  SELECT t.attributes #>> '{email,inReplyTo}' AS x
                                  WHERE t.attributes #>> '{email,inReplyTo}' IS NOT NULL
                                  UNION ALL SELECT t.external_id) s))),
           c.mailbox
    FROM claimed c
    JOIN iwd.mailbox m ON m.name = c.mailbox
    JOIN iwd.task_all t ON t.id = c.task_id
$$;

-- A claimed reply was sent by owner: recorded in the task's history ("email_replied"), and the task
-- completed when asked (unless it closed meanwhile). false when owner's lease was lost.
CREATE FUNCTION iwd.reply_sent(id bigint, owner text) RETURNS boolean
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
    r iwd.email_reply;
    t iwd.task;
BEGIN
    UPDATE iwd.email_reply x SET status = 'sent', sent_at = now(), attempts = x.attempts + 1, last_error = NULL,
                                 lease_owner = NULL, lease_until = NULL
    WHERE x.id = reply_sent.id AND x.lease_owner = owner AND x.status = 'pending'
    RETURNING * INTO r;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    t := iwd._lock_task(r.task_id);
    PERFORM iwd._event(r.task_id, iwd.now(), 'email_replied', r.actor, t.status, t.status,
                       jsonb_build_object('replyId', r.id, 'messageId', r.message_id, 'mailbox', r.mailbox,
                                          'body', left(r.body, 65536)));
    IF r.complete AND t.status NOT IN ('completed', 'canceled', 'rejected', 'expired') THEN
        PERFORM iwd.complete_task(r.task_id, t.assigned_to);
    END IF;
    RETURN true;
END $$;

-- A claimed reply's attempt failed (error): tried again after a back-off (30 s doubling, at most an hour),
-- failed for good after 10 attempts or when permanent (the server refused the message or the recipient).
CREATE FUNCTION iwd.reply_failed(id bigint, owner text, error text, permanent boolean) RETURNS void
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
    UPDATE iwd.email_reply x
    SET attempts = x.attempts + 1, last_error = left(error, 1024), lease_owner = NULL, lease_until = NULL,
        status = CASE WHEN permanent OR x.attempts + 1 >= 10 THEN 'failed' ELSE 'pending' END,
        next_attempt_at = now() + least(interval '1 hour', interval '30 seconds' * power(2, x.attempts))
    WHERE x.id = reply_failed.id AND x.lease_owner = owner AND x.status = 'pending'
$$;
