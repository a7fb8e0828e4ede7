"""Tests for verifier/protocol/note.py: c2sp.org/signed-note with Ed25519 keys."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import VECTORS
from verifier.protocol.note import (
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    Note,
    NoteError,
    Signature,
    Signer,
    Verifier,
    b64decode_strict,
    generate_key,
    key_id,
    open_note,
    parse_note,
    parse_private_key,
    parse_vkey,
    sign_note,
)

GO_VKEY = (VECTORS / "go-log.vkey").read_text().strip()
GO_NOTES = [(VECTORS / name).read_bytes() for name in ("go-checkpoint-1000.note",
                                                       "go-checkpoint-300.note")]

ALICE = generate_key("example.com/alice")
BOB = generate_key("example.com/bob")
BODY = "hello\nworld\n"


# -- interoperability with Go's golang.org/x/mod/sumdb/note ---------------------------------


def test_go_vkey_parses_and_formats_back() -> None:
    v = parse_vkey(GO_VKEY)
    assert v.name == "example.com/log"
    assert v.key_id.hex() == "2bbaad82"
    assert v.text() == GO_VKEY


@pytest.mark.parametrize("data", GO_NOTES)
def test_go_signed_note_verifies(data: bytes) -> None:
    note = open_note(data, [parse_vkey(GO_VKEY)])
    assert note.text.startswith("example.com/log\n")
    assert [s.name for s in note.signatures] == ["example.com/log"]


@pytest.mark.parametrize("data", GO_NOTES)
def test_go_signed_note_with_flipped_body_bit_is_rejected(data: bytes) -> None:
    tampered = data.replace(b"example.com/log\n", b"example.com/loh\n", 1)
    with pytest.raises(NoteError):
        open_note(tampered, [parse_vkey(GO_VKEY)])


# -- keys ----------------------------------------------------------------------------------


def test_key_id_is_truncated_sha256_of_name_type_and_key() -> None:
    v = ALICE.verifier()
    assert v.key_id == key_id("example.com/alice", v.public_key)
    assert key_id("example.com/alice", v.public_key, 0x04) != v.key_id


def test_vkey_round_trips() -> None:
    v = ALICE.verifier()
    assert parse_vkey(v.text()) == v


def test_private_key_round_trips() -> None:
    text = ALICE.text()
    assert text.startswith("PRIVATE+KEY+example.com/alice+")
    assert parse_private_key(text) == ALICE


def test_private_key_is_not_in_repr() -> None:
    assert ALICE.text().split("+", 4)[4] not in repr(ALICE)
    assert ALICE.seed.hex() not in repr(ALICE)


def test_vkey_with_wrong_key_id_is_rejected() -> None:
    name, kid, key = ALICE.verifier().text().split("+", 2)
    wrong = f"{int(kid, 16) ^ 1:08x}"
    with pytest.raises(NoteError, match="does not match"):
        parse_vkey(f"{name}+{wrong}+{key}")


def test_vkey_with_wrong_key_name_is_rejected() -> None:
    _, kid, key = ALICE.verifier().text().split("+", 2)
    with pytest.raises(NoteError, match="does not match"):
        parse_vkey(f"example.com/mallory+{kid}+{key}")


@pytest.mark.parametrize(
    "name", ["", "has space", "tab\there", "nbsp\u00a0x", "ctl\x7fx", "line\nbreak"]
)
def test_vkey_with_invalid_name_is_rejected(name: str) -> None:
    _, kid, key = ALICE.verifier().text().split("+", 2)
    with pytest.raises(NoteError):
        parse_vkey(f"{name}+{kid}+{key}")


def test_vkey_with_uppercase_key_id_is_rejected() -> None:
    name, kid, key = GO_VKEY.split("+", 2)
    with pytest.raises(NoteError, match="lowercase hex"):
        parse_vkey(f"{name}+{kid.upper()}+{key}")


def test_vkey_with_whitespace_in_base64_is_rejected() -> None:
    name, kid, key = GO_VKEY.split("+", 2)
    with pytest.raises(NoteError, match="invalid base64"):
        parse_vkey(f"{name}+{kid}+{key[:8]} {key[8:]}")


@pytest.mark.parametrize("suffix", ["", "=", "A", "!"])
def test_vkey_with_bad_base64_is_rejected(suffix: str) -> None:
    name, kid, key = GO_VKEY.split("+", 2)
    with pytest.raises(NoteError):
        parse_vkey(f"{name}+{kid}+{key[:-1]}{suffix}")


def test_vkey_of_other_algorithm_is_rejected() -> None:
    v = ALICE.verifier()
    raw = bytes([0x04]) + v.public_key
    kid = key_id(v.name, v.public_key, 0x04).hex()
    with pytest.raises(NoteError,
                       match=r"a cosignature/v1 witness key .type 0x04., not an Ed25519 note key"):
        parse_vkey(f"{v.name}+{kid}+{base64.b64encode(raw).decode()}")


def test_vkey_with_missing_parts_is_rejected() -> None:
    with pytest.raises(NoteError):
        parse_vkey("example.com/log+2bbaad82")


def test_private_key_without_prefix_is_rejected() -> None:
    with pytest.raises(NoteError, match="PRIVATE"):
        parse_private_key(ALICE.text().removeprefix("PRIVATE+KEY+"))


def test_private_key_with_wrong_key_id_is_rejected() -> None:
    prefix, name, kid, key = ALICE.text().split("+", 4)[1:]
    other_seed = base64.b64encode(b"\x01" + BOB.seed).decode()
    with pytest.raises(NoteError, match="does not match"):
        parse_private_key(f"PRIVATE+{prefix}+{name}+{kid}+{other_seed}")
    assert parse_private_key(f"PRIVATE+{prefix}+{name}+{kid}+{key}") == ALICE


def test_verifier_with_mismatched_key_id_cannot_be_built() -> None:
    v = ALICE.verifier()
    with pytest.raises(NoteError):
        Verifier(v.name, b"\x00\x00\x00\x00", v.public_key)


def test_verify_rejects_signature_of_wrong_length() -> None:
    v = ALICE.verifier()
    sig = ALICE.sign(b"msg")
    assert v.verify(b"msg", sig)
    assert not v.verify(b"msg", sig + b"\x00")
    assert not v.verify(b"msg", sig[:-1])


def test_generate_key_rejects_invalid_name() -> None:
    with pytest.raises(NoteError):
        generate_key("a+b")


def test_signer_with_short_seed_cannot_be_built() -> None:
    with pytest.raises(NoteError):
        Signer("x", ALICE.key_id, b"\x00" * 31)


# -- base64 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["QQ", "QQ=", "QR==", "Q Q==", "QQ==\n", "QQ==QQ==", "Ω"])
def test_b64decode_strict_rejects_non_canonical_or_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        b64decode_strict(text)


def test_b64decode_strict_accepts_canonical() -> None:
    assert b64decode_strict("QQ==") == b"A"
    assert b64decode_strict("") == b""


# -- note syntax ------------------------------------------------------------------------------


def test_sign_and_open_round_trip() -> None:
    signed = sign_note(BODY, [ALICE, BOB])
    note = open_note(signed, [ALICE.verifier(), BOB.verifier()])
    assert note.text == BODY
    assert [s.name for s in note.signatures] == ["example.com/alice", "example.com/bob"]
    assert parse_note(signed.encode()) == parse_note(signed)


def test_signed_note_has_the_c2sp_layout() -> None:
    signed = sign_note(BODY, [ALICE])
    body, sigs = signed.split("\n\n")
    assert body + "\n" == BODY
    assert sigs.startswith("— example.com/alice ")
    assert sigs.endswith("\n") and sigs.count("\n") == 1


def test_body_may_contain_empty_lines() -> None:
    body = "a\n\nb\n"
    assert open_note(sign_note(body, [ALICE]), [ALICE.verifier()]).text == body


def test_sign_note_requires_final_newline() -> None:
    with pytest.raises(NoteError):
        sign_note("no newline", [ALICE])


def test_missing_final_newline_is_rejected() -> None:
    signed = sign_note(BODY, [ALICE])
    with pytest.raises(NoteError, match="end with a newline"):
        parse_note(signed[:-1])


def test_note_without_blank_line_is_rejected() -> None:
    signed = sign_note(BODY, [ALICE])
    with pytest.raises(NoteError, match="empty line"):
        parse_note(signed.replace("\n\n", "\n"))


@pytest.mark.parametrize("char", ["\r", "\t", "\x00", "\x1b", "\x0b"])
def test_control_characters_are_rejected(char: str) -> None:
    signed = sign_note(BODY, [ALICE])
    with pytest.raises(NoteError, match="control character"):
        parse_note(signed.replace("hello", f"hel{char}lo"))


def test_invalid_utf8_is_rejected() -> None:
    signed = sign_note(BODY, [ALICE]).encode()
    with pytest.raises(NoteError, match="UTF-8"):
        parse_note(signed.replace(b"hello", b"hel\xfflo"))


def test_lone_surrogate_in_text_is_rejected() -> None:
    signed = sign_note(BODY, [ALICE])
    with pytest.raises(NoteError, match="UTF-8"):
        parse_note(signed.replace("hello", "hel\ud800lo"))


def test_oversized_note_is_rejected() -> None:
    with pytest.raises(NoteError, match="larger than"):
        parse_note("a" * MAX_NOTE_SIZE + "\n\n— x QUFBQUE=\n")


def _note_with_signatures(count: int) -> str:
    sig = Signature("example.com/other", b"\x00\x00\x00\x00", b"\x01" * 64)
    return BODY + "\n" + sig.line() * count


def test_max_signatures_are_accepted() -> None:
    assert len(parse_note(_note_with_signatures(MAX_SIGNATURES)).signatures) == MAX_SIGNATURES


def test_too_many_signatures_are_rejected() -> None:
    with pytest.raises(NoteError, match="more than"):
        parse_note(_note_with_signatures(MAX_SIGNATURES + 1))


def test_signature_line_without_em_dash_is_rejected() -> None:
    signed = sign_note(BODY, [ALICE])
    with pytest.raises(NoteError, match="must start with"):
        parse_note(signed.replace("— ", "- "))


def test_signature_with_bad_base64_is_rejected() -> None:
    signed = sign_note(BODY, [ALICE])
    with pytest.raises(NoteError, match="invalid base64"):
        parse_note(signed.replace("=\n", "!\n"))


def test_signature_with_non_canonical_base64_is_rejected() -> None:
    sig = Signature("example.com/alice", b"\x00\x00\x00\x00", b"\x01" * 64)
    line = sig.line()
    assert line.endswith("E=\n")
    with pytest.raises(NoteError, match="non-canonical"):
        parse_note(BODY + "\n" + line.replace("E=\n", "F=\n"))


def test_signature_without_base64_is_rejected() -> None:
    with pytest.raises(NoteError):
        parse_note(BODY + "\n— example.com/alice\n")


def test_signature_shorter_than_key_id_plus_one_byte_is_rejected() -> None:
    with pytest.raises(NoteError, match="too short"):
        parse_note(BODY + "\n— example.com/alice AAAAAA==\n")


def test_signature_line_with_empty_name_is_rejected() -> None:
    with pytest.raises(NoteError, match="key name"):
        parse_note(BODY + "\n—  QUFBQUE=\n")


# -- opening ---------------------------------------------------------------------------------


def test_tampered_body_is_rejected() -> None:
    signed = sign_note(BODY, [ALICE])
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(signed.replace("world", "w0rld"), [ALICE.verifier()])


def test_signature_by_another_key_is_rejected() -> None:
    signed = sign_note(BODY, [BOB])
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(signed, [ALICE.verifier()])


def test_forged_signature_under_known_name_and_id_is_rejected() -> None:
    forged = Signature(ALICE.name, ALICE.key_id, BOB.sign(BODY.encode()))
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(BODY + "\n" + forged.line(), [ALICE.verifier()])


def test_signature_with_wrong_key_id_is_not_accepted() -> None:
    sig = Signature(ALICE.name, b"\xde\xad\xbe\xef", ALICE.sign(BODY.encode()))
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(BODY + "\n" + sig.line(), [ALICE.verifier()])


def test_signature_with_wrong_key_name_is_not_accepted() -> None:
    sig = Signature("example.com/alicia", ALICE.key_id, ALICE.sign(BODY.encode()))
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(BODY + "\n" + sig.line(), [ALICE.verifier()])


def test_unknown_signatures_are_skipped() -> None:
    signed = sign_note(BODY, [BOB, ALICE])
    note = open_note(signed, [ALICE.verifier()])
    assert [s.name for s in note.signatures] == [ALICE.name]


def test_bad_signature_by_known_key_rejects_note_despite_other_good_one() -> None:
    good = sign_note(BODY, [ALICE])
    forged = Signature(BOB.name, BOB.key_id, b"\x00" * 64)
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(good + forged.line(), [ALICE.verifier(), BOB.verifier()])


def test_repeated_signature_is_reported_once() -> None:
    signed = sign_note(BODY, [ALICE])
    line = signed.split("\n\n")[1]
    note = open_note(signed + line, [ALICE.verifier()])
    assert len(note.signatures) == 1


def test_ambiguous_verifiers_are_rejected() -> None:
    v = ALICE.verifier()
    clash = Verifier.__new__(Verifier)
    object.__setattr__(clash, "name", v.name)
    object.__setattr__(clash, "key_id", v.key_id)
    object.__setattr__(clash, "public_key", BOB.verifier().public_key)
    with pytest.raises(NoteError, match="ambiguous"):
        open_note(sign_note(BODY, [ALICE]), [v, clash])


def test_sixteen_signatures_are_accepted() -> None:
    signers = [generate_key(f"witness{i}.example") for i in range(16)]
    signed = sign_note(BODY, signers)
    note = open_note(signed, [s.verifier() for s in signers])
    assert len(note.signatures) == 16
    assert isinstance(note, Note)
