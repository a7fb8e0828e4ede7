-- tlog schema, version 5: lifecycle statements (rollout/v1, halt/v1, yank/v1, resume/v1).
--
-- A lifecycle entry names a release by package and version, and those columns are filled
-- for it too, so that GET /v1/entries?package=P lists a package's releases and the
-- statements about them in log order (index entries_package_idx). One (package, version)
-- has one release but may have many statements: the uniqueness of (package, version) now
-- holds for releases only (one artifact set per version, as before).
ALTER TABLE entries DROP CONSTRAINT entries_package_version;
CREATE UNIQUE INDEX entries_release_version ON entries (package, version)
    WHERE kind = 'release/v1';

-- Registry entries are "none of the other kinds" (tlog.store.postgres.SQL_IS_REGISTRY,
-- built from the KINDS table): the partial index must carry the same predicate for
-- PostgreSQL to plan the registry queries on it. Lifecycle statements are not registry
-- entries and are never replayed as such.
DROP INDEX entries_registry;
CREATE INDEX entries_registry ON entries (idx)
    WHERE kind NOT IN ('release/v1', 'rollout/v1', 'halt/v1', 'yank/v1', 'resume/v1');
