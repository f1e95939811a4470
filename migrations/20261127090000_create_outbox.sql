-- The outbox: one row per captured change, the unit of dispatch. Rows are inserted
-- once, then only updated in place: no index mentions a column that changes after
-- capture, so status changes are HOT updates (no index writes). The dispatch state of
-- each entity key lives in the small `queue` table below.
--
-- Status life cycle of an event:
--   waiting ──claim (once it is its key's head in `queue`)──▶ in_flight
--   in_flight ──ack──▶ done
--   in_flight ──fail (retryable) / lease expired / shutdown──▶ pending (tried again)
--   in_flight ──fail (permanent or max attempts)──▶ dead ──redrive──▶ pending
--   waiting ──a newer event of the same key arrives──▶ superseded
-- Per-key order: only the key's head (its oldest open event, named by `queue`) is ever
-- claimed. Views show a waiting head as pending.
CREATE TABLE batisync.outbox (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow               text        NOT NULL CHECK (flow <> ''),
    entity_key         text        NOT NULL CHECK (entity_key <> ''),
    source_version     text        NOT NULL,
    operation          text        NOT NULL CHECK (operation IN ('upsert', 'delete')),
    payload            jsonb       NOT NULL,
    source_modified_at timestamptz,
    status             text        NOT NULL DEFAULT 'waiting'
                       CHECK (status IN ('waiting', 'pending', 'in_flight', 'done', 'dead', 'superseded')),
    attempts           integer     NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    locked_by          text,
    locked_until       timestamptz,
    last_error         text,
    outcome            text,
    superseded_by      bigint,
    captured_at        timestamptz NOT NULL DEFAULT now(),
    first_attempt_at   timestamptz,
    finished_at        timestamptz,
    -- Capturing the same change twice (a poller re-reading after a crash) is a no-op.
    CONSTRAINT outbox_capture_key UNIQUE (flow, entity_key, source_version)
) WITH (fillfactor = 50);

COMMENT ON TABLE batisync.outbox IS
    'One row per captured change. Inspect with the views backlog, dead_letters, throughput.';

-- The events of one key in order: finding a key's next event.
CREATE INDEX outbox_by_key ON batisync.outbox (flow, entity_key, id);
-- Pruning by age; capture time never changes and grows with the table.
CREATE INDEX outbox_captured_brin ON batisync.outbox USING brin (captured_at);

-- One row per entity key that has open events: which event is its head, and the
-- dispatch state of that head. A claim pushes `next_attempt_at` to the end of its
-- lease, so an expired lease makes the head due again by itself; claims and retries
-- change no indexed column (HOT updates), only moving the head to the next event does.
CREATE TABLE batisync.queue (
    flow             text        NOT NULL,
    entity_key       text        NOT NULL,
    event_id         bigint      NOT NULL,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    locked_by        text,
    locked_until     timestamptz,
    PRIMARY KEY (flow, entity_key)
) WITH (fillfactor = 50);
-- Claim: heads of a flow, oldest event first. (Lease rescue scans the queue: it holds
-- one row per key with open events, so it stays small.)
CREATE INDEX queue_heads ON batisync.queue (flow, event_id);

-- Quarantined events, with why.
CREATE TABLE batisync.dead_events (
    event_id   bigint      PRIMARY KEY REFERENCES batisync.outbox (id) ON DELETE CASCADE,
    flow       text        NOT NULL,
    dead_since timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_events_flow ON batisync.dead_events (flow, event_id);

-- Every failed attempt, for the console and for support.
CREATE TABLE batisync.outbox_failures (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id  bigint      NOT NULL REFERENCES batisync.outbox (id) ON DELETE CASCADE,
    attempt   integer     NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    kind      text        NOT NULL,
    message   text        NOT NULL
);
CREATE INDEX outbox_failures_event ON batisync.outbox_failures (event_id);

-- Source watermarks (Change Tracking version, modified-since timestamp, ...).
CREATE TABLE batisync.cursors (
    source     text        PRIMARY KEY,
    position   jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Source key <-> target identity, and what was last applied there.
CREATE TABLE batisync.links (
    flow                text        NOT NULL,
    source_key          text        NOT NULL,
    target_id           text,
    last_event_id       bigint,
    last_source_version text,
    last_hash           text,
    target_modified_at  timestamptz,
    state               jsonb,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow, source_key)
);

-- Every latest-modification-wins decision where both sides had changed.
CREATE TABLE batisync.conflicts (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow               text        NOT NULL,
    entity_key         text        NOT NULL,
    event_id           bigint      REFERENCES batisync.outbox (id) ON DELETE SET NULL,
    decided_at         timestamptz NOT NULL DEFAULT now(),
    winner             text        NOT NULL CHECK (winner IN ('source', 'target')),
    rule               text        NOT NULL,
    source_modified_at timestamptz,
    target_modified_at timestamptz,
    source_state       jsonb,
    target_state       jsonb
);
CREATE INDEX conflicts_recent ON batisync.conflicts (decided_at DESC);

-- Views for people ---------------------------------------------------------------

-- What is waiting, per flow and status, and how old the oldest is. Open events are all
-- at or after the oldest head in the queue, so only that tail of the outbox is read.
CREATE VIEW batisync.backlog AS
SELECT o.flow,
       CASE WHEN o.status = 'waiting' AND q.event_id IS NOT NULL THEN 'pending'
            ELSE o.status END                           AS status,
       count(*)                                         AS events,
       min(o.captured_at)                               AS oldest_captured_at,
       date_trunc('second', now() - min(o.captured_at)) AS oldest_age,
       min(q.next_attempt_at)                           AS next_attempt_at
FROM batisync.outbox o
LEFT JOIN batisync.queue q ON q.event_id = o.id AND q.flow = o.flow AND q.entity_key = o.entity_key
WHERE o.id >= (SELECT coalesce(min(event_id), 9223372036854775807) FROM batisync.queue)
  AND o.status IN ('waiting', 'pending', 'in_flight')
GROUP BY 1, 2
UNION ALL
SELECT d.flow, 'dead', count(*), min(o.captured_at),
       date_trunc('second', now() - min(o.captured_at)), NULL
FROM batisync.dead_events d JOIN batisync.outbox o ON o.id = d.event_id
GROUP BY d.flow;

-- Dead letters with the reason they were quarantined.
CREATE VIEW batisync.dead_letters AS
SELECT o.id,
       o.flow,
       o.entity_key,
       o.operation,
       o.attempts,
       o.last_error,
       o.captured_at,
       d.dead_since
FROM batisync.dead_events d
JOIN batisync.outbox o ON o.id = d.event_id;

-- Deliveries per minute over the last hour, with capture-to-delivery latency.
CREATE VIEW batisync.throughput AS
SELECT flow,
       date_trunc('minute', finished_at) AS minute,
       count(*)                          AS delivered,
       round((percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM finished_at - captured_at)) * 1000)::numeric, 1) AS p50_latency_ms,
       round((percentile_cont(0.99) WITHIN GROUP (
           ORDER BY extract(epoch FROM finished_at - captured_at)) * 1000)::numeric, 1) AS p99_latency_ms
FROM batisync.outbox
WHERE captured_at > now() - interval '1 day'
  AND status = 'done' AND finished_at > now() - interval '1 hour'
GROUP BY flow, date_trunc('minute', finished_at);
