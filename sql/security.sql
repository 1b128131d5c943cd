-- iwd security: the roles of iwd and the search_path of every function. Assembled last (Makefile): it
-- covers every table and function the other parts define. See README, Security.

-- ---------------------------------------------------------------------------------------------
-- The workers' role. The scheduler and Data Mart workers connect as the bootstrap superuser (a
-- background worker cannot log in as a NOLOGIN role) and run each transaction as iwd_worker
-- (extension/scheduler.c): what they execute can then read and write iwd's tables of this database
-- and nothing else, whatever a database owner planted. Roles are cluster-wide: created once, granted
-- in each database that installs iwd.
-- ---------------------------------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'iwd_worker') THEN
        CREATE ROLE iwd_worker NOLOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA iwd, iwd_dm TO iwd_worker;
-- the scheduler pass: activation, reservation timeouts, expiry into task_closed, overdue flags and
-- rescoring (configuration read), each with its events; the announcements read the events
GRANT SELECT ON ALL TABLES IN SCHEMA iwd TO iwd_worker;
GRANT UPDATE, DELETE ON iwd.task TO iwd_worker;
GRANT INSERT ON iwd.task_event, iwd.task_closed TO iwd_worker;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA iwd TO iwd_worker;
-- the events out (sql/events.sql): the documents and outbox rows of the pass's events, their publication into the feed
-- with the webhooks' deliveries, and retention; never a webhook's secret
GRANT INSERT, DELETE ON iwd.event_document, iwd.event_outbox TO iwd_worker;
GRANT INSERT, DELETE ON iwd.event_feed TO iwd_worker;
GRANT INSERT, DELETE ON iwd.webhook_delivery TO iwd_worker;
REVOKE SELECT ON iwd.webhook FROM iwd_worker;
GRANT SELECT (name, url, events, enabled, filter, created_at, from_feed_id) ON iwd.webhook TO iwd_worker;
GRANT EXECUTE ON FUNCTION iwd._try_lock_publication() TO iwd_worker;
-- the Data Mart chain writes only iwd_dm, and analyzes its facts through iwd_dm._analyze (SECURITY
-- DEFINER: only a table's owner may analyze it)
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA iwd_dm TO iwd_worker;
-- but not the history through its view (iwd_dm.task_event_fact: the view's owner may write iwd.task_event)
REVOKE INSERT, UPDATE, DELETE ON iwd_dm.task_event_fact FROM iwd_worker;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA iwd_dm TO iwd_worker;
GRANT EXECUTE ON FUNCTION iwd_dm._analyze(bigint) TO iwd_worker;

-- ---------------------------------------------------------------------------------------------
-- The reporting role of this database: iwd_gcxi_<database>, NOLOGIN, SELECT on this database's Data
-- Mart (facts, dimensions, aggregates, report views) and nothing else. Grant it to the tenant's
-- reporting login; a login of one tenant's role reads no other tenant's Data Mart.
-- ---------------------------------------------------------------------------------------------

-- The name of this database's role for a purpose: the prefix and the database name; when that passes
-- PostgreSQL's 63 bytes, the name's first bytes (whole characters) that leave room for "_" and 8
-- hexadecimal digits of the name's MD5, so that two long names sharing a prefix get two roles (45 bytes
-- of the name after "iwd_gcxi_", 46 after "iwd_app_"). The one rule of every per-database role.
CREATE FUNCTION iwd._role_name(prefix text) RETURNS name
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT CASE WHEN octet_length(prefix || current_database()) <= 63
                THEN prefix || current_database()
                ELSE prefix || (SELECT left(current_database(), k)
                                FROM generate_series(63 - octet_length(prefix) - 9, 1, -1) k
                                WHERE octet_length(left(current_database(), k)) <= 63 - octet_length(prefix) - 9
                                LIMIT 1)
                     || '_' || left(md5(current_database()), 8) END::name
$$;

-- The name of this database's reporting role: "iwd_gcxi_" and the database name (iwd._role_name).
CREATE FUNCTION iwd_dm.reporting_role() RETURNS name
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT iwd._role_name('iwd_gcxi_')
$$;

DO $$
DECLARE
    r name := iwd_dm.reporting_role();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA iwd_dm TO %I', r);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA iwd_dm TO %I', r);
END $$;

-- ---------------------------------------------------------------------------------------------
-- The application role of this database: iwd_app_<database>, NOLOGIN, what the public API and the
-- sidecar's routes need and nothing more: USAGE on iwd and iwd_dm; SELECT, INSERT, UPDATE, DELETE on
-- iwd's tables (the API's functions run with their caller's rights) but only SELECT, INSERT on the
-- history iwd.task_event (no event is ever changed or removed); the sequences; SELECT on iwd_dm (job
-- status, metrics). No ownership: it cannot ALTER, DROP or TRUNCATE anything of iwd, nor create in its
-- schemas. Grant it to the tenant's application login (the sidecar's provisioned user); a login of one
-- tenant's role has no rights in another tenant's database.
-- ---------------------------------------------------------------------------------------------

-- The name of this database's application role: "iwd_app_" and the database name (iwd._role_name).
CREATE FUNCTION iwd.app_role() RETURNS name
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT iwd._role_name('iwd_app_')
$$;

DO $$
DECLARE
    r name := iwd.app_role();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA iwd, iwd_dm TO %I', r);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA iwd TO %I', r);
    EXECUTE format('REVOKE UPDATE, DELETE ON iwd.task_event FROM %I', r);
    -- a webhook's secret is written, never read back: only iwd.claim_deliveries returns it, to sign
    EXECUTE format('REVOKE SELECT ON iwd.webhook FROM %I', r);
    EXECUTE format('GRANT SELECT (name, url, events, enabled, filter, created_at, from_feed_id) ON iwd.webhook TO %I',
                   r);
    EXECUTE format('GRANT EXECUTE ON FUNCTION iwd.claim_deliveries(text, int, interval) TO %I', r);
    EXECUTE format('GRANT EXECUTE ON FUNCTION iwd._try_lock_publication() TO %I', r);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA iwd TO %I', r);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA iwd_dm TO %I', r);
END $$;

-- ---------------------------------------------------------------------------------------------
-- search_path. A superuser calling iwd (or a worker) in a database whose owner set
-- "ALTER DATABASE ... SET search_path = evil, pg_catalog, iwd" must not run evil.hashtext, evil."=" or
-- evil.text. Every function of the extension gets "SET search_path = pg_catalog, iwd, iwd_dm, pg_temp",
-- except:
-- - C functions: they resolve no names, or run their SQL under the same path pushed for the call
--   (IwdPushSearchPath, extension/iwd.c) or with every name qualified;
-- - the SQL functions that must stay inlinable or are called per row, where a SET clause would prevent
--   inlining and cost a GUC save and restore per call (some 2 us, measured on a trivial PL/pgSQL
--   function). Their bodies qualify every function, operator
--   (OPERATOR(pg_catalog.=)), type and text search configuration instead:
--     iwd._ts, iwd.*_json     per row of every listing
--     iwd._outbox_events      the outbox trigger, once per statement that writes events (sql/events.sql)
--     iwd._event_type         inlined into it
--     iwd_dm.time_zone, iwd_dm.interval_start, iwd_dm._us, iwd_dm._avg_s
--                             per row of the report views and the aggregation
--   A function added to this list must be written the same way (regress/sql/security.sql lists the
--   unpinned functions and runs each under a planted search_path).
-- ---------------------------------------------------------------------------------------------

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_proc p ON p.oid = d.objid
        JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e'
          AND d.refclassid = 'pg_catalog.pg_extension'::regclass
          AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'iwd')
          AND p.prolang <> (SELECT l.oid FROM pg_catalog.pg_language l WHERE l.lanname = 'c')
          AND n.nspname || '.' || p.proname NOT IN (
              'iwd._ts', 'iwd.department_json',
              'iwd.process_json', 'iwd.calendar_json', 'iwd.category_json', 'iwd.rule_json', 'iwd.agent_json',
              'iwd_dm.time_zone', 'iwd_dm.interval_start', 'iwd_dm._us', 'iwd_dm._avg_s', 'iwd._outbox_events',
              'iwd._event_type')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, iwd, iwd_dm, pg_temp', f);
    END LOOP;
END $$;
