-- tlog schema, version 3: witness cosignatures and the checkpoints published per quorum.
-- Two stages, as in Tessera: every append batch still writes its log-signed checkpoint
-- (`checkpoints`, "integrated"); a background task asks the policy's witnesses to cosign
-- the latest one and, once the stored cosignatures meet the quorum, writes it to
-- `published`, which is what /checkpoint serves when a witness policy is configured.

CREATE TABLE cosignatures (
    -- One valid cosignature (c2sp.org/tlog-cosignature) of an integrated checkpoint,
    -- checked against the policy's key for that witness before it is stored.
    tree_size   bigint      NOT NULL REFERENCES checkpoints (tree_size),
    key_name    text        NOT NULL,                -- the witness key's name
    key_id      bytea       NOT NULL CHECK (length(key_id) = 4),
    cosigned_at bigint      NOT NULL CHECK (cosigned_at >= 0),  -- the witness's timestamp
    line        text        NOT NULL,                -- the signature line, "— name base64\n"
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tree_size, key_name, key_id)
);

CREATE TABLE witness_state (
    -- The latest size each witness is known to have cosigned, so that a restart sends it
    -- the right `old` size instead of starting from 0 (a wrong one only costs a 409).
    key_name   text        NOT NULL,
    key_id     bytea       NOT NULL CHECK (length(key_id) = 4),
    tree_size  bigint      NOT NULL CHECK (tree_size >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_name, key_id)
);

CREATE TABLE published (
    -- Checkpoints whose cosignatures met the quorum: the log's note followed by the
    -- cosignature lines, as served by /checkpoint. Written once per size, never changed.
    tree_size    bigint      PRIMARY KEY REFERENCES checkpoints (tree_size),
    note         text        NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);
