-- The event history: who, what, when, before and after, for every change; NOTIFY for listeners.
CREATE EXTENSION iwd;
SET timezone = 'UTC';
CREATE FUNCTION err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
SELECT iwd.upsert_agent('{"id": "a1", "state": "ready"}') IS NOT NULL;
SELECT iwd.create_task('{"externalId": "H1", "capturePoint": "erp", "priority": 5, "expiresAt": "2026-11-24T18:00:00Z",
                         "dueAt": "2026-11-24T11:00:00Z"}') ->> 'id';
SET iwd.simulated_time = '2026-11-24 10:05:00+00';
SELECT iwd.update_task(1, '{"subject": "hello", "priority": 6}') ->> 'priority';
SELECT iwd.hold_task(1, 'check') ->> 'status';
SELECT iwd.resume_task(1) ->> 'status';
SELECT iwd.reprioritize_task(1, 9) ->> 'priority';
SELECT iwd.next_task('a1') ->> 'id';
SELECT iwd.accept_task(1, 'a1') ->> 'status';
SELECT iwd.tick('2026-11-24 11:30:00+00') -> 'overdue';
SET iwd.simulated_time = '2026-11-24 12:00:00+00';
SELECT iwd.complete_task(1, 'a1') ->> 'status';
SELECT iwd.restart_task(1) ->> 'status';
SELECT iwd.tick('2026-11-24 18:00:00+00') -> 'expired';
SELECT * FROM iwd.task_history(1);
SELECT err('SELECT iwd.task_history(42)');
-- deferred activation
SET iwd.simulated_time = '2026-11-24 10:00:00+00';
SELECT iwd.create_task('{"externalId": "H2", "capturePoint": "erp", "activationAt": "2026-11-24T12:00:00Z"}') ->> 'status';
SELECT iwd.tick('2026-11-24 11:59:59+00') -> 'activated';
SELECT iwd.tick('2026-11-24 12:00:00+00') -> 'activated';
SELECT h ->> 'event', h ->> 'statusBefore', h ->> 'statusAfter' FROM iwd.task_history(2) h;
-- a supervisor's hold is not lifted by activation
SELECT iwd.create_task('{"externalId": "H3", "capturePoint": "erp", "activationAt": "2026-11-24T13:00:00Z"}') ->> 'status';
SELECT iwd.resume_task(3) ->> 'status';
SELECT iwd.hold_task(3, 'manual') ->> 'status';
SELECT iwd.tick('2026-11-24 14:00:00+00') -> 'activated';
SELECT iwd.get_task(3) ->> 'status';
-- expiry leaves assigned work alone
SELECT iwd.cancel_task(2) ->> 'status';
SELECT iwd.create_task('{"externalId": "H4", "capturePoint": "erp", "expiresAt": "2026-11-24T15:00:00Z"}') ->> 'status';
SET iwd.simulated_time = '2026-11-24 14:00:00+00';
SELECT iwd.next_task('a1', 7200) ->> 'externalId';
SELECT iwd.tick('2026-11-24 15:00:00+00') -> 'expired';
SELECT iwd.get_task(4) ->> 'status';
SELECT iwd.cancel_task(4) ->> 'status';

DROP FUNCTION err(text);
DROP EXTENSION iwd CASCADE;
