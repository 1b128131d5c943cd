-- The fault suite's consistency checks on a tenant database, against the load's log of acknowledged
-- changes (a CSV file on psql's standard input). Each row: "check name|violations"; every count must be 0.
-- Only the tasks with an event above :since_event or an acknowledgement from :since_ms (epoch ms) on are
-- checked (0 and 0: every task): the others have not changed since a previous check.
SET statement_timeout = '600s';
-- one snapshot for every check, taken after the acknowledgements were read
BEGIN ISOLATION LEVEL REPEATABLE READ;
CREATE TEMP TABLE ack (client text, via text, op text, task_id bigint, external_id text, agent text,
                       status text, at_ms bigint);
\copy ack FROM pstdin WITH (FORMAT csv)
CREATE TEMP TABLE recent AS
    SELECT task_id FROM iwd.task_event WHERE id > :since_event
    UNION SELECT task_id FROM ack WHERE at_ms >= :since_ms;
CREATE UNIQUE INDEX ON recent (task_id);
DELETE FROM ack a WHERE NOT EXISTS (SELECT 1 FROM recent r WHERE r.task_id = a.task_id);
CREATE TEMP TABLE ev AS
    SELECT e.*, lag(e.status_after) OVER w AS previous_after, lag(e.id) OVER w AS previous_id,
           row_number() OVER (PARTITION BY e.task_id ORDER BY e.id DESC) AS from_last
    FROM iwd.task_event e WHERE e.task_id IN (SELECT task_id FROM recent)
    WINDOW w AS (PARTITION BY e.task_id ORDER BY e.id);
CREATE INDEX ON ev (task_id, id);
ANALYZE ev;
ANALYZE recent;
CREATE TEMP VIEW recent_task AS SELECT t.* FROM iwd.task_all t WHERE t.id IN (SELECT task_id FROM recent);
CREATE TEMP TABLE open_status (s) AS VALUES ('new'), ('queued'), ('assigned'), ('held'), ('errorHeld');
CREATE TEMP TABLE terminal_status (s) AS VALUES ('completed'), ('canceled'), ('rejected'), ('expired');
-- the lifecycle's transitions (README, Statuses): from, to
CREATE TEMP TABLE legal (b, a) AS
    SELECT o.s, o.s FROM open_status o                                        -- update, accept, overdue...
    UNION ALL SELECT o.s, t.s FROM open_status o, terminal_status t
              WHERE t.s <> 'expired' OR o.s <> 'assigned'                     -- complete, reject, cancel, expire
    UNION ALL VALUES ('queued', 'assigned'), ('assigned', 'queued')           -- reserve, reservation timeout
    UNION ALL SELECT s, 'held' FROM (VALUES ('new'), ('queued'), ('assigned'), ('errorHeld')) h(s)
    UNION ALL VALUES ('held', 'queued'), ('errorHeld', 'queued')              -- resume, activation
    UNION ALL SELECT t.s, o.s FROM terminal_status t, open_status o           -- restart
    UNION ALL VALUES ('new', 'queued'), ('new', 'errorHeld');

SELECT 'acknowledged creations: every task exists with its externalId|'
    || count(*) FROM ack a
    WHERE a.op = 'created' AND NOT EXISTS (SELECT 1 FROM iwd.task_all t WHERE t.id = a.task_id
                                           AND t.external_id = a.external_id AND t.capture_point = 'fault');
SELECT 'acknowledged changes: each is in the task''s history, by its agent|'
    || count(*) FROM ack a
    WHERE NOT EXISTS (SELECT 1 FROM ev e WHERE e.task_id = a.task_id AND e.event = a.op
                      AND (a.op IN ('created', 'canceled') OR e.actor = a.agent));
SELECT 'acknowledged reservations: no more than the history has|'
    || count(*) FROM (SELECT task_id, count(*) n FROM ack WHERE op = 'reserved' GROUP BY 1) a
    WHERE a.n > (SELECT count(*) FROM ev e WHERE e.task_id = a.task_id AND e.event = 'reserved');
SELECT 'acknowledged final states: a task finished is still finished, one accepted is held or finished|'
    || count(*) FROM (SELECT DISTINCT ON (task_id) * FROM ack ORDER BY task_id, at_ms DESC,
                      array_position(ARRAY['created', 'reserved', 'accepted', 'completed', 'rejected', 'canceled'], op) DESC) a
    JOIN recent_task t ON t.id = a.task_id
    WHERE (a.op IN ('completed', 'rejected', 'canceled') AND t.status <> a.op)
       OR (a.op = 'accepted' AND NOT ((t.status = 'assigned' AND t.assigned_to = a.agent AND t.accepted_at IS NOT NULL)
                                      OR t.status IN ('completed', 'rejected', 'canceled')));
SELECT 'history: every task starts with created|'
    || count(*) FROM ev WHERE previous_id IS NULL AND event <> 'created';
SELECT 'history: each event starts from the status the previous one left|'
    || count(*) FROM ev WHERE previous_id IS NOT NULL AND status_before IS DISTINCT FROM previous_after;
SELECT 'history: every transition is one the lifecycle allows|'
    || count(*) FROM ev WHERE previous_id IS NOT NULL AND (status_before, status_after) NOT IN (SELECT b, a FROM legal);
SELECT 'history: the last event''s status is the task''s status|'
    || count(*) FROM recent_task t LEFT JOIN ev e ON e.task_id = t.id AND e.from_last = 1
    WHERE e.status_after IS DISTINCT FROM t.status;
SELECT 'no double assignment: a reservation only of a queued task|'
    || count(*) FROM ev WHERE event = 'reserved' AND (status_before <> 'queued' OR previous_after <> 'queued');
SELECT 'no double assignment: an acceptance only by the agent holding the reservation|'
    || count(*) FROM ev a
    WHERE a.event = 'accepted'
      AND a.actor IS DISTINCT FROM (SELECT r.actor FROM ev r WHERE r.task_id = a.task_id AND r.id < a.id
                                    AND r.event = 'reserved' ORDER BY r.id DESC LIMIT 1);
SELECT 'no task completed twice|'
    || count(*) FROM (SELECT task_id FROM ev GROUP BY task_id
                      HAVING count(*) FILTER (WHERE event = 'completed') > 1 + count(*) FILTER (WHERE event = 'restart')) x;
SELECT 'tables: open tasks in iwd.task, finished ones in iwd.task_closed, never both|'
    || (SELECT count(*) FROM iwd.task WHERE status IN (SELECT s FROM terminal_status) AND id IN (SELECT task_id FROM recent))
     + (SELECT count(*) FROM iwd.task_closed WHERE status IN (SELECT s FROM open_status) AND id IN (SELECT task_id FROM recent))
     + (SELECT count(*) FROM iwd.task t JOIN iwd.task_closed c USING (id) WHERE t.id IN (SELECT task_id FROM recent));
SELECT 'tables: an assigned task names its agent, no other status does|'
    || count(*) FROM iwd.task WHERE (status = 'assigned') <> (assigned_to IS NOT NULL) AND id IN (SELECT task_id FROM recent);
SELECT 'tables: every task has its key and the key its task|'
    || (SELECT count(*) FROM recent_task t WHERE NOT EXISTS (SELECT 1 FROM iwd.task_key k WHERE k.task_id = t.id
                                                               AND k.external_id = t.external_id AND k.capture_point = t.capture_point))
     + (SELECT count(*) FROM iwd.task_key k WHERE k.task_id IN (SELECT task_id FROM recent)
                                              AND NOT EXISTS (SELECT 1 FROM iwd.task_all t WHERE t.id = k.task_id));
-- events out (sql/events.sql): what a crash leaves is announced late, never lost, twice or invented
CREATE TEMP TABLE announced AS
    SELECT x.event_id, count(*) AS n FROM (SELECT event_id FROM iwd.event_outbox
                                           UNION ALL SELECT event_id FROM iwd.event_feed) x GROUP BY 1;
SELECT 'events: every event has its document and is in the outbox or the feed, once|'
    || count(*) FROM ev e LEFT JOIN announced p ON p.event_id = e.id
    WHERE p.n IS DISTINCT FROM 1 OR NOT EXISTS (SELECT 1 FROM iwd.event_document k WHERE k.event_id = e.id);
SELECT 'events: nothing announced that the history does not hold|'
    || count(*) FROM announced p WHERE NOT EXISTS (SELECT 1 FROM iwd.task_event e WHERE e.id = p.event_id);
-- examples of acknowledged changes not found, for the log ("# " lines)
SELECT '# not in the history: ' || a.client || ' ' || a.via || ' ' || a.op || ' task ' || a.task_id || ' at '
       || to_timestamp(a.at_ms / 1000.0) FROM ack a
    WHERE NOT EXISTS (SELECT 1 FROM ev e WHERE e.task_id = a.task_id AND e.event = a.op
                      AND (a.op IN ('created', 'canceled') OR e.actor = a.agent))
    LIMIT 5;
COMMIT;
