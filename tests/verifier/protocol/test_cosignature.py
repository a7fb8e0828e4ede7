"""Witness cosignatures (c2sp.org/tlog-cosignature, Ed25519 cosignature/v1, key type 0x04)."""

from __future__ import annotations

import base64
import hashlib
import struct

import nacl.signing
import pytest

from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.cosignature import (
    MAX_TIMESTAMP,
    CosignatureSigner,
    CosignatureVerifier,
    cosigned_message,
    generate_witness_key,
    parse_witness_private_key,
    parse_witness_vkey,
    verify_cosignature,
)
from verifier.protocol.note import NoteError, Signature, generate_key, parse_note, parse_vkey

LOG = generate_key("example.com/behind-the-sofa")
WITNESS = generate_witness_key("witness.example.com/w1")
BODY = Checkpoint(LOG.name, 20852163, bytes(range(32))).body()
TS = 1679315147


def test_key_id_is_sha256_of_name_newline_type_4_and_key() -> None:
    seed = bytes(range(32))
    public = bytes(nacl.signing.SigningKey(seed).verify_key)
    expected = hashlib.sha256(b"w.example\n\x04" + public).digest()[:4]
    signer = CosignatureSigner("w.example", expected, seed)
    assert signer.verifier().key_id == expected
    encoded = base64.b64encode(bytes([4]) + public).decode()
    assert signer.verifier().text() == f"w.example+{expected.hex()}+{encoded}"
    # The same key as a note key (type 0x01) has another ID: the type byte is committed to.
    assert hashlib.sha256(b"w.example\n\x01" + public).digest()[:4] != expected


def test_a_wrong_key_id_is_refused() -> None:
    v = WITNESS.verifier()
    with pytest.raises(NoteError, match="does not match"):
        CosignatureVerifier(v.name, bytes(4), v.public_key)
    with pytest.raises(NoteError, match="does not match"):
        CosignatureSigner(WITNESS.name, bytes(4), WITNESS.seed)


def test_vkey_and_private_key_round_trip() -> None:
    v = WITNESS.verifier()
    assert parse_witness_vkey(v.text()) == v
    again = parse_witness_private_key(WITNESS.text())
    assert again == WITNESS and again.verifier() == v
    assert WITNESS.seed.hex() not in repr(WITNESS)


def _retyped(text: str, type_byte: int) -> str:
    """The key text with another type byte (base64 may hold '+': split from the left)."""
    parts = text.split("+", 4 if text.startswith("PRIVATE+KEY+") else 2)
    raw = base64.b64decode(parts[-1])
    return "+".join([*parts[:-1], base64.b64encode(bytes([type_byte]) + raw[1:]).decode()])


@pytest.mark.parametrize("type_byte", [0x01, 0x02, 0x05, 0xFF])
def test_a_key_of_another_type_is_not_a_witness_key(type_byte: int) -> None:
    with pytest.raises(NoteError, match="malformed key"):
        parse_witness_vkey(_retyped(WITNESS.verifier().text(), type_byte))
    with pytest.raises(NoteError, match="malformed key"):
        parse_witness_private_key(_retyped(WITNESS.text(), type_byte))


def test_a_log_vkey_is_not_a_witness_key_and_a_witness_vkey_is_not_a_log_key() -> None:
    with pytest.raises(NoteError, match=r"an Ed25519 note key .type 0x01."):
        parse_witness_vkey(LOG.verifier().text())
    with pytest.raises(NoteError, match=r"a cosignature/v1 witness key .type 0x04."):
        parse_vkey(WITNESS.verifier().text())


def test_a_private_key_whose_id_is_of_another_key_is_refused() -> None:
    other = generate_witness_key(WITNESS.name)
    private, key, name, _, seed = WITNESS.text().split("+", 4)
    forged = "+".join([private, key, name, other.key_id.hex(), seed])
    with pytest.raises(NoteError, match="does not match"):
        parse_witness_private_key(forged)
    with pytest.raises(NoteError, match="PRIVATE"):
        parse_witness_private_key(WITNESS.verifier().text())


def test_the_signed_message_is_the_header_time_line_and_body() -> None:
    assert cosigned_message(BODY, TS) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        + base64.b64encode(bytes(range(32))) + b"\n")
    for bad in (-1, MAX_TIMESTAMP + 1):
        with pytest.raises(NoteError, match="out of range"):
            cosigned_message(BODY, bad)


def test_cosign_then_verify_returns_the_timestamp() -> None:
    sig = WITNESS.cosign(BODY, TS)
    assert sig.signature[:8] == struct.pack(">Q", TS) and len(sig.signature) == 72
    assert verify_cosignature(WITNESS.verifier(), BODY, sig) == TS
    # It is a line of the checkpoint's note, beside the log's own signature.
    note = sign_checkpoint(Checkpoint(LOG.name, 20852163, bytes(range(32))), LOG) + sig.line()
    assert parse_note(note).signatures[1] == sig


def test_a_tampered_timestamp_is_refused() -> None:
    sig = WITNESS.cosign(BODY, TS)
    moved = Signature(sig.name, sig.key_id, struct.pack(">Q", TS + 86400) + sig.signature[8:])
    with pytest.raises(NoteError, match="invalid cosignature"):
        verify_cosignature(WITNESS.verifier(), BODY, moved)


def test_a_cosignature_of_another_body_is_refused() -> None:
    sig = WITNESS.cosign(BODY, TS)
    other = Checkpoint(LOG.name, 20852164, bytes(range(32))).body()
    with pytest.raises(NoteError, match="invalid cosignature"):
        verify_cosignature(WITNESS.verifier(), other, sig)


def test_a_flipped_signature_bit_is_refused() -> None:
    sig = WITNESS.cosign(BODY, TS)
    raw = bytearray(sig.signature)
    raw[40] ^= 1
    with pytest.raises(NoteError, match="invalid cosignature"):
        verify_cosignature(WITNESS.verifier(), BODY, Signature(sig.name, sig.key_id, bytes(raw)))


def test_a_log_signature_is_not_a_cosignature() -> None:
    """A plain note signature (64 bytes, no timestamp) under the witness's name and ID."""
    v = WITNESS.verifier()
    plain = nacl.signing.SigningKey(WITNESS.seed).sign(BODY.encode()).signature
    with pytest.raises(NoteError, match="64 bytes, want 72"):
        verify_cosignature(v, BODY, Signature(v.name, v.key_id, plain))


def test_a_cosignature_by_another_witness_is_not_this_ones() -> None:
    other = generate_witness_key("witness.example.com/w2")
    with pytest.raises(NoteError, match="not by"):
        verify_cosignature(WITNESS.verifier(), BODY, other.cosign(BODY, TS))
    # Same name, another key: the key ID differs, so the line is not matched either.
    twin = generate_witness_key(WITNESS.name)
    assert not WITNESS.verifier().matches(twin.cosign(BODY, TS))


def test_a_timestamp_above_2_to_the_63_is_refused() -> None:
    sig = WITNESS.cosign(BODY, TS)
    huge = Signature(sig.name, sig.key_id, struct.pack(">Q", 1 << 63) + sig.signature[8:])
    with pytest.raises(NoteError, match="out of range"):
        verify_cosignature(WITNESS.verifier(), BODY, huge)
    assert verify_cosignature(WITNESS.verifier(), BODY,
                              WITNESS.cosign(BODY, MAX_TIMESTAMP)) == MAX_TIMESTAMP


def test_invalid_witness_names_are_refused() -> None:
    for name in ("", "a b", "a+b", "tab\there"):
        with pytest.raises(NoteError, match="invalid key name"):
            generate_witness_key(name)
