-- One agent cycle: reserve the next best task, then complete it (two transactions).
\set agent random(1, 500)
SELECT coalesce((iwd.next_task('agent' || :agent) ->> 'id')::bigint, 0) AS task_id \gset
SELECT CASE WHEN :task_id > 0 THEN iwd.complete_task(:task_id, 'agent' || :agent) ->> 'status' END;
