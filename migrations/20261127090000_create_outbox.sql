-- The outbox: one row per captured change, the unit of dispatch.
-- Status life cycle:
--   waiting ──promote (oldest open event of its key)──▶ pending
--   pending ──claim──▶ in_flight ──ack──▶ done
--      ▲                  │ fail (retryable) / lease expired
--      └──────────────────┘
--   in_flight ──fail (permanent or max attempts)──▶ dead ──redrive──▶ waiting
--   waiting/pending ──a newer event of the same key arrives──▶ superseded
-- Per-key order: at most one event of a key is pending or in flight, the oldest open one.
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
);

COMMENT ON TABLE batisync.outbox IS
    'One row per captured change. Inspect with the views backlog, dead_letters, throughput.';

-- Claim scans pending events (key heads) of a flow oldest first.
CREATE INDEX outbox_pending ON batisync.outbox (flow, id) WHERE status = 'pending';
-- Promotion: the oldest open event of a key.
CREATE INDEX outbox_open_by_key ON batisync.outbox (flow, entity_key, id)
    WHERE status IN ('waiting', 'pending', 'in_flight');
-- Lease rescue.
CREATE INDEX outbox_leases ON batisync.outbox (locked_until) WHERE status = 'in_flight';
-- Dead letters and pruning.
CREATE INDEX outbox_dead ON batisync.outbox (flow, id) WHERE status = 'dead';
CREATE INDEX outbox_finished ON batisync.outbox (finished_at) WHERE status IN ('done', 'superseded');

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

-- What is waiting, per flow and status, and how old the oldest is.
CREATE VIEW batisync.backlog AS
SELECT flow,
       status,
       count(*)                                         AS events,
       min(captured_at)                                 AS oldest_captured_at,
       date_trunc('second', now() - min(captured_at))   AS oldest_age,
       min(next_attempt_at) FILTER (WHERE status = 'pending') AS next_attempt_at
FROM batisync.outbox
WHERE status IN ('waiting', 'pending', 'in_flight', 'dead')
GROUP BY flow, status;

-- Dead letters with the reason they were quarantined.
CREATE VIEW batisync.dead_letters AS
SELECT id,
       flow,
       entity_key,
       operation,
       attempts,
       last_error,
       captured_at,
       finished_at AS dead_since
FROM batisync.outbox
WHERE status = 'dead';

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
WHERE status = 'done' AND finished_at > now() - interval '1 hour'
GROUP BY flow, date_trunc('minute', finished_at);
