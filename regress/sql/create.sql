-- Task capture: defaults, idempotency, bulk, and every validation error.
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
SELECT iwd.upsert_department('{"name": "Finance"}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Invoice approval", "department": "Finance", "priority": 50,
                             "businessValue": 300, "slaMinutes": 240, "skills": {"invoices": 3}, "queue": "finance"}')
       IS NOT NULL;

-- the full task document
SELECT jsonb_pretty(iwd.create_task('{"externalId": "INV-1", "capturePoint": "erp", "category": "Invoice approval",
    "subject": "Approve invoice 1", "description": "Supplier ACME", "attributes": {"amount": 1200},
    "customerSegment": "gold", "customerId": "C-9", "sourceProcessType": "AP"}'));
-- a bare task: no category, no SLA, default media type
SELECT t ->> 'status', t ->> 'mediaType', t ->> 'priority', t ->> 'dueAt', t -> 'skills', t -> 'attributes'
FROM iwd.create_task('{"externalId": "X-1", "capturePoint": "mail"}') t;
-- explicit values win over the category's
SELECT t ->> 'priority', t ->> 'businessValue', t ->> 'queue', t ->> 'dueAt', t -> 'skills'
FROM iwd.create_task('{"externalId": "INV-2", "capturePoint": "erp", "category": "Invoice approval",
                       "priority": 7, "businessValue": 9, "queue": "vip", "dueAt": "2026-11-24T12:00:00+01:00",
                       "skills": {"invoices": 1}}') t;
-- the source's due time and creation time drive the SLA
SELECT t ->> 'dueAt' FROM iwd.create_task('{"externalId": "INV-3", "capturePoint": "erp",
    "category": "Invoice approval", "sourceDueDateTime": "2026-11-26T00:00:00Z"}') t;
SELECT t ->> 'dueAt' FROM iwd.create_task('{"externalId": "INV-4", "capturePoint": "erp",
    "category": "Invoice approval", "sourceCreatedDateTime": "2026-11-24T08:00:00Z"}') t;
-- deferred work is held until its activation time
SELECT t ->> 'status', t ->> 'activationAt' FROM iwd.create_task('{"externalId": "INV-5", "capturePoint": "erp",
    "activationAt": "2026-11-24T11:00:00Z"}') t;
SELECT t ->> 'status' FROM iwd.create_task('{"externalId": "INV-6", "capturePoint": "erp",
    "activationAt": "2026-11-24T09:00:00Z"}') t;

-- idempotent: the same (capturePoint, externalId) returns the existing task unchanged
SELECT (iwd.create_task('{"externalId": "INV-1", "capturePoint": "erp", "subject": "changed"}')) ->> 'subject';
SELECT count(*) FROM iwd.task WHERE external_id = 'INV-1';
-- the same external id from another capture point is other work
SELECT (iwd.create_task('{"externalId": "INV-1", "capturePoint": "crm"}')) ->> 'id' <>
       (iwd.create_task('{"externalId": "INV-1", "capturePoint": "erp"}')) ->> 'id' AS distinct_task;
-- even after the task has been closed
SELECT iwd.cancel_task((iwd.create_task('{"externalId": "C-1", "capturePoint": "erp"}') ->> 'id')::bigint) ->> 'status';
SELECT iwd.create_task('{"externalId": "C-1", "capturePoint": "erp"}') ->> 'status';

-- bulk capture: all or nothing, results in input order
SELECT jsonb_path_query(iwd.create_tasks('[{"externalId": "B-1", "capturePoint": "erp"},
                                           {"externalId": "B-2", "capturePoint": "erp"},
                                           {"externalId": "INV-1", "capturePoint": "erp"}]'), '$[*].externalId');
SELECT err($$SELECT iwd.create_tasks('[{"externalId": "B-3", "capturePoint": "erp"}, {"externalId": "B-4"}]')$$);
SELECT count(*) FROM iwd.task WHERE external_id = 'B-3';
SELECT err($$SELECT iwd.create_tasks('{"externalId": "B-5"}')$$);
SELECT iwd.create_tasks('[]');
-- a batch of new work is captured set-wise: ids ascend in input order, each task has its key, its search
-- document and its "created" event
CREATE TEMP TABLE batch AS
SELECT t FROM jsonb_array_elements(iwd.create_tasks('[{"externalId": "S-1", "capturePoint": "erp", "priority": 5},
                                                      {"externalId": "S-2", "capturePoint": "erp", "subject": "late fee"},
                                                      {"externalId": "S-3", "capturePoint": "erp"}]')) t;
SELECT jsonb_agg(t -> 'externalId') AS created,
       max((t ->> 'id')::bigint) - min((t ->> 'id')::bigint) = 2 AS ids,
       (SELECT array_agg(external_id ORDER BY id) FROM iwd.task WHERE external_id LIKE 'S-%') AS by_id,
       (SELECT count(*) FROM iwd.task_key WHERE external_id LIKE 'S-%') AS keys,
       (SELECT count(*) FROM iwd.task_document d JOIN iwd.task t ON t.id = d.task_id WHERE t.external_id LIKE 'S-%') AS docs,
       (SELECT count(*) FROM iwd.task_event e JOIN iwd.task t ON t.id = e.task_id
         WHERE t.external_id LIKE 'S-%' AND e.event = 'created') AS events
FROM batch;
SELECT s ->> 'externalId' AS found FROM iwd.search_tasks('late') s WHERE s ->> 'externalId' LIKE 'S-%';
-- a key repeated inside a batch returns the first element's task; a known key returns the stored task
TRUNCATE batch;
INSERT INTO batch
SELECT t FROM jsonb_array_elements(iwd.create_tasks('[{"externalId": "S-4", "capturePoint": "erp"},
                                                      {"externalId": "S-4", "capturePoint": "erp"},
                                                      {"externalId": "S-1", "capturePoint": "erp", "priority": 99}]')) t;
SELECT t ->> 'externalId' AS ext, (t ->> 'id')::bigint = (SELECT task_id FROM iwd.task_key WHERE external_id = t ->> 'externalId') AS same,
       t ->> 'priority' AS priority
FROM batch;
DROP TABLE batch;
-- an invalid element anywhere in a batch of new work: the error names it and nothing is written
SELECT err($$SELECT iwd.create_tasks('[{"externalId": "S-5", "capturePoint": "erp"},
                                       {"externalId": "S-6", "capturePoint": "erp", "priority": "high"}]')$$);
SELECT count(*) FROM iwd.task_key WHERE external_id IN ('S-5', 'S-6');

-- every validation error names the field
SELECT err($$SELECT iwd.create_task('[1]')$$);
SELECT err($$SELECT iwd.create_task(NULL)$$);
SELECT err($$SELECT iwd.create_task('{"capturePoint": "erp"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "", "capturePoint": "erp"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": 5, "capturePoint": "erp"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "colour": "red"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "priority": "high"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "priority": 1.5}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "priority": 3000000000}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "businessValue": true}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "dueAt": "tomorrow"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "dueAt": "2026-11-24T10:00:00"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "dueAt": "2026-13-45T10:00:00Z"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "expiresAt": 12}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "skills": ["a"]}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "skills": {"a": 11}}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "skills": {"a": "x"}}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "attributes": "x"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "mediaType": ""}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "category": "Nope"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "status": "completed"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "assignedTo": "a1"}')$$);
SELECT err($$SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "subject": ["x"]}')$$);
-- keys the task document derives are accepted and ignored
SELECT iwd.create_task('{"externalId": "E", "capturePoint": "erp", "overdue": true}') ->> 'overdue';
-- nothing failed above was stored
SELECT count(*) FROM iwd.task_all WHERE external_id = 'E';
SELECT count(*) AS tasks, count(DISTINCT id) AS ids FROM iwd.task_all;
SELECT count(*) FROM iwd.task_key;

-- get_task
SELECT iwd.get_task(1) ->> 'externalId';
SELECT err($$SELECT iwd.get_task(999)$$);
SELECT iwd.get_task(NULL);
-- it reads the tables with the caller's rights, as a query would
CREATE ROLE iwd_regress_reader;
GRANT USAGE ON SCHEMA iwd TO iwd_regress_reader;
SET ROLE iwd_regress_reader;
SELECT err($$SELECT iwd.get_task(1)$$);
RESET ROLE;
GRANT SELECT ON iwd.task, iwd.task_closed TO iwd_regress_reader;
SET ROLE iwd_regress_reader;
SELECT iwd.get_task(1) ->> 'externalId';
RESET ROLE;
-- row-level policies are not bypassed: refused
ALTER TABLE iwd.task ENABLE ROW LEVEL SECURITY;
SET ROLE iwd_regress_reader;
SELECT err($$SELECT iwd.get_task(1)$$);
RESET ROLE;
ALTER TABLE iwd.task DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON iwd.task, iwd.task_closed FROM iwd_regress_reader;
REVOKE ALL ON SCHEMA iwd FROM iwd_regress_reader;
DROP ROLE iwd_regress_reader;

-- capture prepares its statements once per session, for the task row type of the extension it found: a
-- re-created extension (a new row type) is captured into, one task and a batch
SELECT iwd.create_tasks('[{"externalId": "S1", "capturePoint": "erp"}, {"externalId": "S2", "capturePoint": "erp"}]')
       -> 1 ->> 'externalId';
DROP EXTENSION iwd CASCADE;
CREATE EXTENSION iwd;
SELECT iwd.create_task('{"externalId": "R1", "capturePoint": "erp"}') ->> 'status';
SELECT iwd.create_tasks('[{"externalId": "R2", "capturePoint": "erp"}, {"externalId": "R3", "capturePoint": "erp"}]')
       -> 1 ->> 'externalId';
SELECT count(*) AS tasks, (SELECT count(*) FROM iwd.task_key) AS keys, (SELECT count(*) FROM iwd.task_document) AS docs,
       (SELECT count(*) FROM iwd.task_event WHERE event = 'created') AS events
FROM iwd.task;

DROP FUNCTION err(text);
DROP EXTENSION iwd CASCADE;
