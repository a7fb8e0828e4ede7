"""Signed notes with Ed25519 keys, as specified by c2sp.org/signed-note (v1.0.0).

A note is UTF-8 text: the body, which ends in a newline, then one empty line, then one or
more signature lines ``— <key name> <base64(key ID || signature)>``::

    example.com/log
    1000
    NGxrnLicS3b6ydyyDNqG46AcCldBfBOQKOrNRTj96Vs=

    — example.com/log K7qtgni5omfHGEZoCPs5DAG5uBlqwMx7zpaSWIgp...

Keys are written as Go's golang.org/x/mod/sumdb/note writes them:

- verifier key (vkey): ``<name>+<8 hex key ID>+<base64(0x01 || 32-byte public key)>``
- private key: ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || 32-byte seed)>``

with key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4] (signed-note, "Signatures"
and "Ed25519 signatures").

Parsing is strict, like Go's ``note.Open``: anything the format does not allow is rejected
with :class:`NoteError`, never cleaned up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import nacl.exceptions
import nacl.signing

__all__ = [
    "ED25519",
    "KEY_ID_SIZE",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "Note",
    "NoteError",
    "NoteSigner",
    "Signature",
    "Signer",
    "Verifier",
    "b64decode_strict",
    "b64encode",
    "generate_key",
    "is_valid_key_name",
    "key_id",
    "open_note",
    "parse_note",
    "parse_private_key",
    "parse_vkey",
    "sign_note",
    "split_key_text",
]

ED25519 = 0x01
"""Signature type identifier byte of Ed25519 (signed-note, "Signature types")."""
KEY_ID_SIZE = 4
PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SIGNATURE_SIZE = 64
MAX_SIGNATURES = 100
"""Most signature lines a note may carry; the spec asks verifiers to accept at least 16."""
MAX_NOTE_SIZE = 1 << 20
"""Largest note, in UTF-8 bytes, that :func:`parse_note` accepts."""

COSIGNATURE_V1 = 0x04
"""Type byte of Ed25519 cosignature/v1 witness keys (c2sp.org/tlog-cosignature)."""
_KEY_KINDS = {ED25519: "an Ed25519 note key", COSIGNATURE_V1: "a cosignature/v1 witness key"}

SIGNATURE_PREFIX = "— "
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteError(ValueError):
    """A note or key is malformed, or a note's signatures do not verify."""


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648, Section 4)."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str) -> bytes:
    """Decode standard padded base64, accepting only the canonical encoding.

    Raises ValueError for characters outside the alphabet, missing or extra padding, and
    non-zero trailing bits (so every byte string has exactly one accepted text).
    """
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as e:
        raise ValueError(f"invalid base64 {text[:100]!r}") from e
    if b64encode(data) != text:
        raise ValueError(f"non-canonical base64 {text[:100]!r}")
    return data


def is_valid_key_name(name: str) -> bool:
    """Key names are non-empty, valid UTF-8, without spaces, '+' or control characters."""
    if not name or "+" in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(c.isspace() or unicodedata.category(c) == "Cc" for c in name)


def key_id(name: str, public_key: bytes, key_type: int = ED25519) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || key type || public key)[:4]."""
    material = name.encode("utf-8") + b"\n" + bytes([key_type]) + public_key
    return hashlib.sha256(material).digest()[:KEY_ID_SIZE]


def check_key(name: str, kid: bytes, key: bytes) -> None:
    if not is_valid_key_name(name):
        raise NoteError(f"invalid key name {name[:100]!r}")
    if len(kid) != KEY_ID_SIZE:
        raise NoteError(f"key ID must be {KEY_ID_SIZE} bytes")
    if len(key) != PUBLIC_KEY_SIZE:
        raise NoteError(f"Ed25519 keys are {PUBLIC_KEY_SIZE} bytes, not {len(key)}")


@dataclass(frozen=True)
class Verifier:
    """An Ed25519 note verifier key; the constructor checks the key ID matches."""

    name: str
    key_id: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        check_key(self.name, self.key_id, self.public_key)
        if not hmac.compare_digest(self.key_id, key_id(self.name, self.public_key)):
            raise NoteError(f"key ID {self.key_id.hex()} does not match key {self.name!r}")

    def text(self) -> str:
        """The vkey text ``<name>+<8 hex key ID>+<base64(0x01 || public key)>``."""
        encoded = b64encode(bytes([ED25519]) + self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """Whether ``sig`` is a valid 64-byte Ed25519 signature of ``msg`` (RFC 8032)."""
        if len(sig) != SIGNATURE_SIZE:
            return False
        try:
            nacl.signing.VerifyKey(self.public_key).verify(msg, sig)
        except (nacl.exceptions.CryptoError, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """An Ed25519 note signer key: name, key ID and 32-byte RFC 8032 seed."""

    name: str
    key_id: bytes
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_SIZE:
            raise NoteError(f"Ed25519 seeds are {SEED_SIZE} bytes, not {len(self.seed)}")
        self.verifier()

    def _signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    def sign(self, msg: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``msg``."""
        return bytes(self._signing_key().sign(msg).signature)

    def verifier(self) -> Verifier:
        """The matching verifier; raises NoteError if the key ID does not match."""
        public_key = bytes(self._signing_key().verify_key)
        return Verifier(self.name, self.key_id, public_key)

    def text(self) -> str:
        """``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || seed)>``, as Go writes it."""
        encoded = b64encode(bytes([ED25519]) + self.seed)
        return f"{PRIVATE_KEY_PREFIX}{self.name}+{self.key_id.hex()}+{encoded}"


class NoteSigner(Protocol):
    """Anything that signs notes with an Ed25519 key: :class:`Signer` (a seed in memory) or a
    key held elsewhere, such as an HSM (``tlog.log.hsm.Pkcs11Signer``).

    ``key_id`` must be :func:`key_id` of ``name`` and the public key; ``sign`` returns the
    64-byte RFC 8032 signature of ``msg``; ``verifier`` returns the matching public key.
    """

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def sign(self, msg: bytes) -> bytes: ...

    def verifier(self) -> Verifier: ...


def generate_key(name: str) -> Signer:
    """A new random Ed25519 signer named ``name``."""
    if not is_valid_key_name(name):
        raise NoteError(f"invalid key name {name[:100]!r}")
    signing_key = nacl.signing.SigningKey.generate()
    kid = key_id(name, bytes(signing_key.verify_key))
    return Signer(name, kid, bytes(signing_key))


def split_key_text(text: str, key_type: int = ED25519) -> tuple[str, bytes, bytes]:
    """Split ``<name>+<8 hex>+<base64(type || key)>`` into name, key ID and the 32 key bytes;
    the type byte must be `key_type` (0x01 for note keys, 0x04 for cosignature keys)."""
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise NoteError("malformed key: want <name>+<key ID>+<base64 key>")
    name, kid_hex, encoded = parts
    if not is_valid_key_name(name):
        raise NoteError(f"malformed key: invalid key name {name[:100]!r}")
    if not _KEY_ID_HEX.fullmatch(kid_hex):
        raise NoteError("malformed key: key ID must be 8 lowercase hex digits")
    try:
        key = b64decode_strict(encoded)
    except ValueError as e:
        raise NoteError(f"malformed key: {e}") from e
    if len(key) != 1 + PUBLIC_KEY_SIZE or key[0] != key_type:
        if len(key) == 1 + PUBLIC_KEY_SIZE and key[0] in _KEY_KINDS:
            raise NoteError(f"malformed key: {_KEY_KINDS[key[0]]} (type 0x{key[0]:02x}), "
                            f"not {_KEY_KINDS.get(key_type, 'this kind')} (0x{key_type:02x})")
        raise NoteError(f"malformed key: not an Ed25519 key (0x{key_type:02x} followed by "
                        "32 bytes)")
    return name, bytes.fromhex(kid_hex), key[1:]


def parse_vkey(text: str) -> Verifier:
    """Parse vkey text; the key ID in the text must equal the one computed from the key."""
    name, kid, public_key = split_key_text(text)
    if not hmac.compare_digest(kid, key_id(name, public_key)):
        raise NoteError(f"key ID {kid.hex()} does not match the key of {name!r}")
    return Verifier(name, kid, public_key)


def parse_private_key(text: str) -> Signer:
    """Parse ``PRIVATE+KEY+...`` text; the key ID must match the key derived from the seed."""
    if not text.startswith(PRIVATE_KEY_PREFIX):
        raise NoteError(f"malformed private key: must start with {PRIVATE_KEY_PREFIX!r}")
    name, kid, seed = split_key_text(text[len(PRIVATE_KEY_PREFIX) :])
    public_key = bytes(nacl.signing.SigningKey(seed).verify_key)
    if not hmac.compare_digest(kid, key_id(name, public_key)):
        raise NoteError(f"key ID {kid.hex()} does not match the key of {name!r}")
    return Signer(name, kid, seed)


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, 4-byte key ID and the signature bytes."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line, ending in a newline."""
        encoded = b64encode(self.key_id + self.signature)
        return f"{SIGNATURE_PREFIX}{self.name} {encoded}\n"


@dataclass(frozen=True)
class Note:
    """A note body (ending in "\\n") and its signatures."""

    text: str
    signatures: tuple[Signature, ...]


def _decode_note(data: bytes | str) -> str:
    """Check size, UTF-8 and control characters (signed-note, "Format")."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_NOTE_SIZE:
        raise NoteError(f"malformed note: larger than {MAX_NOTE_SIZE} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NoteError("malformed note: not valid UTF-8") from e
    bad = _CONTROL.search(text)
    if bad:
        raise NoteError(f"malformed note: control character {bad[0]!r} at offset {bad.start()}")
    return text


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError(f"malformed note: signature line must start with '— ': {line[:100]!r}")
    name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not is_valid_key_name(name):
        raise NoteError(f"malformed note: invalid key name {name[:100]!r}")
    try:
        raw = b64decode_strict(encoded)
    except ValueError as e:
        raise NoteError(f"malformed note: signature of {name!r}: {e}") from e
    if len(raw) <= KEY_ID_SIZE:
        raise NoteError(f"malformed note: signature of {name!r} is too short")
    return Signature(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])


def parse_note(data: bytes | str) -> Note:
    """Parse a signed note's syntax without verifying anything (signed-note, "Format").

    The text is split from the signatures at the last empty line. Requires valid UTF-8 of
    at most MAX_NOTE_SIZE bytes, no control characters but "\\n", and 1..MAX_SIGNATURES
    signature lines, each ending in "\\n", whose base64 is canonical and decodes to a
    4-byte key ID followed by at least one byte.
    """
    text = _decode_note(data)
    split = text.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note: no empty line before the signatures")
    body, block = text[: split + 1], text[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("malformed note: signature block must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    return Note(body, tuple(_parse_signature_line(line) for line in lines))


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """Sign ``text`` (which must end in "\\n") with each signer; return the signed note."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if not signers:
        raise NoteError("sign_note needs at least one signer")
    msg = text.encode("utf-8")
    sigs = [Signature(s.name, s.key_id, s.sign(msg)) for s in signers]
    note = text + "\n" + "".join(sig.line() for sig in sigs)
    parse_note(note)
    return note


def _index_verifiers(verifiers: Sequence[Verifier]) -> dict[tuple[str, bytes], Verifier]:
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        previous = known.setdefault((v.name, v.key_id), v)
        if previous.public_key != v.public_key:
            raise NoteError(f"ambiguous verifiers: two keys {v.name}+{v.key_id.hex()}")
    return known


def open_note(data: bytes | str, verifiers: Sequence[Verifier]) -> Note:
    """Parse a note and verify it against trusted keys (signed-note, "Signatures").

    Signatures whose (name, key ID) matches no verifier are ignored. A signature by a
    known key that fails to verify rejects the whole note, and at least one known key
    must have signed. Returns the note with only its verified signatures, one per key.
    """
    note = parse_note(data)
    known = _index_verifiers(verifiers)
    msg = note.text.encode("utf-8")
    verified: dict[tuple[str, bytes], Signature] = {}
    for sig in note.signatures:
        ident = (sig.name, sig.key_id)
        v = known.get(ident)
        if v is None or ident in verified:
            continue
        if not v.verify(msg, sig.signature):
            raise NoteError(f"invalid signature by {sig.name}+{sig.key_id.hex()}")
        verified[ident] = sig
    if not verified:
        raise NoteError("note has no signature by a known key")
    return Note(note.text, tuple(verified.values()))
