"""The pure checks of add-checkpoint (verifier/protocol/witness.py), status by status."""

from __future__ import annotations

import hashlib

import pytest

from tests.verifier.witness.support import ORIGIN, TestLog
from verifier.protocol.merkle import EMPTY_ROOT
from verifier.protocol.note import b64encode, generate_key, parse_note, sign_note
from verifier.protocol.witness import (
    MAX_CLOCK_SKEW,
    MAX_NOTE_SIGNATURES,
    Refusal,
    Stored,
    check_extends,
    check_signed,
    clock_behind,
    cosign_time,
    format_size,
    origin_hash,
    parse_add_checkpoint,
    trusted_keys,
)

LOG = TestLog()
KEYS = trusted_keys([LOG.signer.verifier()])


def refusal(body: bytes, stored: Stored | None = None) -> Refusal:
    with pytest.raises(Refusal) as info:
        req = parse_add_checkpoint(body)
        check_signed(req, KEYS)
        check_extends(req, stored)
    return info.value


def at(size: int, log: TestLog = LOG, timestamp: int = 0) -> Stored:
    return Stored(size, log.root(size), timestamp)


def test_a_request_parses_into_old_size_proof_and_the_note_as_submitted() -> None:
    body = LOG.body(5, 17)
    req = parse_add_checkpoint(body)
    assert (req.old, req.checkpoint.size, req.checkpoint.origin) == (5, 17, ORIGIN)
    assert req.proof == tuple(LOG.proof(5, 17)) and len(req.proof) > 1
    assert req.note == LOG.checkpoint(17)


@pytest.mark.parametrize("body", [
    b"", b"old 0\n", b"old 01\n\n", b"old -1\n\n", b"old 1 \n\n", b"new 0\n\n", b"\xff\n\n",
    b"old 0\nnot base64!\n\n", b"old 0\n" + b64encode(b"short").encode() + b"\n\n",
])
def test_malformed_bodies_are_400(body: bytes) -> None:
    assert refusal(body + LOG.checkpoint(3).encode()).status == 400


def test_more_than_63_proof_lines_are_400() -> None:
    hashes = [LOG.root(1)] * 64
    assert refusal(LOG.body(0, 3, proof=hashes)).status == 400
    assert "63" in refusal(LOG.body(0, 3, proof=hashes)).reason


def test_a_malformed_checkpoint_is_400() -> None:
    note = LOG.checkpoint(3).replace("\n3\n", "\n03\n")
    assert refusal(LOG.body(0, 3, note=note)).status == 400
    assert refusal(b"old 0\n\nexample.com/log\n3\n").status == 400


def test_a_note_with_too_many_signature_lines_is_400() -> None:
    others = [generate_key(f"other{i}") for i in range(MAX_NOTE_SIGNATURES)]
    note = LOG.checkpoint(3, others)
    assert refusal(LOG.body(0, 3, note=note)).status == 400


def test_an_unknown_origin_is_404() -> None:
    other = TestLog(generate_key("other.example/log"))
    assert refusal(other.body(0, 3)).status == 404


def test_a_checkpoint_signed_by_an_impostor_key_of_the_origin_is_403() -> None:
    impostor = TestLog(generate_key(ORIGIN))
    assert refusal(impostor.body(0, 3)).status == 403


def test_a_tampered_checkpoint_is_403() -> None:
    note = LOG.checkpoint(3).replace(b64encode(LOG.root(3)), b64encode(LOG.root(4)))
    assert refusal(LOG.body(0, 3, note=note)).status == 403


def test_signatures_by_unknown_keys_are_ignored() -> None:
    note = LOG.checkpoint(3, [generate_key("witness.example/w9")])
    req = parse_add_checkpoint(LOG.body(0, 3, note=note))
    check_signed(req, KEYS)


def test_any_trusted_key_of_the_origin_will_do_key_rotation() -> None:
    new = TestLog(generate_key(ORIGIN))
    keys = trusted_keys([LOG.signer.verifier(), new.signer.verifier()])
    for log in (LOG, new):
        check_signed(parse_add_checkpoint(log.body(0, 3)), keys)


def test_old_size_over_the_checkpoint_size_is_400() -> None:
    assert refusal(LOG.body(0, 3).replace(b"old 0", b"old 4"), at(4)).status == 400


def test_old_size_other_than_the_stored_one_is_409_with_the_stored_size() -> None:
    # Not evidence: the spec's `old 0` probe and an honest log's retry get it too.
    r = refusal(LOG.body(3, 10), at(5))
    assert (r.status, r.size, r.evidence, r.fork) == (409, 5, False, False)
    r = refusal(LOG.body(0, 10), at(5))
    assert (r.status, r.size) == (409, 5)
    assert (refusal(LOG.body(2, 10), None).size) == 0
    assert format_size(5) == b"5\n"


def test_a_fork_of_the_same_size_is_409_and_evidence() -> None:
    fork = TestLog(LOG.signer, tag="b", shared=4)
    r = refusal(fork.body(10, 10), at(10))
    assert (r.status, r.size, r.evidence, r.fork) == (409, None, True, True)
    assert "fork" in r.reason


def test_a_larger_tree_that_is_not_consistent_is_422_and_evidence() -> None:
    fork = TestLog(LOG.signer, tag="b", shared=4)
    r = refusal(fork.body(10, 20), at(10))
    assert (r.status, r.evidence, r.fork) == (422, True, False)
    # Its own proof from the forked size-10 tree does not help either.
    assert refusal(fork.body(10, 20, proof=fork.proof(10, 20)), at(10)).status == 422


def test_a_proof_from_size_zero_must_be_empty() -> None:
    assert refusal(LOG.body(0, 8, proof=[LOG.root(1)]), None).status == 422


def test_a_proof_from_the_same_size_must_be_empty() -> None:
    assert refusal(LOG.body(8, 8, proof=[LOG.root(1)]), at(8)).status == 422


def test_an_empty_tree_must_have_the_empty_root() -> None:
    fake = TestLog(LOG.signer)
    fake.leaves = []
    check_extends(parse_add_checkpoint(fake.body(0, 0)), None)
    assert fake.root(0) == EMPTY_ROOT
    bad = LOG.checkpoint(0).replace(b64encode(EMPTY_ROOT), b64encode(LOG.root(1)))
    # Re-signed by the log: a tampered note would be a 403 first.
    resigned = sign_note(parse_note(bad).text, [LOG.signer])
    assert refusal(LOG.body(0, 0, note=resigned), None).status == 422


@pytest.mark.parametrize(("old", "new"), [(0, 1), (0, 64), (1, 2), (5, 17), (16, 32),
                                          (17, 17), (63, 64)])
def test_consistent_checkpoints_pass(old: int, new: int) -> None:
    check_extends(parse_add_checkpoint(LOG.body(old, new)), at(old) if old else None)


def test_cosignature_times_never_go_back() -> None:
    assert cosign_time(100, None) == 100
    assert cosign_time(100, at(3, timestamp=90)) == 100
    assert cosign_time(1000, at(3, timestamp=1000 + MAX_CLOCK_SKEW)) == 1000 + MAX_CLOCK_SKEW
    assert not clock_behind(1000, at(3, timestamp=1000 + MAX_CLOCK_SKEW))


def test_one_clock_jump_ahead_does_not_stick_to_every_later_cosignature() -> None:
    # A cosignature made while the clock was years ahead; the clock is then fixed.
    jumped = at(3, timestamp=10**12)
    assert clock_behind(1000, jumped)
    assert cosign_time(1000, jumped) == 1000
    assert cosign_time(1000, at(3, timestamp=1001 + MAX_CLOCK_SKEW)) == 1000


def test_the_read_path_names_a_log_by_the_hash_of_its_origin() -> None:
    assert origin_hash(ORIGIN) == hashlib.sha256(b"example.com/log").hexdigest()
