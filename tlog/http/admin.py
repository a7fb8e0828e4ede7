"""The admin API: log registry entries, issue and revoke submission tokens.

Every call needs an admin identity (tlog.http.access.admin_identity). Token issuance and
revocation are recorded in the `tokens` table with who did it: that table is the audit
trail, and logged as JSON lines on the `tlog.audit` logger (never the token itself).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from aiohttp import web

from tlog.http.access import admin_identity
from tlog.http.errors import ApiError
from tlog.http.handlers import (
    CONFIG,
    TOKEN_LEDGER,
    TOKENS,
    parse_entry,
    read_json_body,
    submit,
)
from tlog.http.tokens import DEFAULT_TTL, parse_ttl
from verifier.protocol.entries.kinds import REGISTRY_KINDS
from verifier.protocol.entries.registry_kinds import PUBLISHER_NAME
from verifier.protocol.entries.strict_json import parse_json

audit_log = logging.getLogger("tlog.audit")
_JTI = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN_MEMBERS = {"publisher", "scopes", "ttl"}


def _audit(event: str, **fields: Any) -> None:
    audit_log.info(json.dumps({"event": event, **fields}, sort_keys=True))


def _admin_identity(request: web.Request) -> str:
    return admin_identity(request, request.app[CONFIG])


async def post_registry_entry(request: web.Request) -> web.Response:
    """Log a registry entry (publisher/v1, keys/v1, revoke/v1) on behalf of the operator."""
    who = _admin_identity(request)
    entry = parse_entry(await read_json_body(request))
    if entry.kind not in REGISTRY_KINDS:
        raise ApiError("not_registry_entry",
                       "the admin API logs publisher/v1, keys/v1 and revoke/v1 entries; "
                       "releases go to POST /v1/entries")
    resp = await submit(request, entry, None)
    _audit("registry_entry", by=who, kind=entry.kind, publisher=entry.publisher,
           leaf_hash=entry.leaf_hash.hex(), status=resp.status)
    return resp


def _token_request(body: bytes) -> tuple[str, list[str], str]:
    try:
        req = parse_json(body, max_depth=3)
    except ValueError as exc:
        raise ApiError("invalid_json", str(exc)) from exc
    if not isinstance(req, dict) or set(req) - _TOKEN_MEMBERS or "publisher" not in req \
            or "scopes" not in req:
        raise ApiError("invalid_request",
                       'send {"publisher": NAME, "scopes": [PATTERN, ...], "ttl": "15m"}')
    publisher, scopes, ttl = req["publisher"], req["scopes"], req.get("ttl", "15m")
    if not isinstance(publisher, str) or not PUBLISHER_NAME.fullmatch(publisher):
        raise ApiError("invalid_request", "publisher must be a publisher name: 1-200 "
                                          "printable ASCII characters, no spaces or '+'")
    if not isinstance(scopes, list) or not 0 < len(scopes) <= 64 \
            or not all(isinstance(x, str) for x in scopes):
        raise ApiError("invalid_request", "scopes must be 1-64 package patterns")
    if not isinstance(ttl, str):
        raise ApiError("invalid_request", 'ttl must be a string such as "15m"')
    return publisher, scopes, ttl


async def post_token(request: web.Request) -> web.Response:
    """Issue a short-lived submission token for one publisher and some package scopes."""
    who = _admin_identity(request)
    if TOKENS not in request.app:
        raise ApiError("not_found", "this log issues no submission tokens: it has no "
                                    "token key (--token-key)")
    publisher, scopes, ttl_text = _token_request(await read_json_body(request))
    try:
        ttl = parse_ttl(ttl_text) if ttl_text else DEFAULT_TTL
        token, claims = request.app[TOKENS].issue(publisher, scopes, ttl)
    except ValueError as exc:
        raise ApiError("invalid_request", str(exc)) from exc
    # Recorded before the token is handed out: a token never seen by the table is refused.
    await request.app[TOKEN_LEDGER].insert_token(claims.jti, publisher, list(claims.scopes),
                                            claims.expires, who)
    _audit("token_issued", by=who, jti=claims.jti, publisher=publisher,
           scopes=list(claims.scopes), expires=claims.expires.isoformat())
    return web.json_response({"token": token, "jti": claims.jti, "publisher": publisher,
                              "scopes": list(claims.scopes),
                              "expires_at": claims.expires.isoformat()}, status=201)


async def post_token_revoke(request: web.Request) -> web.Response:
    """Revoke a token by id; submissions carrying it are refused from now on."""
    who = _admin_identity(request)
    jti = request.match_info["jti"]
    if not _JTI.fullmatch(jti):
        raise ApiError("bad_token_id", "a token id is 1-64 characters of A-Z a-z 0-9 _ -")
    outcome = await request.app[TOKEN_LEDGER].revoke_token(jti, who)
    if outcome == "unknown":
        raise ApiError("not_found", f"this log issued no token with id {jti}")
    # Revoking twice is a retry, not a mistake: the same answer, and nothing to audit (the
    # table keeps who revoked it first).
    if outcome == "revoked":
        _audit("token_revoked", by=who, jti=jti)
    return web.json_response({"jti": jti, "revoked": True,
                              "already_revoked": outcome == "already_revoked"})


def add_admin_routes(app: web.Application) -> None:
    app.router.add_post("/v1/admin/entries", post_registry_entry)
    app.router.add_post("/v1/admin/tokens", post_token)
    app.router.add_post("/v1/admin/tokens/{jti}/revoke", post_token_revoke)
