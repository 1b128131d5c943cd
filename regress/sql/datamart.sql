-- Data Mart: a scripted day with exact aggregates at every level, idempotent re-runs, a run
-- interrupted midway, the reporting role, the job metrics.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
SET iwd.notify = off;
SELECT iwd.upsert_agent('{"id": "a1", "state": "ready", "capacity": {"workitem": 5}}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Claims", "queue": "claims", "slaMinutes": 60, "businessValue": 100}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Mail", "queue": "mail", "businessValue": 10}') IS NOT NULL;

-- the day: Monday 2026-03-02
SET iwd.simulated_time = '2026-03-02 09:05+00';
SELECT iwd.create_task('{"externalId": "T1", "capturePoint": "erp", "category": "Claims", "customerSegment": "gold"}') ->> 'id';
SELECT iwd.create_task('{"externalId": "T2", "capturePoint": "erp", "category": "Claims", "customerSegment": "gold"}') ->> 'id';
SELECT iwd.create_task('{"externalId": "T3", "capturePoint": "crm", "category": "Mail"}') ->> 'id';
SET iwd.simulated_time = '2026-03-02 09:20+00';
SELECT iwd.next_task('a1') ->> 'externalId';
SELECT iwd.accept_task(1, 'a1') ->> 'status';
SET iwd.simulated_time = '2026-03-02 09:50+00';
SELECT iwd.complete_task(1, 'a1') ->> 'status';
SET iwd.simulated_time = '2026-03-02 10:10+00';
SELECT iwd.next_task('a1') ->> 'externalId';
SELECT iwd.accept_task(2, 'a1') ->> 'status';
SELECT iwd.tick('2026-03-02 10:10+00') -> 'overdue';
SET iwd.simulated_time = '2026-03-02 10:40+00';
SELECT iwd.complete_task(2, 'a1') ->> 'status';
SELECT iwd.cancel_task(3, 'duplicate') ->> 'status';
SET iwd.simulated_time = '2026-03-02 11:00+00';
SELECT iwd.create_task('{"externalId": "T4", "capturePoint": "crm", "category": "Claims"}') ->> 'id';

SELECT iwd_dm.run('full') - 'ms';
SELECT interval_start, queue, customer_segment, created, assigned, completed, canceled, overdue, completed_in_sla,
       backlog_end, pending_overdue, avg_age_s, max_age_s, avg_queue_s, avg_handle_s, business_value_completed
FROM iwd_dm.agg_15min ORDER BY interval_start, queue, customer_segment;
SELECT interval_start, queue, customer_segment, created, assigned, completed, canceled, overdue, backlog_end,
       pending_overdue, avg_age_s, business_value_completed
FROM iwd_dm.agg_hour ORDER BY interval_start, queue, customer_segment;
SELECT interval_start, queue, created, assigned, completed, canceled, overdue, completed_in_sla, backlog_end,
       pending_overdue, avg_age_s, max_age_s, avg_handle_s, business_value_completed
FROM iwd_dm.agg_day ORDER BY queue, customer_segment NULLS FIRST;
SELECT interval_start, queue, created, completed, canceled, backlog_end FROM iwd_dm.agg_week ORDER BY queue, customer_segment NULLS FIRST;
SELECT interval_start, queue, created, completed, canceled, backlog_end FROM iwd_dm.agg_month ORDER BY queue, customer_segment NULLS FIRST;
SELECT task_id, status, agent, queue_s, handle_s, age_s, overdue, completed_in_sla FROM iwd_dm.task_fact ORDER BY 1;

-- the report views
SELECT * FROM iwd_dm.queue_activity ORDER BY queue;
SELECT * FROM iwd_dm.customer_segment_service_level ORDER BY customer_segment;
SELECT * FROM iwd_dm.capture_point_business_value ORDER BY capture_point;
SELECT * FROM iwd_dm.agent_activity;
SELECT * FROM iwd_dm.intraday_backlog WHERE interval_start = '2026-03-02 10:30+00' ORDER BY queue;

-- running again changes nothing
CREATE TEMP TABLE before AS
    SELECT 'day' AS level, to_jsonb(a) AS r FROM iwd_dm.agg_day a UNION ALL SELECT '15min', to_jsonb(a) FROM iwd_dm.agg_15min a
    UNION ALL SELECT 'hour', to_jsonb(a) FROM iwd_dm.agg_hour a UNION ALL SELECT 'fact', to_jsonb(f) FROM iwd_dm.task_fact f;
SELECT iwd_dm.run('full') -> 'events';
SELECT iwd_dm.run('intraday') -> 'status', iwd_dm.run('historical') -> 'status', iwd_dm.run('initialize') -> 'status';
CREATE FUNCTION snapshot_diff() RETURNS bigint LANGUAGE sql AS $$
    WITH now AS (
        SELECT 'day' AS level, to_jsonb(a) AS r FROM iwd_dm.agg_day a UNION ALL SELECT '15min', to_jsonb(a) FROM iwd_dm.agg_15min a
        UNION ALL SELECT 'hour', to_jsonb(a) FROM iwd_dm.agg_hour a UNION ALL SELECT 'fact', to_jsonb(f) FROM iwd_dm.task_fact f)
    SELECT (SELECT count(*) FROM (SELECT * FROM now EXCEPT ALL SELECT * FROM before) x)
         + (SELECT count(*) FROM (SELECT * FROM before EXCEPT ALL SELECT * FROM now) y)
$$;
SELECT snapshot_diff() AS differences_after_rerun;

-- a run that fails midway undoes its partial work and records the failure
CREATE FUNCTION fail_hour() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'injected failure';
END $$;
TRUNCATE iwd_dm.task_fact, iwd_dm.agg_15min, iwd_dm.agg_hour, iwd_dm.agg_day,
         iwd_dm.agg_week, iwd_dm.agg_month, iwd_dm.dirty, iwd_dm.event_gap;
UPDATE iwd_dm.watermark SET last_event_id = 0;
CREATE TRIGGER fail_hour BEFORE INSERT ON iwd_dm.agg_hour FOR EACH ROW EXECUTE FUNCTION fail_hour();
SELECT iwd_dm.run('full');
SELECT execution_chain, last_error, last_fail IS NOT NULL AS failed FROM iwd_dm.job_status WHERE execution_chain = 'full';
SELECT count(*) AS facts_after_failed_run FROM iwd_dm.task_fact;
-- a load from scratch builds the facts' secondary indexes after the load: the failed run left them all
CREATE FUNCTION fact_indexes() RETURNS TABLE (index_name text, valid boolean) LANGUAGE sql AS $$
    SELECT indexrelid::regclass::text, indisvalid FROM pg_index
    WHERE indrelid = 'iwd_dm.task_fact'::regclass ORDER BY 1
$$;
SELECT * FROM fact_indexes();
DROP TRIGGER fail_hour ON iwd_dm.agg_hour;
-- batches committed one by one (as the worker does), then interrupted, then resumed by a full run
SET iwd_dm.batch_size = 3;
SELECT iwd_dm._load_batch(3), iwd_dm._load_batch(3);
SELECT iwd_dm._aggregate_batch(ARRAY['15min'], 4);
SELECT iwd_dm.run('full') -> 'status';
SELECT snapshot_diff() AS differences_after_interrupted_run;
RESET iwd_dm.batch_size;

-- late events: an event id that commits after higher ones is still loaded (gaps are re-read)
SELECT count(*) AS open_gaps FROM iwd_dm.event_gap;

-- facts restored without their loading position (a logical backup does not carry it): the history is
-- read again, the facts of its tasks recomputed, and recomputed aggregates are the same
UPDATE iwd_dm.watermark SET last_event_id = 0;
INSERT INTO iwd_dm.dirty SELECT 'day', interval_start FROM iwd_dm.agg_day ON CONFLICT DO NOTHING;
DELETE FROM iwd_dm.agg_day;
SELECT iwd_dm.run('full') -> 'events' AS events_loaded_again;
SELECT snapshot_diff() AS differences_after_reload;

-- time zone alignment: a day in Paris starts at 23:00 UTC in winter
SET iwd_dm.time_zone = 'Europe/Paris';
SELECT iwd_dm.interval_start('day', '2026-03-02 09:05+00'), iwd_dm.interval_start('week', '2026-03-04 09:05+00'),
       iwd_dm.interval_start('15min', '2026-03-02 09:59+00'), iwd_dm.interval_end('month', '2026-02-28 23:00+00');
RESET iwd_dm.time_zone;
SET iwd_dm.time_zone = 'Mars/Olympus';
SET iwd_dm.schedule = 'every minute';
SET iwd_dm.execution_chain = 'weekly';
SELECT iwd_dm.run('weekly');

-- the job metrics
SELECT line FROM regexp_split_to_table(iwd_dm.prometheus_metrics('t1'), E'\n') line
WHERE line LIKE '# TYPE%' OR line LIKE '%execution_chain="full"%' AND line NOT LIKE 'iwddm_job_last_%';
-- a tenant name is escaped as a label value (backslash, quote and line break)
SELECT line FROM regexp_split_to_table(iwd_dm.prometheus_metrics(E'a"b\\c\nd'), E'\n') line
WHERE line LIKE 'iwddm_job_active%execution_chain="full"%';

-- averages are the same to the last bit whatever the batches: a build run after each change (the facts
-- rewritten in the order of the changes) and a single rebuild from scratch (facts in id order) sum the
-- durations in different orders. Eight tasks created some irregular fractions of a second apart are
-- completed at the same time, from the last created to the first.
DO $$
BEGIN
    FOR i IN 1..8 LOOP
        PERFORM set_config('iwd.simulated_time', (timestamptz '2026-03-03 09:00+00' + i * interval '0.253017 s'
                                                  + i * i * interval '0.000071 s')::text, false);
        PERFORM iwd.create_task(jsonb_build_object('externalId', 'R' || i, 'capturePoint', 'repro', 'category', 'Mail'));
    END LOOP;
    PERFORM iwd_dm.run('full');
    PERFORM set_config('iwd.simulated_time', '2026-03-03 09:10+00', false);
    FOR i IN REVERSE 8..1 LOOP
        PERFORM iwd.complete_task((SELECT id FROM iwd.task_all WHERE external_id = 'R' || i));
        PERFORM iwd_dm.run('full');
    END LOOP;
END $$;
CREATE TEMP TABLE built_in_steps AS
    SELECT 'day' AS level, a.* FROM iwd_dm.agg_day a UNION ALL SELECT '15min', * FROM iwd_dm.agg_15min
    UNION ALL SELECT 'hour', * FROM iwd_dm.agg_hour UNION ALL SELECT 'week', * FROM iwd_dm.agg_week
    UNION ALL SELECT 'month', * FROM iwd_dm.agg_month;
TRUNCATE iwd_dm.task_fact, iwd_dm.agg_15min, iwd_dm.agg_hour, iwd_dm.agg_day,
         iwd_dm.agg_week, iwd_dm.agg_month, iwd_dm.dirty, iwd_dm.event_gap;
UPDATE iwd_dm.watermark SET last_event_id = 0;
SELECT iwd_dm.run('full') ->> 'status' AS rebuilt;
-- ... and a rebuild from scratch builds them again, valid
SELECT * FROM fact_indexes();
RESET iwd.simulated_time;
CREATE TEMP TABLE built_at_once AS
    SELECT 'day' AS level, a.* FROM iwd_dm.agg_day a UNION ALL SELECT '15min', * FROM iwd_dm.agg_15min
    UNION ALL SELECT 'hour', * FROM iwd_dm.agg_hour UNION ALL SELECT 'week', * FROM iwd_dm.agg_week
    UNION ALL SELECT 'month', * FROM iwd_dm.agg_month;
SELECT count(*) AS aggregate_rows, count(*) FILTER (WHERE avg_age_s IS NOT NULL) AS with_averages FROM built_at_once;
-- every aggregate row, compared column by column (floating-point values compare exactly)
SELECT level, interval_start, queue, avg_age_s, avg_queue_s FROM (
    (SELECT * FROM built_in_steps EXCEPT ALL SELECT * FROM built_at_once)
    UNION ALL
    (SELECT * FROM built_at_once EXCEPT ALL SELECT * FROM built_in_steps)) d
ORDER BY 1, 2, 3;
SELECT avg_age_s FROM iwd_dm.agg_day WHERE queue = 'mail' AND interval_start = '2026-03-03 00:00+00';
SELECT avg_finish_s, avg_accept_s FROM iwd_dm.queue_activity WHERE queue = 'mail' AND day = '2026-03-03 00:00+00';
SELECT avg_duration_s FROM iwd_dm.capture_point_business_value WHERE capture_point = 'repro';

-- the contact-centre service level: of the tasks whose wait ended in an interval (first reserved, or
-- finished without a reservation), those reserved within iwd_dm.service_level_threshold of their creation
SHOW iwd_dm.service_level_threshold;
SET iwd.simulated_time = '2026-05-04 09:00:00+00';
SELECT iwd.upsert_agent('{"id": "sl-agent", "capacity": {"workitem": 10}, "state": "ready"}') IS NOT NULL;
SELECT count(iwd.create_task(jsonb_build_object('externalId', 'SL-' || i, 'capturePoint', 'sl', 'queue', 'sl',
                                                'priority', 1000 - i)))
FROM generate_series(1, 3) i;
SET iwd.simulated_time = '2026-05-04 09:00:15+00';
SELECT iwd.next_task('sl-agent') ->> 'externalId' AS reserved_within;
SET iwd.simulated_time = '2026-05-04 09:01:00+00';
SELECT iwd.next_task('sl-agent') ->> 'externalId' AS reserved_late;
SET iwd.simulated_time = '2026-05-04 09:02:00+00';
SELECT iwd.cancel_task((SELECT id FROM iwd.task WHERE external_id = 'SL-3'), 'abandoned') ->> 'status';
SET iwd.simulated_time = '2026-05-04 10:00:00+00';
SELECT iwd_dm.run('intraday') ->> 'status' AS run;
SELECT interval_start, queue, offered, within_threshold, service_level_pct, threshold
FROM iwd_dm.service_level_report WHERE queue = 'sl';
-- a longer threshold counts both reservations, in a rebuild
SET iwd_dm.service_level_threshold = '90 s';
TRUNCATE iwd_dm.task_fact, iwd_dm.agg_15min, iwd_dm.agg_hour, iwd_dm.agg_day,
         iwd_dm.agg_week, iwd_dm.agg_month, iwd_dm.dirty, iwd_dm.event_gap;
UPDATE iwd_dm.watermark SET last_event_id = 0;
SELECT iwd_dm.run('full') ->> 'status' AS rebuilt;
SELECT offered, within_threshold, service_level_pct, threshold FROM iwd_dm.service_level_report WHERE queue = 'sl';
SELECT sum(sl_offered) AS offered, sum(sl_within) AS within FROM iwd_dm.agg_month WHERE queue = 'sl';
RESET iwd_dm.service_level_threshold;
-- a category's own threshold (serviceLevelSeconds) counts its tasks instead of the default's 20 s
SET iwd.simulated_time = '2026-05-05 09:00:00+00';
SELECT iwd.upsert_category('{"name": "SLC", "queue": "slc", "serviceLevelSeconds": 90}') IS NOT NULL;
SELECT count(iwd.create_task(jsonb_build_object('externalId', 'SLC-' || i, 'capturePoint', 'sl',
                                                'category', 'SLC', 'priority', 2000 - i)))
FROM generate_series(1, 2) i;
SET iwd.simulated_time = '2026-05-05 09:00:15+00';
SELECT iwd.next_task('sl-agent') ->> 'externalId' AS reserved_within;
SET iwd.simulated_time = '2026-05-05 09:01:00+00';
SELECT iwd.next_task('sl-agent') ->> 'externalId' AS reserved_within_category_threshold;
SET iwd.simulated_time = '2026-05-05 10:00:00+00';
SELECT iwd_dm.run('intraday') ->> 'status' AS run;
SELECT interval_start, category, queue, offered, within_threshold, service_level_pct, threshold
FROM iwd_dm.service_level_report WHERE queue = 'slc' ORDER BY interval_start;
SELECT sum(sl_offered) AS offered, sum(sl_within) AS within FROM iwd_dm.agg_15min WHERE queue = 'slc';
RESET iwd.simulated_time;
SET iwd_dm.service_level_threshold = '0';
SET iwd_dm.service_level_threshold = 'soon';

-- agent activity counts agents' work: a supervisor's completion and rejection (recorded with the supervisor as
-- actor) are no agent's, an agent's own are its
SET iwd.simulated_time = '2026-06-01 09:00:00+00';
SELECT iwd.upsert_agent('{"id": "a9", "state": "ready", "capacity": {"workitem": 5}}') IS NOT NULL;
SELECT iwd.upsert_category('{"name": "Act", "queue": "act", "skills": {"act": 1}}') IS NOT NULL;
SELECT iwd.upsert_agent('{"id": "a9", "state": "ready", "skills": {"act": 1}, "capacity": {"workitem": 5}}') IS NOT NULL;
SELECT count(iwd.create_task(format('{"externalId": "ACT%s", "capturePoint": "x", "category": "Act"}', n)::jsonb))
FROM generate_series(1, 4) n;
SELECT count(iwd.next_task('a9')) FROM generate_series(1, 4);
SELECT iwd.complete_task((SELECT id FROM iwd.task WHERE external_id = 'ACT1'), 'a9') ->> 'status' AS by_agent;
SELECT iwd.reject_task((SELECT id FROM iwd.task WHERE external_id = 'ACT2'), 'a9', 'no') ->> 'status' AS by_agent;
SELECT iwd.complete_task((SELECT id FROM iwd.task WHERE external_id = 'ACT3'), actor => 'console') ->> 'status'
    AS by_supervisor;
SELECT iwd.reject_task((SELECT id FROM iwd.task WHERE external_id = 'ACT4'), reason => 'dup', actor => 'console')
    ->> 'status' AS by_supervisor;
SELECT iwd_dm.run('intraday') ->> 'status' AS run;
SELECT agent, assigned, completed, rejected FROM iwd_dm.agent_activity WHERE day = '2026-06-01' ORDER BY agent;
SELECT actor, count(*) FROM iwd_dm.task_event_fact
WHERE at >= '2026-06-01' AND event IN ('completed', 'rejected') GROUP BY 1 ORDER BY 1;
RESET iwd.simulated_time;

-- the reporting role of this database reads iwd_dm and nothing else
SET ROLE iwd_gcxi_regression;
SELECT count(*) > 0 AS can_read_reports FROM iwd_dm.queue_activity;
SELECT count(*) > 0 AS can_read_service_level FROM iwd_dm.service_level_report;
SELECT count(*) FROM iwd.task;
SELECT iwd.create_task('{"externalId": "X", "capturePoint": "x"}');
INSERT INTO iwd_dm.agg_day (interval_start) VALUES (now());
RESET ROLE;

-- the history is read in place (iwd_dm.task_event_fact is a view over iwd.task_event): an event id not there
-- when read (its transaction open, or rolled back) is a gap, read again until it appears or is older than any
-- transaction could be; a gap read into keeps only the ids still missing
SELECT iwd_dm.run('intraday') ->> 'status' AS caught_up, (SELECT count(*) FROM iwd_dm.event_gap) AS open_gaps;
CREATE TEMP TABLE last_event AS SELECT max(id) AS id FROM iwd.task_event;
BEGIN;
SELECT iwd.create_task('{"externalId": "RB1", "capturePoint": "gaps"}') IS NOT NULL AS rolled_back;
ROLLBACK;
SELECT iwd.create_task('{"externalId": "G1", "capturePoint": "gaps"}') IS NOT NULL AS committed;
SELECT iwd_dm._load_batch(100) AS loaded;
SELECT g.from_id = l.id + 1 AS after_the_last, g.to_id = (SELECT min(id) - 1 FROM iwd.task_event WHERE id > l.id)
       AS up_to_the_next
FROM iwd_dm.event_gap g, last_event l;
UPDATE iwd_dm.event_gap SET from_id = from_id - 2;
SELECT iwd_dm._load_batch(100) AS loaded_from_the_gap;
SELECT g.from_id = l.id + 1 AS narrowed FROM iwd_dm.event_gap g, last_event l;
UPDATE iwd_dm.event_gap SET seen_at = seen_at - interval '1 hour';
SELECT iwd_dm._load_batch(100) AS loaded;
SELECT count(*) AS open_gaps FROM iwd_dm.event_gap;
SELECT count(*) AS facts, count(*) FILTER (WHERE external_id = 'G1') AS g1 FROM iwd_dm.task_fact
WHERE capture_point = 'gaps';
-- the scheduled chain's role reads the history through the view and writes none of it
SELECT has_table_privilege('iwd_worker', 'iwd_dm.task_event_fact', 'SELECT') AS reads,
       has_table_privilege('iwd_worker', 'iwd_dm.task_event_fact', 'INSERT, UPDATE, DELETE') AS writes;

DROP FUNCTION snapshot_diff();
DROP FUNCTION fact_indexes();
DROP FUNCTION fail_hour() CASCADE;
DROP EXTENSION iwd CASCADE;
