"""Access control on a real PostgreSQL: each test is named after the attack it stops.

A registered log (policy "registered") accepts a release only from a registered publisher,
signed by a current key of that publisher, for a package it owns, with a growing counter and a
valid submission token of that publisher covering the package. Every refusal is checked for
its status, its stable error code, and that the tree did not change (GET /v1/log tree_size and
GET /checkpoint are the same afterwards).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from tests.certs import Identity, Pki, make_pki
from tests.support import Server, make_release, start_server, write_key
from tests.tlog.sizes import leaves, size_after
from tlog.cli.main import main as tlog_main
from tlog.config import Config, Quotas, from_options
from tlog.http.app import create_app
from tlog.http.handlers import IN_FLIGHT
from tlog.http.tokens import TokenAuthority
from tlog.store.postgres import APPEND_LOCK
from verifier.protocol.entries.registry_kinds import KEYS_KIND, PUBLISHER_KIND, REVOKE_KIND
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer, generate_key

Client = TestClient[web.Request, web.Application]

ADMIN = generate_key("log-admin")
FAKE_ADMIN = generate_key("log-admin")  # the admin's name, not the admin's key
TOKEN_KEY = generate_key("tlog-tokens")
ADMIN_SECRET = "admin-secret-" + base64.urlsafe_b64encode(os.urandom(24)).decode()
ACME = generate_key("acme")
ACME2 = generate_key("acme")
ACME3 = generate_key("acme")
EVIL = generate_key("acme")  # named like acme, never registered
OTHER = generate_key("other")
MALLORY = generate_key("mallory")  # never registered


# -- a registered log under test -------------------------------------------------------------


@dataclass
class Log:
    """A registered log behind an aiohttp test client; every response is kept for inspection."""

    client: Client
    database_url: str
    origin: str
    responses: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    async def request(self, method: str, path: str, **kw: Any) -> ClientResponse:
        resp = await self.client.request(method, path, **kw)
        text = await resp.text()
        self.responses.append((resp.headers.get("X-Request-Id", ""), text, dict(resp.headers)))
        return resp

    async def state(self) -> tuple[int, str]:
        """(tree size from /v1/log, latest checkpoint note): what a refusal must not change."""
        info = await self.request("GET", "/v1/log")
        assert info.status == 200
        checkpoint = await self.request("GET", "/checkpoint")
        assert checkpoint.status == 200
        return (await info.json())["tree_size"], await checkpoint.text()

    async def admin(self, path: str, body: Any, secret: str | None = ADMIN_SECRET,
                    headers: dict[str, str] | None = None) -> ClientResponse:
        all_headers = dict(headers or {})
        if secret is not None:
            all_headers["Authorization"] = f"Bearer {secret}"
        return await self.request("POST", path, json=body, headers=all_headers)

    async def admin_entry(self, fields: dict[str, Any], signer: Signer = ADMIN) -> ClientResponse:
        return await self.admin("/v1/admin/entries", sign_entry(fields, signer))

    async def register(self, publisher: str, patterns: list[str], keys: list[Signer]) -> None:
        resp = await self.admin_entry(registration(publisher, patterns, keys))
        assert resp.status == 201, await resp.text()

    async def issue(self, publisher: str, scopes: list[str], ttl: str = "15m") -> dict[str, Any]:
        resp = await self.admin("/v1/admin/tokens",
                                {"publisher": publisher, "scopes": scopes, "ttl": ttl})
        assert resp.status == 201, await resp.text()
        info: dict[str, Any] = await resp.json()
        return info

    async def token(self, publisher: str, scopes: list[str]) -> str:
        return str((await self.issue(publisher, scopes))["token"])

    async def submit(self, entry: dict[str, Any], token: str | None,
                     headers: dict[str, str] | None = None) -> ClientResponse:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        return await self.request("POST", "/v1/entries", json=entry, headers=all_headers)

    async def publish(self, signer: Signer, package: str, version: str, token: str | None,
                      counter: int | None = None) -> ClientResponse:
        return await self.submit(make_release(signer, package, version, counter=counter), token)


def registration(publisher: str, patterns: list[str], keys: list[Signer]) -> dict[str, Any]:
    return {"kind": PUBLISHER_KIND, "publisher": publisher, "packages": patterns,
            "keys": [k.verifier().text() for k in keys]}


def rotation(publisher: str, add: list[Signer], remove: list[Signer]) -> dict[str, Any]:
    return {"kind": KEYS_KIND, "publisher": publisher,
            "add": [k.verifier().text() for k in add],
            "remove": [k.verifier().text() for k in remove]}


def revocation(publisher: str, keys: list[Signer] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"kind": REVOKE_KIND, "publisher": publisher,
                              "reason": "key leaked in CI logs"}
    if keys is not None:
        fields["keys"] = [k.verifier().text() for k in keys]
    return fields


async def expect(resp: ClientResponse, status: int, code: str | None = None) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, f"{resp.method} {resp.url.path}: {resp.status} {text}"
    assert resp.content_type == "application/json", text
    body: dict[str, Any] = json.loads(text)
    if code is not None:
        assert body["error"]["code"] == code, text
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


async def refused(log: Log, request: Awaitable[ClientResponse], status: int,
                  code: str) -> dict[str, Any]:
    """Send `request`; assert the refusal and that the tree is exactly as it was."""
    before = await log.state()
    body = await expect(await request, status, code)
    assert await log.state() == before, f"{code}: the tree changed"
    error: dict[str, Any] = body["error"]
    return error


LogFactory = Callable[..., Awaitable[Log]]


@pytest.fixture
def make_log(aiohttp_client: Any, database_url: str, log_signer: Signer) -> LogFactory:
    async def make(quotas: Quotas | None = None, admin_secret: str | None = ADMIN_SECRET) -> Log:
        app = create_app(Config(
            database_url=database_url, signer=log_signer, host="127.0.0.1", port=0,
            policy="registered", admin_keys=(ADMIN.verifier(),), token_signer=TOKEN_KEY,
            admin_secret=admin_secret, quotas=quotas or Quotas(), max_wait=0.002))
        client: Client = await aiohttp_client(app)
        return Log(client, database_url, log_signer.name)

    return make


@pytest.fixture
async def log(make_log: LogFactory) -> Log:
    """acme owns com.acme.* (key ACME); other owns org.other.* (key OTHER)."""
    log = await make_log()
    await log.register("acme", ["com.acme.*"], [ACME])
    await log.register("other", ["org.other.*"], [OTHER])
    return log


def authority(issuer: str, key: Signer = TOKEN_KEY) -> TokenAuthority:
    """Tokens made outside the log (never on record unless a test puts them there)."""
    return TokenAuthority(key, issuer)


async def token_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM tokens"))
    finally:
        await conn.close()


async def token_row(url: str, jti: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(url)
    try:
        row: asyncpg.Record | None = await conn.fetchrow("SELECT * FROM tokens WHERE jti = $1",
                                                         jti)
        return row
    finally:
        await conn.close()


# -- who may publish what ---------------------------------------------------------------------


async def test_release_for_another_publishers_package_is_refused(log: Log) -> None:
    # Even a token that (wrongly) covers the package does not make acme its owner.
    token = await log.token("acme", ["org.other.lib", "com.acme.*"])
    error = await refused(log, log.publish(ACME, "org.other.lib", "6.6.6", token),
                          403, "package_not_owned")
    assert "org.other.lib" in error["message"]
    assert (await log.publish(ACME, "com.acme.app", "1.0", token)).status == 201


async def test_release_signed_by_an_unregistered_key_is_refused(log: Log) -> None:
    token = await log.token("acme", ["com.acme.*"])
    await refused(log, log.publish(EVIL, "com.acme.app", "6.6.6", token), 403, "key_not_valid")
    mallory_token = await log.token("mallory", ["com.acme.*"])
    await refused(log, log.publish(MALLORY, "com.acme.app", "6.6.6", mallory_token),
                  403, "publisher_not_registered")


async def test_release_signed_by_removed_key_is_refused_after_removal_but_accepted_before(
        log: Log) -> None:
    await expect(await log.admin_entry(registration("acme", ["com.acme.*"],
                                                    [ACME, ACME2, ACME3])), 201)
    token = await log.token("acme", ["com.acme.*"])
    before_removal = make_release(ACME2, "com.acme.app", "1.0", counter=1)
    accepted = await expect(await log.submit(before_removal, token), 201)
    by_acme3 = await expect(await log.publish(ACME3, "com.acme.app", "1.1", token, counter=2),
                            201)

    # The publisher removes ACME2 itself (signed by a current key, submitted with its token);
    # the operator revokes ACME3 after a compromise.
    removal = sign_entry(rotation("acme", [], [ACME2]), ACME)
    await expect(await log.submit(removal, token), 201)
    await expect(await log.admin_entry(revocation("acme", [ACME3])), 201)

    error = await refused(log, log.publish(ACME2, "com.acme.app", "2.0", token, counter=3),
                          403, "key_not_valid")
    assert error["message"] == "the signing key of publisher 'acme' is not a current key"
    error = await refused(log, log.publish(ACME3, "com.acme.app", "2.0", token, counter=3),
                          403, "key_not_valid")
    assert error["message"] == "the signing key of publisher 'acme' was revoked"
    # A revoked key cannot be brought back, by the publisher or by a re-registration.
    comeback = sign_entry(rotation("acme", [ACME3], []), ACME)
    await refused(log, log.submit(comeback, token), 409, "key_revoked")
    await refused(log, log.admin_entry(registration("acme", ["com.acme.*"], [ACME, ACME3])),
                  409, "key_revoked")

    # What was accepted before the removal stays in the log, and resubmitting it is a no-op.
    again = await expect(await log.submit(before_removal, token), 200)
    assert again["index"] == accepted["index"]
    for receipt in (accepted, by_acme3):
        got = await expect(await log.request("GET", f"/v1/entries/{receipt['index']}"), 200)
        assert got["leaf_hash"] == receipt["leaf_hash"]
    await expect(await log.publish(ACME, "com.acme.app", "2.0", token, counter=3), 201)


async def test_counter_rollback_is_refused(log: Log) -> None:
    token = await log.token("acme", ["com.acme.*"])
    await expect(await log.publish(ACME, "com.acme.app", "1.0", token, counter=5), 201)
    await refused(log, log.publish(ACME, "com.acme.app", "0.9", token, counter=4),
                  409, "counter_not_increasing")
    await refused(log, log.publish(ACME, "com.acme.app", "1.0.1", token, counter=5),
                  409, "counter_not_increasing")
    await refused(log, log.publish(ACME, "com.acme.app", "1.0.2", token, counter=None),
                  422, "counter_required")
    await expect(await log.publish(ACME, "com.acme.app", "1.1", token, counter=6), 201)


async def test_concurrent_releases_reusing_a_counter_append_only_one(log: Log) -> None:
    token = await log.token("acme", ["com.acme.*"])
    await expect(await log.publish(ACME, "com.acme.app", "1.0", token, counter=1), 201)
    before = await log.state()
    results = await asyncio.gather(*(
        log.publish(ACME, "com.acme.app", f"2.{i}", token, counter=2) for i in range(5)))
    statuses = sorted(r.status for r in results)
    assert statuses == [201, 409, 409, 409, 409], statuses
    assert (await log.state())[0] == before[0] + leaves(1)


async def test_rotation_signed_by_a_key_not_the_publishers_is_refused(log: Log) -> None:
    token = await log.token("acme", ["com.acme.*"])
    takeover = rotation("acme", [EVIL], [ACME])
    for signer in (EVIL, OTHER, FAKE_ADMIN):
        entry = sign_entry(takeover, signer)
        await refused(log, log.submit(entry, token), 403, "not_authorized")
        # The admin credential carries the entry; it does not make its signature an admin's.
        await refused(log, log.admin("/v1/admin/entries", entry), 403, "not_authorized")
    # Revoking acme's key, or acme itself, needs acme's key or an admin key.
    await refused(log, log.submit(sign_entry(revocation("acme", [ACME]), OTHER),
                                  token), 403, "not_authorized")
    await refused(log, log.submit(sign_entry(revocation("acme", None), ACME), token),
                  403, "not_authorized")
    await refused(log, log.publish(EVIL, "com.acme.app", "6.6.6", token), 403, "key_not_valid")
    await expect(await log.publish(ACME, "com.acme.app", "1.0", token), 201)


async def test_forged_admin_signature_is_refused(log: Log) -> None:
    grab = registration("mallory", ["com.acme.*", "org.other.*"], [MALLORY])
    await refused(log, log.admin_entry(grab, FAKE_ADMIN), 403, "not_authorized")
    # A publisher's key cannot widen its own packages.
    await refused(log, log.admin_entry(registration("acme", ["com.*"], [ACME]), ACME),
                  403, "not_authorized")
    # A genuine admin signature over different content does not verify.
    genuine = sign_entry(registration("mallory", ["org.mallory.*"], [MALLORY]), ADMIN)
    tampered = {**genuine, "packages": ["com.acme.*"]}
    await refused(log, log.admin("/v1/admin/entries", tampered), 422, "bad_signature")
    # Registrations never go through the publishers' endpoint, whatever their signature.
    token = await log.token("acme", ["com.acme.*"])
    await refused(log, log.submit(genuine, token), 403, "admin_only")
    await refused(log, log.publish(EVIL, "com.acme.app", "6.6.6", token), 403, "key_not_valid")


# -- submission tokens ------------------------------------------------------------------------


async def test_expired_token_is_refused(log: Log) -> None:
    tokens = authority(log.origin)
    token, _ = tokens.issue("acme", ["com.acme.*"], timedelta(minutes=15),
                            now=datetime.now(UTC) - timedelta(hours=1))
    await refused(log, log.publish(ACME, "com.acme.app", "1.0", token), 401, "token_expired")


async def test_not_yet_valid_token_is_refused(log: Log) -> None:
    tokens = authority(log.origin)
    token, _ = tokens.issue("acme", ["com.acme.*"], timedelta(minutes=15),
                            now=datetime.now(UTC) + timedelta(hours=1))
    await refused(log, log.publish(ACME, "com.acme.app", "1.0", token), 401,
                  "token_not_yet_valid")


async def test_token_used_beyond_its_scope_is_refused(log: Log) -> None:
    token = await log.token("acme", ["com.acme.app", "com.acme.lib.*"])
    for package in ("com.acme.app2", "com.acme.lib", "com.acme.tool"):
        error = await refused(log, log.publish(ACME, package, "1.0", token),
                              403, "token_out_of_scope")
        assert package in error["message"]
    await expect(await log.publish(ACME, "com.acme.app", "1.0", token), 201)
    await expect(await log.publish(ACME, "com.acme.lib.core", "1.0", token), 201)


async def test_token_for_another_publisher_is_refused(log: Log) -> None:
    other_token = await log.token("other", ["com.acme.*", "org.other.*"])
    await refused(log, log.publish(ACME, "com.acme.app", "1.0", other_token),
                  403, "token_wrong_publisher")
    removal = sign_entry(rotation("acme", [], [ACME]), ACME)
    await refused(log, log.submit(removal, other_token), 403, "token_wrong_publisher")


async def test_revoked_token_is_refused(log: Log) -> None:
    info = await log.issue("acme", ["com.acme.*"])
    token, jti = info["token"], info["jti"]
    await expect(await log.publish(ACME, "com.acme.app", "1.0", token), 201)
    revoked = await expect(await log.admin(f"/v1/admin/tokens/{jti}/revoke", {}), 200)
    assert revoked == {"jti": jti, "revoked": True, "already_revoked": False}
    await refused(log, log.publish(ACME, "com.acme.app", "1.1", token), 401, "token_revoked")
    row = await token_row(log.database_url, jti)
    assert row is not None and row["revoked_at"] is not None
    assert row["revoked_by"] == "admin-token"


async def test_revoking_a_revoked_token_twice_succeeds_quietly(
        log: Log, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tlog.audit")
    info = await log.issue("acme", ["com.acme.*"])
    path = f"/v1/admin/tokens/{info['jti']}/revoke"
    first = await expect(await log.admin(path, {}), 200)
    assert first == {"jti": info["jti"], "revoked": True, "already_revoked": False}
    before = await token_row(log.database_url, info["jti"])
    assert before is not None and before["revoked_at"] is not None

    # A retry answers 200 and changes nothing: the first revocation's time stays, and the
    # audit log has one revocation.
    again = await expect(await log.admin(path, {}), 200)
    assert again == {"jti": info["jti"], "revoked": True, "already_revoked": True}
    after = await token_row(log.database_url, info["jti"])
    assert after is not None
    assert (after["revoked_at"], after["revoked_by"]) == (before["revoked_at"], "admin-token")
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tlog.audit"]
    assert [e["event"] for e in events].count("token_revoked") == 1
    await refused(log, log.publish(ACME, "com.acme.app", "1.0", info["token"]),
                  401, "token_revoked")

    # Only a token the log never issued is 404, and it is not recorded.
    error = await refused(log, log.admin("/v1/admin/tokens/never-issued/revoke", {}),
                          404, "not_found")
    assert "never-issued" in error["message"]
    assert await token_row(log.database_url, "never-issued") is None


async def test_token_not_on_record_is_refused(log: Log) -> None:
    token, _ = authority(log.origin).issue("acme", ["com.acme.*"],
                                                  timedelta(minutes=15))
    await refused(log, log.publish(ACME, "com.acme.app", "1.0", token), 401, "token_unknown")


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


async def test_garbled_token_is_refused(log: Log) -> None:
    good = await log.token("acme", ["com.acme.*"])
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    wider = _b64({**claims, "scopes": ["*"]})
    # A character in the middle: changing the last ones could leave non-zero padding bits,
    # which PyJWT refuses as malformed before it checks the signature.
    flipped = signature[:10] + ("B" if signature[10] != "B" else "C") + signature[11:]
    cases: list[tuple[str, str, str]] = [
        ("Bearer not-a-jwt", "token_malformed", "not three segments"),
        ("Bearer a.b.c", "token_malformed", "undecodable segments"),
        (f"Bearer {header}.{payload}", "token_malformed", "no signature"),
        (f"Bearer {_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.", "token_malformed",
         "alg none"),
        (f"Bearer {_b64({'alg': 'HS256', 'typ': 'JWT'})}.{payload}.{signature}",
         "token_malformed", "algorithm swapped"),
        (f"Bearer {header}.{wider}.{signature}", "token_bad_signature", "claims widened"),
        (f"Bearer {header}.{payload}.{flipped}", "token_bad_signature", "signature flipped"),
        (f"Bearer {'x' * 5000}", "token_malformed", "oversized"),
        (f"Basic {good}", "token_malformed", "wrong scheme"),
        ("Bearer ", "token_malformed", "empty"),
    ]
    for n, (authorization, code, what) in enumerate(cases):
        entry = make_release(ACME, "com.acme.app", f"6.6.{n}")
        resp = log.submit(entry, None, headers={"Authorization": authorization})
        error = await refused(log, resp, 401, code)
        assert good not in error["message"], what
    await expect(await log.publish(ACME, "com.acme.app", "1.0", good), 201)


async def test_token_signed_by_another_key_is_refused(log: Log) -> None:
    stranger = authority(log.origin, key=generate_key("tlog-tokens"))
    token, claims = stranger.issue("acme", ["com.acme.*"], timedelta(minutes=15))
    await refused(log, log.publish(ACME, "com.acme.app", "1.0", token), 401,
                  "token_bad_signature")
    # Even with its id on record (say, copied from a leaked audit row) it stays refused.
    conn = await asyncpg.connect(log.database_url)
    try:
        await conn.execute("INSERT INTO tokens (jti, publisher, scopes, expires_at, issued_by) "
                           "VALUES ($1, 'acme', $2, $3, 'test')", claims.jti,
                           list(claims.scopes), claims.expires)
    finally:
        await conn.close()
    await refused(log, log.publish(ACME, "com.acme.app", "1.0", token), 401,
                  "token_bad_signature")


async def test_token_for_another_log_is_refused(log: Log) -> None:
    token, _ = authority("log.example.org/elsewhere").issue(
        "acme", ["com.acme.*"], timedelta(minutes=15))
    await refused(log, log.publish(ACME, "com.acme.app", "1.0", token), 401, "token_malformed")


async def test_missing_token_is_refused_in_registered_mode(log: Log) -> None:
    await refused(log, log.publish(ACME, "com.acme.app", "1.0", None), 401, "token_missing")
    removal = sign_entry(rotation("acme", [], [ACME]), ACME)
    await refused(log, log.submit(removal, None), 401, "token_missing")
    registration_entry = sign_entry(registration("mallory", ["x"], [MALLORY]), ADMIN)
    await refused(log, log.submit(registration_entry, None), 403, "admin_only")


# -- the admin API ----------------------------------------------------------------------------


ADMIN_CALLS: list[tuple[str, Any]] = [
    ("/v1/admin/tokens", {"publisher": "acme", "scopes": ["*"], "ttl": "24h"}),
    ("/v1/admin/entries",
     sign_entry(registration("mallory", ["com.*"], [MALLORY]), ADMIN)),
    ("/v1/admin/tokens/some-token-id/revoke", {}),
]


async def test_admin_api_without_credential_is_refused(log: Log) -> None:
    for path, body in ADMIN_CALLS:
        await refused(log, log.admin(path, body, secret=None), 401, "admin_auth_required")
        await refused(log, log.request("POST", path, json=body,
                                       headers={"Authorization": f"Basic {ADMIN_SECRET}"}),
                      401, "admin_auth_required")
    assert await token_count(log.database_url) == 0


async def test_admin_api_is_closed_when_no_admin_credential_is_configured(
        make_log: LogFactory) -> None:
    log = await make_log(admin_secret=None)
    for path, body in ADMIN_CALLS:
        await refused(log, log.admin(path, body, secret=None), 403, "admin_forbidden")
        await refused(log, log.admin(path, body, secret=""), 403, "admin_forbidden")
    assert await token_count(log.database_url) == 0


async def test_admin_api_with_wrong_secret_is_refused(log: Log) -> None:
    token = await log.token("acme", ["com.acme.*"])
    wrong = ["wrong", ADMIN_SECRET[:-1], ADMIN_SECRET + "x", ADMIN_SECRET.upper(),
             ADMIN_SECRET[:8], token]
    for path, body in ADMIN_CALLS:
        for secret in wrong:
            error = await refused(log, log.admin(path, body, secret=secret),
                                  403, "admin_forbidden")
            assert secret not in error["message"]
    assert await token_count(log.database_url) == 1  # the token made for this test


async def test_token_issuance_is_audited(log: Log, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tlog.audit")
    info = await log.issue("acme", ["com.acme.*"], ttl="2h")
    assert set(info) == {"token", "jti", "publisher", "scopes", "expires_at"}
    row = await token_row(log.database_url, info["jti"])
    assert row is not None
    assert (row["publisher"], list(row["scopes"]), row["issued_by"]) == (
        "acme", ["com.acme.*"], "admin-token")
    assert row["revoked_at"] is None
    assert row["expires_at"] == datetime.fromisoformat(info["expires_at"])
    lifetime = row["expires_at"] - row["issued_at"]
    assert timedelta(hours=2) - timedelta(minutes=1) < lifetime <= timedelta(hours=2, seconds=1)

    await expect(await log.admin(f"/v1/admin/tokens/{info['jti']}/revoke", {}), 200)
    audit = [r for r in caplog.records if r.name == "tlog.audit"]
    lines = [json.loads(r.getMessage()) for r in audit]
    issued = [x for x in lines if x["event"] == "token_issued"]
    assert issued == [{"event": "token_issued", "by": "admin-token", "jti": info["jti"],
                       "publisher": "acme", "scopes": ["com.acme.*"],
                       "expires": info["expires_at"]}]
    assert {"event": "token_revoked", "by": "admin-token", "jti": info["jti"]} in lines
    for record in audit:
        assert info["token"] not in record.getMessage()
        assert info["token"].split(".")[2] not in record.getMessage()

    # Tokens beyond the maximum lifetime, or with bad scopes, are not issued at all.
    for bad in ({"publisher": "acme", "scopes": ["com.acme.*"], "ttl": "25h"},
                {"publisher": "acme", "scopes": []},
                {"publisher": "acme", "scopes": ["com acme"]}):
        await refused(log, log.admin("/v1/admin/tokens", bad), 422, "invalid_request")
    assert await token_count(log.database_url) == 1


# -- pushback ---------------------------------------------------------------------------------


async def test_flood_beyond_client_quota_gets_429_with_retry_after(make_log: LogFactory) -> None:
    # Every write of a client counts: 2 admin calls for the setup, then 2 releases.
    log = await make_log(Quotas(client_rate=0.01, client_burst=4))
    await log.register("acme", ["com.acme.*"], [ACME])
    token = await log.token("acme", ["com.acme.*"])
    for version in ("1.0", "1.1"):
        await expect(await log.publish(ACME, "com.acme.app", version, token), 201)
    for version in ("1.2", "1.3", "1.4"):
        before = await log.state()
        resp = await log.publish(ACME, "com.acme.app", version, token)
        await expect(resp, 429, "rate_limited")
        assert int(resp.headers["Retry-After"]) >= 60  # one token per 100 s
        assert await log.state() == before
    # Admin writes from the same client are held back too; reads are not.
    await refused(log, log.admin("/v1/admin/tokens", {"publisher": "acme", "scopes": ["x"]}),
                  429, "rate_limited")
    metrics = await (await log.request("GET", "/metrics")).text()
    assert 'tlog_refusals_total{code="rate_limited"} 4.0' in metrics


async def test_flood_beyond_publisher_quota_gets_429(make_log: LogFactory) -> None:
    log = await make_log(Quotas(publisher_rate=0.01, publisher_burst=2))
    await log.register("acme", ["com.acme.*"], [ACME])
    await log.register("other", ["org.other.*"], [OTHER])
    acme, other = await log.token("acme", ["com.acme.*"]), await log.token("other", ["org.*"])
    for version in ("1.0", "1.1"):
        await expect(await log.publish(ACME, "com.acme.app", version, acme), 201)
    before = await log.state()
    resp = await log.publish(ACME, "com.acme.app", "1.2", acme)
    error = (await expect(resp, 429, "rate_limited"))["error"]
    assert "acme" in error["message"]
    assert int(resp.headers["Retry-After"]) >= 60
    assert await log.state() == before
    # Another token of the same publisher shares its quota; other publishers keep theirs.
    second = await log.token("acme", ["com.acme.*"])
    await refused(log, log.publish(ACME, "com.acme.app", "1.2", second), 429, "rate_limited")
    await expect(await log.publish(OTHER, "org.other.lib", "1.0", other), 201)


@asynccontextmanager
async def append_lock_held(database_url: str) -> AsyncIterator[None]:
    """The log's append lock, held by another connection: appends wait until it is left."""
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
            yield
    finally:
        await blocker.close()


async def test_writes_beyond_in_flight_cap_get_503(make_log: LogFactory) -> None:
    log = await make_log(Quotas(max_in_flight=1))
    await log.register("acme", ["com.acme.*"], [ACME])
    token = await log.token("acme", ["com.acme.*"])
    before = await log.state()
    in_flight = log.client.app[IN_FLIGHT]
    # Hold the log's append lock: the first write stays in flight until it is released.
    async with append_lock_held(log.database_url):
        first = asyncio.create_task(log.publish(ACME, "com.acme.app", "1.0", token))
        for _ in range(500):
            if in_flight.current >= 1:
                break
            await asyncio.sleep(0.01)
        assert in_flight.current == 1
        second = await log.publish(ACME, "com.acme.app", "1.1", token)
        await expect(second, 503, "overloaded")
        assert int(second.headers["Retry-After"]) >= 1
        admin = await log.admin("/v1/admin/tokens", {"publisher": "acme", "scopes": ["x"]})
        await expect(admin, 503, "overloaded")
        assert await log.state() == before  # reads still answer
        assert not first.done()
    await expect(await first, 201)
    assert in_flight.current == 0
    await expect(await log.publish(ACME, "com.acme.app", "1.1", token), 201)
    assert (await log.state())[0] == before[0] + size_after([1, 1])


# -- what the log writes down -----------------------------------------------------------------


async def test_no_secret_in_logs_or_error_bodies(make_log: LogFactory, log_signer: Signer,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = await make_log()
    await log.register("acme", ["com.acme.*"], [ACME])
    info = await log.issue("acme", ["com.acme.*"])
    token = info["token"]
    tokens = [token]
    await expect(await log.publish(ACME, "com.acme.app", "1.0", token), 201)
    # Failures of every kind, with secrets in the places an attacker or a mistake puts them.
    await expect(await log.admin("/v1/admin/tokens", {"publisher": "acme", "scopes": ["x"]},
                                 secret=ADMIN_SECRET + "x"), 403, "admin_forbidden")
    await expect(await log.admin("/v1/admin/tokens", {"publisher": "acme", "scopes": ["x"]},
                                 secret=token), 403, "admin_forbidden")
    await expect(await log.publish(ACME, "com.acme.app", "1.1", ADMIN_SECRET), 401,
                 "token_malformed")
    expired, _ = authority(log.origin).issue(
        "acme", ["com.acme.*"], timedelta(minutes=1), now=datetime.now(UTC) - timedelta(hours=1))
    foreign, _ = authority(log.origin, key=generate_key("x")).issue(
        "acme", ["com.acme.*"], timedelta(minutes=1))
    tokens += [expired, foreign]
    await expect(await log.publish(ACME, "com.acme.app", "1.1", expired), 401, "token_expired")
    await expect(await log.publish(ACME, "com.acme.app", "1.1", foreign), 401,
                 "token_bad_signature")
    head, sig = token.rsplit(".", 1)
    garbled = f"{head}.{sig[:10]}{'B' if sig[10] != 'B' else 'C'}{sig[11:]}"
    await expect(await log.publish(ACME, "com.acme.app", "1.1", garbled), 401,
                 "token_bad_signature")
    await expect(await log.publish(ACME, "org.other.lib", "1.1", token), 403,
                 "token_out_of_scope")
    await expect(await log.submit(make_release(ACME, "com.acme.app", "1.1"), None,
                                  headers={"Authorization": f"Bearer {token}",
                                           "X-Request-Id": "not a valid id"}), 201)
    await expect(await log.request("POST", "/v1/entries", data=ADMIN_SECRET.encode(),
                                   headers={"Content-Type": "application/json",
                                            "Authorization": f"Bearer {token}"}),
                 400, "invalid_json")
    await expect(await log.admin(f"/v1/admin/tokens/{info['jti']}/revoke", {},
                                 headers={"X-Request-Id": "ci-run-42.step_7"}), 200)
    await expect(await log.publish(ACME, "com.acme.app", "1.2", token), 401, "token_revoked")
    await log.state()

    private_keys = [k.text() for k in (ADMIN, TOKEN_KEY, ACME, log_signer)]
    secrets = [ADMIN_SECRET, *tokens, *(t.split(".")[2] for t in tokens),
               # PRIVATE+KEY+<name>+<id>+<base64 key>: the base64 itself may hold a '+'
               *private_keys, *(k.split("+", 4)[4] for k in private_keys)]
    records = list(caplog.records)
    assert any(r.name == "tlog.access" for r in records)
    assert any(r.name == "tlog.audit" for r in records)
    for record in records:
        text = record.getMessage() + (record.exc_text or "")
        for secret in secrets:
            assert secret not in text, f"a secret is in a {record.name} log record"
    # Only the issuance answer holds a token: the new one, which is its purpose.
    holding = [body for _, body, _ in log.responses if token in body]
    assert len(holding) == 1 and json.loads(holding[0])["jti"] == info["jti"]
    for request_id, body, headers in log.responses:
        seen = body.replace(token, "<the issued token>") + json.dumps(headers)
        for secret in secrets:
            assert secret not in seen, f"a secret is in the response to request {request_id}"

    access = [json.loads(r.getMessage()) for r in records if r.name == "tlog.access"]
    assert [a["id"] for a in access] == [request_id for request_id, _, _ in log.responses]
    assert "ci-run-42.step_7" in [a["id"] for a in access]
    assert "not a valid id" not in [a["id"] for a in access]
    for line in access:
        assert set(line) == {"id", "method", "route", "status", "ms", "client"}
        assert line["id"]


# -- TLS and mTLS, on a real `tlog serve` -----------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@dataclass
class MtlsLog:
    server: Server
    pki: Pki
    database_url: str


@pytest.fixture
def mtls_log(database_url: str, log_signer: Signer, pki: Pki,
             tmp_path: Path) -> Iterator[MtlsLog]:
    """A registered log over HTTPS whose writes need a client certificate; no admin token:
    admin calls are authenticated by an admin client certificate alone."""
    admin_vkey = tmp_path / "admin.vkey"
    admin_vkey.write_text(ADMIN.verifier().text() + "\n")
    server = start_server(
        database_url, write_key(tmp_path / "log.key", log_signer), tmp_path, scheme="https",
        extra=["--policy", "registered", "--admin-key", str(admin_vkey),
               "--token-key", str(write_key(tmp_path / "token.key", TOKEN_KEY)),
               "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
               "--client-ca", str(pki.ca)])
    try:
        yield MtlsLog(server, pki, database_url)
    finally:
        server.stop()


def tls_context(pki: Pki, identity: Identity | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if identity is not None:
        ctx.load_cert_chain(identity.cert, identity.key)
    return ctx


@dataclass
class Https:
    session: aiohttp.ClientSession
    url: str

    async def call(self, method: str, path: str, body: Any = None,
                   token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.url + path, json=body,
                                        headers=headers) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if resp.content_type == "application/json"
                                 else text)

    async def state(self) -> tuple[int, str]:
        status, info = await self.call("GET", "/v1/log")
        assert status == 200
        status, checkpoint = await self.call("GET", "/checkpoint")
        assert status == 200
        return info["tree_size"], checkpoint


@pytest.fixture
async def https(mtls_log: MtlsLog) -> AsyncIterator[Callable[[Identity | None], Https]]:
    sessions: list[aiohttp.ClientSession] = []

    def connect(identity: Identity | None) -> Https:
        connector = aiohttp.TCPConnector(ssl=tls_context(mtls_log.pki, identity))
        session = aiohttp.ClientSession(connector=connector,
                                        timeout=aiohttp.ClientTimeout(total=20))
        sessions.append(session)
        return Https(session, mtls_log.server.url)

    yield connect
    for session in sessions:
        await session.close()


async def test_missing_client_certificate_is_refused_when_mtls_is_on(
        mtls_log: MtlsLog, https: Callable[[Identity | None], Https], log_signer: Signer) -> None:
    pki = mtls_log.pki
    anonymous, client, admin = https(None), https(pki.client), https(pki.admin)
    before = await anonymous.state()  # reads need no client certificate
    assert before[0] == 0

    # Writes and admin calls without a client certificate.
    release = make_release(ACME, "com.acme.app", "1.0")
    register = sign_entry(registration("acme", ["com.acme.*"], [ACME]), ADMIN)
    token_request = {"publisher": "acme", "scopes": ["com.acme.*"]}
    for path, body in (("/v1/entries", release), ("/v1/admin/entries", register),
                       ("/v1/admin/tokens", token_request)):
        status, reply = await anonymous.call("POST", path, body)
        assert (status, reply["error"]["code"]) == (401, "client_certificate_required"), reply
    # A client certificate is not an admin identity, and this log has no admin token.
    status, reply = await client.call("POST", "/v1/admin/tokens", token_request)
    assert (status, reply["error"]["code"]) == (403, "admin_forbidden"), reply
    # A certificate with the admin's name from a CA the log does not trust fails the handshake.
    with pytest.raises(aiohttp.ClientError):
        await https(pki.rogue_admin).call("POST", "/v1/admin/tokens", token_request)
    assert await anonymous.state() == before

    # The admin certificate alone authenticates admin calls.
    status, reply = await admin.call("POST", "/v1/admin/entries", register)
    assert status == 201, reply
    status, issued = await admin.call("POST", "/v1/admin/tokens", token_request)
    assert status == 201, issued
    row = await token_row(mtls_log.database_url, issued["jti"])
    assert row is not None and row["issued_by"] == "cert:tlog-admin"

    # With the token but no certificate: refused; with a client certificate: logged.
    after_register = await anonymous.state()
    status, reply = await anonymous.call("POST", "/v1/entries", release, token=issued["token"])
    assert (status, reply["error"]["code"]) == (401, "client_certificate_required"), reply
    assert await anonymous.state() == after_register
    status, receipt = await client.call("POST", "/v1/entries", release, token=issued["token"])
    assert status == 201, receipt
    assert (await anonymous.state())[0] == after_register[0] + leaves(1)

    # The operator's command line works the same way: an admin certificate, no admin token.
    out = subprocess.run(
        [sys.executable, "-m", "tlog", "token", "issue", "--log", mtls_log.server.url,
         "--ca", str(pki.ca), "--client-cert", str(pki.admin.cert),
         "--client-key", str(pki.admin.key), "--publisher", "acme", "--scope", "com.acme.*",
         "--ttl", "10m"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "TLOG_ADMIN_TOKEN"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(".") == 2  # the token, printed alone on stdout
    assert out.stdout.strip() not in out.stderr

    # The real process logs JSON lines with request ids, and no token or key.
    output = mtls_log.server.output()
    for secret in (issued["token"], out.stdout.strip(), TOKEN_KEY.text(), log_signer.text()):
        assert secret not in output
    access = [json.loads(line.split(" tlog.access: ", 1)[1])
              for line in output.splitlines() if " tlog.access: " in line]
    assert len(access) >= 10 and all(a["id"] and a["status"] for a in access)
    assert {(a["route"], a["status"]) for a in access} >= {
        ("/v1/entries", 401), ("/v1/entries", 201), ("/v1/admin/tokens", 403)}
    audit = [json.loads(line.split(" tlog.audit: ", 1)[1])
             for line in output.splitlines() if " tlog.audit: " in line]
    assert [a["by"] for a in audit if a["event"] == "token_issued"] == ["cert:tlog-admin"] * 2


# -- startup refusals -------------------------------------------------------------------------


@dataclass
class ServeFiles:
    log_key: Path
    token_key: Path
    admin_vkey: Path
    admin_token: Path
    tls_cert: Path
    tls_key: Path

    def args(self) -> list[str]:
        return ["serve", "--database-url", "postgresql://nobody@127.0.0.1:1/none",
                "--listen", "127.0.0.1:1", "--key", str(self.log_key), "--policy", "registered",
                "--admin-key", str(self.admin_vkey), "--token-key", str(self.token_key),
                "--admin-token-file", str(self.admin_token), "--tls-cert", str(self.tls_cert),
                "--tls-key", str(self.tls_key)]


@pytest.fixture
def serve_files(tmp_path: Path, log_signer: Signer, pki: Pki) -> ServeFiles:
    admin_vkey = tmp_path / "admin.vkey"
    admin_vkey.write_text(ADMIN.verifier().text() + "\n")
    admin_token = tmp_path / "admin-token"
    admin_token.write_text(ADMIN_SECRET + "\n")
    admin_token.chmod(0o600)
    return ServeFiles(write_key(tmp_path / "log.key", log_signer),
                      write_key(tmp_path / "token.key", TOKEN_KEY), admin_vkey, admin_token,
                      pki.server.cert, pki.server.key)


def test_world_readable_token_key_or_admin_secret_is_refused_at_startup(
        serve_files: ServeFiles, capsys: pytest.CaptureFixture[str]) -> None:
    # With every secret file at 0600 the configuration loads.
    config = from_options("postgresql://nobody@127.0.0.1:1/none", str(serve_files.log_key),
                          "127.0.0.1:1", policy="registered",
                          admin_key=[str(serve_files.admin_vkey)],
                          token_key=str(serve_files.token_key),
                          admin_token_file=str(serve_files.admin_token),
                          tls_cert=str(serve_files.tls_cert), tls_key=str(serve_files.tls_key))
    assert config.admin_secret == ADMIN_SECRET and config.token_signer == TOKEN_KEY

    # A real process: the token key readable by everyone.
    serve_files.token_key.chmod(0o644)
    proc = subprocess.run([sys.executable, "-m", "tlog", *serve_files.args()],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "readable by others" in proc.stderr
    assert str(serve_files.token_key) in proc.stderr and "chmod 600" in proc.stderr
    assert TOKEN_KEY.text() not in proc.stderr + proc.stdout
    serve_files.token_key.chmod(0o600)

    # The same command in this process, for each secret file and each loose mode.
    for path in (serve_files.log_key, serve_files.token_key, serve_files.admin_token,
                 serve_files.tls_key):
        for mode in (0o644, 0o640, 0o604):
            path.chmod(mode)
            assert tlog_main(serve_files.args()) == 2
            err = capsys.readouterr().err
            assert "readable by others" in err and str(path) in err, (path, oct(mode), err)
            assert ADMIN_SECRET not in err and TOKEN_KEY.text() not in err
            path.chmod(0o600)
