-- Configuration: departments, processes, calendars, categories, rules, agents.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
CREATE FUNCTION err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

SELECT iwd.upsert_department('{"name": "Finance", "description": "Money"}');
SELECT iwd.upsert_department('{"name": "Finance", "description": "Accounts"}');
SELECT iwd.upsert_process('{"name": "Invoices", "department": "Finance"}');
SELECT iwd.upsert_calendar('{"name": "paris", "timeZone": "Europe/Paris", "workStart": "08:30", "workEnd": "18:00",
                             "workDays": [1,2,3,4,5], "holidays": ["2026-12-25"]}');
SELECT iwd.upsert_category('{"name": "Invoice approval", "department": "Finance", "process": "Invoices",
                             "priority": 50, "businessValue": 300, "slaMinutes": 240, "skills": {"invoices": 3},
                             "queue": "finance", "reprioritize": {"step": 5, "everyMinutes": 30, "max": 90},
                             "urgency": {"withinMinutes": 60, "step": 20}, "calendar": "paris"}');
SELECT iwd.upsert_rule('{"kind": "classification", "name": "big invoices", "order": 10,
                         "when": {"all": [{"field": "attributes.amount", "op": ">=", "value": 1000}]},
                         "set": {"category": "Invoice approval"}}');
SELECT iwd.upsert_rule('{"kind": "prioritization", "name": "gold", "department": "Finance",
                         "when": {"field": "customerSegment", "op": "=", "value": "gold"},
                         "set": {"priority": "+10", "businessValue": "=500"}}');
SELECT iwd.upsert_agent('{"id": "a17", "name": "Dana Ruiz", "skills": {"invoices": 5, "claims": 2},
                          "capacity": {"workitem": 2, "email": 1}, "state": "ready"}');
-- an upsert without state keeps the agent's state
SELECT iwd.upsert_agent('{"id": "a17", "name": "Dana Ruiz", "skills": {"invoices": 6}}') ->> 'state';
SELECT iwd.set_agent_state('a17', 'not_ready');
SELECT iwd.get_department('Finance'), iwd.get_process('Invoices');
SELECT iwd.get_category('Invoice approval') -> 'reprioritize';
SELECT iwd.get_rule('prioritization', 'gold') -> 'set';
SELECT iwd.get_agent('a17') ->> 'name', iwd.get_calendar('paris') ->> 'timeZone';
SELECT jsonb_array_length(iwd.list_departments()), jsonb_array_length(iwd.list_processes()),
       jsonb_array_length(iwd.list_categories()), jsonb_array_length(iwd.list_rules()),
       jsonb_array_length(iwd.list_rules('classification')), jsonb_array_length(iwd.list_agents()),
       jsonb_array_length(iwd.list_calendars());

-- invalid input: every error names what is wrong
SELECT err($$SELECT iwd.upsert_department('[]')$$);
SELECT err($$SELECT iwd.upsert_department('{"description": "x"}')$$);
SELECT err($$SELECT iwd.upsert_department('{"name": "X", "colour": "red"}')$$);
SELECT err($$SELECT iwd.upsert_department('{"name": 7}')$$);
SELECT err($$SELECT iwd.upsert_department('{"name": ""}')$$);
SELECT err($$SELECT iwd.upsert_process('{"name": "P", "department": "Nowhere"}')$$);
SELECT err($$SELECT iwd.upsert_category('{"name": "C", "priority": "high"}')$$);
SELECT err($$SELECT iwd.upsert_category('{"name": "C", "priority": 1.5}')$$);
SELECT err($$SELECT iwd.upsert_category('{"name": "C", "slaMinutes": 0}')$$);
SELECT err($$SELECT iwd.upsert_category('{"name": "C", "skills": {"invoices": 11}}')$$);
SELECT err($$SELECT iwd.upsert_category('{"name": "C", "reprioritize": {"step": 5}}')$$);
SELECT err($$SELECT iwd.upsert_category('{"name": "C", "urgency": {"withinMinutes": 5, "step": 1, "x": 1}}')$$);
SELECT err($$SELECT iwd.upsert_category('{"name": "C", "calendar": "mars"}')$$);
SELECT err($$SELECT iwd.upsert_calendar('{"name": "k", "timeZone": "Mars/Olympus"}')$$);
SELECT err($$SELECT iwd.upsert_calendar('{"name": "k", "workStart": "18:00", "workEnd": "09:00"}')$$);
SELECT err($$SELECT iwd.upsert_calendar('{"name": "k", "workStart": "nine"}')$$);
SELECT err($$SELECT iwd.upsert_rule('{"kind": "routing", "name": "r", "set": {"category": "x"}}')$$);
SELECT err($$SELECT iwd.upsert_rule('{"kind": "classification", "name": "r"}')$$);
SELECT err($$SELECT iwd.upsert_rule('{"kind": "classification", "name": "r", "set": {"priority": 5}}')$$);
SELECT err($$SELECT iwd.upsert_rule('{"kind": "prioritization", "name": "r", "set": {"priority": "x5"}}')$$);
SELECT err($$SELECT iwd.upsert_rule('{"kind": "prioritization", "name": "r", "set": {"priority": 1},
                                       "when": {"field": "colour", "op": "=", "value": 1}}')$$);
SELECT err($$SELECT iwd.upsert_rule('{"kind": "prioritization", "name": "r", "set": {"priority": 1},
                                       "when": {"field": "priority", "op": "~", "value": 1}}')$$);
SELECT err($$SELECT iwd.upsert_rule('{"kind": "prioritization", "name": "r", "set": {"priority": 1},
                                       "when": {"field": "priority", "op": "in", "value": 1}}')$$);
SELECT err($$SELECT iwd.upsert_rule('{"kind": "prioritization", "name": "r", "set": {"priority": 1},
                                       "when": {"all": {"field": "priority"}}}')$$);
SELECT err($$SELECT iwd.upsert_rule('{"kind": "classification", "name": "r", "department": "Finance",
                                       "set": {"queue": "q"}}')$$);
-- plain SQL writes are validated too
SELECT err($$INSERT INTO iwd.rule (kind, name, effect) VALUES ('prioritization', 'r', '{"queue": "q"}')$$);
SELECT err($$SELECT iwd.upsert_agent('{"id": "a1", "skills": {"x": -1}}')$$);
SELECT err($$SELECT iwd.upsert_agent('{"id": "a1", "capacity": {"workitem": "two"}}')$$);
SELECT err($$SELECT iwd.upsert_agent('{"id": "a1", "state": "busy"}')$$);
SELECT err($$SELECT iwd.set_agent_state('a17', 'busy')$$);
SELECT err($$SELECT iwd.set_agent_state('nobody', 'ready')$$);
SELECT err($$SELECT iwd.get_category('nothing')$$);
SELECT err($$SELECT iwd.get_rule('classification', 'nothing')$$);
SELECT err($$SELECT iwd.delete_agent('nobody')$$);
-- a department in use cannot go
SELECT err($$SELECT iwd.delete_department('Finance')$$);
-- nothing above changed what is stored
SELECT iwd.get_agent('a17');

-- deletes return what they removed
SELECT iwd.delete_rule('prioritization', 'gold') ->> 'name';
SELECT iwd.delete_category('Invoice approval') ->> 'name';
SELECT iwd.delete_agent('a17') ->> 'id';
SELECT iwd.delete_process('Invoices') ->> 'name';
SELECT iwd.delete_department('Finance') ->> 'name';
SELECT iwd.delete_calendar('paris') ->> 'name';

-- default configuration, idempotent
SELECT iwd.seed_defaults();
SELECT iwd.seed_defaults();
SELECT jsonb_path_query(iwd.list_rules(), '$[*].name');

-- business calendars: an 8-hour SLA from Friday 16:00 falls due Monday 16:00 (9-17, Mon-Fri)
SELECT iwd.business_time_add('2026-11-27 16:00+00', 480, 'business-hours');
SELECT iwd.business_time_add('2026-11-28 12:00+00', 60, 'business-hours');
SELECT iwd.business_time_add('2026-11-24 08:00+00', 0, 'business-hours');
SELECT iwd.upsert_calendar('{"name": "ny", "timeZone": "America/New_York", "holidays": ["2026-11-26"]}') ->> 'name';
-- Wednesday 16:00 New York + 2 working hours skips Thanksgiving: Friday 10:00 New York
SELECT iwd.business_time_add('2026-11-25 16:00-05', 120, 'ny') AT TIME ZONE 'America/New_York';
SELECT err($$SELECT iwd.business_time_add(now(), 10, 'nowhere')$$);
SELECT err($$SELECT iwd.business_time_add(now(), -1, 'ny')$$);

DROP FUNCTION err(text);
DROP EXTENSION iwd CASCADE;
