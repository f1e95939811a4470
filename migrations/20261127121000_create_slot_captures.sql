-- Flow "heures": what the poller last captured of each BatiSimply time slot, so a poll
-- enqueues only new, changed or vanished slots. Written in the same transaction as the
-- outbox events and the cursor of that poll.
CREATE TABLE batisync.slot_captures (
    slot_id      text        PRIMARY KEY CHECK (slot_id <> ''),
    -- Hex SHA-256 of the slot's content as captured (see src/flows/heures/slot.rs).
    content_hash text        NOT NULL CHECK (length(content_hash) = 64),
    -- Start of the slot (UTC): a missing slot is a delete only inside the watched window.
    slot_start   timestamptz NOT NULL,
    -- Who entered it and on which project, for people (console "Salariés").
    user_id      text,
    project_code text,
    status       text,
    captured_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX slot_captures_start ON batisync.slot_captures (slot_start);

COMMENT ON TABLE batisync.slot_captures IS
    'Last captured content hash of each BatiSimply time slot (flow heures).';

-- The target identity of a link (for heures: the SuiviMO key), to find two slots
-- mapping to one ledger row.
CREATE INDEX links_by_target ON batisync.links (flow, target_id);
