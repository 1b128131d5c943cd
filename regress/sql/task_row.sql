-- The task row has one declaration: CREATE TABLE iwd.task (sql/iwd.sql). Adding a column to a task is that
-- one change (README, Architecture: adding a task column). Here a column is added in this scratch database
-- as a release's upgrade adds it (ALTER TABLE iwd.task, then iwd._derive_from_task()), and every path that
-- copies the row keeps its value: capture (one and batch), update, hold and resume, the claim, completion
-- in C (its column list built again from the table), restart, cancel, reprioritization and expiry.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
CREATE FUNCTION err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE FUNCTION columns_of(rel regclass) RETURNS text[] LANGUAGE sql AS $$
    SELECT array_agg(attname || ' ' || format_type(atttypid, atttypmod) ORDER BY attnum)
    FROM pg_attribute WHERE attrelid = rel AND attnum > 0 AND NOT attisdropped
$$;
CREATE FUNCTION new_task(ext text, extra jsonb DEFAULT '{}') RETURNS bigint LANGUAGE sql AS $$
    SELECT (iwd.create_task(jsonb_build_object('externalId', ext, 'capturePoint', 'row') || extra) ->> 'id')::bigint
$$;
-- where the task is, its status and the scratch columns
CREATE FUNCTION row_of(task_id bigint) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(' ', CASE WHEN EXISTS (SELECT 1 FROM iwd.task WHERE id = task_id) THEN 'open' ELSE 'closed' END,
                     to_jsonb(t) ->> 'status', coalesce(to_jsonb(t) ->> 'effort', '-'),
                     coalesce(to_jsonb(t) ->> 'note', '-'))
    FROM iwd.task_all t WHERE t.id = task_id
$$;

-- iwd.task_closed is declared from iwd.task: the same columns in the same order
SELECT columns_of('iwd.task') = columns_of('iwd.task_closed') AS closed_has_the_task_columns;
-- no function spells out the task's columns but the one generated from the catalog
SELECT p.oid::regprocedure AS names_every_task_column
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('iwd', 'iwd_dm') AND p.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'c')
  AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                  WHERE a.attrelid = 'iwd.task'::regclass AND a.attnum > 0 AND NOT a.attisdropped
                    AND pg_get_functiondef(p.oid) !~ ('\m' || a.attname || '\M'))
ORDER BY 1;

SELECT iwd.upsert_agent('{"id": "a1", "state": "ready", "capacity": {"workitem": 5}}') IS NOT NULL AS agent;
SELECT iwd.upsert_category('{"name": "Slow", "reprioritize": {"step": 5, "everyMinutes": 10}}') IS NOT NULL AS category;
-- a completion before the change: this session's completion statement is built for the old columns
SELECT new_task('R0');
SELECT iwd.next_task('a1') ->> 'id' AS claimed;
SELECT iwd.complete_task(1, 'a1') ->> 'status' AS completed;

-- the change: one column with a default, a NOT NULL and a CHECK, one without
ALTER TABLE iwd.task ADD COLUMN effort int NOT NULL DEFAULT 3 CHECK (effort > 0), ADD COLUMN note text;
SELECT iwd._derive_from_task();
SELECT columns_of('iwd.task') = columns_of('iwd.task_closed') AS closed_has_the_task_columns;
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull, pg_get_expr(d.adbin, d.adrelid) AS def
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = 'iwd.task_closed'::regclass AND a.attname IN ('effort', 'note') ORDER BY a.attnum;
SELECT pg_get_constraintdef(oid) AS closed_check FROM pg_constraint
WHERE conrelid = 'iwd.task_closed'::regclass AND contype = 'c';
SELECT count(*) AS task_all_columns FROM pg_attribute WHERE attrelid = 'iwd.task_all'::regclass AND attnum > 0;
SELECT row_of(1);

-- capture: a new task takes the column's default
SELECT new_task('R1');
SELECT row_of(2);
UPDATE iwd.task SET effort = 5, note = 'kept' WHERE id = 2;
-- update: the draft carries a column it does not know
SELECT iwd.update_task(2, '{"subject": "changed", "category": "Slow"}') ->> 'subject' AS subject, row_of(2);
-- hold and resume (iwd._save_task)
SELECT iwd.hold_task(2, 'waiting') ->> 'status' AS status, row_of(2);
SELECT iwd.resume_task(2) ->> 'status' AS status, row_of(2);
-- rescoring by the scheduler pass and by hand
SELECT iwd.tick('2026-11-24 10:30:00+00') ->> 'reprioritized' AS reprioritized, row_of(2);
SELECT iwd.reprioritize_task(2, 90) ->> 'priority' AS priority, row_of(2);
-- the claim and completion in C (its statement built again for the new columns)
SELECT iwd.next_task('a1') ->> 'id' AS claimed, row_of(2);
SELECT iwd.complete_task(2, 'a1') ->> 'status' AS status, row_of(2);
-- restart: back from iwd.task_closed; cancel: there again (iwd._transition)
SELECT iwd.restart_task(2) ->> 'status' AS status, row_of(2);
SELECT iwd.cancel_task(2) ->> 'status' AS status, row_of(2);
-- expiry (the scheduler pass copies whole rows)
SELECT new_task('R2', '{"expiresAt": "2026-11-24T11:00:00Z"}');
UPDATE iwd.task SET effort = 7, note = 'expiring' WHERE id = 3;
SELECT iwd.tick('2026-11-24 11:00:00+00') ->> 'expired' AS expired, row_of(3);
-- batch capture (set-wise): defaults
SELECT jsonb_array_length(iwd.create_tasks('[{"externalId": "B1", "capturePoint": "row"},
                                              {"externalId": "B2", "capturePoint": "row"}]')) AS created;
SELECT external_id, row_of(id) FROM iwd.task WHERE external_id LIKE 'B%' ORDER BY id;
-- the value survives; the CHECK applies to closed tasks too
SELECT err($$UPDATE iwd.task_closed SET effort = 0 WHERE id = 3$$);
-- the task document is unchanged (the column is no task field: README, Architecture)
SELECT iwd.get_task(2) ? 'effort' AS in_document;

-- the two tables must stay alike: a column only iwd.task_closed has is refused
ALTER TABLE iwd.task_closed ADD COLUMN stray int;
SELECT err('SELECT iwd._derive_from_task()');
ALTER TABLE iwd.task_closed DROP COLUMN stray;
SELECT err('SELECT iwd._derive_from_task()');
-- only the extension's owner re-derives (the application role cannot run it)
SELECT set_config('role', iwd.app_role(), false) IS NOT NULL AS as_application_role;
SELECT err('SELECT iwd._derive_from_task()');
RESET ROLE;
DROP EXTENSION iwd CASCADE;
