-- Events claimed by a worker whose lease has expired (the worker crashed or hung):
-- each key's head and the last event of its claimed run. The maintenance task puts
-- them back automatically; this shows whether it keeps up.
SELECT q.event_id AS id, q.run_end, q.flow, q.entity_key, q.locked_by, q.claimed_at, q.locked_until,
       o.attempts AS finished_attempts
FROM batisync.queue q
JOIN batisync.outbox o ON o.id = q.event_id
WHERE q.locked_by IS NOT NULL AND q.locked_until < now()
ORDER BY q.locked_until;

-- Cursors: how far each source has been read.
SELECT source, position, updated_at FROM batisync.cursors ORDER BY source;
