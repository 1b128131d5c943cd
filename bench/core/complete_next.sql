-- The agent's loop in one round trip: complete the task the agent holds and receive its next, one transaction
-- per cycle (iwd.complete_task(id, agent, next => true)). Each client is one agent; task_id starts at 0
-- (pgbench -D task_id=0): the first cycle, and a cycle after nothing was left for the agent, only claims.
\set agent 1 + (:client_id * 31) % 500
SELECT coalesce((CASE WHEN :task_id > 0 THEN iwd.complete_task(:task_id, 'agent' || :agent, next => true) -> 'next'
                      ELSE iwd.next_task('agent' || :agent) END) ->> 'id', '0')::bigint AS task_id \gset
