-- Webhook deliveries reported in one statement (iwd.finish_deliveries, the sidecar's report) after a claim,
-- and the bad inputs.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
CREATE FUNCTION err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_detail text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || SQLERRM || coalesce(' (' || nullif(v_detail, '') || ')', '');
END $$;
-- the id of the delivery of an event
CREATE FUNCTION delivery(feed bigint) RETURNS text LANGUAGE sql AS $$
    SELECT id::text FROM iwd.webhook_delivery WHERE feed_id = feed
$$;
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
SELECT iwd.upsert_webhook('{"name": "crm", "url": "http://crm.example/in", "secret": "k",
                            "events": ["task.created"]}') ->> 'name';
SELECT count(*) FROM (SELECT iwd.create_task(jsonb_build_object('externalId', 'D' || g, 'capturePoint', 'test'))
                      FROM generate_series(1, 5) g) t;
SELECT iwd.publish_events();

-- a claim leases the deliveries; a second claim gets the rest only
SELECT feed_id, type FROM iwd.claim_deliveries('r1', 4, '30 s') ORDER BY feed_id;
SELECT feed_id, lease_owner, lease_until - '2026-11-24 10:00:00+00' AS lease_for FROM iwd.webhook_delivery
ORDER BY feed_id;
SELECT count(*) FROM iwd.claim_deliveries('r2', 10);

-- one statement reports many: 2xx delivers, anything else backs off 1 s, another owner's, an unknown or a
-- settled delivery is lost; an id given twice counts once
SELECT (SELECT d.feed_id FROM iwd.webhook_delivery d WHERE d.id = o.id) AS feed_id, o.status
FROM iwd.finish_deliveries('r1', jsonb_build_array(
         jsonb_build_object('id', delivery(1), 'status', 200),
         jsonb_build_object('id', delivery(2), 'status', 503, 'error', 'busy'),
         jsonb_build_object('id', delivery(3), 'status', null, 'error', 'connection refused'),
         jsonb_build_object('id', delivery(3), 'status', 204),
         jsonb_build_object('id', delivery(5), 'status', 200),
         jsonb_build_object('id', '00000000-0000-0000-0000-000000000000', 'status', 200))) o
ORDER BY 1 NULLS LAST;
SELECT feed_id, status, attempts, last_status, last_error, lease_owner,
       next_attempt_at - '2026-11-24 10:00:00+00' AS next_in
FROM iwd.webhook_delivery ORDER BY feed_id;
SELECT s.status FROM iwd.finish_deliveries('r2', jsonb_build_array(jsonb_build_object('id', delivery(4),
                                                                                     'status', 200))) s;
SELECT s.status FROM iwd.finish_deliveries('r1', jsonb_build_array(jsonb_build_object('id', delivery(1),
                                                                                     'status', 200))) s;
SELECT count(*) FROM iwd.finish_deliveries('r1', '[]');
-- the one-delivery form keeps its contract
SELECT iwd.finish_delivery(delivery(4)::uuid, 'r1', 200, NULL), iwd.finish_delivery(NULL, 'r1', 200, NULL);
SELECT err($$SELECT iwd.finish_delivery(NULL, 'r1', 700, NULL)$$);
-- the back-off: due after a second, then claimed again
SELECT count(*) FROM iwd.claim_deliveries('r1', 10);
SET iwd.simulated_time = '2026-11-24 10:00:01+00';
SELECT feed_id FROM iwd.claim_deliveries('r1', 10) ORDER BY feed_id;

-- bad inputs
SELECT err($$SELECT iwd.finish_deliveries('r1', NULL)$$);
SELECT err($$SELECT iwd.finish_deliveries('r1', '{"id": "x"}')$$);
SELECT err(format('SELECT iwd.finish_deliveries(%L, %L)', 'r1',
                  (SELECT jsonb_agg(jsonb_build_object('id', gen_random_uuid())) FROM generate_series(1, 1001))));
SELECT err($$SELECT iwd.finish_deliveries('r1', '[{"id": "not-a-uuid", "status": 200}]')$$);
SELECT err($$SELECT iwd.finish_deliveries('r1', '[{"status": 200}]')$$);
SELECT err($$SELECT iwd.finish_deliveries('r1', '[{"id": "00000000-0000-0000-0000-000000000000", "status": 700}]')$$);
SELECT err($$SELECT iwd.finish_deliveries('r1', '[{"id": "00000000-0000-0000-0000-000000000000", "status": "200"}]')$$);
SELECT err($$SELECT iwd.finish_deliveries('r1', '[{"id": "00000000-0000-0000-0000-000000000000", "status": 200.5}]')$$);
SELECT err($$SELECT iwd.finish_deliveries('r1', '[{"id": "00000000-0000-0000-0000-000000000000", "error": 5}]')$$);
SELECT err($$SELECT iwd.finish_deliveries('r1', '[7]')$$);

-- webhook changes are counted server-wide as they commit (iwd.webhook_changes), those rolled back are not
SELECT iwd.webhook_changes() AS changes_before \gset
BEGIN;
SELECT iwd.upsert_webhook('{"name": "later", "url": "http://later.example/", "secret": "k"}') ->> 'name';
SELECT iwd.webhook_changes() - :changes_before AS counted_before_commit;
ROLLBACK;
SELECT iwd.webhook_changes() - :changes_before AS counted_after_rollback;
SELECT iwd.upsert_webhook('{"name": "later", "url": "http://later.example/", "secret": "k"}') ->> 'name';
SELECT iwd.webhook_changes() - :changes_before AS counted_after_commit;
BEGIN;
UPDATE iwd.webhook SET enabled = false WHERE name = 'later';
SELECT iwd.delete_webhook('later');
COMMIT;
SELECT iwd.webhook_changes() - :changes_before AS one_more_per_transaction;

DROP FUNCTION err(text);
DROP FUNCTION delivery(bigint);
DROP EXTENSION iwd CASCADE;
