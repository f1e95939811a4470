-- Dead letters: events quarantined after a permanent error or too many attempts,
-- with their reason code (employee-unmapped, unknown-chantier, too-long, refused,
-- credentials, gave-up, ...), its parameters and the message. Re-drive them after
-- fixing the cause:
--   batisync outbox redrive ID...   or   batisync outbox redrive --all-dead
SELECT id, flow, entity_key, attempts, dead_since, reason, reason_params, last_error
FROM batisync.dead_letters
ORDER BY dead_since DESC
LIMIT 100;
