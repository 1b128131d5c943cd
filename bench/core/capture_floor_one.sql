-- What one capture writes, without computing it: a task row, its key, its search document and its created
-- event copied from a captured task's (floor_template*) into tables with the same indexes, in one
-- statement and one transaction. The ceiling of any single-task capture that writes these four rows.
-- (bench/targets.sh replaces @COLUMNS@ with iwd.task's columns after id and external_id.)
WITH t AS MATERIALIZED (SELECT nextval('floor_id') AS n),
     a AS (INSERT INTO floor_task (id, external_id, @COLUMNS@) SELECT t.n, 'F' || t.n, x.* FROM t, floor_template x),
     k AS (INSERT INTO floor_key (capture_point, external_id, task_id) SELECT 'floor', 'F' || t.n, t.n FROM t),
     d AS (INSERT INTO floor_document (task_id, document) SELECT t.n, f.document FROM t, floor_template_document f),
     e AS (INSERT INTO floor_event (task_id, at, event, status_after, detail)
           SELECT t.n, now(), 'created', 'queued', f.detail FROM t, floor_template_event f)
SELECT 1;
