-- What the upgrade must keep of a tenant's work (scripts/test-upgrade.sh): every task with its state,
-- its history, the routing key registry and the Data Mart's facts.
\set ON_ERROR_STOP on
SELECT 'task ' || id || ' ' || external_id || ' ' || status || ' ' || coalesce(assigned_to, '-') || ' ' ||
       priority || ' ' || skills::text || ' ' || coalesce(hold_reason, '-')
FROM iwd.task_all ORDER BY id;
SELECT 'event ' || e::text FROM iwd.task_event e ORDER BY id;
SELECT 'routing key ' || key FROM iwd.routing_keys ORDER BY key;
SELECT 'task fact ' || f::text FROM iwd_dm.task_fact f ORDER BY task_id;
SELECT 'event fact ' || count(*) FROM iwd_dm.task_event_fact;
SELECT 'completed per day ' || coalesce(sum(completed), 0) FROM iwd_dm.agg_day;
