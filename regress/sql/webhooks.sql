-- Webhooks: configuration (secrets never shown), deliveries created at publication for matching webhooks
-- only, the claim (due, leased, oldest per task first), finishing with back-off and failure, the listing,
-- manual retry, the metric, and the bad inputs.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
CREATE FUNCTION hook_err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE FUNCTION hook_task(ext text, queue text DEFAULT NULL) RETURNS bigint LANGUAGE sql AS $$
    SELECT (iwd.create_task(jsonb_strip_nulls(jsonb_build_object('externalId', ext, 'capturePoint', 'test',
                                                                 'queue', queue))) ->> 'id')::bigint
$$;
-- a webhook without its creation time
CREATE FUNCTION hook(w jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT w - 'createdAt'
$$;
-- the deliveries of a webhook, oldest first, without ids and times
CREATE FUNCTION deliveries(name text) RETURNS TABLE (event bigint, type text, task bigint, status text,
                                                     attempts int, last_status int, last_error text, leased text)
LANGUAGE sql AS $$
    SELECT d.feed_id, d.type, d.task_id, d.status, d.attempts, d.last_status, d.last_error, d.lease_owner
    FROM iwd.webhook_delivery d WHERE d.webhook = name ORDER BY d.feed_id
$$;
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
SELECT iwd.upsert_agent('{"id": "a1", "state": "ready"}') IS NOT NULL;

-- configuration
SELECT hook(iwd.upsert_webhook('{"name": "crm", "url": "https://crm.example/hooks/iwd", "secret": "s3cret",
                                 "events": ["task.completed", "task.created", "task.created"]}'));
SELECT hook(iwd.upsert_webhook('{"name": "vip.desk", "url": "http://10.0.0.5:8080/in", "secret": "k",
                                 "filter": {"queue": "vip", "status": ["queued", "assigned"]}}'));
SELECT hook(iwd.upsert_webhook('{"name": "off", "url": "http://off.example/", "secret": "k", "enabled": false}'));
SELECT hook(iwd.get_webhook('crm'));
SELECT jsonb_array_length(iwd.list_webhooks()), iwd.list_webhooks() -> 0 ->> 'name';
SELECT iwd.list_webhooks()::text LIKE '%s3cret%' AS secret_shown;
-- an update keeps the secret when it is omitted, and replaces the rest
SELECT hook(iwd.upsert_webhook('{"name": "crm", "url": "https://crm.example/hooks/iwd2",
                                 "events": ["task.completed", "task.created"]}'));
SELECT secret FROM iwd.webhook WHERE name = 'crm';
SELECT hook(iwd.upsert_webhook('{"name": "crm", "url": "https://crm.example/hooks/iwd", "secret": "n3w",
                                 "events": ["task.completed", "task.created"]}')) ->> 'url';
SELECT secret FROM iwd.webhook WHERE name = 'crm';

-- deliveries: one per matching enabled webhook, created at publication
SELECT hook_task('W1') AS t1 \gset
SELECT hook_task('W2', 'vip') AS t2 \gset
SELECT iwd.next_task('a1') ->> 'externalId';
SELECT iwd.complete_task(:t1, 'a1') ->> 'status';
SELECT count(*) FROM iwd.webhook_delivery;
SELECT iwd.publish_events();
SELECT * FROM deliveries('crm');
SELECT * FROM deliveries('vip.desk');
SELECT * FROM deliveries('off');
-- a webhook created now does not get the events published before it
SELECT hook(iwd.upsert_webhook('{"name": "late", "url": "http://late.example/", "secret": "k"}')) ->> 'name';
SELECT iwd.publish_events();
SELECT count(*) FROM iwd.webhook_delivery WHERE webhook = 'late';
SELECT * FROM iwd.webhook_stats();

-- the claim: the body is the event document; per (webhook, task) only the oldest pending delivery
SELECT webhook, url, secret, feed_id, type, body::jsonb = (SELECT jsonb_build_object('id', f.id) || k.doc
                                                           FROM iwd.event_feed f JOIN iwd.event_document k
                                                                USING (event_id) WHERE f.id = c.feed_id) AS body_ok
FROM iwd.claim_deliveries('replica-1', 10) c ORDER BY webhook, feed_id;
SELECT * FROM deliveries('crm');
-- a second claimer gets nothing: everything due is leased, the rest waits behind its task's oldest
SELECT count(*) FROM iwd.claim_deliveries('replica-2', 10);
-- finishing: only the lease owner; 2xx delivers; the next delivery of the task becomes claimable
SELECT iwd.finish_delivery(id, 'replica-2', 200, NULL) FROM iwd.webhook_delivery
WHERE webhook = 'crm' AND feed_id = 1;
SELECT iwd.finish_delivery(id, 'replica-1', 204, NULL) FROM iwd.webhook_delivery
WHERE webhook = 'crm' AND feed_id = 1;
SELECT iwd.finish_delivery(id, 'replica-1', 204, NULL) FROM iwd.webhook_delivery
WHERE webhook = 'crm' AND feed_id = 1;
SELECT webhook, feed_id FROM iwd.claim_deliveries('replica-2', 10);
-- failures back off 1 s, 2 s, 4 s ... at most 10 min; a 3xx is a failure
SELECT iwd.finish_delivery(id, 'replica-1', 500, 'Internal Server Error') FROM iwd.webhook_delivery
WHERE webhook = 'crm' AND feed_id = 2;
SELECT next_attempt_at - last_attempt_at FROM iwd.webhook_delivery WHERE webhook = 'crm' AND feed_id = 2;
SELECT count(*) FROM iwd.claim_deliveries('replica-1', 10);
SET iwd.simulated_time = '2026-11-24 10:00:01+00';
SELECT feed_id FROM iwd.claim_deliveries('replica-1', 10);
SELECT iwd.finish_delivery(id, 'replica-1', 302, NULL) FROM iwd.webhook_delivery WHERE webhook = 'crm' AND feed_id = 2;
SELECT next_attempt_at - last_attempt_at FROM iwd.webhook_delivery WHERE webhook = 'crm' AND feed_id = 2;
UPDATE iwd.webhook_delivery SET attempts = 30 WHERE webhook = 'crm' AND feed_id = 2;
SET iwd.simulated_time = '2026-11-24 10:00:03+00';
SELECT feed_id FROM iwd.claim_deliveries('replica-1', 10);
SELECT iwd.finish_delivery(id, 'replica-1', NULL, 'connection refused') FROM iwd.webhook_delivery
WHERE webhook = 'crm' AND feed_id = 2;
SELECT next_attempt_at - last_attempt_at FROM iwd.webhook_delivery WHERE webhook = 'crm' AND feed_id = 2;
-- an expired lease is claimed again by another replica; the first one's late answer is lost
SET iwd.simulated_time = '2026-11-24 10:20:00+00';
SELECT webhook, feed_id FROM iwd.claim_deliveries('replica-1', 10, '5 s');
SET iwd.simulated_time = '2026-11-24 10:20:06+00';
SELECT webhook, feed_id FROM iwd.claim_deliveries('replica-2', 10);
SELECT iwd.finish_delivery(id, 'replica-1', 200, NULL) FROM iwd.webhook_delivery WHERE webhook = 'crm' AND feed_id = 2;
-- after iwd.webhook_retry_for the delivery fails
SET iwd.webhook_retry_for = '1 min';
SELECT iwd.finish_delivery(id, 'replica-2', 503, 'Service Unavailable') FROM iwd.webhook_delivery
WHERE webhook = 'crm' AND feed_id = 2;
RESET iwd.webhook_retry_for;
SELECT * FROM deliveries('crm');
-- manual retry: failed -> pending, due now, with a new window; delivered ones cannot be retried
SELECT r - 'id'
FROM iwd.retry_delivery('crm', (SELECT id FROM iwd.webhook_delivery WHERE webhook = 'crm' AND feed_id = 2)) r;
SELECT feed_id FROM iwd.claim_deliveries('replica-1', 10);
SELECT iwd.finish_delivery(id, 'replica-1', 500, NULL) FROM iwd.webhook_delivery WHERE webhook = 'crm' AND feed_id = 2;
SELECT regexp_replace(hook_err(format('SELECT iwd.retry_delivery(%L, %L)', 'crm',
                      (SELECT id FROM iwd.webhook_delivery WHERE webhook = 'crm' AND feed_id = 1))),
                      '[0-9a-f-]{36}', '<id>');
SELECT hook_err($$SELECT iwd.retry_delivery('crm', '00000000-0000-0000-0000-000000000000')$$);
SELECT hook_err($$SELECT iwd.retry_delivery('nope', '00000000-0000-0000-0000-000000000000')$$);

-- a disabled webhook's pending deliveries wait
SELECT hook(iwd.upsert_webhook('{"name": "vip.desk", "url": "http://10.0.0.5:8080/in", "enabled": false,
                                 "filter": {"queue": "vip", "status": ["queued", "assigned"]}}')) ->> 'enabled';
SELECT webhook FROM iwd.claim_deliveries('replica-1', 10) WHERE webhook = 'vip.desk';

-- the listing: newest first, by status, paged with its cursor
SELECT jsonb_array_length(p -> 'deliveries'), (p -> 'deliveries' -> 0) - 'id', p ->> 'next'
FROM iwd.webhook_deliveries('crm', NULL, 1) p;
SELECT (p -> 'deliveries' -> 0 ->> 'eventId'), p ->> 'next'
FROM iwd.webhook_deliveries('crm', NULL, 1, (iwd.webhook_deliveries('crm', NULL, 1) ->> 'next')) p;
SELECT jsonb_array_length(p -> 'deliveries'), p -> 'next' FROM iwd.webhook_deliveries('crm', 'delivered') p;
SELECT jsonb_array_length(p -> 'deliveries'), p -> 'next' FROM iwd.webhook_deliveries('crm', 'failed') p;
SELECT (p -> 'deliveries' -> 0 ->> 'id')::uuid = id FROM iwd.webhook_deliveries('crm', 'delivered') p,
       iwd.webhook_delivery d WHERE d.webhook = 'crm' AND d.feed_id = 1;
SELECT * FROM iwd.webhook_stats();

-- deleting a webhook deletes its deliveries
SELECT iwd.delete_webhook('vip.desk'), iwd.delete_webhook('vip.desk');
SELECT count(*) FROM iwd.webhook_delivery WHERE webhook = 'vip.desk';
SELECT hook_err($$SELECT iwd.get_webhook('vip.desk')$$);

-- bad input: 22023 naming the field
SELECT hook_err($$SELECT iwd.upsert_webhook(NULL)$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('[]')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"url": "http://x/", "secret": "k"}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "secret": "k"}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "http://x/", "secret": "k", "color": 1}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "a b", "url": "http://x/", "secret": "k"}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "", "url": "http://x/", "secret": "k"}')$$);
SELECT hook_err(format('SELECT iwd.upsert_webhook(%L)',
                  jsonb_build_object('name', repeat('n', 129), 'url', 'http://x/', 'secret', 'k')));
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "ftp://x/", "secret": "k"}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "http://", "secret": "k"}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "http://x/a b", "secret": "k"}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": 5, "secret": "k"}')$$);
SELECT hook_err(format('SELECT iwd.upsert_webhook(%L)',
                  jsonb_build_object('name', 'x', 'url', 'http://x/' || repeat('p', 2040), 'secret', 'k')));
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "http://x/"}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "http://x/", "secret": ""}')$$);
SELECT hook_err(format('SELECT iwd.upsert_webhook(%L)',
                  jsonb_build_object('name', 'x', 'url', 'http://x/', 'secret', repeat('s', 257))));
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "http://x/", "secret": "k", "events": []}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "http://x/", "secret": "k",
                                              "events": ["task.x"]}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "http://x/", "secret": "k",
                                              "events": "task.created"}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "http://x/", "secret": "k", "events": [1]}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "http://x/", "secret": "k", "enabled": "yes"}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "http://x/", "secret": "k",
                                              "filter": {"x": "y"}}')$$);
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "x", "url": "http://x/", "secret": "k", "filter": "vip"}')$$);
SELECT count(*) FROM iwd.webhook WHERE name = 'x';
-- at most 100 webhooks
SELECT count(iwd.upsert_webhook(jsonb_build_object('name', 'h' || i, 'url', 'http://x/', 'secret', 'k')))
FROM generate_series(1, 97) i;
SELECT hook_err($$SELECT iwd.upsert_webhook('{"name": "one.too.many", "url": "http://x/", "secret": "k"}')$$);
SELECT hook(iwd.upsert_webhook('{"name": "h1", "url": "http://y/"}')) ->> 'url';
SELECT hook_err($$SELECT iwd.get_webhook(NULL)$$);
SELECT iwd.delete_webhook(NULL);
SELECT hook_err($$SELECT iwd.claim_deliveries(NULL)$$);
SELECT hook_err($$SELECT iwd.claim_deliveries('')$$);
SELECT hook_err(format('SELECT iwd.claim_deliveries(%L)', repeat('o', 257)));
SELECT hook_err($$SELECT iwd.claim_deliveries('r', 0)$$);
SELECT hook_err($$SELECT iwd.claim_deliveries('r', 1001)$$);
SELECT hook_err($$SELECT iwd.claim_deliveries('r', 10, '0.5 s')$$);
SELECT hook_err($$SELECT iwd.claim_deliveries('r', 10, '2 hours')$$);
SELECT hook_err($$SELECT iwd.finish_delivery('00000000-0000-0000-0000-000000000000', 'r', 99, NULL)$$);
SELECT hook_err($$SELECT iwd.finish_delivery('00000000-0000-0000-0000-000000000000', 'r', 600, NULL)$$);
SELECT iwd.finish_delivery('00000000-0000-0000-0000-000000000000', 'r', 200, NULL);
SELECT iwd.finish_delivery(NULL, NULL, NULL, NULL);
SELECT hook_err($$SELECT iwd.webhook_deliveries('nope')$$);
SELECT hook_err($$SELECT iwd.webhook_deliveries('crm', 'lost')$$);
SELECT hook_err($$SELECT iwd.webhook_deliveries('crm', NULL, 0)$$);
SELECT hook_err($$SELECT iwd.webhook_deliveries('crm', NULL, 1001)$$);
SELECT hook_err($$SELECT iwd.webhook_deliveries('crm', NULL, 10, 'abc')$$);
SELECT hook_err($$SELECT iwd.webhook_deliveries('crm', NULL, 10, '-1')$$);
SELECT hook_err($$SET iwd.webhook_retry_for = 'forever'$$);

-- an error is kept to 1024 bytes
SELECT hook_task('W3') AS t3 \gset
SELECT iwd.publish_events() > 0;
SELECT count(*) > 0 FROM iwd.claim_deliveries('replica-1', 1000);
SELECT iwd.finish_delivery(id, 'replica-1', NULL, repeat('e', 5000)) FROM iwd.webhook_delivery
WHERE webhook = 'crm' AND task_id = :t3;
SELECT octet_length(last_error) FROM iwd.webhook_delivery WHERE webhook = 'crm' AND task_id = :t3;

DROP FUNCTION hook_err(text);
DROP FUNCTION hook_task(text, text);
DROP FUNCTION hook(jsonb);
DROP FUNCTION deliveries(text);
DROP EXTENSION iwd CASCADE;
