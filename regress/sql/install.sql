-- Install, version, the objects of the contract, GUCs, the append-only event history.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
SELECT extversion FROM pg_extension WHERE extname = 'iwd';
SELECT nspname FROM pg_namespace WHERE nspname = 'iwd';
-- the tables of the contract
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'iwd' AND c.relkind IN ('r', 'v') ORDER BY 1;
-- every function of the SQL API exists with its documented signature
SELECT p.oid::regprocedure
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'iwd' AND p.proname !~ '^_' ORDER BY p.oid::regprocedure::text;
-- the GUCs
SHOW iwd.scheduler_interval;
SHOW iwd.batch_size;
SHOW iwd.databases;
SET iwd.simulated_time = 'not a time';
SET iwd.simulated_time = '2026-03-02 10:00:00+00';
SELECT iwd.now();
RESET iwd.simulated_time;
SELECT iwd.now() = now() AS clock_is_transaction_time;
SET iwd.no_such_setting = 1;
-- events are append-only
INSERT INTO iwd.task_event (task_id, at, event) VALUES (1, now(), 'created');
UPDATE iwd.task_event SET event = 'x';
DELETE FROM iwd.task_event;
TRUNCATE iwd.task_event;
SELECT count(*) AS events_kept FROM iwd.task_event;
DROP EXTENSION iwd CASCADE;
-- and it installs again cleanly
CREATE EXTENSION iwd;
DROP EXTENSION iwd CASCADE;
