-- tlog schema, version 4: witnessed time that keeps advancing on an idle log, and
-- publication per witness policy.
--
-- An idle log's latest checkpoint stays the same size, so a client's --max-age would fail
-- unless the log keeps asking its witnesses to cosign that size again: a newer
-- cosignature replaces the stored one of its (size, key) (tlog.store.cosigned), and the
-- same size is published again with them in `latest_note`. `first_note` keeps the note
-- as first published for the size: /v1/checkpoints/cosigned serves it, since a
-- publisher's cooldown (--min-age) counts from the earliest time the quorum cosigned.
--
-- Rows are per policy (`policy_id`, SHA-256 of the quorum rule, tlog.config.quorum_rule):
-- after the operator changes the policy, the log serves only notes built under the
-- current one and publishes again from stored cosignatures. Rows of version 3 get the
-- empty ID, which no policy has: they are kept, never served again.

ALTER TABLE published DROP CONSTRAINT published_pkey;
ALTER TABLE published RENAME COLUMN note TO first_note;
ALTER TABLE published
    ADD COLUMN policy_id    bytea       NOT NULL DEFAULT '\x'::bytea,
    ADD COLUMN latest_note  text,
    -- Policy.fresh_time of latest_note (0 when the quorum is "none"): a note replaces
    -- latest_note only when fresher, whichever process of the log writes it, and when.
    ADD COLUMN fresh_time   bigint      NOT NULL DEFAULT 0,
    ADD COLUMN refreshed_at timestamptz NOT NULL DEFAULT now();
UPDATE published SET latest_note = first_note;
ALTER TABLE published ALTER COLUMN latest_note SET NOT NULL;
ALTER TABLE published ALTER COLUMN policy_id DROP DEFAULT;
ALTER TABLE published ADD PRIMARY KEY (policy_id, tree_size);
