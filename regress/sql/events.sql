-- Events out: the outbox written with each event, publication into the feed, reading it back with types,
-- filters and limits, rolled-back work announcing nothing, retention, and the bad inputs.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
CREATE FUNCTION err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE FUNCTION new_task(ext text, queue text DEFAULT NULL) RETURNS bigint LANGUAGE sql AS $$
    SELECT (iwd.create_task(jsonb_strip_nulls(jsonb_build_object('externalId', ext, 'capturePoint', 'test',
                                                                 'queue', queue))) ->> 'id')::bigint
$$;
-- an event list without its times (they move with the clock)
CREATE FUNCTION brief(page jsonb) RETURNS TABLE (id bigint, type text, task bigint, status text, agent text,
                                                 queue text, doc_keys text)
LANGUAGE sql AS $$
    SELECT (e ->> 'id')::bigint, e ->> 'type', (e ->> 'taskId')::bigint, e -> 'task' ->> 'status', e ->> 'agent',
           e -> 'task' ->> 'queue', (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(e) k)
    FROM jsonb_array_elements(page -> 'events') e
$$;
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
SELECT iwd.upsert_agent('{"id": "a1", "state": "ready"}') IS NOT NULL;

-- nothing published yet
SELECT iwd.events_head(), iwd.events_after(0);

-- each event writes its document and its outbox row in its transaction, with the task after the event
SELECT new_task('E1');
SELECT new_task('E2', 'vip');
SELECT iwd.next_task('a1') ->> 'id';
SELECT iwd.complete_task(1, 'a1') ->> 'status';
SELECT o.event_id, o.type, o.task_id, k.doc ->> 'agent' AS agent, k.doc -> 'task' ->> 'status' AS status,
       k.doc ->> 'externalId' AS ext, k.doc ->> 'capturePoint' AS cp, k.doc ? 'id' AS has_id
FROM iwd.event_outbox o JOIN iwd.event_document k USING (event_id) ORDER BY event_id;

-- a rolled-back transaction leaves nothing
BEGIN;
SELECT new_task('ROLLED');
SELECT (SELECT count(*) FROM iwd.event_outbox), (SELECT count(*) FROM iwd.event_document);
ROLLBACK;
SELECT (SELECT count(*) FROM iwd.event_outbox), (SELECT count(*) FROM iwd.event_document);

-- an event whose document is there already (a logical backup restores the documents before the history)
-- keeps that document and is not announced again
SELECT nextval('iwd.task_event_id_seq') AS restored \gset
INSERT INTO iwd.event_document (event_id, doc) VALUES (:restored, '{"restored": true}');
INSERT INTO iwd.task_event (id, task_id, at, event) VALUES (:restored, 1, now(), 'updated');
SELECT (SELECT count(*) FROM iwd.event_outbox), (SELECT doc FROM iwd.event_document WHERE event_id = :restored);
DELETE FROM iwd.event_document WHERE event_id = :restored;

-- publication: in event order, numbered from 1; the outbox is emptied, each document stays where it was
-- written (the feed names it); a second call publishes nothing
SELECT iwd.publish_events();
SELECT (SELECT count(*) FROM iwd.event_outbox), (SELECT count(*) FROM iwd.event_document);
SELECT iwd.publish_events(), iwd.events_head();
SELECT * FROM brief(iwd.events_after(0));
SELECT iwd.events_after(0) -> 'next', iwd.events_after(4) -> 'next', iwd.events_after(99) -> 'next';
-- the event document is the stored document with the feed's id
SELECT (iwd.events_after(2, 1) -> 'events' -> 0) = (jsonb_build_object('id', f.id) || k.doc)
FROM iwd.event_feed f JOIN iwd.event_document k USING (event_id) WHERE f.id = 3;

-- limits, types and filters
SELECT * FROM brief(iwd.events_after(1, 2));
SELECT * FROM brief(iwd.events_after(0, 10, '{task.completed,task.reserved}'));
SELECT * FROM brief(iwd.events_after(0, 10, NULL, '{"queue": "vip"}'));
SELECT * FROM brief(iwd.events_after(0, 10, '{task.created}', '{"queue": ["vip", "general"]}'));
SELECT * FROM brief(iwd.events_after(0, 10, NULL, '{"status": "completed", "assignedTo": "a1"}'));
SELECT iwd.events_after(0, 10, NULL, '{"queue": "none"}');
SELECT iwd.events_after(0, 10, NULL, 'null') -> 'next', iwd.events_after(0, 10, NULL, NULL) -> 'next';

-- every lifecycle event has its public type
SELECT iwd.next_task('a1') ->> 'externalId';
SELECT iwd.cancel_task(2) ->> 'status';
SELECT new_task('E3') AS t3 \gset
SELECT iwd.hold_task(:t3) ->> 'status', iwd.resume_task(:t3) ->> 'status';
SELECT iwd.reprioritize_task(:t3, 50) ->> 'priority';
SELECT iwd.update_task(:t3, '{"subject": "new"}') ->> 'subject';
SELECT iwd.next_task('a1') ->> 'externalId';
SELECT iwd.accept_task(:t3, 'a1') ->> 'status';
SELECT iwd.reject_task(:t3, 'a1', 'no') ->> 'status';
SELECT iwd.restart_task(:t3) ->> 'status';
-- a rule naming a category that does not exist parks the updated task in errorHeld
SELECT iwd.upsert_rule('{"kind": "classification", "name": "broken", "order": 5,
                         "when": {"field": "attributes.broken", "op": "exists", "value": true},
                         "set": {"category": "Gone"}}') IS NOT NULL;
SELECT iwd.update_task(:t3, '{"attributes": {"broken": 1}}') ->> 'status';
SELECT iwd.cancel_task(:t3) ->> 'status';
SELECT new_task('E4') AS t4 \gset
SELECT iwd.next_task('a1') ->> 'externalId';
SELECT iwd.tick('2026-11-24 10:05:00+00') ->> 'reservationTimeouts';
SELECT iwd.update_task(:t4, '{"expiresAt": "2026-11-24T10:06:00Z"}') ->> 'expiresAt';
SELECT iwd.tick('2026-11-24 10:07:00+00') ->> 'expired';
SELECT iwd.create_task('{"externalId": "E5", "capturePoint": "test", "activationAt": "2026-11-24T10:08:00Z"}')
    ->> 'status';
SELECT iwd.tick('2026-11-24 10:09:00+00') ->> 'activated';
SELECT iwd.publish_events() > 4;
SELECT e.type, e.task - :t3 AS task, e.status, e.agent FROM brief(iwd.events_after(4, 100)) e;
-- the public types seen, all of them known
SELECT array_agg(DISTINCT type ORDER BY type) AS seen, array_agg(DISTINCT type) <@ iwd.event_types() AS known
FROM iwd.event_feed;

-- a selective filter: a call examines at most 100 x lim events (at most 10,000); when it stops there with
-- fewer matches, "next" is the last one examined, so that paging after it reaches every match; a scan that
-- reached the newest event leaves "next" at the last event returned
SELECT iwd.events_head() AS h0 \gset
SELECT count(*) FROM (SELECT new_task('BULK' || g) FROM generate_series(1, 250) g) b;
SELECT new_task('RARE', 'rare') IS NOT NULL;
SELECT iwd.publish_events() - :h0 AS published;
WITH RECURSIVE pages (page, after, events, found) AS (
    SELECT 0, :h0::bigint, 0, NULL::text
    UNION ALL
    SELECT page + 1, (p ->> 'next')::bigint, jsonb_array_length(p -> 'events'),
           p -> 'events' -> 0 ->> 'externalId'
    FROM pages, iwd.events_after(pages.after, 1, NULL, '{"queue": "rare"}') p
    WHERE found IS NULL AND page < 10)
SELECT page, after - :h0 AS next, events, found FROM pages WHERE page > 0;
SELECT (p ->> 'next')::bigint - :h0 AS next, p -> 'events' -> 0 ->> 'externalId' AS found
FROM iwd.events_after(:h0, 100, NULL, '{"queue": "rare"}') p;
SELECT (p ->> 'next')::bigint - :h0 AS next, jsonb_array_length(p -> 'events') AS events
FROM iwd.events_after(:h0, 2, '{task.completed}') p;
SELECT (p ->> 'next')::bigint - :h0 AS next, jsonb_array_length(p -> 'events') AS events
FROM iwd.events_after(:h0, 5) p;

-- bad input: 22023 naming the parameter
SELECT err($$SELECT iwd.events_after(NULL)$$);
SELECT err($$SELECT iwd.events_after(-1)$$);
SELECT err($$SELECT iwd.events_after(0, 0)$$);
SELECT err($$SELECT iwd.events_after(0, 1001)$$);
SELECT err($$SELECT iwd.events_after(0, 10, '{task.created,task.nope}')$$);
SELECT err($$SELECT iwd.events_after(0, 10, '{}')$$);
SELECT err($$SELECT iwd.events_after(0, 10, ARRAY[NULL])$$);
SELECT err($$SELECT iwd.events_after(0, 10, NULL, '{"color": "red"}')$$);
SELECT err($$SELECT iwd.events_after(0, 10, NULL, '{"queue": 5}')$$);
SELECT err($$SELECT iwd.events_after(0, 10, NULL, '{"queue": []}')$$);
SELECT err($$SELECT iwd.events_after(0, 10, NULL, '[]')$$);
SELECT err(format($$SELECT iwd.events_after(0, 10, NULL, %L)$$,
                  jsonb_build_object('queue', (SELECT jsonb_agg(i::text) FROM generate_series(1, 101) i))));
SELECT err($$SELECT iwd.publish_events(0)$$);
SELECT err($$SELECT iwd.publish_events(100001)$$);
SELECT err($$SELECT iwd.publish_events(NULL)$$);

-- retention: events published longer ago than iwd.event_retention go, but never the last one
SELECT err($$SET iwd.event_retention = 'soon'$$);
SELECT err($$SET iwd.event_retention = '-1 day'$$);
SELECT err($$SET iwd.event_retention = '0'$$);
SET iwd.event_retention = '1 hour';
SELECT iwd._expire_events(1000);
UPDATE iwd.event_feed SET published_at = published_at - interval '2 hours' WHERE id <= 3;
SELECT iwd._expire_events(2);
SELECT min(id) FROM iwd.event_feed;
SELECT iwd._expire_events(1000);
SELECT min(id) FROM iwd.event_feed;
-- a reader resuming before the oldest kept event continues from it
SELECT (iwd.events_after(1, 1) -> 'events' -> 0 ->> 'id')::bigint = (SELECT min(id) FROM iwd.event_feed);
UPDATE iwd.event_feed SET published_at = published_at - interval '2 hours';
SELECT iwd._expire_events(1000) > 0;
SELECT count(*), max(id) = iwd.events_head(), iwd.events_head() > 10 FROM iwd.event_feed;
-- the documents of the deleted events went with them: the last event keeps its own, and no other is left
SELECT count(*), bool_and(event_id = (SELECT f.event_id FROM iwd.event_feed f)) FROM iwd.event_document;
RESET iwd.event_retention;

DROP FUNCTION err(text);
DROP FUNCTION new_task(text, text);
DROP FUNCTION brief(jsonb);
DROP EXTENSION iwd CASCADE;
