-- The hand-written queue's claim (one UPDATE with SKIP LOCKED, the agent's skills) and completion: two
-- transactions.
\set agent random(1, 500)
WITH c AS (UPDATE naive_tasks SET status = 'assigned', assigned_to = 'agent' || :agent
           WHERE id = (SELECT id FROM naive_tasks WHERE status = 'queued'
                       AND skill = ANY (ARRAY(SELECT skill FROM bench_agent_skills WHERE a = :agent))
                       ORDER BY priority DESC, created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING id)
SELECT coalesce((SELECT id FROM c), 0) AS task_id \gset
UPDATE naive_tasks SET status = 'completed' WHERE id = :task_id;
