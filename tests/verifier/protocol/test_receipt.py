"""Tests for verifier/protocol/receipt.py: c2sp.org/tlog-proof and receipts."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import rfc8785

from verifier.protocol.checkpoint import Checkpoint, CheckpointError, sign_checkpoint
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.entries.strict_json import parse_json
from verifier.protocol.merkle import ProofError
from verifier.protocol.note import NoteError, generate_key, sign_note
from verifier.protocol.receipt import (
    HEADER,
    MAX_PROOF_HASHES,
    RECEIPT_KIND,
    ReceiptError,
    TlogProof,
    format_tlog_proof,
    make_receipt,
    parse_tlog_proof,
    verify_receipt,
)
from verifier.protocol.trust import KeyTrust

LOG = generate_key("example.com/log")
TRUST = KeyTrust(LOG.verifier())
OTHER_LOG = generate_key("example.com/other-log")
PUBLISHER = generate_key("example.com/alice")
H = [hashlib.sha256(bytes([i])).digest() for i in range(MAX_PROOF_HASHES + 1)]


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _mth(leaves: list[bytes]) -> bytes:
    """MTH of RFC 6962 2.1 over leaf hashes (reference, recursive)."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 2.1.1 (reference, recursive)."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


def _entry(i: int) -> dict[str, Any]:
    fields = {
        "kind": "release/v1",
        "package": "example.com/tool",
        "version": f"1.0.{i}",
        "counter": i,
        "artifacts": [{"name": "tool.tgz", "sha256": f"{i:064x}", "size": i}],
    }
    return sign_entry(fields, PUBLISHER)


ENTRIES = [_entry(i) for i in range(7)]
LEAVES = [_leaf_hash(rfc8785.dumps(e)) for e in ENTRIES]
CHECKPOINT = sign_checkpoint(Checkpoint("example.com/log", len(LEAVES), _mth(LEAVES)), LOG)


def receipt(index: int = 3, checkpoint: str = CHECKPOINT) -> dict[str, Any]:
    return make_receipt(ENTRIES[index], index, _path(index, LEAVES), checkpoint)


def _proof_text(*lines: str, checkpoint: str = CHECKPOINT) -> str:
    return "".join(line + "\n" for line in lines) + "\n" + checkpoint


# -- tlog-proof format ----------------------------------------------------------------------------


def test_format_has_the_c2sp_layout() -> None:
    text = format_tlog_proof(5, H[:2], CHECKPOINT, extra=b"hi")
    b64 = [base64.b64encode(h).decode() for h in H[:2]]
    assert text == _proof_text(HEADER, "extra aGk=", "index 5", *b64)


@pytest.mark.parametrize("extra", [None, b"x", bytes(range(256))])
@pytest.mark.parametrize("count", [0, 1, MAX_PROOF_HASHES])
def test_format_and_parse_round_trip(extra: bytes | None, count: int) -> None:
    text = format_tlog_proof(2**63 - 1, H[:count], CHECKPOINT, extra)
    assert parse_tlog_proof(text) == TlogProof(2**63 - 1, tuple(H[:count]), CHECKPOINT, extra)


def test_cosigned_checkpoint_is_kept_verbatim() -> None:
    cosigned = CHECKPOINT + sign_note("x\n", [generate_key("w.example")]).split("\n\n")[1]
    assert parse_tlog_proof(format_tlog_proof(0, [], cosigned)).checkpoint == cosigned


def test_wrong_header_is_rejected() -> None:
    with pytest.raises(ReceiptError, match="must start with"):
        parse_tlog_proof(_proof_text("c2sp.org/tlog-proof@v2", "index 1"))


def test_missing_index_is_rejected() -> None:
    with pytest.raises(ReceiptError, match="index"):
        parse_tlog_proof(_proof_text(HEADER, base64.b64encode(H[0]).decode()))


@pytest.mark.parametrize("index", ["01", "+5", " 5", "5 ", "-1", "", "1e3", str(2**63)])
def test_non_canonical_index_is_rejected(index: str) -> None:
    with pytest.raises(ReceiptError, match="index"):
        parse_tlog_proof(_proof_text(HEADER, f"index {index}"))


def test_extra_after_index_is_rejected() -> None:
    with pytest.raises(ReceiptError):
        parse_tlog_proof(_proof_text(HEADER, "index 1", "extra aGk="))


@pytest.mark.parametrize("extra", ["", "!!", "aGl="])
def test_bad_extra_is_rejected(extra: str) -> None:
    with pytest.raises(ReceiptError, match="extra"):
        parse_tlog_proof(_proof_text(HEADER, f"extra {extra}", "index 1"))


def test_too_many_hashes_are_rejected() -> None:
    lines = [base64.b64encode(h).decode() for h in H[: MAX_PROOF_HASHES + 1]]
    with pytest.raises(ReceiptError, match="more than 63"):
        parse_tlog_proof(_proof_text(HEADER, "index 1", *lines))


@pytest.mark.parametrize(
    "line",
    [
        base64.b64encode(H[0][:31]).decode(),
        base64.b64encode(H[0] + b"\x00").decode(),
        base64.b64encode(H[0]).decode().rstrip("="),
        base64.b64encode(H[0]).decode() + " ",
        "not base64!",
    ],
)
def test_bad_hash_line_is_rejected(line: str) -> None:
    with pytest.raises(ReceiptError, match="hash"):
        parse_tlog_proof(_proof_text(HEADER, "index 1", line))


def test_non_canonical_hash_base64_is_rejected() -> None:
    good = base64.b64encode(H[0]).decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    bad = good[:-2] + alphabet[alphabet.index(good[-2]) ^ 1] + "="
    with pytest.raises(ReceiptError, match="non-canonical"):
        parse_tlog_proof(_proof_text(HEADER, "index 1", bad))


def test_missing_empty_line_is_rejected() -> None:
    with pytest.raises(ReceiptError, match="empty line"):
        parse_tlog_proof(f"{HEADER}\nindex 1\n")


def test_malformed_checkpoint_note_is_rejected() -> None:
    with pytest.raises(ReceiptError, match="checkpoint"):
        parse_tlog_proof(_proof_text(HEADER, "index 1", checkpoint="origin\n1\n"))


def test_oversized_proof_is_rejected() -> None:
    with pytest.raises(ReceiptError, match="larger than"):
        parse_tlog_proof(_proof_text(HEADER, "index 1", checkpoint="x" * (2 << 20)))


def test_format_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        format_tlog_proof(-1, [], CHECKPOINT)
    with pytest.raises(ValueError):
        format_tlog_proof(0, [H[0][:31]], CHECKPOINT)
    with pytest.raises(ValueError):
        format_tlog_proof(0, H[: MAX_PROOF_HASHES + 1], CHECKPOINT)
    with pytest.raises(ValueError):
        format_tlog_proof(0, [], CHECKPOINT, extra=b"")


# -- receipts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(ENTRIES)))
def test_receipt_verifies(index: int) -> None:
    verified = verify_receipt(receipt(index), TRUST)
    assert verified.index == index
    assert verified.release.entry == ENTRIES[index]
    assert verified.release.publisher == "example.com/alice"
    assert verified.checkpoint.size == len(ENTRIES)


def test_receipt_survives_json_round_trip() -> None:
    data = json.dumps(receipt()).encode()
    assert verify_receipt(parse_json(data), TRUST).index == 3


def test_receipt_has_kind_entry_and_proof() -> None:
    r = receipt()
    assert set(r) == {"kind", "entry", "proof"}
    assert r["kind"] == RECEIPT_KIND
    assert r["proof"].startswith(HEADER + "\nindex 3\n")


def test_receipt_with_unknown_member_is_rejected() -> None:
    r = receipt()
    r["note"] = "x"
    with pytest.raises(ReceiptError, match="unknown member"):
        verify_receipt(r, TRUST)


@pytest.mark.parametrize("member", ["kind", "entry", "proof"])
def test_receipt_with_missing_member_is_rejected(member: str) -> None:
    r = receipt()
    del r[member]
    with pytest.raises(ReceiptError, match="missing member"):
        verify_receipt(r, TRUST)


@pytest.mark.parametrize(
    ("member", "value"), [("kind", "tlog-receipt/v2"), ("entry", []), ("proof", b"x")]
)
def test_receipt_with_wrong_member_type_is_rejected(member: str, value: Any) -> None:
    r = receipt()
    r[member] = value
    with pytest.raises(ReceiptError, match=member):
        verify_receipt(r, TRUST)


def test_receipt_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(ReceiptError):
        verify_receipt([receipt()], TRUST)


def test_receipt_for_another_log_is_rejected() -> None:
    with pytest.raises(NoteError):
        verify_receipt(receipt(), KeyTrust(OTHER_LOG.verifier()))


def test_checkpoint_origin_not_the_log_key_is_rejected() -> None:
    body = Checkpoint("example.com/elsewhere", len(LEAVES), _mth(LEAVES)).body()
    with pytest.raises(CheckpointError, match="not the log"):
        verify_receipt(receipt(checkpoint=sign_note(body, [LOG])), TRUST)


def test_tampered_entry_is_rejected() -> None:
    r = receipt()
    r["entry"]["version"] = "6.6.6"
    with pytest.raises(EntryError) as caught:
        verify_receipt(r, TRUST)
    assert caught.value.code == "bad_signature"


def test_entry_swapped_for_another_logged_entry_is_rejected() -> None:
    r = receipt(3)
    r["entry"] = ENTRIES[4]
    with pytest.raises(ProofError):
        verify_receipt(r, TRUST)


def test_wrong_index_is_rejected() -> None:
    r = make_receipt(ENTRIES[3], 2, _path(3, LEAVES), CHECKPOINT)
    with pytest.raises(ProofError):
        verify_receipt(r, TRUST)


def test_index_beyond_tree_size_is_rejected() -> None:
    r = make_receipt(ENTRIES[3], len(LEAVES), _path(3, LEAVES), CHECKPOINT)
    with pytest.raises(ProofError):
        verify_receipt(r, TRUST)


def test_every_flipped_proof_bit_is_rejected() -> None:
    path = _path(5, LEAVES)
    for i, h in enumerate(path):
        for bit in range(0, 256, 37):
            flipped = bytearray(h)
            flipped[bit // 8] ^= 1 << (bit % 8)
            bad = [*path[:i], bytes(flipped), *path[i + 1 :]]
            with pytest.raises(ProofError):
                verify_receipt(make_receipt(ENTRIES[5], 5, bad, CHECKPOINT), TRUST)


def test_truncated_or_extended_proof_is_rejected() -> None:
    path = _path(5, LEAVES)
    for bad in (path[:-1], [*path, H[0]]):
        with pytest.raises(ProofError):
            verify_receipt(make_receipt(ENTRIES[5], 5, bad, CHECKPOINT), TRUST)


def test_receipt_against_checkpoint_of_other_tree_is_rejected() -> None:
    other = sign_checkpoint(Checkpoint("example.com/log", len(LEAVES), H[0]), LOG)
    with pytest.raises(ProofError):
        verify_receipt(receipt(checkpoint=other), TRUST)
