"""The log's Ed25519 key in a PKCS#11 token (an HSM, or SoftHSM2), through python-pkcs11.

The key pair lives in the token as an ``CKK_EC_EDWARDS`` pair on the curve edwards25519
(PKCS#11 3.0, "EC Edwards"): both halves carry the same ``CKA_LABEL``; the private key never
leaves the token and signs with ``CKM_EDDSA`` (pure Ed25519, RFC 8032), so its signatures
are ordinary note signatures (c2sp.org/signed-note). The public half gives the verifier key,
whose key ID is computed from the log's name as for any other note key.

python-pkcs11 is an optional dependency (``pip install 'tlog[hsm]'``); importing this module
without it raises ImportError.
"""

from __future__ import annotations

import contextlib
import threading

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error
from pkcs11.types import SignMixin

from verifier.protocol.note import SIGNATURE_SIZE, Verifier, is_valid_key_name, key_id

__all__ = [
    "EDWARDS25519_OID",
    "HsmError",
    "Pkcs11Signer",
    "generate_ed25519_key",
    "public_key_from_ec_point",
]

EDWARDS25519_OID = bytes.fromhex("06032b6570")
"""CKA_EC_PARAMS for Ed25519: the DER of the OID id-Ed25519, 1.3.101.112 (RFC 8410)."""
EDWARDS25519_NAME = b"\x13\x0cedwards25519"
"""CKA_EC_PARAMS for Ed25519 as PKCS#11 3.0 also allows: DER PrintableString "edwards25519"."""
_ED25519_PARAMS = (EDWARDS25519_OID, EDWARDS25519_NAME)
_PUBLIC_KEY_SIZE = 32
_SELF_TEST = b"tlog PKCS#11 key self-test\n"


class HsmError(RuntimeError):
    """The token, its key or a signing operation failed; the message names the cause,
    including python-pkcs11's exception type for errors the token reported."""


def _describe(exc: PKCS11Error) -> str:
    """``TypeName: message`` for a python-pkcs11 error (many carry no message of their own)."""
    text = str(exc) or (type(exc).__doc__ or "").strip().split("\n")[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def public_key_from_ec_point(point: bytes) -> bytes:
    """The 32-byte Ed25519 public key in a ``CKA_EC_POINT`` value.

    PKCS#11 3.0 stores it as a DER OCTET STRING wrapping the 32 bytes (``04 20 || key``);
    some tokens return the bare 32 bytes. Anything else raises HsmError.
    """
    if len(point) == 2 + _PUBLIC_KEY_SIZE and point[:2] == bytes([0x04, _PUBLIC_KEY_SIZE]):
        return point[2:]
    if len(point) == _PUBLIC_KEY_SIZE:
        return point
    raise HsmError(f"CKA_EC_POINT is not an Ed25519 public key ({len(point)} bytes: "
                   f"{point[:8].hex()}...)")


def _open(module_path: str, token_label: str, pin: str, *, rw: bool) -> pkcs11.Session:
    try:
        lib = pkcs11.lib(module_path)
    except PKCS11Error as exc:
        raise HsmError(f"couldn't load the PKCS#11 module {module_path}: {_describe(exc)}") from exc
    try:
        token = lib.get_token(token_label=token_label)
    except PKCS11Error as exc:
        raise HsmError(f"no PKCS#11 token labelled {token_label!r} in {module_path}: "
                       f"{_describe(exc)}") from exc
    try:
        return token.open(rw=rw, user_pin=pin)
    except PKCS11Error as exc:
        raise HsmError(f"couldn't log in to token {token_label!r}: {_describe(exc)}") from exc


class Pkcs11Signer:
    """A :class:`verifier.protocol.note.NoteSigner` whose Ed25519 key is held in a PKCS#11 token.

    The constructor loads ``module_path``, logs in to the token labelled ``token_label``
    with ``pin``, finds the Ed25519 private and public keys labelled ``key_label``, and signs
    a test message that must verify with the public key; any failure raises HsmError (and
    leaves no session open). ``name`` is the note key name (the log's origin); ``key_id`` is
    computed from it and the token's public key.

    One session stays open until :meth:`close`; :meth:`sign` holds a lock around each
    signing operation, so threads may share the signer. A signing failure (token removed,
    session lost) raises HsmError: the caller's batch fails and nothing is reopened.
    """

    def __init__(self, module_path: str, token_label: str, key_label: str, pin: str,
                 name: str) -> None:
        if not is_valid_key_name(name):
            raise HsmError(f"invalid key name {name[:100]!r}")
        self._lock = threading.Lock()
        self._session: pkcs11.Session | None = _open(module_path, token_label, pin, rw=False)
        try:
            self._key, public_key = self._find_keys(self._session, token_label, key_label)
            self._verifier = Verifier(name, key_id(name, public_key), public_key)
            if not self._verifier.verify(_SELF_TEST, self.sign(_SELF_TEST)):
                raise HsmError(f"key {key_label!r}: the private key's signature does not "
                               "verify with the public key of the same label")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _find_keys(session: pkcs11.Session, token_label: str,
                   key_label: str) -> tuple[SignMixin, bytes]:
        where = f"token {token_label!r}"
        try:
            private = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC_EDWARDS, key_label)
            public = session.get_key(ObjectClass.PUBLIC_KEY, KeyType.EC_EDWARDS, key_label)
            params = bytes(public[Attribute.EC_PARAMS])
            point = bytes(public[Attribute.EC_POINT])
        except PKCS11Error as exc:
            raise HsmError(f"no usable EC-Edwards key pair labelled {key_label!r} in {where} "
                           f"(need the private and the public key): {_describe(exc)}") from exc
        if params not in _ED25519_PARAMS:
            raise HsmError(f"key {key_label!r} in {where} is not on edwards25519 "
                           f"(CKA_EC_PARAMS {params.hex()})")
        if not isinstance(private, SignMixin):
            raise HsmError(f"private key {key_label!r} in {where} may not sign (CKA_SIGN)")
        return private, public_key_from_ec_point(point)

    @property
    def name(self) -> str:
        """The note key name: the log's origin."""
        return self._verifier.name

    @property
    def key_id(self) -> bytes:
        """SHA-256(name || 0x0A || 0x01 || public key)[:4] (c2sp.org/signed-note)."""
        return self._verifier.key_id

    def verifier(self) -> Verifier:
        """The token's public key under this signer's name."""
        return self._verifier

    def sign(self, msg: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``msg``, made in the token (CKM_EDDSA)."""
        with self._lock:
            if self._session is None:
                raise HsmError("the PKCS#11 signer is closed")
            try:
                sig = bytes(self._key.sign(msg, mechanism=Mechanism.EDDSA))
            except PKCS11Error as exc:
                raise HsmError(f"the token failed to sign: {_describe(exc)}") from exc
        if len(sig) != SIGNATURE_SIZE:
            raise HsmError(f"the token returned a {len(sig)}-byte signature, not an Ed25519 one")
        return sig

    def close(self) -> None:
        """Log out and close the session; later :meth:`sign` calls raise HsmError."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(PKCS11Error):
                session.close()


def generate_ed25519_key(module_path: str, token_label: str, key_label: str,
                         pin: str) -> bytes:
    """Generate a persistent Ed25519 key pair labelled ``key_label`` in the token.

    Uses CKM_EC_EDWARDS_KEY_PAIR_GEN with CKA_EC_PARAMS = the DER OID 1.3.101.112; the private
    key is sensitive and not extractable. Refuses (HsmError) if any object already has that
    label, and when the token cannot make such a key (the message carries its error).
    Returns the 32-byte public key.
    """
    session = _open(module_path, token_label, pin, rw=True)
    try:
        if any(True for _ in session.get_objects({Attribute.LABEL: key_label})):
            raise HsmError(f"token {token_label!r} already holds a key labelled {key_label!r}")
        public, _ = session.generate_keypair(
            KeyType.EC_EDWARDS, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=True,
            label=key_label,
            public_template={Attribute.EC_PARAMS: EDWARDS25519_OID, Attribute.TOKEN: True,
                             Attribute.VERIFY: True, Attribute.LABEL: key_label},
            private_template={Attribute.TOKEN: True, Attribute.PRIVATE: True,
                              Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                              Attribute.SIGN: True, Attribute.LABEL: key_label})
        return public_key_from_ec_point(bytes(public[Attribute.EC_POINT]))
    except PKCS11Error as exc:
        raise HsmError(f"token {token_label!r} couldn't generate an Ed25519 key pair "
                       f"(CKM_EC_EDWARDS_KEY_PAIR_GEN, edwards25519): {_describe(exc)}") from exc
    finally:
        session.close()
