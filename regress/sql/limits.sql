-- Bounds on client input (README, Security: Limits): skills per agent and per task, lengths of ids,
-- names and texts, the size of attributes, the nesting of conditions. Beyond each, 22023 naming the
-- field and the limit; at each, the work is done. The claim's cost follows the registered routing keys.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
CREATE FUNCTION err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE FUNCTION task(ext text, extra jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT iwd.create_task(jsonb_build_object('externalId', ext, 'capturePoint', 'erp') || extra) ->> 'externalId'
$$;
CREATE FUNCTION skills(n int, level int DEFAULT 5) RETURNS jsonb LANGUAGE sql AS $$
    SELECT coalesce(jsonb_object_agg('s' || g, level), '{}') FROM generate_series(1, n) g
$$;

-- the agent of 65,536 skills that crashed the server: refused at once; stored with plain SQL, its
-- claim is refused too (and costs nothing)
SELECT clock_timestamp() AS t0 \gset
SELECT err($$SELECT iwd.upsert_agent(jsonb_build_object('id', 'b', 'state', 'ready', 'skills',
    (SELECT jsonb_object_agg('s' || g, 1) FROM generate_series(1, 65536) g)))$$);
SELECT err($$SELECT iwd.next_task('b')$$);
INSERT INTO iwd.agent (id, state, skills) VALUES ('b', 'ready', skills(65536, 1));
SELECT err($$SELECT iwd.next_task('b')$$);
SELECT clock_timestamp() - :'t0' < interval '5 seconds' AS quick;
DELETE FROM iwd.agent WHERE id = 'b';

-- skills per agent: 256, per task, category and classification rule: 64
SELECT count(*) FROM jsonb_object_keys(iwd.upsert_agent(jsonb_build_object('id', 'wide', 'state', 'ready',
    'capacity', '{"workitem": 10}'::jsonb, 'skills', skills(256))) -> 'skills');
SELECT err(format('SELECT iwd.upsert_agent(%L)', jsonb_build_object('id', 'wider', 'skills', skills(257))));
SELECT err(format('SELECT iwd.upsert_agent(%L)',
    jsonb_build_object('id', 'x', 'capacity', (SELECT jsonb_object_agg('m' || g, 1) FROM generate_series(1, 65) g))));
SELECT err(format('SELECT iwd.upsert_agent(%L)', jsonb_build_object('id', 'x', 'skills', jsonb_build_object(repeat('k', 129), 1))));
SELECT task('sixty-four', jsonb_build_object('skills', skills(64, 1), 'priority', 1));
SELECT err(format('SELECT task(%L, %L)', 'sixty-five', jsonb_build_object('skills', skills(65))));
SELECT err(format('SELECT task(%L, %L)', 'long-skill', jsonb_build_object('skills', jsonb_build_object(repeat('k', 129), 1))));
SELECT err(format('SELECT iwd.update_task(1, %L)', jsonb_build_object('skills', skills(65))));
SELECT err(format('SELECT iwd.upsert_category(%L)', jsonb_build_object('name', 'c', 'skills', skills(65))));
SELECT err(format('SELECT iwd.upsert_rule(%L)', jsonb_build_object('kind', 'classification', 'name', 'r',
    'set', jsonb_build_object('skills', skills(65)))));
SELECT err($$SELECT iwd.upsert_rule('{"kind": "classification", "name": "r", "set": {"skills": {"a": 11}}}')$$);
SELECT err($$SELECT iwd.upsert_rule('{"kind": "classification", "name": "r", "set": {"skills": {"a": 1.5}}}')$$);
SELECT err($$SELECT iwd.upsert_rule('{"kind": "classification", "name": "r", "set": {"skills": {"": 1}}}')$$);
SELECT iwd.upsert_rule(jsonb_build_object('kind', 'classification', 'name', 'r', 'enabled', false,
    'set', jsonb_build_object('skills', skills(64)))) -> 'set' -> 'skills' ->> 's64';

-- an agent at the limit claims in queue order among the buckets it fits: single skills at its level
-- or below, pairs of its skills (levels checked), nothing above its level or outside its skills
SELECT task('s7-at-5', '{"priority": 50, "skills": {"s7": 5}}');
SELECT task('s7-at-6', '{"priority": 90, "skills": {"s7": 6}}');
SELECT task('pair', '{"priority": 40, "skills": {"s3": 2, "s250": 5}}');
SELECT task('pair-too-high', '{"priority": 80, "skills": {"s3": 2, "s251": 6}}');
SELECT task('foreign', '{"priority": 70, "skills": {"t1": 1}}');
SELECT task('foreign-pair', '{"priority": 60, "skills": {"s1": 1, "t1": 1}}');
SELECT task('none', '{"priority": 10}');
SELECT iwd.next_task('wide') ->> 'externalId';
SELECT iwd.next_task('wide') ->> 'externalId';
SELECT iwd.next_task('wide') ->> 'externalId';
SELECT iwd.next_task('wide') ->> 'externalId';
SELECT iwd.next_task('wide') ->> 'externalId';
-- more registered buckets than a pick reads (128): the agent walks the universal queue, same answers
SELECT count(*) FROM (SELECT task('p' || g, jsonb_build_object('priority', 5, 'skills',
    jsonb_build_object('s1', 1, 's' || (g + 1), 1))) FROM generate_series(1, 130) g) t;
SELECT task('late-pair', '{"priority": 45, "skills": {"s9": 1, "s10": 9}}');
SELECT task('late-single', '{"priority": 44, "skills": {"s12": 5}}');
SELECT iwd.next_task('wide') ->> 'externalId';
SELECT iwd.next_task('wide') ->> 'externalId';
SELECT iwd.next_task('wide') ->> 'externalId';
-- an agent of two skills, one of which starts 130 registered pairs: it looks its other skill up in them
SELECT iwd.upsert_agent('{"id": "duo", "state": "ready", "skills": {"s1": 1, "s5": 1}}') ->> 'id';
SELECT iwd.next_task('duo') ->> 'externalId';
-- a key registered after this session read the registry is seen by its next claim
SELECT iwd.upsert_agent('{"id": "narrow", "state": "ready", "skills": {"u1": 3, "u2": 3}}') ->> 'id';
SELECT iwd.next_task('narrow') ->> 'externalId';
SELECT task('u-pair', '{"priority": 1, "skills": {"u1": 1, "u2": 2}}');
SELECT iwd.next_task('narrow') ->> 'externalId';
SELECT key, skill, paired_with FROM iwd.routing_keys WHERE key LIKE 'u%' OR key = 's7:5' ORDER BY key;
-- a registry of more than 50,000 keys is not remembered by the sessions: their claims walk the universal
-- queue, with the same answers
INSERT INTO iwd.routing_keys (key, skill) SELECT 'v' || g || ':1', 'v' || g FROM generate_series(1, 50001) g;
SELECT task('u-single', '{"priority": 3, "skills": {"u2": 3}}');
SELECT task('u-too-high', '{"priority": 4, "skills": {"u2": 4}}');
SELECT iwd.upsert_agent('{"id": "u2-only", "state": "ready", "skills": {"u2": 3}, "capacity": {"workitem": 5}}') ->> 'id';
SELECT iwd.next_task('u2-only') ->> 'externalId';
SELECT iwd.next_task('u2-only') ->> 'externalId';

-- ids and names: 256 bytes; 3 KB values are refused (not 54000), 256 bytes are kept
SELECT err(format('SELECT task(%L, %L)', repeat('e', 3000), '{}'));
SELECT err(format('SELECT task(%L, %L)', 'cp', jsonb_build_object('capturePoint', repeat('c', 3000))));
SELECT err(format('SELECT task(%L, %L)', 'dep', jsonb_build_object('department', repeat('d', 257))));
SELECT err(format('SELECT task(%L, %L)', 'q', jsonb_build_object('queue', repeat('q', 257))));
SELECT err(format('SELECT task(%L, %L)', 'm', jsonb_build_object('mediaType', repeat('m', 257))));
SELECT err(format('SELECT task(%L, %L)', 'ra', jsonb_build_object('requestedAgent', repeat('a', 257))));
SELECT octet_length(task(repeat('e', 256), '{}'));
SELECT err(format('SELECT iwd.upsert_agent(%L)', jsonb_build_object('id', repeat('a', 3000))));
SELECT err(format('SELECT iwd.upsert_agent(%L)', jsonb_build_object('id', 'x', 'name', repeat('n', 257))));
SELECT err(format('SELECT iwd.upsert_department(%L)', jsonb_build_object('name', repeat('d', 3000))));
SELECT err(format('SELECT iwd.upsert_department(%L)', jsonb_build_object('name', 'd', 'description', repeat('d', 16385))));
SELECT err(format('SELECT iwd.upsert_calendar(%L)', jsonb_build_object('name', repeat('c', 3000))));
SELECT err(format('SELECT iwd.upsert_category(%L)', jsonb_build_object('name', repeat('c', 3000))));
SELECT err(format('SELECT iwd.upsert_category(%L)', jsonb_build_object('name', 'c', 'queue', repeat('q', 257))));
SELECT err(format('SELECT iwd.upsert_rule(%L)', jsonb_build_object('kind', 'classification', 'name', repeat('r', 257),
    'set', '{"queue": "q"}'::jsonb)));
SELECT err(format('SELECT iwd.upsert_rule(%L)', jsonb_build_object('kind', 'classification', 'name', 'r',
    'set', jsonb_build_object('category', repeat('c', 257)))));
SELECT octet_length(iwd.upsert_department(jsonb_build_object('name', repeat('d', 256))) ->> 'name');
-- a calendar lists at most 7 working days and 1000 holidays (each SLA due time looks days up in both)
SELECT err(format('SELECT iwd.upsert_calendar(%L)', jsonb_build_object('name', 'cal',
    'workDays', (SELECT jsonb_agg(1) FROM generate_series(1, 8)))));
SELECT err(format('SELECT iwd.upsert_calendar(%L)', jsonb_build_object('name', 'cal',
    'holidays', (SELECT jsonb_agg('2030-01-01'::date + g) FROM generate_series(1, 1001) g))));
SELECT jsonb_array_length(iwd.upsert_calendar(jsonb_build_object('name', 'cal', 'workDays', '[1, 2, 3, 4, 5, 6, 7]'::jsonb,
    'holidays', (SELECT jsonb_agg('2030-01-01'::date + g) FROM generate_series(1, 1000) g))) -> 'holidays');
-- conditions nest at most 32 deep
SELECT err(format('SELECT iwd.upsert_rule(%L)', jsonb_build_object('kind', 'classification', 'name', 'deep',
    'set', '{"queue": "q"}'::jsonb, 'when', (SELECT repeat('{"not": ', 33) || '{}' || repeat('}', 33))::jsonb)));
SELECT iwd.upsert_rule(jsonb_build_object('kind', 'classification', 'name', 'deep', 'enabled', false,
    'set', '{"queue": "q"}'::jsonb, 'when', (SELECT repeat('{"not": ', 32) || '{}' || repeat('}', 32))::jsonb)) ->> 'name';

-- texts: subject 16 KB, description 4 MB, attributes 64 KB; search indexes the beginning of the text,
-- so a large description captures and is found by a word near its start
SELECT err(format('SELECT task(%L, %L)', 'subj', jsonb_build_object('subject', repeat('s', 16385))));
SELECT err(format('SELECT task(%L, %L)', 'attrs', jsonb_build_object('attributes',
    jsonb_build_object('blob', repeat('a ', 40000)))));
SELECT task('big', jsonb_build_object('subject', 'quarterly report',
    'description', 'aardvark ' || (SELECT string_agg(md5(g::text), ' ') FROM generate_series(1, 70000) g)));
SELECT octet_length(iwd.get_task((SELECT id FROM iwd.task WHERE external_id = 'big')) ->> 'description') > 2000000;
SELECT t ->> 'externalId' FROM iwd.search_tasks('aardvark') t;
-- attributes written with plain SQL beyond the bound: the document still builds (values' beginning)
UPDATE iwd.task SET attributes = jsonb_build_object('notes', (SELECT string_agg(md5(g::text), ' ')
    FROM generate_series(1, 60000) g), 'tag', 'zebra') WHERE external_id = 'none';
SELECT iwd.update_task((SELECT id FROM iwd.task WHERE external_id = 'none'), '{"subject": "okapi"}') ->> 'subject';
SELECT t ->> 'externalId' FROM iwd.search_tasks('okapi') t;
SELECT length(iwd._document(NULL, repeat('word ', 1000000), NULL)::text) > 0;
-- a search query takes 1 KB: thousands of words overflowed the stack (54001)
SELECT err(format('SELECT count(*) FROM iwd.search_tasks(%L)', repeat('a ', 513)));
SELECT count(*) FROM iwd.search_tasks(repeat('a ', 512));
SELECT count(*) FROM iwd.search_tasks(repeat('a or ', 203) || 'aardvark');

DROP FUNCTION err(text);
DROP FUNCTION task(text, jsonb);
DROP FUNCTION skills(int, int);
DROP EXTENSION iwd;
