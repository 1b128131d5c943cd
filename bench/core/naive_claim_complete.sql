-- The hand-written queue's claim (one UPDATE with SKIP LOCKED) and completion: two transactions.
\set agent random(1, 500)
UPDATE naive_tasks SET status = 'assigned', assigned_to = 'agent' || :agent
WHERE id = (SELECT id FROM naive_tasks WHERE status = 'queued'
            AND skill = ANY ('{skill1,skill2,skill3,skill4,skill5,skill6,skill7,skill8,skill9,skill10,skill11,skill12,skill13,skill14,skill15,skill16,skill17,skill18,skill19,skill20,skill21,skill22,skill23,skill24,skill25,skill26,skill27,skill28,skill29,skill30,skill31,skill32,skill33,skill34,skill35,skill36,skill37,skill38,skill39,skill40,skill41,skill42,skill43,skill44,skill45,skill46,skill47,skill48,skill49,skill50}')
            ORDER BY priority DESC, created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id AS task_id \gset
UPDATE naive_tasks SET status = 'completed' WHERE id = :task_id;
