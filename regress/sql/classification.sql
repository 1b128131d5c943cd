-- Classification rules: conditions over fields and attributes; the first rule to set a field wins;
-- explicit input is never overridden; category defaults; rule errors park the task.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
CREATE FUNCTION cls(doc jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(' | ', t ->> 'category', t ->> 'department', t ->> 'process', t ->> 'queue',
                     t ->> 'customerSegment', t ->> 'mediaType', t -> 'skills', t ->> 'classifiedBy', t ->> 'status',
                     t ->> 'errorReason')
    FROM iwd.create_task(doc) t
$$;
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
SELECT iwd.upsert_department('{"name": "Finance"}') IS NOT NULL, iwd.upsert_department('{"name": "Claims"}') IS NOT NULL;
SELECT iwd.upsert_process('{"name": "Invoices", "department": "Finance"}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Invoice approval", "department": "Finance", "process": "Invoices",
                             "queue": "finance", "skills": {"invoices": 3}}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Small invoice", "department": "Finance", "queue": "finance-small",
                             "mediaType": "email"}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Claim", "department": "Claims", "queue": "claims"}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Other"}') IS NOT NULL;
SELECT iwd.upsert_rule(r) IS NOT NULL FROM jsonb_array_elements('[
  {"kind": "classification", "name": "big invoices", "order": 10,
   "when": {"all": [{"field": "attributes.type", "op": "=", "value": "invoice"},
                    {"field": "attributes.amount", "op": ">=", "value": 1000}]},
   "set": {"category": "Invoice approval"}},
  {"kind": "classification", "name": "small invoices", "order": 20,
   "when": {"field": "attributes.type", "op": "=", "value": "invoice"},
   "set": {"category": "Small invoice"}},
  {"kind": "classification", "name": "claims", "order": 30,
   "when": {"any": [{"field": "subject", "op": "contains", "value": "claim"},
                    {"field": "attributes.kind", "op": "in", "value": ["claim", "dispute"]}]},
   "set": {"category": "Claim", "skills": {"claims": 2}}},
  {"kind": "classification", "name": "vip segment", "order": 40,
   "when": {"field": "attributes.customer.tier", "op": "startsWith", "value": "plat"},
   "set": {"customerSegment": "platinum"}},
  {"kind": "classification", "name": "not from crm", "order": 50,
   "when": {"not": {"field": "capturePoint", "op": "=", "value": "crm"}},
   "set": {"customerSegment": "standard"}},
  {"kind": "classification", "name": "disabled", "order": 1, "enabled": false,
   "when": {}, "set": {"category": "Claim"}},
  {"kind": "classification", "name": "fallback", "order": 1000, "when": {}, "set": {"category": "Other"}}
]') r;

SELECT cls('{"externalId": "1", "capturePoint": "erp", "attributes": {"type": "invoice", "amount": 1200}}');
SELECT cls('{"externalId": "2", "capturePoint": "erp", "attributes": {"type": "invoice", "amount": 999.99}}');
SELECT cls('{"externalId": "3", "capturePoint": "crm", "subject": "a claim for damage"}');
SELECT cls('{"externalId": "4", "capturePoint": "crm", "attributes": {"kind": "dispute", "customer": {"tier": "platinum"}}}');
SELECT cls('{"externalId": "5", "capturePoint": "crm"}');
-- numeric strings compare as numbers; missing attributes never match a comparison
SELECT cls('{"externalId": "6", "capturePoint": "erp", "attributes": {"type": "invoice", "amount": "1500"}}');
SELECT cls('{"externalId": "7", "capturePoint": "erp", "attributes": {"type": "invoice"}}');
-- explicit input wins: category, queue, segment, skills given by the source are kept
SELECT cls('{"externalId": "8", "capturePoint": "erp", "category": "Claim",
             "attributes": {"type": "invoice", "amount": 5000}}');
SELECT cls('{"externalId": "9", "capturePoint": "erp", "queue": "special", "customerSegment": "gold",
             "skills": {"x": 1}, "attributes": {"type": "invoice", "amount": 5000}}');
-- a rule naming a category that does not exist parks the task in errorHeld
SELECT iwd.upsert_rule('{"kind": "classification", "name": "broken", "order": 5,
                         "when": {"field": "attributes.broken", "op": "exists", "value": true},
                         "set": {"category": "Gone"}}') IS NOT NULL;
SELECT cls('{"externalId": "10", "capturePoint": "erp", "attributes": {"broken": 1}}');
SELECT event, status_after, detail FROM iwd.task_event WHERE task_id = 10;
-- fixing the configuration and resuming the task classifies it again
SELECT iwd.upsert_category('{"name": "Gone"}') IS NOT NULL;
SELECT t ->> 'status', t ->> 'category', t ->> 'errorReason' FROM iwd.resume_task(10) t;
-- updating attributes re-classifies a task that a rule classified
SELECT t ->> 'category', t ->> 'classifiedBy', t ->> 'queue'
FROM iwd.update_task(2, '{"attributes": {"type": "invoice", "amount": 2000}}') t;
-- an explicit category change on update takes that category's defaults
SELECT t ->> 'category', t ->> 'queue', t ->> 'department' FROM iwd.update_task(5, '{"category": "Claim"}') t;
-- the history records what changed
SELECT detail FROM iwd.task_event WHERE task_id = 2 AND event = 'updated';
-- rule changes are seen by the next task at once (configuration cache invalidation)
SELECT iwd.delete_rule('classification', 'fallback') IS NOT NULL;
SELECT cls('{"externalId": "11", "capturePoint": "crm"}');

DROP FUNCTION cls(jsonb);
DROP EXTENSION iwd CASCADE;
