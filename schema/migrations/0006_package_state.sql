-- tlog schema, version 6: the package state map (verifier.protocol.statemap).
--
-- Every batch ends with a map-root/v1 entry written by the log itself: the root of a sparse
-- Merkle tree mapping each package to the hash of its state. The tree's nodes are stored
-- here by their hash, so a node shared by many roots is stored once and a proof can be
-- answered against the root of any checkpoint, old or new, by walking down from that root.
-- Rows are only ever added, in the append transaction of the batch whose root needs them.
CREATE TABLE map_nodes (
    hash bytea PRIMARY KEY CHECK (length(hash) = 32),
    data bytea NOT NULL CHECK (length(data) = 65)   -- 'N' || left || right, 'L' || key || value
);

-- map-root/v1 entries are neither releases nor registry entries: the partial index of
-- registry entries (tlog.store.postgres.SQL_IS_REGISTRY) leaves them out too.
DROP INDEX entries_registry;
CREATE INDEX entries_registry ON entries (idx)
    WHERE kind NOT IN ('release/v1', 'rollout/v1', 'halt/v1', 'yank/v1', 'resume/v1',
                       'map-root/v1');
