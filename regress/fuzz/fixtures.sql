-- Fixtures of the SQL fuzzer (regress/fuzz/fuzz_sql.c): configuration that documents can refer to and tasks
-- in every status, so that update_task meets each one. Every fuzzed call is rolled back; these stay.
CREATE EXTENSION iwd;
SELECT iwd.upsert_department('{"name": "Finance", "description": "Money"}') IS NOT NULL;
SELECT iwd.upsert_department('{"name": "Claims"}') IS NOT NULL;
SELECT iwd.upsert_process('{"name": "Invoices", "department": "Finance"}') IS NOT NULL;
SELECT iwd.upsert_calendar('{"name": "office", "timeZone": "Europe/Paris"}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Invoices", "department": "Finance", "process": "Invoices", "priority": 50,
                             "slaMinutes": 60, "skills": {"invoices": 3}}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Claim", "department": "Claims", "queue": "claims"}') IS NOT NULL;
SELECT iwd.upsert_rule('{"kind": "classification", "name": "big invoices", "order": 10,
                         "when": {"all": [{"field": "attributes.type", "op": "=", "value": "invoice"},
                                          {"field": "attributes.amount", "op": ">", "value": 100}]},
                         "set": {"category": "Invoices"}}') IS NOT NULL;
SELECT iwd.upsert_agent('{"id": "a17", "name": "Dana Ruiz", "skills": {"invoices": 5, "claims": 2},
                          "capacity": {"workitem": 5}, "state": "ready"}') IS NOT NULL;
SELECT iwd.upsert_agent('{"id": "a18", "skills": {"claims": 4}, "state": "ready"}') IS NOT NULL;
CREATE TEMP TABLE made AS
SELECT ext, (iwd.create_task(jsonb_build_object(
           'externalId', ext, 'capturePoint', 'erp', 'subject', 'Refund ' || ext, 'priority', 40,
           'attributes', jsonb_build_object('amount', 150, 'type', 'invoice'))) ->> 'id')::bigint AS id
FROM unnest(ARRAY['queued', 'assigned', 'accepted', 'held', 'completed', 'canceled', 'rejected']) ext;
SELECT iwd.hold_task(id, 'waiting') IS NOT NULL FROM made WHERE ext = 'held';
SELECT iwd.cancel_task(id, 'duplicate') IS NOT NULL FROM made WHERE ext = 'canceled';
SELECT iwd.reject_task(id, NULL, 'cannot') IS NOT NULL FROM made WHERE ext = 'rejected';
SELECT iwd.complete_task(id) IS NOT NULL FROM made WHERE ext = 'completed';
SELECT iwd.next_task('a17') ->> 'externalId' AS assigned_first;
SELECT iwd.next_task('a17') ->> 'externalId' AS assigned_second;
SELECT iwd.accept_task(id, 'a17') IS NOT NULL FROM iwd.task WHERE status = 'assigned' ORDER BY id DESC LIMIT 1;
SELECT status, count(*) FROM iwd.task GROUP BY status ORDER BY status;
