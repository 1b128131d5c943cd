-- Demo configuration and workload for "make run": three departments, business calendars,
-- categories with SLAs and reprioritization schedules, rules, 20 agents and 10,000 tasks.
SELECT iwd.seed_defaults();
SELECT iwd.upsert_calendar('{"name": "office", "timeZone": "Europe/Paris", "workStart": "08:00", "workEnd": "18:00"}');
SELECT iwd.upsert_department(d) FROM jsonb_array_elements('[
  {"name": "Finance", "description": "Accounts payable and receivable"},
  {"name": "Claims", "description": "Insurance claims"},
  {"name": "Customer Service", "description": "Letters, e-mails and complaints"}]') d;
SELECT iwd.upsert_process(p) FROM jsonb_array_elements('[
  {"name": "Invoices", "department": "Finance"}, {"name": "Payments", "department": "Finance"},
  {"name": "Motor claims", "department": "Claims"}, {"name": "Home claims", "department": "Claims"},
  {"name": "Complaints", "department": "Customer Service"}, {"name": "Requests", "department": "Customer Service"}]') p;
SELECT iwd.upsert_category(c) FROM jsonb_array_elements('[
  {"name": "Invoice approval", "department": "Finance", "process": "Invoices", "priority": 50, "businessValue": 300,
   "slaMinutes": 480, "calendar": "office", "skills": {"invoices": 3}, "queue": "finance",
   "reprioritize": {"step": 5, "everyMinutes": 30, "max": 90}, "urgency": {"withinMinutes": 60, "step": 20}},
  {"name": "Payment dispute", "department": "Finance", "process": "Payments", "priority": 60, "businessValue": 500,
   "slaMinutes": 240, "skills": {"payments": 4}, "queue": "finance",
   "reprioritize": {"step": 10, "everyMinutes": 60, "max": 100}},
  {"name": "Motor claim", "department": "Claims", "process": "Motor claims", "priority": 40, "businessValue": 800,
   "slaMinutes": 1440, "skills": {"claims": 3, "motor": 2}, "queue": "claims",
   "reprioritize": {"step": 2, "everyMinutes": 60, "max": 80}, "urgency": {"withinMinutes": 120, "step": 30}},
  {"name": "Home claim", "department": "Claims", "process": "Home claims", "priority": 35, "businessValue": 900,
   "slaMinutes": 2880, "skills": {"claims": 3}, "queue": "claims",
   "reprioritize": {"step": 2, "everyMinutes": 120, "max": 70}},
  {"name": "Complaint", "department": "Customer Service", "process": "Complaints", "priority": 70,
   "businessValue": 200, "slaMinutes": 120, "skills": {"complaints": 2}, "queue": "service", "mediaType": "email",
   "urgency": {"withinMinutes": 30, "step": 25}},
  {"name": "Information request", "department": "Customer Service", "process": "Requests", "priority": 20,
   "businessValue": 50, "slaMinutes": 2880, "queue": "service", "mediaType": "email",
   "reprioritize": {"step": 1, "everyMinutes": 60, "max": 60}}]') c;
SELECT iwd.upsert_rule(r) FROM jsonb_array_elements('[
  {"kind": "classification", "name": "invoices", "order": 10,
   "when": {"field": "attributes.documentType", "op": "=", "value": "invoice"}, "set": {"category": "Invoice approval"}},
  {"kind": "classification", "name": "disputes", "order": 20,
   "when": {"field": "attributes.documentType", "op": "=", "value": "dispute"}, "set": {"category": "Payment dispute"}},
  {"kind": "classification", "name": "motor claims", "order": 30,
   "when": {"all": [{"field": "attributes.documentType", "op": "=", "value": "claim"},
                    {"field": "productType", "op": "=", "value": "motor"}]}, "set": {"category": "Motor claim"}},
  {"kind": "classification", "name": "home claims", "order": 40,
   "when": {"field": "attributes.documentType", "op": "=", "value": "claim"}, "set": {"category": "Home claim"}},
  {"kind": "classification", "name": "complaints", "order": 50,
   "when": {"any": [{"field": "subject", "op": "contains", "value": "complaint"},
                    {"field": "attributes.documentType", "op": "=", "value": "complaint"}]},
   "set": {"category": "Complaint"}},
  {"kind": "classification", "name": "requests", "order": 60,
   "when": {"field": "attributes.documentType", "op": "=", "value": "request"}, "set": {"category": "Information request"}},
  {"kind": "prioritization", "name": "large amounts", "department": "Finance", "order": 10,
   "when": {"field": "attributes.amount", "op": ">=", "value": 10000}, "set": {"priority": "+15", "businessValue": "+400"}},
  {"kind": "prioritization", "name": "platinum customers", "order": 5,
   "when": {"field": "customerSegment", "op": "=", "value": "platinum"}, "set": {"priority": "+20"}}]') r;

-- 20 agents: skills with levels, capacity per media type
SELECT iwd.upsert_agent(jsonb_build_object(
    'id', 'agent' || lpad(i::text, 2, '0'),
    'name', (ARRAY['Dana Ruiz', 'Li Wei', 'Sam Okafor', 'Ana Costa', 'Jon Berg'])[1 + i % 5] || ' ' || i,
    'skills', CASE i % 4
        WHEN 0 THEN jsonb_build_object('invoices', 3 + i % 7, 'payments', 2 + i % 5)
        WHEN 1 THEN jsonb_build_object('claims', 3 + i % 6, 'motor', 1 + i % 4)
        WHEN 2 THEN jsonb_build_object('complaints', 2 + i % 8, 'invoices', 2)
        ELSE jsonb_build_object('claims', 5, 'complaints', 4, 'payments', 5) END,
    'capacity', jsonb_build_object('workitem', 1 + i % 3, 'email', 1),
    'state', CASE WHEN i % 5 = 0 THEN 'not_ready' ELSE 'ready' END))
FROM generate_series(1, 20) i;

-- 10,000 tasks from five capture points, captured in batches of 500 over the last eight hours
DO $$
DECLARE
    types text[] := ARRAY['invoice', 'dispute', 'claim', 'complaint', 'request'];
    points text[] := ARRAY['erp', 'erp', 'claims-portal', 'email', 'crm'];
    batch jsonb;
BEGIN
    FOR b IN 0 .. 19 LOOP
        PERFORM set_config('iwd.simulated_time', (now() - make_interval(mins => (19 - b) * 24))::text, true);
        SELECT jsonb_agg(jsonb_build_object(
            'externalId', 'DEMO-' || i,
            'capturePoint', points[1 + i % 5],
            'subject', initcap(types[1 + i % 5]) || ' ' || i,
            'description', 'Demo work item ' || i || ' from ' || points[1 + i % 5],
            'customerSegment', (ARRAY['standard', 'standard', 'gold', 'platinum'])[1 + i % 4],
            'productType', CASE WHEN i % 2 = 0 THEN 'motor' ELSE 'home' END,
            'attributes', jsonb_build_object('documentType', types[1 + i % 5], 'amount', (i * 37) % 20000)))
        INTO batch
        FROM generate_series(b * 500 + 1, b * 500 + 500) i;
        PERFORM iwd.create_tasks(batch);
    END LOOP;
    PERFORM set_config('iwd.simulated_time', '', true);
END $$;
-- bring priorities up to date at once rather than at the scheduler's next pass
SELECT iwd.tick();
