-- The queue a user would write by hand (issue reference): one table, a partial index, SKIP LOCKED.
CREATE TABLE naive_tasks (id bigserial PRIMARY KEY, priority int, business_value int,
                          created_at timestamptz DEFAULT now(), skill text, status text, assigned_to text, payload jsonb);
CREATE INDEX naive_tasks_queue ON naive_tasks (priority DESC, created_at) WHERE status = 'queued';
CREATE TABLE ceiling (id bigserial PRIMARY KEY, payload jsonb);
CREATE FUNCTION naive_fill(n int) RETURNS void LANGUAGE sql AS $$
    INSERT INTO naive_tasks (priority, business_value, skill, status, payload)
    SELECT abs(hashint8(b + i)) % 100, abs(hashint8(-(b + i))) % 1000, 'skill' || (1 + (b + i) % 50), 'queued',
           jsonb_build_object('amount', (b + i) % 5000)
    FROM (SELECT coalesce(max(id), 0) AS b FROM naive_tasks) m,
         generate_series(1, n - (SELECT count(*) FROM naive_tasks WHERE status = 'queued')::int) i
$$;
