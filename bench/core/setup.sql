-- Benchmark tenant: 20 categories over 50 skills, 500 ready agents with 1-5 skills (levels 1-10).
CREATE EXTENSION IF NOT EXISTS iwd;
SELECT iwd.upsert_department('{"name": "Bench"}');
SELECT iwd.upsert_category(jsonb_build_object(
    'name', 'cat' || c, 'department', 'Bench', 'priority', 10 + c, 'businessValue', 100 * c,
    'slaMinutes', 60 * (1 + c % 8), 'queue', 'q' || c,
    'reprioritize', jsonb_build_object('step', 1, 'everyMinutes', 30, 'max', 100)))
FROM generate_series(1, 20) c;
-- every agent can take every task here: the claim path, not the matching, is measured
SELECT iwd.upsert_agent(jsonb_build_object(
    'id', 'agent' || a, 'state', 'ready', 'capacity', jsonb_build_object('workitem', 5),
    'skills', (SELECT jsonb_object_agg('skill' || s, 10) FROM generate_series(1, 50) s)))
FROM generate_series(1, 500) a;
-- add_tasks(k): k new queued tasks through one iwd.create_tasks call
CREATE FUNCTION bench_add_tasks(k int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    base bigint := (SELECT coalesce(max(id), 0) FROM iwd.task_all);
BEGIN
    PERFORM iwd.create_tasks((SELECT jsonb_agg(jsonb_build_object(
        'externalId', 'B' || (base + i), 'capturePoint', 'bench',
        'category', 'cat' || (1 + (base + i) % 20),
        'priority', ((base + i) * 7919) % 100,
        'businessValue', ((base + i) * 104729) % 1000,
        'skills', jsonb_build_object('skill' || (1 + (base + i) % 50), 1 + (base + i) % 10),
        'attributes', jsonb_build_object('amount', (base + i) % 5000)))
        FROM generate_series(1, k) i));
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
