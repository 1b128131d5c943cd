-- Capture one task per transaction (single iwd.create_task at N clients).
\set r random(1, 2000000000)
SELECT iwd.create_task(jsonb_build_object('externalId', 'P' || :client_id || '-' || :r, 'capturePoint', 'pgbench',
                                          'category', 'cat' || (1 + :r % 20), 'priority', :r % 100,
                                          'skills', jsonb_build_object('skill' || (1 + :r % 50), 1 + :r % 3))) IS NOT NULL;
