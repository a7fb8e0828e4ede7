"""Short-lived, scoped submission tokens: JWT (RFC 7519) signed with EdDSA/Ed25519 (PyJWT).

A token names one publisher (`sub`), the package patterns it may submit for (`scopes`),
an expiry (`exp`, at most MAX_TTL after `iat`), a not-before (`nbf`) and an id (`jti`).
Tokens are signed with a key of the log kept apart from the checkpoint key. Every issued
token is recorded in the database (the audit trail); the append transaction refuses a
token that is not on record or was revoked.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tlog.http.errors import ApiError
from verifier.protocol.entries.registry_kinds import PACKAGE_PATTERN
from verifier.protocol.note import Signer
from verifier.protocol.registry import pattern_matches

ALGORITHM = "EdDSA"
MAX_TTL = timedelta(hours=24)
DEFAULT_TTL = timedelta(minutes=15)
MAX_TOKEN_CHARS = 4096
LEEWAY = timedelta(seconds=30)  # clock skew between operator and log


class TokenError(ApiError):
    """A token is missing, malformed, expired, or does not cover the submission."""


@dataclass(frozen=True)
class TokenClaims:
    jti: str
    publisher: str
    scopes: tuple[str, ...]
    expires: datetime

    def covers(self, package: str) -> bool:
        return any(pattern_matches(s, package) for s in self.scopes)


def check_scope(pattern: str) -> str:
    """A scope is a package name or a prefix ending in '*' (com.acme.*)."""
    if not PACKAGE_PATTERN.fullmatch(pattern):
        raise ValueError(f"scope {pattern!r} must be a package name or a prefix ending in '*'")
    return pattern


def parse_ttl(text: str) -> timedelta:
    """'15m', '2h', '90s' or plain seconds; at most MAX_TTL."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    if not number.isdigit() or len(number) > 9 or int(number) == 0:
        raise ValueError(f"ttl {text!r} must be a positive number of s, m or h (e.g. 15m)")
    ttl = timedelta(seconds=int(number) * units[unit])
    if ttl > MAX_TTL:
        raise ValueError(f"ttl {text!r} is longer than the maximum {MAX_TTL}")
    return ttl


class TokenAuthority:
    """Issues and verifies tokens with the log's token key."""

    def __init__(self, signer: Signer, issuer: str) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(signer.seed)
        self._public = self._private.public_key()
        self.key_id = signer.key_id.hex()
        self.issuer = issuer

    def issue(self, publisher: str, scopes: list[str], ttl: timedelta,
              now: datetime | None = None) -> tuple[str, TokenClaims]:
        if not scopes:
            raise ValueError("a token needs at least one scope")
        if ttl > MAX_TTL or ttl <= timedelta(0):
            raise ValueError(f"ttl must be positive and at most {MAX_TTL}")
        now = now or datetime.now(UTC)
        claims = TokenClaims(secrets.token_urlsafe(16), publisher,
                             tuple(check_scope(s) for s in scopes), now + ttl)
        payload = {"iss": self.issuer, "sub": publisher, "scopes": list(claims.scopes),
                   "jti": claims.jti, "iat": now, "nbf": now, "exp": claims.expires}
        token = jwt.encode(payload, self._private, algorithm=ALGORITHM,
                           headers={"kid": self.key_id})
        return token, claims

    def verify(self, token: str) -> TokenClaims:
        """Signature, issuer, time limits and claim shapes; not revocation (the database's)."""
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise TokenError("token_malformed", "the token is too long or not ASCII")
        try:
            payload = jwt.decode(token, self._public, algorithms=[ALGORITHM],
                                 issuer=self.issuer, leeway=LEEWAY,
                                 options={"require": ["exp", "nbf", "iat", "jti", "sub", "iss"]})
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token_expired", "the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenError("token_not_yet_valid", "the token is not valid yet") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("token_bad_signature", "the token's signature is not the "
                                                    "log's") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError("token_malformed", f"the token is not valid: {exc}") from exc
        return _claims(payload)


def _claims(payload: dict[str, Any]) -> TokenClaims:
    scopes, sub, jti = payload.get("scopes"), payload.get("sub"), payload.get("jti")
    if (not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes)
            or not isinstance(sub, str) or not isinstance(jti, str)):
        raise TokenError("token_malformed", "the token's claims are malformed")
    expires = datetime.fromtimestamp(int(payload["exp"]), UTC)
    if expires - datetime.fromtimestamp(int(payload["iat"]), UTC) > MAX_TTL:
        raise TokenError("token_malformed", "the token lives longer than allowed")
    return TokenClaims(jti, sub, tuple(scopes), expires)


def bearer(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or TokenError."""
    if not header:
        # Most people meet this through the CLI: name its option before the header.
        raise TokenError("token_missing", "this log needs a submission token: use --token-file "
                         "with tlog publish (HTTP: Authorization: Bearer <token>)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("token_malformed", "use Authorization: Bearer <token>")
    return token.strip()
