-- What is waiting, per flow and status, and the age of the oldest event.
-- status: waiting (behind an earlier event of the same key), pending (ready or
-- waiting for its retry time), in_flight (being delivered), dead (quarantined).
SELECT flow, status, events, oldest_age, next_attempt_at
FROM batisync.backlog
ORDER BY flow, status;
