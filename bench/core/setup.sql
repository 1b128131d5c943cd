-- Benchmark tenant (the issue's workload): 20 categories/queues, 50 skills, 500 ready agents with 1-5
-- skills (levels 1-10), tasks needing 1-2 skills (levels 1-3), 10 % due within the hour.
CREATE EXTENSION IF NOT EXISTS iwd;
SELECT iwd.upsert_department('{"name": "Bench"}');
SELECT iwd.upsert_category(jsonb_build_object(
    'name', 'cat' || c, 'department', 'Bench', 'priority', 10 + c, 'businessValue', 100 * c,
    'slaMinutes', 60 * (1 + c % 8), 'queue', 'q' || c,
    'reprioritize', jsonb_build_object('step', 1, 'everyMinutes', 30, 'max', 100)))
FROM generate_series(1, 20) c;
-- 500 agents with 1-5 skills each (levels 1-10); agent a has skills 7a, 7a+13, 7a+26, ... (mod 50), so
-- that the pairs of skills two-skill tasks need (s, s+13) exist among the agents
CREATE TABLE bench_agent_skills AS
    SELECT a, 'skill' || (1 + (7 * a + 13 * j) % 50) AS skill, 1 + (a + 3 * j) % 10 AS level
    FROM generate_series(1, 500) a, generate_series(0, 4) j WHERE j <= (a / 50) % 5;
CREATE INDEX ON bench_agent_skills (a);
SELECT iwd.upsert_agent(jsonb_build_object(
    'id', 'agent' || a, 'state', 'ready', 'capacity', jsonb_build_object('workitem', 5),
    'skills', (SELECT jsonb_object_agg(skill, level) FROM bench_agent_skills s WHERE s.a = g.a)))
FROM generate_series(1, 500) g(a);
-- tasks_json(base, k): a batch of k new tasks (external ids B<base+1>...) as create_tasks takes it
CREATE FUNCTION bench_tasks_json(base bigint, k int) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
        'externalId', 'B' || (base + i), 'capturePoint', 'bench',
        'category', 'cat' || (1 + (base + i) % 20),
        'priority', abs(hashint8(base + i)) % 100,
        'businessValue', abs(hashint8(-(base + i))) % 1000,
        'skills', CASE WHEN (base + i) % 2 = 0
                       THEN jsonb_build_object('skill' || (1 + (base + i) % 50), 1 + (base + i) % 3,
                                               'skill' || (1 + ((base + i) % 50 + 13) % 50), 1)
                       ELSE jsonb_build_object('skill' || (1 + (base + i) % 50), 1 + (base + i) % 3) END,
        'dueAt', CASE WHEN (base + i) % 10 = 0 THEN iwd.now() + ((base + i) % 60 + 1) * interval '1 minute' END,
        'attributes', jsonb_build_object('amount', (base + i) % 5000))) ORDER BY i)
    FROM generate_series(1, k) i
$$;
-- The external ids of new tasks, 1,000 at a time: B<base+1>... for base from this sequence (not from the
-- tasks' ids: a benchmark that deletes the newest tasks would have their ids, and so their keys, used again)
CREATE SEQUENCE bench_external_base INCREMENT BY 1000 MINVALUE 0 START WITH 0;
-- add_tasks(k): k (at most 1,000) new queued tasks through one iwd.create_tasks call
CREATE FUNCTION bench_add_tasks(k int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM iwd.create_tasks(bench_tasks_json(nextval('bench_external_base'), k));
    RETURN k;
END $$;
-- queue_fill(n): add queued tasks until n are queued, in batches of 1,000 (one transaction)
CREATE FUNCTION bench_queue_fill(n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    missing int := n - (SELECT count(*) FROM iwd.task WHERE status = 'queued');
    added int := 0;
BEGIN
    WHILE added < missing LOOP
        added := added + bench_add_tasks(least(1000, missing - added));
    END LOOP;
    RETURN added;
END $$;
-- queue_topup(n): the same, committing every batch (for top-ups while clients claim, so that no long
-- transaction holds back the removal of dead rows)
CREATE PROCEDURE bench_queue_topup(n int) LANGUAGE plpgsql AS $$
DECLARE
    missing int := n - (SELECT count(*) FROM iwd.task WHERE status = 'queued');
BEGIN
    WHILE missing > 0 LOOP
        missing := missing - bench_add_tasks(least(1000, missing));
        COMMIT;
    END LOOP;
END $$;
-- capture_prepare(n): the input of a capture run, n new tasks in batches of 1,000, written beforehand
-- (the COPY floor reads a file written beforehand too)
CREATE TABLE bench_batch (n int PRIMARY KEY, tasks jsonb NOT NULL);
CREATE PROCEDURE bench_capture_prepare(n int) LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE bench_batch;
    INSERT INTO bench_batch
    SELECT b, bench_tasks_json(nextval('bench_external_base'), least(1000, n - b * 1000))
    FROM generate_series(0, (n - 1) / 1000) b;
END $$;
-- capture(): the prepared batches through iwd.create_tasks, one transaction per batch
CREATE PROCEDURE bench_capture() LANGUAGE plpgsql AS $$
DECLARE
    b record;
BEGIN
    FOR b IN SELECT tasks FROM bench_batch ORDER BY n LOOP
        PERFORM iwd.create_tasks(b.tasks);
        COMMIT;
    END LOOP;
END $$;
