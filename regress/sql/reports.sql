-- Reports for the dashboard: a category's service-level threshold, the Data Mart per interval with the
-- service level by each category's threshold, the open work per category, batch actions by search.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
SET iwd.notify = off;
\set SHOW_CONTEXT never

-- a category's threshold: stored, returned only when set, bounded
SELECT iwd.upsert_category('{"name": "Claims", "queue": "claims", "serviceLevelSeconds": 60}') -> 'serviceLevelSeconds';
SELECT iwd.upsert_category('{"name": "Mail", "queue": "mail"}') ? 'serviceLevelSeconds' AS has_threshold;
SELECT iwd.upsert_category('{"name": "Mail", "serviceLevelSeconds": 0}');
SELECT iwd.upsert_category('{"name": "Mail", "serviceLevelSeconds": 86401}');
SELECT iwd.upsert_category('{"name": "Mail", "serviceLevelSeconds": "20"}');
SELECT iwd.service_level_threshold('Claims'), iwd.service_level_threshold('Mail'),
       iwd.service_level_threshold(NULL), iwd.service_level_threshold('no such category');

-- the day: Monday 2026-03-02; T1 waits 30 s (within Claims' 60 s), T3 60 s (past Mail's 20 s, the Data
-- Mart's default), T2 15 minutes
SELECT iwd.upsert_agent('{"id": "a1", "state": "ready", "capacity": {"workitem": 5}}') IS NOT NULL;
SET iwd.simulated_time = '2026-03-02 09:05+00';
SELECT iwd.create_task('{"externalId": "T1", "capturePoint": "erp", "category": "Claims", "priority": 30,
                         "subject": "invoice alpha"}') ->> 'id';
SELECT iwd.create_task('{"externalId": "T2", "capturePoint": "erp", "category": "Claims", "priority": 10,
                         "subject": "invoice beta"}') ->> 'id';
SELECT iwd.create_task('{"externalId": "T3", "capturePoint": "crm", "category": "Mail", "priority": 20,
                         "subject": "letter gamma"}') ->> 'id';
SET iwd.simulated_time = '2026-03-02 09:05:30+00';
SELECT iwd.next_task('a1') ->> 'externalId';
SET iwd.simulated_time = '2026-03-02 09:06+00';
SELECT iwd.next_task('a1') ->> 'externalId';
SET iwd.simulated_time = '2026-03-02 09:10+00';
SELECT iwd.complete_task(1, 'a1') ->> 'status';
SET iwd.simulated_time = '2026-03-02 09:20+00';
SELECT iwd.next_task('a1') ->> 'externalId';
SELECT iwd_dm.run('full') ->> 'chain';

-- per quarter hour, per hour, narrowed to a queue
SELECT jsonb_array_elements(iwd.report_intervals('2026-03-02 09:00+00', '2026-03-02 10:00+00'));
SELECT jsonb_array_elements(iwd.report_intervals('2026-03-02 00:00+00', '2026-03-03 00:00+00', 'hour'));
SELECT jsonb_array_elements(iwd.report_intervals('2026-03-02 00:00+00', '2026-03-03 00:00+00', 'day',
                                                 '{"queue": "claims"}'));
SELECT iwd.report_intervals('2026-03-01 00:00+00', '2026-03-02 00:00+00');
-- what it refuses
SELECT iwd.report_intervals('2026-03-02 00:00+00', '2026-03-03 00:00+00', 'week');
SELECT iwd.report_intervals('2026-03-02 00:00+00', '2026-03-02 00:00+00');
SELECT iwd.report_intervals(NULL, '2026-03-02 00:00+00');
SELECT iwd.report_intervals('2026-03-01 00:00+00', '2026-03-08 00:00:01+00');
SELECT jsonb_array_length(iwd.report_intervals('2026-03-01 00:00+00', '2026-03-08 00:00:01+00', 'hour'));
SELECT iwd.report_intervals('2026-03-02 00:00+00', '2026-03-03 00:00+00', 'hour', '{"category": "Claims"}');
SELECT iwd.report_intervals('2026-03-02 00:00+00', '2026-03-03 00:00+00', 'hour', '{"queue": 7}');

-- the open work per category now, today's service level by each one's threshold
SET iwd.simulated_time = '2026-03-02 09:30+00';
SELECT jsonb_array_elements(iwd.category_stats());

-- batch actions by search: the open tasks that match (and the filter), at most 1,000
SELECT iwd.batch_search_action('hold', 'invoice', '{}', 'supervisor', '{"reason": "by search", "dryRun": true}');
SELECT iwd.batch_search_action('hold', 'invoice', '{"category": "Claims"}', 'supervisor', '{"reason": "by search"}');
SELECT actor, detail FROM iwd.task_event WHERE task_id = 2 ORDER BY id DESC LIMIT 1;
SELECT iwd.batch_search_action('resume', 'invoice -beta', '{}', 'supervisor');
SELECT iwd.batch_search_action('resume', 'invoice', '{"status": "held"}', 'supervisor');
SELECT iwd.batch_search_action('hold', '-', '{}');
SELECT iwd.batch_search_action('hold', 'invoice', '{"afterId": 1}');
SELECT iwd.batch_search_action('hold', 'invoice', '[]');
SELECT iwd.batch_search_action('explode', 'invoice', '{}');
SELECT iwd.batch_search_action('hold', repeat('x', 1025), '{}');
SELECT iwd.create_tasks((SELECT jsonb_agg(jsonb_build_object('externalId', 'B' || i, 'capturePoint', 'bulk',
                                                              'subject', 'bulk ' || i))
                         FROM generate_series(1, 1001) i)) IS NOT NULL;
SELECT iwd.batch_search_action('cancel', 'bulk', '{}');
SELECT count(*) FROM iwd.task_all WHERE capture_point = 'bulk' AND status = 'canceled';
SELECT iwd.batch_search_action('cancel', 'bulk 7', '{}') - 'skipped';

DROP EXTENSION iwd CASCADE;
