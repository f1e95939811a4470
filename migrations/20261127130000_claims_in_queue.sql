-- Claims live in `queue` only (see README "Performance" for the measured effect).
--
-- Before: a claim wrote the claimed event's outbox row (status in_flight, lease,
-- attempts + 1), and every outcome wrote it again.
-- Now:
-- - a claim writes only the key's `queue` row (lease: locked_by, locked_until, claimed_at); the
--   attempt being made is `outbox.attempts + 1`, written with the outcome (or by the
--   lease rescue, so a worker that crashes still uses up an attempt);
-- - "in flight" is derived: an open event that is its key's head under an unexpired
--   lease. The view `events` shows every event with that derived status.
-- - claims take keys in the order of `queue.position`: the id of the head the key had
--   when it entered the queue, or when its head moved to an event captured after the
--   previous one was claimed. Events that were already waiting behind an event being
--   delivered keep the key's place, so moving the head to them changes no indexed
--   column (a HOT update, no index write); newer events go to the back of the line.
--   `queue_heads` (flow, event_id) is replaced by `queue_order` (flow, position).
--   Measured: with 1,000 keys of 100 events each, the index on event_id (rewritten at
--   each head move) cost about a quarter of the drain; without any index, claims scan
--   the whole queue and a catch-up over 20,000 keys was 15-25 % slower.

-- Claims made under the previous scheme end now; their events are due again (the
-- attempt was already counted when they were claimed).
UPDATE batisync.outbox SET status = 'pending' WHERE status = 'in_flight';
UPDATE batisync.queue
SET locked_by = NULL, locked_until = NULL, next_attempt_at = now()
WHERE locked_by IS NOT NULL;

ALTER TABLE batisync.queue ADD COLUMN claimed_at timestamptz;
ALTER TABLE batisync.queue ADD COLUMN position bigint;
UPDATE batisync.queue SET position = event_id;
ALTER TABLE batisync.queue ALTER COLUMN position SET NOT NULL;
DROP INDEX batisync.queue_heads;
CREATE INDEX queue_order ON batisync.queue (flow, position);

ALTER TABLE batisync.outbox DROP COLUMN locked_by, DROP COLUMN locked_until;
ALTER TABLE batisync.outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE batisync.outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('waiting', 'pending', 'done', 'dead', 'superseded'));

COMMENT ON COLUMN batisync.outbox.status IS
    'waiting, pending (a retry is scheduled, or re-driven), done, dead, superseded; '
    'the view batisync.events also shows pending heads and in_flight claims';
COMMENT ON COLUMN batisync.outbox.attempts IS
    'Finished attempts (delivered, failed, or lost with an expired lease)';

-- Every event with the status a person expects: `in_flight` while its worker holds the
-- lease, `pending` when it is its key's head (ready, or waiting for its retry time),
-- `waiting` when an earlier event of its key goes first.
CREATE VIEW batisync.events AS
SELECT o.id,
       o.flow,
       o.entity_key,
       o.source_version,
       o.operation,
       o.payload,
       o.source_modified_at,
       CASE WHEN q.event_id IS NULL OR o.status NOT IN ('waiting', 'pending') THEN o.status
            WHEN q.locked_by IS NOT NULL AND q.locked_until > now() THEN 'in_flight'
            ELSE 'pending' END                              AS status,
       o.attempts,
       CASE WHEN q.event_id IS NOT NULL AND q.locked_by IS NULL THEN q.next_attempt_at
            ELSE o.next_attempt_at END                      AS next_attempt_at,
       q.locked_by,
       q.locked_until,
       o.last_error,
       o.outcome,
       o.superseded_by,
       o.captured_at,
       coalesce(o.first_attempt_at, q.claimed_at)          AS first_attempt_at,
       o.finished_at
FROM batisync.outbox o
LEFT JOIN batisync.queue q
       ON q.flow = o.flow AND q.entity_key = o.entity_key AND q.event_id = o.id;

COMMENT ON VIEW batisync.events IS
    'Every event with its live status (waiting, pending, in_flight, done, dead, superseded)';

CREATE OR REPLACE VIEW batisync.backlog AS
SELECT o.flow,
       CASE WHEN q.event_id IS NULL THEN o.status
            WHEN q.locked_by IS NOT NULL AND q.locked_until > now() THEN 'in_flight'
            ELSE 'pending' END                          AS status,
       count(*)                                         AS events,
       min(o.captured_at)                               AS oldest_captured_at,
       date_trunc('second', now() - min(o.captured_at)) AS oldest_age,
       min(q.next_attempt_at)                           AS next_attempt_at
FROM batisync.outbox o
LEFT JOIN batisync.queue q ON q.event_id = o.id AND q.flow = o.flow AND q.entity_key = o.entity_key
WHERE o.id >= (SELECT coalesce(min(event_id), 9223372036854775807) FROM batisync.queue)
  AND o.status IN ('waiting', 'pending')
GROUP BY 1, 2
UNION ALL
SELECT d.flow, 'dead', count(*), min(o.captured_at),
       date_trunc('second', now() - min(o.captured_at)), NULL
FROM batisync.dead_events d JOIN batisync.outbox o ON o.id = d.event_id
GROUP BY d.flow;
