-- Runs: one row per poll that captured at least one event, written in the poll's own
-- transaction (like `batisync.loads`), so a run exists exactly when its events do.
--
-- The events of a run are the outbox rows of `flow` with an id in
-- [first_event_id, last_event_id]: a flow has one poller at a time (advisory lock), so
-- no other capture of the flow interleaves with the poll's insert. The journal computes
-- each run's figures (delivered, superseded, retried, dead, conflicts, open, duration)
-- from those rows; nothing here is kept in step by hand. Rows older than the outbox
-- retention are pruned by the maintenance task.
CREATE TABLE batisync.runs (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow           text        NOT NULL CHECK (flow <> ''),
    started_at     timestamptz NOT NULL DEFAULT now(),
    -- Events the poll stored (at least one: an empty poll is not a run).
    total          bigint      NOT NULL CHECK (total > 0),
    first_event_id bigint      NOT NULL,
    last_event_id  bigint      NOT NULL CHECK (last_event_id >= first_event_id)
);

COMMENT ON TABLE batisync.runs IS
    'Polls that captured events, per flow; figures from the outbox rows in their id range.';

-- Recent runs of a flow (the journal), and pruning by age.
CREATE INDEX runs_by_flow ON batisync.runs (flow, id);
CREATE INDEX runs_started_at ON batisync.runs (started_at);

-- A run's conflicts are found by event id.
CREATE INDEX conflicts_event ON batisync.conflicts (event_id);
