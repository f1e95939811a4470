-- Everything about one entity (a chantier code, a time-slot id): its events, newest
-- first, and every failed attempt. Replace the key below.
\set key '''00000042'''
SELECT o.id, o.flow, o.status, o.operation, o.attempts, o.captured_at, o.finished_at,
       o.outcome, o.last_error
FROM batisync.events o
WHERE o.entity_key = :key
ORDER BY o.id DESC
LIMIT 50;

SELECT f.event_id, f.attempt, f.failed_at, f.kind, f.message
FROM batisync.outbox_failures f
JOIN batisync.outbox o ON o.id = f.event_id
WHERE o.entity_key = :key
ORDER BY f.id DESC
LIMIT 50;
