-- Scoring and reprioritization: exact priorities at given times through iwd.tick(at).
CREATE EXTENSION iwd;
SET timezone = 'UTC';
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
SELECT iwd.upsert_department('{"name": "Finance"}') IS NOT NULL;
SELECT iwd.upsert_process('{"name": "Invoices", "department": "Finance"}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Invoice approval", "department": "Finance", "process": "Invoices",
                             "priority": 50, "businessValue": 300, "slaMinutes": 240,
                             "reprioritize": {"step": 5, "everyMinutes": 30, "max": 90},
                             "urgency": {"withinMinutes": 60, "step": 20}}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Flat", "priority": 10, "businessValue": 10}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Decay", "priority": 100, "reprioritize": {"step": -10, "everyMinutes": 60, "max": 70}}')
       IS NOT NULL;
-- prioritization rules: global, then department, then process, each by order
SELECT iwd.upsert_rule(r) IS NOT NULL FROM jsonb_array_elements('[
  {"kind": "prioritization", "name": "process big amount", "process": "Invoices", "order": 1,
   "when": {"field": "attributes.amount", "op": ">", "value": 10000}, "set": {"priority": "+7"}},
  {"kind": "prioritization", "name": "dept gold", "department": "Finance", "order": 1,
   "when": {"field": "customerSegment", "op": "=", "value": "gold"}, "set": {"priority": "+10", "businessValue": "+200"}},
  {"kind": "prioritization", "name": "global platinum", "order": 5,
   "when": {"field": "customerSegment", "op": "=", "value": "platinum"}, "set": {"priority": "=95", "businessValue": 1000}},
  {"kind": "prioritization", "name": "global low value", "order": 9,
   "when": {"field": "businessValue", "op": "<", "value": 50}, "set": {"priority": "-3"}}
]') r;

CREATE FUNCTION mk(ext text, extra jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(' ', t ->> 'id', t ->> 'priority', t ->> 'businessValue', t ->> 'dueAt', t ->> 'reprioritizeDateTime')
    FROM iwd.create_task(jsonb_build_object('externalId', ext, 'capturePoint', 'erp') || extra) t
$$;
SELECT mk('A', '{"category": "Invoice approval"}');
SELECT mk('B', '{"category": "Invoice approval", "customerSegment": "gold"}');
SELECT mk('C', '{"category": "Invoice approval", "customerSegment": "gold", "attributes": {"amount": 20000}}');
SELECT mk('D', '{"category": "Flat", "customerSegment": "platinum"}');
SELECT mk('E', '{"category": "Flat"}');
SELECT mk('F', '{"category": "Decay"}');
SELECT mk('G', '{"category": "Invoice approval", "priority": 60}');

CREATE FUNCTION scores() RETURNS TABLE (ext text, priority int, business_value int, reprioritize_at timestamptz)
LANGUAGE sql AS $$
    SELECT external_id, priority, business_value, reprioritize_at FROM iwd.task ORDER BY external_id
$$;
-- nothing is due yet
SELECT iwd.tick('2026-11-24 10:00:00+00');
-- 10:29: no step yet; 10:30: one aging step (+5)
SELECT iwd.tick('2026-11-24 10:29:00+00');
SELECT iwd.tick('2026-11-24 10:30:00+00');
SELECT * FROM scores();
-- 11:00 (Decay: one step down); 13:00 urgency window opens (due 14:00): +20 on top of aging
SELECT iwd.tick('2026-11-24 11:00:00+00');
SELECT * FROM scores();
SELECT iwd.tick('2026-11-24 13:00:00+00');
SELECT * FROM scores();
-- 14:30: overdue, aging capped at 90 (+ urgency); Decay floored at 70
SELECT iwd.tick('2026-11-24 14:30:00+00');
SELECT * FROM scores();
-- a repeated pass at the same time changes nothing
SELECT iwd.tick('2026-11-24 14:30:00+00');
-- the queue order follows the scores (overdue is judged by the iwd clock)
SET iwd.simulated_time = '2026-11-24 14:30:00+00';
SELECT t ->> 'externalId', t ->> 'priority', t ->> 'businessValue', t ->> 'overdue' FROM iwd.queue() t;
-- overdue flagged once, as an event
SELECT count(*) FROM iwd.task_event WHERE event = 'overdue';
-- a manual reprioritization replaces the base, rules and schedules still apply
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
SELECT t ->> 'priority', t ->> 'businessValue' FROM iwd.reprioritize_task(2, 20, 100) t;
-- small batches give the same result
SET iwd.batch_size = 1;
SELECT mk('H', '{"category": "Invoice approval"}');
SELECT mk('I', '{"category": "Invoice approval"}');
SELECT iwd.tick('2026-11-24 16:00:00+00');
SELECT * FROM scores() WHERE ext IN ('H', 'I');

DROP FUNCTION mk(text, jsonb);
DROP FUNCTION scores();
DROP EXTENSION iwd CASCADE;
