-- The SQL rate the REST capture is compared with: one create_task per transaction.
\set n random(1, 1000000000)
SELECT iwd.create_task(jsonb_build_object('externalId', 'P-' || :n || '-' || :client_id, 'capturePoint', 'pgbench',
                                          'subject', 'bench task', 'attributes', jsonb_build_object('amount', :n % 5000)));
