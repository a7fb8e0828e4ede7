"""Witness cosignatures, as specified by c2sp.org/tlog-cosignature (v1.0.1). No I/O.

A witness cosigns a checkpoint it has checked to be consistent with everything it cosigned
before. Its key is an Ed25519 key of signature type 0x04 (``cosignature/v1``):

- key ID = SHA-256(name || 0x0A || 0x04 || public key)[:4];
- vkey text ``<name>+<8 hex key ID>+<base64(0x04 || public key)>``; private key text
  ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x04 || seed)>`` (as for note keys);
- a cosignature is a note signature line whose signature bytes are
  ``u64 big-endian UNIX timestamp || 64-byte Ed25519 signature`` over::

      cosignature/v1
      time <timestamp>
      <the checkpoint body>

The timestamp is the witness's clock when it cosigned: the checkpoint existed, and was
consistent with the witness's view, no later than that time.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from verifier.protocol.note import (
    COSIGNATURE_V1,
    PRIVATE_KEY_PREFIX,
    SEED_SIZE,
    SIGNATURE_SIZE,
    NoteError,
    Signature,
    b64encode,
    check_key,
    is_valid_key_name,
    key_id,
    split_key_text,
)

__all__ = [
    "COSIGNATURE_SIZE",
    "MAX_TIMESTAMP",
    "CosignatureSigner",
    "CosignatureVerifier",
    "cosigned_message",
    "generate_witness_key",
    "parse_witness_private_key",
    "parse_witness_vkey",
    "verify_cosignature",
]

TIMESTAMP_SIZE = 8
COSIGNATURE_SIZE = TIMESTAMP_SIZE + SIGNATURE_SIZE
MAX_TIMESTAMP = (1 << 63) - 1
"""Largest timestamp accepted: Go and most clients hold UNIX time in a signed 64-bit int."""


def cosigned_message(body: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signature covers (tlog-cosignature, "Signed message")."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {timestamp} out of range")
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness's public key; the constructor checks the key ID matches."""

    name: str
    key_id: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        check_key(self.name, self.key_id, self.public_key)
        expected = key_id(self.name, self.public_key, COSIGNATURE_V1)
        if not hmac.compare_digest(self.key_id, expected):
            raise NoteError(f"key ID {self.key_id.hex()} does not match witness key "
                            f"{self.name!r}")

    def text(self) -> str:
        encoded = b64encode(bytes([COSIGNATURE_V1]) + self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def matches(self, sig: Signature) -> bool:
        """Whether a signature line claims to be by this key (name and key ID)."""
        return sig.name == self.name and sig.key_id == self.key_id


def verify_cosignature(key: CosignatureVerifier, body: str, sig: Signature) -> int:
    """The timestamp of `sig`, a cosignature line by `key` over checkpoint `body`.

    Raises NoteError when the line is not this key's, is not 72 bytes, or does not verify.
    """
    if not key.matches(sig):
        raise NoteError(f"signature is by {sig.name}+{sig.key_id.hex()}, not by {key.name}")
    if len(sig.signature) != COSIGNATURE_SIZE:
        raise NoteError(f"cosignature by {key.name} is {len(sig.signature)} bytes, "
                        f"want {COSIGNATURE_SIZE}")
    (timestamp,) = struct.unpack(">Q", sig.signature[:TIMESTAMP_SIZE])
    if timestamp > MAX_TIMESTAMP:
        raise NoteError(f"cosignature by {key.name} has timestamp {timestamp} out of range")
    try:
        nacl.signing.VerifyKey(key.public_key).verify(
            cosigned_message(body, timestamp), sig.signature[TIMESTAMP_SIZE:])
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise NoteError(f"invalid cosignature by {key.name}+{key.key_id.hex()}") from exc
    return int(timestamp)


@dataclass(frozen=True)
class CosignatureSigner:
    """A witness's private key: name, key ID and 32-byte RFC 8032 seed."""

    name: str
    key_id: bytes
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_SIZE:
            raise NoteError(f"Ed25519 seeds are {SEED_SIZE} bytes")
        self.verifier()

    def verifier(self) -> CosignatureVerifier:
        public_key = bytes(nacl.signing.SigningKey(self.seed).verify_key)
        return CosignatureVerifier(self.name, self.key_id, public_key)

    def cosign(self, body: str, timestamp: int) -> Signature:
        """The cosignature line of checkpoint `body` at `timestamp`."""
        sig = nacl.signing.SigningKey(self.seed).sign(cosigned_message(body, timestamp))
        return Signature(self.name, self.key_id,
                         struct.pack(">Q", timestamp) + bytes(sig.signature))

    def text(self) -> str:
        encoded = b64encode(bytes([COSIGNATURE_V1]) + self.seed)
        return f"{PRIVATE_KEY_PREFIX}{self.name}+{self.key_id.hex()}+{encoded}"


def generate_witness_key(name: str) -> CosignatureSigner:
    """A new random witness key named `name`."""
    if not is_valid_key_name(name):
        raise NoteError(f"invalid key name {name[:100]!r}")
    signing_key = nacl.signing.SigningKey.generate()
    kid = key_id(name, bytes(signing_key.verify_key), COSIGNATURE_V1)
    return CosignatureSigner(name, kid, bytes(signing_key))


def parse_witness_vkey(text: str) -> CosignatureVerifier:
    """Parse a witness vkey (type 0x04); the key ID must match the key."""
    name, kid, public_key = split_key_text(text, COSIGNATURE_V1)
    return CosignatureVerifier(name, kid, public_key)


def parse_witness_private_key(text: str) -> CosignatureSigner:
    """Parse ``PRIVATE+KEY+<name>+<id>+<base64(0x04 || seed)>``; the key ID must match."""
    if not text.startswith(PRIVATE_KEY_PREFIX):
        raise NoteError(f"malformed private key: must start with {PRIVATE_KEY_PREFIX!r}")
    name, kid, seed = split_key_text(text[len(PRIVATE_KEY_PREFIX):], COSIGNATURE_V1)
    return CosignatureSigner(name, kid, seed)  # its verifier checks the key ID
