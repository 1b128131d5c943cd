-- iwd's workers: how a tenant database tells the launcher that it needs its worker (extension/pool.c).
-- A session that writes tasks or events announces at commit that the tenant is due (its events wait to
-- be announced, what it wrote may fall due); CREATE EXTENSION announces the database itself.

CREATE FUNCTION iwd._tasks_changed() RETURNS trigger
LANGUAGE c VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'iwd_tasks_changed';

-- statement triggers: one call per statement, none per row, before it runs (nothing is queued)
CREATE TRIGGER tasks_changed BEFORE INSERT OR UPDATE ON iwd.task
    FOR EACH STATEMENT EXECUTE FUNCTION iwd._tasks_changed();
CREATE TRIGGER tasks_changed BEFORE INSERT ON iwd.task_event
    FOR EACH STATEMENT EXECUTE FUNCTION iwd._tasks_changed();

-- The launcher and the tenant databases it serves: the pool's bounds and counters, and per database its
-- state, next due time and running workers.
CREATE FUNCTION iwd.worker_stats() RETURNS jsonb
LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'iwd_worker_stats';
-- it shows every tenant database of the server: for its administrators and monitoring only
REVOKE ALL ON FUNCTION iwd.worker_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION iwd.worker_stats() TO pg_monitor;

CREATE FUNCTION iwd._serve_database() RETURNS void
LANGUAGE c VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'iwd_serve_database';
REVOKE ALL ON FUNCTION iwd._serve_database() FROM PUBLIC;

-- served as soon as CREATE EXTENSION commits
SELECT iwd._serve_database();
