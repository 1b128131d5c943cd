-- Security: a superuser whose search_path a hostile database owner chose runs none of the owner's
-- functions, operators or types through iwd; every function is pinned or written qualified; the
-- locks of the claim and the Data Mart are iwd's own; the roles hold what they should.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
SET iwd.notify = off;

-- the owner of the database (not a superuser) plants look-alikes of what iwd calls; each records
-- that it ran
CREATE ROLE hostile_owner NOLOGIN;
GRANT CREATE ON DATABASE regression TO hostile_owner;
SET ROLE hostile_owner;
CREATE SCHEMA evil;
CREATE TABLE evil.ran (what text);
GRANT INSERT ON evil.ran TO PUBLIC;
CREATE FUNCTION evil.hashtext(text) RETURNS int LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('hashtext'); SELECT pg_catalog.hashtext($1) $$;
CREATE FUNCTION evil.jsonb_build_object(VARIADIC text[]) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('jsonb_build_object'); SELECT '{}'::pg_catalog.jsonb $$;
CREATE FUNCTION evil.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('jsonb_typeof'); SELECT pg_catalog.jsonb_typeof($1) $$;
CREATE FUNCTION evil.jsonb_strip_nulls(jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('jsonb_strip_nulls'); SELECT pg_catalog.jsonb_strip_nulls($1) $$;
CREATE FUNCTION evil.to_char(timestamp, text) RETURNS text LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('to_char'); SELECT pg_catalog.to_char($1, $2) $$;
CREATE FUNCTION evil.date_trunc(text, timestamp) RETURNS timestamp LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('date_trunc'); SELECT pg_catalog.date_trunc($1, $2) $$;
CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('current_setting'); SELECT pg_catalog.current_setting($1, $2) $$;
CREATE FUNCTION evil.text_eq(text, text) RETURNS boolean LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('='); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq);
CREATE FUNCTION evil.int_mod(bigint, int) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO evil.ran VALUES ('%'); SELECT $1 OPERATOR(pg_catalog.%) $2 $$;
CREATE OPERATOR evil.% (LEFTARG = bigint, RIGHTARG = int, FUNCTION = evil.int_mod);
CREATE TYPE evil.text AS (hijacked int);
GRANT USAGE ON SCHEMA evil TO PUBLIC;
RESET ROLE;

-- what "ALTER DATABASE ... SET search_path = evil, pg_catalog, iwd" gives every later session
SET search_path = evil, pg_catalog, iwd, iwd_dm, public;
SELECT iwd.upsert_agent('{"id": "a1", "state": "ready", "skills": {"en": 5}}') IS NOT NULL AS agent;
SELECT iwd.upsert_category('{"name": "Claims", "queue": "claims", "slaMinutes": 60}') IS NOT NULL AS category;
SELECT iwd.upsert_rule('{"kind": "classification", "name": "r1", "when": {"field": "subject", "op": "contains", "value": "claim"}, "set": {"category": "Claims"}}') IS NOT NULL AS rule;
-- a C function called directly loads the configuration just changed, under the caller's path
SELECT (iwd._prepare_task('{"externalId": "P", "capturePoint": "erp", "subject": "a claim"}', NULL, now())).category;
SET iwd.simulated_time = '2026-03-02 09:05+00';
SELECT iwd.create_task('{"externalId": "T1", "capturePoint": "erp", "subject": "a claim", "skills": {"en": 1}}') ->> 'category';
SELECT iwd.create_tasks('[{"externalId": "T2", "capturePoint": "erp"}, {"externalId": "T3", "capturePoint": "erp"}]') IS NOT NULL AS batch;
SET iwd.simulated_time = '2026-03-02 09:20:00.5+00';
SELECT iwd.next_task('a1') ->> 'externalId' AS claimed;
SELECT iwd.accept_task(1, 'a1') ->> 'status';
SELECT iwd.complete_task(1, 'a1') ->> 'status';
SELECT iwd.hold_task(2, 'wait') ->> 'status', iwd.resume_task(2) ->> 'status', iwd.cancel_task(3) ->> 'status';
SELECT iwd.update_task(2, '{"priority": 7}') ->> 'priority';
SELECT iwd.get_task(2) ->> 'createdAt';
SELECT count(*) AS queued FROM iwd.queue();
SELECT count(*) AS found FROM iwd.search_tasks('claim', '{"status": "completed"}');
SELECT count(*) AS events FROM iwd.task_history(1);
SELECT iwd.upsert_department('{"name": "Finance"}') IS NOT NULL AS department,
       iwd.upsert_process('{"name": "Billing", "department": "Finance"}') IS NOT NULL AS process,
       iwd.upsert_calendar('{"name": "office"}') IS NOT NULL AS calendar;
SELECT jsonb_array_length(iwd.list_agents()) AS agents, jsonb_array_length(iwd.list_categories()) AS categories,
       jsonb_array_length(iwd.list_departments()) AS departments, jsonb_array_length(iwd.list_processes()) AS processes,
       jsonb_array_length(iwd.list_calendars()) AS calendars, jsonb_array_length(iwd.list_rules()) AS rules;
SELECT iwd.queue_stats() IS NOT NULL AS stats;
SELECT iwd.tick('2026-03-02 12:00+00') ->> 'overdue' AS overdue;
SELECT iwd_dm.run('full') ->> 'status' AS datamart;
SELECT count(*) AS rows FROM iwd_dm.queue_activity;
SELECT count(*) AS rows FROM iwd_dm.capture_point_business_value;
SELECT count(*) AS rows FROM iwd_dm.agent_activity;
SELECT iwd_dm.interval_start('15min', '2026-03-02 09:59+00'), iwd_dm.interval_start('month', '2026-03-02 09:59+00');
SELECT length(iwd_dm.prometheus_metrics('t1')) > 0 AS metrics;
-- events out: the outbox trigger ran in every capture and claim above; publication, the feed, webhooks
SELECT iwd.upsert_webhook('{"name": "crm", "url": "https://crm.example/", "secret": "s3cret"}') ->> 'hasSecret';
SELECT iwd.publish_events() > 0 AS published;
SELECT iwd.events_head() > 0 AS head;
SELECT jsonb_array_length(iwd.events_after(0, 100, '{task.created}', '{"capturePoint": "erp"}') -> 'events') AS created;
SELECT count(*) AS claimed FROM iwd.claim_deliveries('replica-1');
SELECT iwd.webhook_deliveries('crm', 'pending') -> 'next' AS next, count(*) AS stats FROM iwd.webhook_stats();
RESET search_path;
RESET iwd.simulated_time;
-- none of the planted functions ran
SELECT what, count(*) FROM evil.ran GROUP BY what ORDER BY what;

-- every function of iwd pins its search_path, but C functions and the inlined or per-row SQL
-- functions written with every name qualified (sql/security.sql)
SELECT n.nspname || '.' || p.proname AS unpinned
FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_language l ON l.oid = p.prolang
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'iwd') AND d.deptype = 'e'
  AND d.classid = 'pg_proc'::regclass AND l.lanname <> 'c'
  AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, iwd, iwd_dm, pg_temp'], false)
ORDER BY 1;
-- the unpinned SQL functions are still inlined (a SET clause would prevent it)
EXPLAIN (VERBOSE, COSTS OFF) SELECT iwd._ts(now()), iwd_dm._avg_s(3, 2);

-- the reporting role of this database reads its Data Mart and nothing else
SELECT iwd_dm.reporting_role();
SELECT iwd_dm.reporting_role() = 'iwd_gcxi_regression' AS named_after_database;
SET ROLE iwd_gcxi_regression;
SELECT count(*) > 0 AS can_read_reports FROM iwd_dm.queue_activity;
SELECT count(*) FROM iwd.task;
RESET ROLE;
-- no cluster-wide reporting role
SELECT count(*) AS cluster_wide_reporting_role FROM pg_roles WHERE rolname = 'iwd_gcxi';

-- the application role of this database: a login member runs the whole public API, but cannot rewrite
-- the history nor change iwd's definitions
SELECT iwd.app_role(), iwd.app_role() = 'iwd_app_regression' AS named_after_database;
SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = iwd.app_role();
CREATE ROLE app_login LOGIN IN ROLE iwd_app_regression;
SET ROLE app_login;
SELECT iwd.upsert_department('{"name": "AppDept"}') ->> 'name';
SELECT iwd.upsert_agent('{"id": "app-agent", "skills": {"apps": 5}, "capacity": {"workitem": 5}, "state": "ready"}') ->> 'id';
SELECT iwd.create_task('{"externalId": "app-1", "capturePoint": "app", "subject": "App invoice", "skills": {"apps": 1}}') ->> 'status';
SELECT t ->> 'id' AS claimed, t ->> 'status' AS claimed_status FROM iwd.next_task('app-agent') t \gset
SELECT :'claimed_status' AS claimed_status;
SELECT iwd.accept_task(:claimed, 'app-agent') ->> 'status';
SELECT iwd.complete_task(:claimed, 'app-agent') ->> 'status';
SELECT count(*) AS listed FROM iwd.task_all WHERE external_id = 'app-1';
SELECT count(*) AS found FROM iwd.search_tasks('"App invoice"');
SELECT iwd.queue_stats() IS NOT NULL AS queue_stats;
SELECT count(*) >= 0 AS reads_job_status FROM iwd_dm.job_status;
-- webhooks: the application writes a webhook's secret but never reads it back, except through the claim
SELECT iwd.upsert_webhook('{"name": "app-hook", "url": "http://app.example/", "secret": "app-s3cret"}') ->> 'name';
SELECT iwd.publish_events() > 0 AS published;
SELECT count(*) AS deliveries FROM iwd.webhook_delivery WHERE webhook = 'app-hook';
SELECT secret FROM iwd.webhook WHERE name = 'app-hook';
SELECT * FROM iwd.webhook WHERE name = 'app-hook';
SELECT name, url, enabled FROM iwd.webhook WHERE name = 'app-hook';
SELECT DISTINCT secret FROM iwd.claim_deliveries('app-replica', 1000) WHERE webhook = 'app-hook';
SELECT iwd.upsert_webhook('{"name": "app-hook", "url": "http://app.example/2"}') ->> 'url';
SELECT iwd._try_lock_publication();
-- (the API's functions run with their caller's rights and append events: INSERT stays granted)
UPDATE iwd.task_event SET actor = 'forged';
DELETE FROM iwd.task_event;
TRUNCATE iwd.task_event;
TRUNCATE iwd.task;
ALTER TABLE iwd.task ADD COLUMN x int;
DROP TABLE iwd.task_event;
DROP FUNCTION iwd.next_task(text, integer);
CREATE FUNCTION iwd.planted() RETURNS int LANGUAGE sql AS 'SELECT 1';
RESET ROLE;
-- the application role of another database gives nothing here: its grants exist only where iwd was
-- installed in that database
CREATE ROLE iwd_app_elsewhere NOLOGIN;
CREATE ROLE other_login LOGIN IN ROLE iwd_app_elsewhere;
SET ROLE other_login;
SELECT count(*) FROM iwd.task;
SELECT iwd.next_task('app-agent');
RESET ROLE;
DROP ROLE other_login;
DROP ROLE iwd_app_elsewhere;

-- the workers' role: NOLOGIN, not a superuser, writes iwd's tables but cannot change their definitions
SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = 'iwd_worker';
SET ROLE iwd_worker;
SELECT count(*) >= 0 AS reads_tasks FROM iwd.task;
ALTER TABLE iwd.task ADD COLUMN x int;
CREATE FUNCTION iwd.planted() RETURNS int LANGUAGE sql AS 'SELECT 1';
TRUNCATE iwd_dm.task_fact;
RESET ROLE;

-- the locks: a login cannot take the Data Mart chain's lock (the old advisory key is no longer it)
SET ROLE iwd_gcxi_regression;
SELECT iwd_dm._lock_chain('full');
RESET ROLE;
CREATE ROLE plain_login;
SET ROLE plain_login;
SELECT pg_advisory_lock(hashtext('iwd_dm chain full')) IS NOT NULL AS holds_old_key;
RESET ROLE;
-- nor, even with the use of schema iwd, the publication lock of the event feed or the webhooks' secrets
GRANT USAGE ON SCHEMA iwd TO plain_login;
SET ROLE plain_login;
SELECT iwd._try_lock_publication();
SELECT * FROM iwd.claim_deliveries('intruder');
RESET ROLE;
REVOKE USAGE ON SCHEMA iwd FROM plain_login;
SELECT line FROM regexp_split_to_table(iwd_dm.prometheus_metrics('t'), E'\n') line
WHERE line LIKE 'iwddm_job_active%';
BEGIN;
SELECT iwd_dm._lock_chain('full');
SELECT locktype, classid, objid, objsubid, mode FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 3 AND pid = pg_backend_pid();
SELECT line FROM regexp_split_to_table(iwd_dm.prometheus_metrics('t'), E'\n') line
WHERE line LIKE 'iwddm_job_active%';
COMMIT;
SELECT iwd_dm._lock_chain('weekly');
SELECT pg_advisory_unlock_all();

DROP EXTENSION iwd CASCADE;
DROP SCHEMA evil CASCADE;
REVOKE CREATE ON DATABASE regression FROM hostile_owner;
DROP ROLE hostile_owner;
DROP ROLE plain_login;
DROP ROLE app_login;
