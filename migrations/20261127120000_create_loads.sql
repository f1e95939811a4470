-- Full loads: one row per full snapshot a poller enqueued (first run, `batisync resync`,
-- a cursor too old for Change Tracking). Written in the same transaction as the
-- snapshot's events, so a load exists exactly when its events do.
--
-- The events of a load are the outbox rows of `flow` with an id in
-- [first_event_id, last_event_id]: a flow has one poller at a time (advisory lock), so
-- no other capture of the flow interleaves with the snapshot's single insert. Progress
-- is computed from their statuses (done and superseded count as done); a load is
-- finished, and `finished_at` set, once none of them is waiting, pending or in flight.
CREATE TABLE batisync.loads (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow           text        NOT NULL CHECK (flow <> ''),
    -- The cursor name of the source that was read in full.
    source         text        NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    -- Events the snapshot stored.
    total          bigint      NOT NULL CHECK (total >= 0),
    -- NULL when the snapshot stored no event (the load is then finished at once).
    first_event_id bigint,
    last_event_id  bigint,
    finished_at    timestamptz,
    -- Dead letters among the load's events when it finished.
    dead           bigint,
    CHECK ((first_event_id IS NULL) = (last_event_id IS NULL))
);

COMMENT ON TABLE batisync.loads IS
    'Full snapshots enqueued per flow (initial load, resync); progress from the outbox rows in their id range.';

-- The latest load of a flow, and the running ones.
CREATE INDEX loads_by_flow ON batisync.loads (flow, id);
