-- Row hashes of the last snapshot-diff capture of a Batigest table (used where SQL Server
-- Change Tracking is off). Written in the same transaction as the outbox events and the
-- cursor of that capture, so a crash never loses or double-counts a change.
CREATE TABLE batisync.snapshot_rows (
    source     text        NOT NULL CHECK (source <> ''),
    row_key    text        NOT NULL,
    -- Hex SHA-256 of the canonical row (see src/batigest/value.rs).
    row_hash   text        NOT NULL CHECK (length(row_hash) = 64),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, row_key)
);

COMMENT ON TABLE batisync.snapshot_rows IS
    'Hash per row of the last snapshot diff of a Batigest table (source = batigest:<schema>.<table>).';
