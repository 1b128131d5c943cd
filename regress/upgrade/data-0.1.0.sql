-- Work a tenant does under iwd 0.1.0, through its SQL API, before the upgrade test updates it to the
-- current release (scripts/test-upgrade.sh): an agent and a task in each state (queued, assigned and
-- accepted, completed, rejected, canceled, held, expired), with routing keys of one skill, of a pair and
-- of none, and a Data Mart run.
\set ON_ERROR_STOP on
SELECT iwd.upsert_agent('{"id": "a1", "name": "Agent One", "skills": {"invoices": 5, "claims": 3},
                          "capacity": {"workitem": 10}, "state": "ready"}') IS NOT NULL AS agent;
SELECT iwd.create_task(t::jsonb) ->> 'status' AS created
FROM unnest(ARRAY[
    '{"externalId": "T1-assigned", "capturePoint": "erp", "priority": 90, "skills": {"invoices": 1, "claims": 1}}',
    '{"externalId": "T2-completed", "capturePoint": "erp", "priority": 80, "skills": {"invoices": 3}}',
    '{"externalId": "T3-rejected", "capturePoint": "erp", "priority": 70}']) t;
-- the agent takes them in queue order: the first accepted, the second completed, the third rejected
SELECT iwd.accept_task((iwd.next_task('a1', 600) ->> 'id')::bigint, 'a1') ->> 'externalId' AS accepted;
SELECT iwd.complete_task((iwd.accept_task((iwd.next_task('a1', 600) ->> 'id')::bigint, 'a1') ->> 'id')::bigint, 'a1')
       ->> 'status' AS completed;
SELECT iwd.reject_task((iwd.next_task('a1', 600) ->> 'id')::bigint, 'a1', 'not mine') ->> 'status' AS rejected;
SELECT iwd.create_task(t::jsonb) ->> 'status' AS created
FROM unnest(ARRAY[
    '{"externalId": "T4-queued", "capturePoint": "erp", "priority": 10, "skills": {"invoices": 2}}',
    '{"externalId": "T5-canceled", "capturePoint": "crm", "priority": 5}',
    '{"externalId": "T6-held", "capturePoint": "crm", "priority": 5, "skills": {"claims": 2}}']) t;
SELECT iwd.create_task(pg_catalog.jsonb_build_object('externalId', 'T7-expired', 'capturePoint', 'crm',
                                                     'expiresAt', now() + interval '1 hour')) ->> 'status' AS created;
SELECT iwd.cancel_task(id, 'duplicate') ->> 'status' AS canceled FROM iwd.task WHERE external_id = 'T5-canceled';
SELECT iwd.hold_task(id, 'waiting for the customer') ->> 'status' AS held FROM iwd.task WHERE external_id = 'T6-held';
SELECT iwd.tick(now() + interval '2 hours') IS NOT NULL AS ticked;
SELECT iwd_dm.run('full') IS NOT NULL AS data_mart;
