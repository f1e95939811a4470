-- Dead letters: events quarantined after a permanent error or too many attempts,
-- with the reason. Re-drive them after fixing the cause:
--   batisync outbox redrive ID...   or   batisync outbox redrive --all-dead
SELECT id, flow, entity_key, attempts, dead_since, last_error
FROM batisync.dead_letters
ORDER BY dead_since DESC
LIMIT 100;
