-- Dead letters carry their reason as data: a stable code and its parameters, written by
-- the flow that refused the event, read by re-drive and the console (never the message).
ALTER TABLE batisync.dead_events
    ADD COLUMN reason        text  NOT NULL DEFAULT 'other',
    ADD COLUMN reason_params jsonb NOT NULL DEFAULT '{}';
COMMENT ON COLUMN batisync.dead_events.reason IS
    'Why the event is dead: employee-unmapped, employee-ambiguous, unknown-chantier, '
    'suivimo-collision, suivimo-duplicates, too-long, invalid-data, refused, credentials, '
    'gave-up or other. Its parameters are in reason_params.';
CREATE INDEX dead_events_reason ON batisync.dead_events (flow, reason, event_id);

-- Dead letters recorded before this version only have their message. The two kinds
-- that re-drive by themselves once fixed are recognised once, here, from the exact
-- words the previous version wrote; every other one stays 'other'.
UPDATE batisync.dead_events d
SET reason = 'employee-unmapped',
    reason_params = jsonb_build_object(
        'user_id', substring(o.last_error FROM 'utilisateur BatiSimply ([0-9A-Za-z-]+)'))
FROM batisync.outbox o
WHERE o.id = d.event_id AND o.last_error LIKE 'salarié introuvable / unknown employee%';

UPDATE batisync.dead_events d
SET reason = 'unknown-chantier',
    reason_params = jsonb_build_object(
        'project_id', substring(o.last_error FROM 'le projet BatiSimply ([0-9]+)')::bigint)
FROM batisync.outbox o
WHERE o.id = d.event_id AND o.last_error LIKE 'chantier introuvable / unknown chantier%';

CREATE OR REPLACE VIEW batisync.dead_letters AS
SELECT o.id,
       o.flow,
       o.entity_key,
       o.operation,
       o.attempts,
       o.last_error,
       o.captured_at,
       d.dead_since,
       d.reason,
       d.reason_params
FROM batisync.dead_events d
JOIN batisync.outbox o ON o.id = d.event_id;
