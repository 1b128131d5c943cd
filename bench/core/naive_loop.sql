-- The hand-written queue's agent loop in one round trip: complete the task the agent holds and claim its
-- next (one UPDATE with SKIP LOCKED, the agent's skills) in one statement and one transaction. Each client
-- is one agent, as in complete_next.sql; task_id starts at 0 (pgbench -D task_id=0).
\set agent 1 + (:client_id * 31) % 500
WITH done AS (UPDATE naive_tasks SET status = 'completed' WHERE id = :task_id),
     c AS (UPDATE naive_tasks SET status = 'assigned', assigned_to = 'agent' || :agent
           WHERE id = (SELECT id FROM naive_tasks WHERE status = 'queued'
                       AND skill = ANY (ARRAY(SELECT skill FROM bench_agent_skills WHERE a = :agent))
                       ORDER BY priority DESC, created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING id)
SELECT coalesce((SELECT id FROM c), 0) AS task_id \gset
