"""bench/http_compare.py: the requests of a `registered` log (token checks) and of a log
with a client quota (429 after a burst). Nothing here may append.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_compare_entries import Keys, Signer, acme_entries, keys_entry, revoke_entry
from http_compare_requests import admin_requests, duplicate_release
from http_compare_wire import Ctx, J, Req, jbody


def craft_token(k: Keys, origin: str, scopes: list[str], times: tuple[datetime, ...],
                key: Signer | None = None, jti: str = "craftedjti0001",
                issuer: str | None = None) -> str:
    """A submission token for acme made here: times are (iat, nbf, exp)."""
    key = key or k.token
    iat, nbf, exp = times
    priv = Ed25519PrivateKey.from_private_bytes(key.seed)
    payload = {"iss": issuer or origin, "sub": "acme", "scopes": scopes, "jti": jti,
               "iat": iat, "nbf": nbf, "exp": exp}
    return jwt.encode(payload, priv, algorithm="EdDSA", headers={"kid": key.key_id.hex()})


def flip_signature_bit(token: str) -> str:
    """The token with one bit of its signature flipped, still canonical base64url (so the
    answer is a bad signature whatever the token's random bytes, never bad padding)."""
    head, claims, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[0] ^= 1
    return f"{head}.{claims}.{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"


def crafted_tokens(k: Keys, origin: str) -> dict[str, str]:
    """Tokens the log never issued, each wrong in one way (the last in none but that)."""
    now = datetime.now(UTC).replace(microsecond=0)
    h = timedelta(hours=1)
    acme = ["com.acme.*"]
    return {
        "expired": craft_token(k, origin, acme, (now - 2 * h, now - 2 * h, now - h)),
        "future": craft_token(k, origin, acme, (now, now + h, now + 2 * h)),
        "other_key": craft_token(k, origin, acme, (now, now, now + h),
                                 key=k.generate("tlog-tokens")),
        "too_long": craft_token(k, origin, acme, (now, now, now + 30 * h)),
        "wrong_iss": craft_token(k, origin, acme, (now, now, now + h),
                                 issuer="other.example/log"),
        "unknown": craft_token(k, origin, acme, (now, now, now + h), jti="neverissued123"),
    }


def _submit(name: str, entry: dict[str, Any], token: str | None = None,
            headers: dict[str, str] | None = None) -> Req:
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return Req(name, "POST", "/v1/entries", h, jbody(entry), J)


def _without_issued_tokens(k: Keys, origin: str) -> list[Req]:
    t = crafted_tokens(k, origin)
    acme = acme_entries(k)
    rel_dup = acme["acme_rel1"]
    rel_new = k.release(k.acme, "com.acme.app", "3.0.0", counter=5)
    return [
        _submit("registered: no token", rel_dup),
        _submit("registered: Basic auth", rel_dup, headers={"Authorization": "Basic eDp5"}),
        _submit("registered: Bearer garbage", rel_dup, token="garbage"),
        _submit("registered: Bearer empty", rel_dup, headers={"Authorization": "Bearer "}),
        _submit("registered: token over 4096 chars", rel_dup, token="a" * 5000),
        _submit("registered: expired token", rel_dup, token=t["expired"]),
        _submit("registered: not yet valid token", rel_dup, token=t["future"]),
        _submit("registered: token signed by another key", rel_dup, token=t["other_key"]),
        _submit("registered: token living 30h", rel_dup, token=t["too_long"]),
        _submit("registered: token of another issuer", rel_dup, token=t["wrong_iss"]),
        _submit("registered: token never issued (not on record)", rel_new, token=t["unknown"]),
        _submit("registered: publisher/v1 via /v1/entries (403 admin_only)",
                acme["pub_acme"], token=t["unknown"]),
    ]


def _with_token(name: str, entry: dict[str, Any], slot: str,
                mangle: Callable[[str], str] = lambda t: t) -> Req:
    """A submission with a token the admin calls of this replay issued (masked)."""
    def auth(ctx: Ctx) -> str:
        return mangle(ctx[slot]["token"])
    return Req(name, "POST", "/v1/entries", {}, jbody(entry), J, auth=auth)


def _issued_token_entries(k: Keys) -> dict[str, dict[str, Any]]:
    return {
        "dup": acme_entries(k)["acme_rel1"],
        "new_acme2": k.release(k.acme2, "com.acme.app", "2.0.0", counter=2),
        "low_counter": k.release(k.acme, "com.acme.app", "0.9.0", counter=0),
        "no_counter": k.release(k.acme, "com.acme.app", "0.9.1"),
        "other_pkg": k.release(k.acme, "org.other.app", "1.0.0", counter=3),
        "out_scope": k.release(k.acme, "com.acme.tool", "1.0.0", counter=3),
        "new": k.release(k.acme, "com.acme.app", "3.0.0", counter=5),
        "mallory": k.release(k.mallory, "org.m.x", "1.0.0"),
        "bulk_dup": duplicate_release(k),
        "beta": k.release(k.beta, "net.beta.x", "1.0.0"),
        "bot_new": k.release(k.pub, "org.cmp.pkg01", "7.0.0"),
        # the duplicate of a logged entry (acme2 is revoked since)
        "keys_acme": keys_entry(k, "acme", [k.acme2], [], k.acme),
        "revoke_beta_key": revoke_entry(k, "beta", [k.beta], "x", k.beta),
    }


WITH_TOKEN = [  # (name, entry, token slot)
    ("duplicate acme release with token (200)", "dup", "tok_acme"),
    ("release signed by revoked key acme2", "new_acme2", "tok_acme"),
    ("counter not increasing", "low_counter", "tok_acme"),
    ("counter missing", "no_counter", "tok_acme"),
    ("token out of scope", "other_pkg", "tok_acme"),
    ("package not owned (token covers it)", "other_pkg", "tok_acme_wide"),
    ("token wrong publisher", "mallory", "tok_acme"),
    ("unregistered publisher mallory", "mallory", "tok_mallory"),
    ("bulk publisher, duplicate entry", "bulk_dup", "tok_bot"),
    ("bulk publisher not registered, new entry", "bot_new", "tok_bot"),
    ("revoked publisher beta", "beta", "tok_beta"),
    ("keys/v1 by acme with token", "keys_acme", "tok_acme"),
    ("revoke/v1 by beta (revoked)", "revoke_beta_key", "tok_beta"),
    ("revoked token", "new", "tok_revoked"),
]


def _with_issued_tokens(k: Keys) -> list[Req]:
    e = _issued_token_entries(k)
    reqs = [_with_token(f"registered: {name}", e[entry], slot)
            for name, entry, slot in WITH_TOKEN]
    reqs += [
        _with_token("registered: token with bad signature (one bit flipped)", e["dup"],
                    "tok_acme", flip_signature_bit),
        _with_token("registered: out of scope com.acme.tool for com.acme.app token",
                    e["out_scope"], "tok_revoked"),
    ]
    return reqs


def registered_requests(k: Keys, origin: str) -> list[Req]:
    """Token checks of a `registered` log; nothing here may append."""
    reqs = _without_issued_tokens(k, origin)
    reqs += admin_requests(k)
    reqs += _with_issued_tokens(k)
    reqs.append(_submit("registered: bad JSON with no token", {"kind": "release/v1"}))
    reqs.append(Req("registered: malformed JSON no token", "POST", "/v1/entries", {}, b"{", J))
    for p in ("/v1/log", "/checkpoint", "/v1/registry", "/readyz"):
        reqs.append(Req(f"registered: GET {p}", "GET", p))
    return reqs


def quota_requests(k: Keys) -> list[Req]:
    """A log whose clients may send 3 POSTs and then one per 1000 s: 429 after the burst."""
    dup = jbody(duplicate_release(k))
    auth = {"Authorization": f"Bearer {k.admin_secret}"}
    reqs = [Req(f"quota: POST duplicate #{i} (burst)", "POST", "/v1/entries", {}, dup, J)
            for i in range(3)]
    reqs += [
        Req("quota: POST duplicate #4 (429)", "POST", "/v1/entries", {}, dup, J),
        Req("quota: POST malformed JSON (429)", "POST", "/v1/entries", {}, b"{", J),
        Req("quota: POST unknown path (429?)", "POST", "/nope", {}, b"{}", J),
        Req("quota: POST /checkpoint wrong method (429?)", "POST", "/checkpoint"),
        Req("quota: admin token issue (429?)", "POST", "/v1/admin/tokens", auth,
            jbody({"publisher": "acme", "scopes": ["x"]}), J),
        Req("quota: admin entries no credentials (429?)", "POST", "/v1/admin/entries", {},
            b"{}", J),
        Req("quota: GET /checkpoint (reads are free)", "GET", "/checkpoint"),
        Req("quota: GET /v1/log", "GET", "/v1/log"),
        Req("quota: HEAD /checkpoint", "HEAD", "/checkpoint"),
        Req("quota: PUT /checkpoint", "PUT", "/checkpoint"),
        Req("quota: metrics", "GET", "/metrics", metrics=True),
    ]
    return reqs
