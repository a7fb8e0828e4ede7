-- tlog schema, version 1.
-- The tree is kept as C2SP tiles (one row per tile), not one row per node. Integrated
-- tree state is the latest row of `checkpoints`: entries, tiles and that checkpoint are
-- always written in the same transaction, so they can never disagree after a crash.

CREATE TABLE schema_version (
    -- A single row: the compatibility version of this database, checked at startup.
    onerow  boolean PRIMARY KEY DEFAULT true CHECK (onerow),
    version integer NOT NULL
);

CREATE TABLE entries (
    idx       bigint PRIMARY KEY CHECK (idx >= 0),   -- position in the log, dense from 0
    leaf      bytea  NOT NULL,                        -- the JCS entry bytes, served verbatim
    leaf_hash bytea  NOT NULL UNIQUE                  -- SHA-256(0x00 || leaf): dedup key
              CHECK (length(leaf_hash) = 32),
    package   text   NOT NULL,                        -- copied out of the entry for lookups
    version   text   NOT NULL,
    CONSTRAINT entries_package_version UNIQUE (package, version)
);
-- Paged listing of one package's releases in log order.
CREATE INDEX entries_package_idx ON entries (package, idx);

CREATE TABLE tiles (
    level smallint NOT NULL CHECK (level >= 0),       -- tile level L (tree level 8*L)
    idx   bigint   NOT NULL CHECK (idx >= 0),         -- tile number N
    data  bytea    NOT NULL                           -- 32..8192 bytes; 8192 = full, immutable
          CHECK (length(data) BETWEEN 32 AND 8192 AND length(data) % 32 = 0),
    PRIMARY KEY (level, idx)
);

CREATE TABLE checkpoints (
    tree_size  bigint PRIMARY KEY CHECK (tree_size >= 0),  -- every size the log published
    root       bytea  NOT NULL CHECK (length(root) = 32),
    note       text   NOT NULL,                            -- the signed note, byte-exact
    created_at timestamptz NOT NULL DEFAULT now()
);
