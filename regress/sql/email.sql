-- Email: mailboxes (passwords never shown), the poller's lease and fetch plan, capture of a message as a
-- task (idempotent on its Message-ID), an answer threaded into its open task, a message kept aside, the
-- status, replies (queued, claimed, sent with the task completed, failed with back-off), and the bad inputs.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
CREATE FUNCTION mail_err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- a mailbox without its times
CREATE FUNCTION box(m jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT m - '{createdAt,updatedAt,lastPollAt,lastErrorAt}'::text[]
           || jsonb_build_object('failedMessages', (SELECT coalesce(jsonb_agg(f - 'at'), '[]')
                                                    FROM jsonb_array_elements(m -> 'failedMessages') f))
$$;
SET iwd.simulated_time = '2026-11-24 10:00:00+00';

-- configuration and its refusals
SELECT box(iwd.upsert_mailbox('{"name": "support", "imap": {"host": "imap.example.test", "user": "support"},
                                "smtp": {"host": "smtp.example.test", "tls": "starttls",
                                         "from": "support@example.test"}, "pollSeconds": 60}',
                              'sealed-imap', NULL));
SELECT mail_err($$SELECT iwd.upsert_mailbox('{"name": "x", "imap": {"host": "h", "user": "u"}}', NULL, NULL)$$);
SELECT mail_err($$SELECT iwd.upsert_mailbox('{"name": "x", "imap": {"host": "h", "user": "u", "tls": "ssl"}}',
                                            's', NULL)$$);
SELECT mail_err($$SELECT iwd.upsert_mailbox('{"name": "x", "imap": {"host": "h"}}', 's', NULL)$$);
SELECT mail_err($$SELECT iwd.upsert_mailbox('{"name": "x", "imap": {"host": "h", "user": "u", "port": 0}}',
                                            's', NULL)$$);
SELECT mail_err($$SELECT iwd.upsert_mailbox('{"name": "x", "imap": {"host": "h", "user": "u"},
                                              "smtp": {"host": "h", "from": "nobody"}}', 's', NULL)$$);
SELECT mail_err($$SELECT iwd.upsert_mailbox('{"name": "x", "imap": {"host": "h", "user": "u"}, "colour": 1}',
                                            's', NULL)$$);
SELECT mail_err($$SELECT iwd.upsert_mailbox('{"name": "a b", "imap": {"host": "h", "user": "u"}}', 's', NULL)$$);
SELECT mail_err($$SELECT iwd.upsert_mailbox('{"name": "x", "imap": {"host": "h h", "user": "u"}}', 's', NULL)$$);
-- an update keeps the password, unless the server or user changed
SELECT box(iwd.upsert_mailbox('{"name": "support", "imap": {"host": "imap.example.test", "user": "support"},
                                "smtp": {"host": "smtp.example.test", "tls": "starttls",
                                         "from": "support@example.test"}, "pollSeconds": 5}', NULL, 'sealed-smtp'))
       -> 'smtp';
SELECT imap_password, smtp_password FROM iwd.mailbox;
SELECT mail_err($$SELECT iwd.upsert_mailbox('{"name": "support", "imap": {"host": "other.example.test",
                                                                          "user": "support"}}', NULL, NULL)$$);
SELECT mail_err($$SELECT iwd.get_mailbox('nobody')$$);
SELECT jsonb_array_length(iwd.list_mailboxes());

-- the poller: a lease, then the plan of a search's UIDs
SELECT name, imap, imap_password, unfinished FROM iwd.claim_mailboxes('r1', '60 s', 10);
SELECT count(*) FROM iwd.claim_mailboxes('r2', '60 s', 10);
SELECT iwd.mailbox_fetching('support', 'r1', '{1,2,3,4}', '60 s');
SELECT mail_err($$SELECT iwd.mailbox_fetching('support', 'r2', '{1}', '60 s')$$);

-- capture: a new task, the same message again, an answer to it, a message kept aside
SELECT iwd.capture_email('support', 1, '{"messageId": "<m1@example.test>", "subject": "Réclamation",
    "body": "La facture est erronée.", "from": {"name": "José", "address": "jose@example.test"},
    "to": [{"name": null, "address": "support@example.test"}], "cc": [], "date": "2026-11-24T09:00:00Z",
    "inReplyTo": null, "references": [],
    "attachments": [{"filename": "facture.pdf", "contentType": "application/pdf", "size": 23}]}');
SELECT t ->> 'mediaType', t ->> 'capturePoint', t ->> 'externalId', t ->> 'subject', t ->> 'description',
       t -> 'attributes' -> 'email' -> 'from', t -> 'attributes' -> 'email' -> 'attachments'
FROM iwd.get_task(1) t;
SELECT iwd.capture_email('support', 1, '{"messageId": "<m1@example.test>", "subject": "Réclamation", "body": ""}');
SELECT iwd.capture_emails('support', '[{"uid": 2, "email": {"messageId": "<m2@example.test>", "subject": "Re: x",
    "body": "Merci.", "from": {"address": "jose@example.test"}, "inReplyTo": "<m1@example.test>",
    "references": ["<m1@example.test>"]}},
    {"uid": 3, "email": {"messageId": "<m3@example.test>", "subject": "Other", "body": "Hello",
     "from": {"address": "carol@example.test"}}}]');
SELECT event, detail -> 'email' ->> 'messageId', detail ->> 'body' FROM iwd.task_event
WHERE task_id = 1 ORDER BY id;
SELECT iwd._event_type('email_received'), iwd._event_type('email_replied');
SELECT iwd.email_failed('support', 4, NULL, 'not an email message: no header');
SELECT mail_err($$SELECT iwd.capture_email('support', 5, '{"subject": "no id"}')$$);
SELECT iwd.mailbox_fetching('support', 'r1', '{1,2,3,4,5}', '60 s');
SELECT iwd.mailbox_polled('support', 'r1', NULL, false);
SELECT box(iwd.get_mailbox('support')) - '{imap,smtp}'::text[];
SELECT uid, status, message_id, task_id FROM iwd.mailbox_message ORDER BY uid;

-- replies
SELECT r - '{createdAt,messageId}'::text[], r ->> 'messageId' ~ '^<iwd\.1\.[0-9a-f]{32}@example\.test>$'
FROM iwd.reply_task(1, '{"body": "Bonjour José, c''est corrigé.", "complete": true}', 'supervisor') r;
SELECT mail_err($$SELECT iwd.reply_task(1, '{"text": "x"}', NULL)$$);
SELECT mail_err($$SELECT iwd.reply_task(1, '{"body": 1}', NULL)$$);
SELECT mail_err($$SELECT iwd.reply_task(99, '{"body": "x"}', NULL)$$);
SELECT (iwd.create_task('{"externalId": "w1", "capturePoint": "web"}') ->> 'id')::bigint AS web \gset
SELECT mail_err(format($$SELECT iwd.reply_task(%s, '{"body": "x"}', NULL)$$, :web));
SELECT id, smtp, smtp_password, body, mail, mailbox FROM iwd.claim_replies('r1', '60 s', 10);
SELECT count(*) FROM iwd.claim_replies('r2', '60 s', 10);
SELECT iwd.reply_sent(1, 'r2'), iwd.reply_sent(1, 'r1'), iwd.reply_sent(1, 'r1');
SELECT iwd.get_task(1) ->> 'status';
SELECT event, actor, detail ->> 'body' FROM iwd.task_event WHERE task_id = 1 ORDER BY id;
SELECT mail_err($$SELECT iwd.reply_task(1, '{"body": "again"}', NULL)$$);
SELECT (iwd.reply_task(2, '{"body": "x"}', NULL)) ->> 'status';
SELECT count(*) FROM iwd.claim_replies('r1', '60 s', 10);
SELECT iwd.reply_failed(2, 'r1', '421 try later', false);
SELECT status, attempts, last_error, next_attempt_at - now() > interval '29 s' FROM iwd.email_reply WHERE id = 2;
UPDATE iwd.email_reply SET next_attempt_at = now();
SELECT count(*) FROM iwd.claim_replies('r1', '60 s', 10);
SELECT iwd.reply_failed(2, 'r1', '550 no such user', true);
SELECT r -> 0 ->> 'status', r -> 0 ->> 'attempts', r -> 0 ->> 'lastError' FROM iwd.task_replies(2) r;
SELECT mail_err($$SELECT iwd.task_replies(99)$$);

-- a rotation's reseal replaces only the password it read
SELECT iwd.mailbox_reseal('support', 'imap', 'stale', 'resealed'),
       iwd.mailbox_reseal('support', 'imap', 'sealed-imap', 'resealed');
SELECT imap_password FROM iwd.mailbox;

SELECT iwd.delete_mailbox('support'), iwd.delete_mailbox('support');
SELECT count(*) FROM iwd.mailbox_message;
SELECT count(*) FROM iwd.task_all WHERE capture_point = 'email:support';

RESET iwd.simulated_time;
DROP FUNCTION mail_err(text);
DROP FUNCTION box(jsonb);
DROP EXTENSION iwd CASCADE;
