"""Pushback on the write path, on a real PostgreSQL: each test is named after the attack or
the stumble it stops. Stalled bodies, one client's burst of requests, large bodies piling up,
revoked or altered tokens spending a publisher's quota, and a 429 that contradicted itself.

Every refusal is checked for its status, its error code, and that the tree did not change.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support import make_release, write_key
from tests.tlog.http.test_access import (
    ACME,
    ADMIN,
    ADMIN_SECRET,
    TOKEN_KEY,
    Client,
    Log,
    append_lock_held,
    authority,
    expect,
    refused,
)
from tests.tlog.sizes import leaves
from tlog.config import Config, ConfigError, Quotas, from_options
from tlog.http.app import create_app
from tlog.http.handlers import CLIENT_IN_FLIGHT, IN_FLIGHT
from verifier.protocol.note import Signer

STALLER = "127.0.0.2"  # another loopback address: the one that stalls, apart from the others


@pytest.fixture
def make_log(aiohttp_client: Any, database_url: str, log_signer: Signer) -> Any:
    async def make(quotas: Quotas) -> Log:
        app = create_app(Config(
            database_url=database_url, signer=log_signer, host="127.0.0.1", port=0,
            policy="registered", admin_keys=(ADMIN.verifier(),), token_signer=TOKEN_KEY,
            admin_secret=ADMIN_SECRET, quotas=quotas, max_wait=0.002))
        client: Client = await aiohttp_client(app)
        log = Log(client, database_url, log_signer.name)
        await log.register("acme", ["com.acme.*"], [ACME])
        return log

    return make


async def stalled_post(log: Log) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST /v1/entries from STALLER that sends its headers and "{", then nothing."""
    server = log.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port,
                                                   local_addr=(STALLER, 0))
    writer.write(b"POST /v1/entries HTTP/1.1\r\nHost: tlog\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 1000\r\n\r\n{")
    await writer.drain()
    return reader, writer


async def answer(reader: asyncio.StreamReader, within: float) -> tuple[int, dict[str, str],
                                                                      dict[str, Any]]:
    """(status, headers, JSON body) of the one answer on a raw connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), within)
    return int(lines[0].split(" ")[1]), headers, json.loads(body)


async def wait_until(condition: Any, seconds: float = 30) -> None:
    for _ in range(int(seconds * 100)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


# -- stalled bodies ---------------------------------------------------------------------------


def stalled_count(wanted: int = 1000) -> int:
    """How many stalled requests this process can hold: each is two sockets here (client and
    in-process server). The soft limit on open files is raised to the hard one (a normal
    user's soft limit is often 1,024); what still does not fit shrinks the count."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    room = wanted if soft == resource.RLIM_INFINITY else (soft - 300) // 2
    count = min(wanted, room)
    assert count >= 300, f"open-file limit {soft} is too low to stall 300 requests"
    return count


async def test_stalled_bodies_do_not_block_other_writers(make_log: Any) -> None:
    # The global cap (200) is far below the stalled requests (1,000 where the open-file limit
    # allows): before the fix, one address holding them answered everybody's writes 503 for
    # as long as it liked.
    stalled = stalled_count()
    log = await make_log(Quotas(max_in_flight=200, max_in_flight_per_client=50,
                                body_timeout=3.0))
    token = await log.token("acme", ["com.acme.*"])
    doomed = await log.issue("acme", ["com.acme.*"])
    before = await log.state()
    per_client = log.client.app[CLIENT_IN_FLIGHT]
    stalls = [await stalled_post(log) for _ in range(stalled)]
    try:
        await wait_until(lambda: per_client.current(f"ip:{STALLER}") == 50)
        # Another client's valid entry is logged, and the admin's revocation goes through.
        await expect(await log.publish(ACME, "com.acme.app", "1.0", token), 201)
        revoked = await log.admin(f"/v1/admin/tokens/{doomed['jti']}/revoke", {})
        assert await expect(revoked, 200) == {"jti": doomed["jti"], "revoked": True,
                                          "already_revoked": False}
        await refused(log, log.publish(ACME, "com.acme.app", "1.1", doomed["token"]),
                      401, "token_revoked")
        # Past its cap the address is told at once (429); the held bodies time out (408).
        answers = await asyncio.gather(*(answer(r, within=30) for r, _ in stalls))
    finally:
        for _, writer in stalls:
            writer.close()
    seen = Counter((status, body["error"]["code"]) for status, _, body in answers)
    assert seen == {(429, "rate_limited"): stalled - 50, (408, "body_timeout"): 50}
    for status, headers, _ in answers:
        assert status != 408 or headers["connection"] == "close"
        assert status != 429 or headers["retry-after"] == "1"
    size, _ = await log.state()
    # The valid entry (and its batch's map root), and nothing of the stalled ones.
    assert size == before[0] + leaves(1)
    await wait_until(lambda: per_client.current(f"ip:{STALLER}") == 0)
    assert log.client.app[IN_FLIGHT].current == 0 and log.client.app[IN_FLIGHT].bytes == 0


async def test_a_body_that_never_arrives_gets_408_body_timeout_and_changes_nothing(
        make_log: Any) -> None:
    log = await make_log(Quotas(body_timeout=0.5))
    before = await log.state()
    reader, writer = await stalled_post(log)
    try:
        status, headers, body = await answer(reader, within=10)
    finally:
        writer.close()
    assert (status, body["error"]["code"]) == (408, "body_timeout")
    assert "0.5 s" in body["error"]["message"] and headers["connection"] == "close"
    assert await log.state() == before
    assert log.client.app[IN_FLIGHT].current == 0


# -- large bodies piling up -------------------------------------------------------------------


def padded(entry: dict[str, Any], size: int) -> bytes:
    """The entry's JSON padded with whitespace to `size` bytes: a large body, a small entry."""
    text = json.dumps(entry).encode()
    return text[:-1] + b" " * (size - len(text)) + b"}"


async def test_in_flight_bytes_bound_refuses_the_next_large_body_with_503(
        make_log: Any) -> None:
    # 5,000 writes in flight with 128 KiB bodies each held their body and parsed entry:
    # gigabytes. The byte budget here takes two large bodies; the third waits for a 503.
    big = 120 * 1024
    log = await make_log(Quotas(max_in_flight_bytes=2 * big + 4096))
    token = {"Authorization": f"Bearer {await log.token('acme', ['com.acme.*'])}",
             "Content-Type": "application/json"}
    bodies = [padded(make_release(ACME, "com.acme.app", f"1.{i}"), big) for i in range(3)]
    before = await log.state()
    in_flight = log.client.app[IN_FLIGHT]
    # Hold the log's append lock: the first two writes stay in flight until it is released.
    async with append_lock_held(log.database_url):
        held = [asyncio.create_task(log.request("POST", "/v1/entries", data=body,
                                                headers=token)) for body in bodies[:2]]
        await wait_until(lambda: in_flight.current == 2)
        assert in_flight.bytes == 2 * big
        third = await log.request("POST", "/v1/entries", data=bodies[2], headers=token)
        await expect(third, 503, "overloaded")
        assert third.headers["Retry-After"] == "1"
        assert await log.state() == before
    for task in held:
        await expect(await task, 201)
    assert (in_flight.current, in_flight.bytes) == (0, 0)
    retried = await log.request("POST", "/v1/entries", data=bodies[2], headers=token)
    await expect(retried, 201)


# -- tokens and the publisher's quota ---------------------------------------------------------


async def test_revoked_tokens_submissions_do_not_drain_the_publishers_quota(
        make_log: Any) -> None:
    log = await make_log(Quotas(publisher_rate=0.01, publisher_burst=2))
    revoked = await log.issue("acme", ["com.acme.*"])
    await expect(await log.admin(f"/v1/admin/tokens/{revoked['jti']}/revoke", {}), 200)
    for version in ("1.0", "1.1", "1.2", "1.3"):
        await refused(log, log.publish(ACME, "com.acme.app", version, revoked["token"]),
                      401, "token_revoked")
    # The publisher's whole burst is still there for its valid token.
    token = await log.token("acme", ["com.acme.*"])
    for version in ("1.0", "1.1"):
        await expect(await log.publish(ACME, "com.acme.app", version, token), 201)
    await refused(log, log.publish(ACME, "com.acme.app", "1.2", token), 429, "rate_limited")


async def test_unknown_tokens_submissions_do_not_drain_the_publishers_quota(
        make_log: Any) -> None:
    log = await make_log(Quotas(publisher_rate=0.01, publisher_burst=1))
    stray, _ = authority(log.origin).issue("acme", ["com.acme.*"], timedelta(minutes=15))
    for version in ("1.0", "1.1"):
        await refused(log, log.publish(ACME, "com.acme.app", version, stray), 401,
                      "token_unknown")
    token = await log.token("acme", ["com.acme.*"])
    await expect(await log.publish(ACME, "com.acme.app", "1.0", token), 201)


@pytest.mark.parametrize("column, value", [
    ("scopes", ["com.acme.app"]),      # the record says one package, the token a prefix
    ("publisher", "other"),            # the record is another publisher's
    ("expires_at", "+1 hour"),         # the token outlives what the log issued
])
async def test_token_whose_claims_disagree_with_its_record_is_refused(
        make_log: Any, column: str, value: Any) -> None:
    log = await make_log(Quotas(publisher_rate=0.01, publisher_burst=1))
    token, claims = authority(log.origin).issue("acme", ["com.acme.*"], timedelta(minutes=15))
    record: dict[str, Any] = {"publisher": "acme", "scopes": ["com.acme.*"],
                              "expires_at": claims.expires}
    if column == "expires_at":
        record[column] = claims.expires + timedelta(hours=1)
    else:
        record[column] = value
    conn = await asyncpg.connect(log.database_url)
    try:
        await conn.execute("INSERT INTO tokens (jti, publisher, scopes, expires_at, issued_by) "
                           "VALUES ($1, $2, $3, $4, 'test')", claims.jti, record["publisher"],
                           record["scopes"], record["expires_at"])
    finally:
        await conn.close()
    error = await refused(log, log.publish(ACME, "com.acme.app", "1.0", token), 401,
                          "token_mismatch")
    assert "record" in error["message"]
    # Refused before the quota: the publisher's one submission is still there.
    valid = await log.token("acme", ["com.acme.*"])
    await expect(await log.publish(ACME, "com.acme.app", "1.0", valid), 201)


# -- what a 429 says --------------------------------------------------------------------------


async def test_a_429_says_in_its_message_the_seconds_its_retry_after_says(
        make_log: Any) -> None:
    # One token per 1/3 s: the wait is a fraction of a second, and used to read "retry in
    # 0.3 s" beside "Retry-After: 1".
    log = await make_log(Quotas(client_rate=3.0, client_burst=3))
    token = await log.token("acme", ["com.acme.*"])
    for version in ("1.0", "1.1"):  # the registration and the token took one each
        resp = await log.publish(ACME, "com.acme.app", version, token)
        if resp.status == 201:
            continue
        error = (await expect(resp, 429, "rate_limited"))["error"]
        seconds = resp.headers["Retry-After"]
        assert re.search(rf"retry in {seconds} s\b", error["message"]), (seconds, error)
        assert seconds == "1"
        return
    raise AssertionError("the client's bucket never ran dry")


# -- configuration ----------------------------------------------------------------------------


def test_write_limits_are_configurable_and_bad_values_are_refused(tmp_path: Path,
                                                                  log_signer: Signer) -> None:
    key = str(write_key(tmp_path / "log.key", log_signer))

    def load(**given: Any) -> Quotas:
        return from_options("postgresql://nobody@127.0.0.1:1/none", key, "127.0.0.1:1",
                            policy="open", **given).quotas

    assert load() == Quotas()
    assert Quotas().max_in_flight_per_client * 10 <= Quotas().max_in_flight
    quotas = load(body_timeout=2.5, max_in_flight_per_client=7, max_in_flight_bytes=1 << 20)
    assert (quotas.body_timeout, quotas.max_in_flight_per_client,
            quotas.max_in_flight_bytes) == (2.5, 7, 1 << 20)
    for bad in ({"body_timeout": 0.0}, {"body_timeout": 3600.0},
                {"max_in_flight_per_client": 0}, {"max_in_flight_bytes": 1000}):
        with pytest.raises(ConfigError):
            load(**bad)
