-- The universal queue with filters and keyset pagination, and full-text search.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
CREATE FUNCTION err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
SELECT count(*) FROM (
    SELECT iwd.create_task(jsonb_build_object(
        'externalId', 'T' || i, 'capturePoint', CASE WHEN i % 2 = 0 THEN 'erp' ELSE 'crm' END,
        'priority', i % 5, 'businessValue', i, 'queue', 'q' || (i % 3),
        'customerSegment', CASE WHEN i % 4 = 0 THEN 'gold' ELSE 'silver' END,
        'mediaType', CASE WHEN i = 7 THEN 'email' ELSE 'workitem' END,
        'dueAt', CASE WHEN i <= 3 THEN '2026-11-24T09:00:00Z' END,
        'subject', 'Invoice ' || i || CASE WHEN i = 12 THEN ' from ACME Corporation' ELSE '' END,
        'description', CASE WHEN i = 5 THEN 'urgent refund requested' END,
        'attributes', jsonb_build_object('supplier', CASE WHEN i = 9 THEN 'Globex' ELSE 'Initech' END)))
    FROM generate_series(1, 20) i) s;

-- queue order: priority, business value, due, created, id
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.queue('{}', 50) t;
-- filters
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.queue('{"queue": "q1"}') t;
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.queue('{"queue": ["q1", "q2"], "customerSegment": "gold"}') t;
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.queue('{"mediaType": "email"}') t;
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.queue('{"capturePoint": "erp", "overdue": true}') t;
SELECT count(*) FROM iwd.queue('{"overdue": false}', 1000);
-- keyset pagination: pages of 6 cover the queue exactly once
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.queue('{}', 6) t;
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.queue('{"afterId": 13}', 6) t;
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.queue('{"afterId": 2}', 6) t;
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.queue('{"afterId": 15}', 6) t;
SELECT count(*) FROM iwd.queue('{"afterId": 5}', 6) t;
-- a cursor stays valid when its task has left the queue meanwhile
SELECT iwd.cancel_task(13) ->> 'status';
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.queue('{"afterId": 13}', 6) t;
-- statuses: open by default; closed ones on request
SELECT iwd.complete_task(20) ->> 'status', iwd.hold_task(19) ->> 'status';
SELECT count(*) FROM iwd.queue('{}', 1000);
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.queue('{"status": "held"}') t;
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.queue('{"status": ["completed", "held"]}') t;
-- bad filters
SELECT err($$SELECT iwd.queue('{"colour": "red"}')$$);
SELECT err($$SELECT iwd.queue('{"status": "done"}')$$);
SELECT err($$SELECT iwd.queue('{"queue": 5}')$$);
SELECT err($$SELECT iwd.queue('{"overdue": "yes"}')$$);
SELECT err($$SELECT iwd.queue('{"afterId": 999}')$$);
SELECT err($$SELECT iwd.queue('{"afterId": "x"}')$$);
SELECT err($$SELECT iwd.queue('{}', 0)$$);
SELECT err($$SELECT iwd.queue('{}', 5000)$$);

-- full-text search over subject, description and attributes, open and closed tasks
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.search_tasks('acme') t;
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.search_tasks('refund urgent') t;
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.search_tasks('globex') t;
SELECT string_agg(t ->> 'externalId', ' ' ORDER BY t ->> 'externalId') FROM iwd.search_tasks('invoice', '{"queue": "q0"}') t;
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.search_tasks('"Invoice 20"') t;
SELECT string_agg(t ->> 'externalId', ' ') FROM iwd.search_tasks('initech -invoice') t;
SELECT count(*) FROM iwd.search_tasks('invoice', '{}', 3);
SELECT err($$SELECT iwd.search_tasks('', '{}')$$);
SELECT err($$SELECT iwd.search_tasks('x', '{"afterId": 1}')$$);
-- the search uses the GIN index
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT task_id FROM iwd.task_document WHERE document @@ websearch_to_tsquery('simple', 'acme');
RESET enable_seqscan;

DROP FUNCTION err(text);
DROP EXTENSION iwd CASCADE;
