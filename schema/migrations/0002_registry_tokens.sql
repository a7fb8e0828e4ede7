-- tlog schema, version 2: entry kinds beyond release/v1 (the publisher registry),
-- release counters, and the audit trail of submission tokens.

-- Which kind each entry is; registry entries (publisher/v1, keys/v1, revoke/v1) have no
-- package or version, and are replayed at startup to know who may publish what.
ALTER TABLE entries ADD COLUMN kind text NOT NULL DEFAULT 'release/v1';
ALTER TABLE entries ALTER COLUMN package DROP NOT NULL;
ALTER TABLE entries ALTER COLUMN version DROP NOT NULL;
-- The release counter, when the entry has one: "registered" logs refuse a counter that
-- does not grow within a package.
ALTER TABLE entries ADD COLUMN counter bigint CHECK (counter >= 0);
CREATE INDEX entries_registry ON entries (idx) WHERE kind <> 'release/v1';
CREATE INDEX entries_package_counter ON entries (package, counter) WHERE counter IS NOT NULL;

CREATE TABLE tokens (
    -- One row per submission token ever issued: the audit trail of issuance and the
    -- revocation list. A token is valid only while its row exists and is not revoked.
    jti        text        PRIMARY KEY,              -- the token's id (JWT "jti")
    publisher  text        NOT NULL,                 -- JWT "sub": who may submit with it
    scopes     text[]      NOT NULL,                 -- package patterns it may submit for
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    issued_by  text        NOT NULL,                 -- the operator identity that issued it
    revoked_at timestamptz,
    revoked_by text
);
