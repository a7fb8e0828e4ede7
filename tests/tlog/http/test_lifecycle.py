"""Lifecycle statements (rollout/v1, halt/v1, yank/v1, resume/v1) at submission, on a real
PostgreSQL: each attack on the rules is refused with its code, and the tree is unchanged."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.support import make_release
from tests.tlog.http.test_access import (
    ACME,
    ACME2,
    ADMIN,
    ADMIN_SECRET,
    OTHER,
    TOKEN_KEY,
    Log,
    expect,
    refused,
    rotation,
)
from tests.tlog.sizes import alone, leaves, size_after
from tlog.config import Config
from tlog.http.app import create_app
from verifier.protocol.entries.lifecycle import HALT_KIND, RESUME_KIND, ROLLOUT_KIND, YANK_KIND
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer, generate_key

HALT_BOT = generate_key("acme")  # a halt-only key of acme, once added with role "halt"


def statement(signer: Signer, kind: str, package: str, version: str,
              **members: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"kind": kind, "package": package, "version": version}
    if kind == ROLLOUT_KIND:
        fields.update(stage="canary", percent=10)
    if kind in (HALT_KIND, YANK_KIND):
        fields["reason"] = "crash reports from the canary"
    fields.update(members)
    return sign_entry(fields, signer)


# -- an open log (the conftest client): the rules that hold whatever the policy ---------------


async def post(client: Any, entry: dict[str, Any], status: int,
               code: str | None = None) -> dict[str, Any]:
    resp = await client.post("/v1/entries", json=entry)
    body: dict[str, Any] = await resp.json()
    assert resp.status == status, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


async def size(client: Any) -> int:
    resp = await client.get("/v1/log")
    return int((await resp.json())["tree_size"])


async def test_lifecycle_statement_for_an_unlogged_release_is_refused(
        client: Any, publisher: Signer) -> None:
    body = await post(client, statement(publisher, HALT_KIND, "com.acme.app", "9.9"), 409,
                      "release_not_logged")
    assert "com.acme.app 9.9" in body["error"]["message"]
    assert await size(client) == 0


async def test_lifecycle_statement_from_another_publisher_is_refused(
        client: Any, publisher: Signer) -> None:
    await post(client, make_release(publisher, "com.acme.app", "1.0"), 201)
    mallory = generate_key("mallory")
    body = await post(client, statement(mallory, HALT_KIND, "com.acme.app", "1.0"), 403,
                      "wrong_publisher")
    assert "'acme-release-bot'" in body["error"]["message"]
    assert await size(client) == leaves(1)


async def test_yank_then_rollout_or_resume_or_halt_is_refused(
        client: Any, publisher: Signer) -> None:
    await post(client, make_release(publisher, "com.acme.app", "1.0"), 201)
    await post(client, make_release(publisher, "com.acme.app", "1.1"), 201)
    await post(client, statement(publisher, ROLLOUT_KIND, "com.acme.app", "1.1"), 201)
    await post(client, statement(publisher, YANK_KIND, "com.acme.app", "1.1",
                                 rollback_version="1.0"), 201)
    for kind in (ROLLOUT_KIND, RESUME_KIND, HALT_KIND):
        await post(client, statement(publisher, kind, "com.acme.app", "1.1", reason="again"
                                     ) if kind != ROLLOUT_KIND else
                   statement(publisher, kind, "com.acme.app", "1.1", percent=100), 409,
                   "version_yanked")
    # The very statement logged before the yank is found again (a retry), not appended.
    again = await post(client, statement(publisher, ROLLOUT_KIND, "com.acme.app", "1.1"), 200)
    assert again["index"] == alone(2)
    # Another yank may change the rollback target: the latest statement stays a yank.
    await post(client, statement(publisher, YANK_KIND, "com.acme.app", "1.1",
                                 reason="still bad"), 201)
    assert await size(client) == size_after([1] * 5)


async def test_rollback_to_an_unlogged_or_yanked_version_is_refused(
        client: Any, publisher: Signer) -> None:
    await post(client, make_release(publisher, "com.acme.app", "1.0"), 201)
    await post(client, make_release(publisher, "com.acme.app", "1.1"), 201)
    await post(client, statement(publisher, HALT_KIND, "com.acme.app", "1.1",
                                 rollback_version="0.9"), 409, "rollback_not_logged")
    await post(client, statement(publisher, HALT_KIND, "com.acme.app", "1.1",
                                 rollback_version="1.1"), 422, "invalid_entry")
    await post(client, statement(publisher, YANK_KIND, "com.acme.app", "1.0"), 201)
    await post(client, statement(publisher, YANK_KIND, "com.acme.app", "1.1",
                                 rollback_version="1.0"), 409, "rollback_yanked")


async def test_statements_share_a_version_but_a_second_release_still_conflicts(
        client: Any, publisher: Signer, database_url: str) -> None:
    """Migration 0005: (package, version) is unique among releases only; the listing by
    package gives releases and statements in log order."""
    await post(client, make_release(publisher, "com.acme.app", "1.0"), 201)
    await post(client, statement(publisher, ROLLOUT_KIND, "com.acme.app", "1.0"), 201)
    await post(client, statement(publisher, ROLLOUT_KIND, "com.acme.app", "1.0", percent=50),
               201)
    await post(client, statement(publisher, HALT_KIND, "com.acme.app", "1.0"), 201)
    conflict = await post(client, make_release(publisher, "com.acme.app", "1.0", payload=b"x"),
                          409, "conflict")
    assert conflict["error"]["index"] == 0
    for query in ("package=com.acme.app", "package=com.acme.app&version=1.0"):
        listed = await (await client.get(f"/v1/entries?{query}")).json()
        # Each posted alone: the map roots between them are not listed by package.
        assert [e["index"] for e in listed["entries"]] == [alone(i) for i in range(4)]
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO entries (idx, leaf, leaf_hash, package, version) "
                               "VALUES (99, 'x', $1, 'com.acme.app', '1.0')", b"\x01" * 32)
        registry = await (await client.get("/v1/registry")).json()
        assert registry["entries"] == []  # statements are not registry entries
    finally:
        await conn.close()


# -- a registered log: keys, and halt-only keys ------------------------------------------------


@pytest.fixture
async def log(aiohttp_client: Any, database_url: str, log_signer: Signer) -> Log:
    """acme owns com.acme.* (key ACME) and released com.acme.app 1.0 and 1.1."""
    app = create_app(Config(
        database_url=database_url, signer=log_signer, host="127.0.0.1", port=0,
        policy="registered", admin_keys=(ADMIN.verifier(),), token_signer=TOKEN_KEY,
        admin_secret=ADMIN_SECRET, max_wait=0.002))
    log = Log(await aiohttp_client(app), database_url, log_signer.name)
    await log.register("acme", ["com.acme.*"], [ACME])
    await log.register("other", ["org.other.*"], [OTHER])
    token = await log.token("acme", ["com.acme.*"])
    for version in ("1.0", "1.1"):
        await expect(await log.publish(ACME, "com.acme.app", version, token), 201)
    return log


async def add_halt_key(log: Log, token: str) -> None:
    fields = {**rotation("acme", [HALT_BOT], []), "role": "halt"}
    await expect(await log.submit(sign_entry(fields, ACME), token), 201)


async def test_a_halt_only_key_cannot_release_roll_out_or_resume_but_can_halt_and_yank(
        log: Log) -> None:
    token = await log.token("acme", ["com.acme.*"])
    await add_halt_key(log, token)
    await refused(log, log.publish(HALT_BOT, "com.acme.app", "6.6.6", token), 403,
                  "key_not_valid")
    await refused(log, log.submit(statement(HALT_BOT, ROLLOUT_KIND, "com.acme.app", "1.1",
                                            percent=100), token), 403, "halt_key_only")
    await refused(log, log.submit(statement(HALT_BOT, RESUME_KIND, "com.acme.app", "1.1"),
                                  token), 403, "halt_key_only")
    await refused(log, log.submit(sign_entry(rotation("acme", [ACME2], []), HALT_BOT), token),
                  403, "not_authorized")
    await expect(await log.submit(statement(HALT_BOT, HALT_KIND, "com.acme.app", "1.1",
                                            rollback_version="1.0"), token), 201)
    await expect(await log.submit(statement(HALT_BOT, YANK_KIND, "com.acme.app", "1.1",
                                            rollback_version="1.0"), token), 201)


async def test_a_key_cannot_be_both_publishing_and_halt_only(log: Log) -> None:
    token = await log.token("acme", ["com.acme.*"])
    fields = {**rotation("acme", [ACME], []), "role": "halt"}
    await refused(log, log.submit(sign_entry(fields, ACME), token), 409, "key_role_conflict")


async def test_a_revoked_halt_only_key_can_no_longer_halt(log: Log) -> None:
    token = await log.token("acme", ["com.acme.*"])
    await add_halt_key(log, token)
    fields = {"kind": "revoke/v1", "publisher": "acme", "reason": "bot retired",
              "keys": [HALT_BOT.verifier().text()]}
    await expect(await log.submit(sign_entry(fields, ACME), token), 201)
    await refused(log, log.submit(statement(HALT_BOT, HALT_KIND, "com.acme.app", "1.1"), token),
                  403, "key_not_valid")


async def test_a_statement_outside_the_tokens_scope_or_by_an_unowned_key_is_refused(
        log: Log) -> None:
    other_token = await log.token("other", ["org.other.*"])
    await refused(log, log.submit(statement(OTHER, HALT_KIND, "com.acme.app", "1.1"),
                                  other_token), 403, "token_out_of_scope")
    wide = await log.token("acme", ["org.other.*"])
    await refused(log, log.submit(statement(ACME, HALT_KIND, "com.acme.app", "1.1"), wide),
                  403, "token_out_of_scope")
