-- :tasks tasks (ids :first …) over the :days days ending at :end, four events each (created, reserved, accepted, and one
-- of completed/canceled/expired), written straight into the history as the core would have.
\set ON_ERROR_STOP 1
INSERT INTO iwd.task_closed (id, external_id, capture_point, media_type, department, process, category, queue,
                             customer_segment, priority, business_value, skills, attributes, status, created_at,
                             aging_from, due_at, assigned_to, accepted_at, completed_at, updated_at)
SELECT i, 'G' || i, (ARRAY['erp', 'crm', 'mail', 'portal'])[1 + i % 4], 'workitem',
       'dept' || (i % 3), 'proc' || (i % 6), 'cat' || (i % 20), 'q' || (i % 20),
       (ARRAY['standard', 'gold', 'platinum'])[1 + i % 3], i % 100, (i * 37) % 1000, '{}', '{}',
       CASE WHEN i % 20 = 0 THEN 'canceled' WHEN i % 50 = 1 THEN 'expired' ELSE 'completed' END,
       c, c, c + interval '4 hours', 'agent' || (i % 500), c + interval '20 minutes' * (1 + i % 5),
       c + interval '20 minutes' * (1 + i % 5) + interval '10 minutes' * (1 + i % 7), c
FROM (SELECT i, (:'end'::timestamptz - interval '1 day' * :days) + (interval '1 day' * :days) * ((i - :first + 1)::float8 / :tasks) AS c
      FROM generate_series(:first, :first + :tasks - 1) i) s;
INSERT INTO iwd.task_event (task_id, at, event, actor, status_before, status_after)
SELECT t.id, e.at, e.event, e.actor, e.before, e.after
FROM iwd.task_closed t, LATERAL (VALUES
    (t.created_at, 'created', NULL, NULL, 'queued'),
    (t.accepted_at - interval '1 minute', 'reserved', t.assigned_to, 'queued', 'assigned'),
    (t.accepted_at, 'accepted', t.assigned_to, 'assigned', 'assigned'),
    (t.completed_at, t.status, t.assigned_to, 'assigned', t.status)) e(at, event, actor, before, after)
WHERE t.id BETWEEN :first AND :first + :tasks - 1
ORDER BY e.at;
