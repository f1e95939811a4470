-- Events claimed by a worker whose lease has expired (the worker crashed or hung).
-- The maintenance task puts them back automatically; this shows whether it keeps up.
SELECT id, flow, entity_key, locked_by, locked_until, attempts
FROM batisync.outbox
WHERE status = 'in_flight' AND locked_until < now()
ORDER BY locked_until;

-- Cursors: how far each source has been read.
SELECT source, position, updated_at FROM batisync.cursors ORDER BY source;
