"""POST /v1/entries/batch on a real PostgreSQL: results in order, receipts that verify, one
checkpoint for a request's entries, and whole-request refusals that change nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support import make_release
from tests.tlog.http.test_api import expect_error, leaf_of, log_state, refused
from tests.tlog.http.test_openapi import ADMIN_KEY, ADMIN_SECRET, registration
from tests.tlog.sizes import size_after
from tlog.config import Config
from tlog.http.app import create_app
from tlog.http.batch import MAX_ENTRIES
from tlog.http.handlers import CLIENT_BUCKETS, SEQUENCER
from verifier.protocol.checkpoint import open_checkpoint
from verifier.protocol.merkle import leaf_hash, verify_inclusion
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.receipt import make_receipt, verify_receipt
from verifier.protocol.trust import KeyTrust

Client = TestClient[web.Request, web.Application]
BATCH = "/v1/entries/batch"


def check_receipt(result: dict[str, Any], entry: dict[str, Any], log_signer: Signer) -> int:
    """The receipt proves `entry` in the checkpoint it carries; returns the tree size."""
    cp = open_checkpoint(result["checkpoint"], log_signer.verifier())
    assert cp.size == result["tree_size"]
    assert result["leaf_hash"] == leaf_hash(leaf_of(entry)).hex()
    proof = [bytes.fromhex(h) for h in result["inclusion_proof"]]
    verify_inclusion(result["index"], cp.size, bytes.fromhex(result["leaf_hash"]), proof,
                     cp.root)
    offline = make_receipt(entry, result["index"], proof, result["checkpoint"])
    assert verify_receipt(offline, KeyTrust(log_signer.verifier())).index == result["index"]
    return cp.size


async def post_batch(client: Client, entries: list[Any], **kw: Any) -> list[dict[str, Any]]:
    resp = await client.post(BATCH, json={"entries": entries}, **kw)
    text = await resp.text()
    assert resp.status == 200, text
    results: list[dict[str, Any]] = json.loads(text)["results"]
    assert len(results) == len(entries)
    return results


async def test_mixed_batch_answers_each_entry_in_order_and_logs_only_the_valid_ones(
        client: Client, publisher: Signer, log_signer: Signer) -> None:
    old = make_release(publisher, "com.acme.app", "0.9")
    first = await post_batch(client, [old])
    assert first[0]["status"] == 201 and first[0]["index"] == 0
    new = [make_release(publisher, "com.acme.app", f"1.{i}") for i in range(3)]
    forged = {**make_release(publisher, "com.acme.app", "6.6"), "version": "6.7"}
    conflicting = make_release(publisher, "com.acme.app", "0.9", counter=7)
    entries = [new[0], forged, old, {"kind": "release/v1"}, new[1], conflicting, "x", new[2],
               new[0]]
    results = await post_batch(client, entries)
    statuses = [r["status"] for r in results]
    assert statuses == [201, 422, 200, 422, 201, 409, 422, 201, 200]
    assert results[1]["error"]["code"] == "bad_signature"
    assert results[3]["error"]["code"] == "invalid_entry"
    assert results[5]["error"] == {"code": "conflict", "index": 0,
                                   "message": results[5]["error"]["message"]}
    assert results[2]["index"] == 0 and results[8]["index"] == results[0]["index"]
    # The three new entries: one batch after the first, with one checkpoint for all.
    assert [results[i]["index"] for i in (0, 4, 7)] == [2, 3, 4]
    sizes = {check_receipt(results[i], entries[i], log_signer) for i in (0, 2, 4, 7, 8)}
    assert sizes == {size_after([1, 3])}
    assert len({results[i]["checkpoint"] for i in (0, 2, 4, 7, 8)}) == 1
    assert await log_state(client) == (size_after([1, 3]), results[0]["checkpoint"])


async def test_a_full_batch_shares_one_checkpoint_when_submitted_alone(
        client: Client, publisher: Signer, log_signer: Signer) -> None:
    # More than the sequencer's max_batch (512): a request's group is never split.
    entries = [make_release(publisher, "com.acme.app", f"2.{i}") for i in range(MAX_ENTRIES)]
    results = await post_batch(client, entries)
    assert {r["status"] for r in results} == {201}
    assert [r["index"] for r in results] == list(range(MAX_ENTRIES))
    assert len({r["checkpoint"] for r in results}) == 1
    for i in (0, 511, 512, MAX_ENTRIES - 1):
        assert check_receipt(results[i], entries[i], log_signer) == size_after([MAX_ENTRIES])


async def test_a_batch_over_the_entry_limit_is_413_and_logs_nothing(
        client: Client, publisher: Signer) -> None:
    entry = make_release(publisher, "com.acme.app", "1.0")
    await refused(client, "POST", BATCH, 413, "too_many_entries",
                  json={"entries": [entry] * (MAX_ENTRIES + 1)})


async def test_a_body_beyond_the_batch_limit_is_413_before_it_is_read(client: Client) -> None:
    # Content-Length alone says so: no byte of the body is sent.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"POST {BATCH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {17 * 1024 * 1024}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 413"), head
    writer.close()


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"entries": {}}', b'{"entries": []}',
                                  b'{"entries": [], "more": 1}', b'"entries"',
                                  b'{"entries": [1], "entries": [2]}'])
async def test_a_body_that_is_not_a_batch_is_400_and_logs_nothing(
        client: Client, body: bytes) -> None:
    error = await refused(client, "POST", BATCH, 400,
                          "invalid_json" if body in (b"{", b'{"entries": [1], "entries": [2]}')
                          else "invalid_batch",
                          data=body, headers={"Content-Type": "application/json"})
    assert error["message"]


async def test_a_batch_not_sent_as_json_is_415(client: Client) -> None:
    await refused(client, "POST", BATCH, 415, "unsupported_media_type", data=b'{"entries":[]}',
                  headers={"Content-Type": "text/plain"})


async def test_a_client_hanging_up_mid_body_changes_nothing(
        client: Client, publisher: Signer) -> None:
    before = await log_state(client)
    body = json.dumps({"entries": [make_release(publisher, "com.acme.app", "1.0")]}).encode()
    _reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"POST {BATCH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:-10])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.2)
    assert await log_state(client) == before
    # And the server still takes the whole body from someone else.
    assert (await post_batch(client, json.loads(body)["entries"]))[0]["status"] == 201


# -- a registered log ----------------------------------------------------------------------


@pytest.fixture
async def registered(aiohttp_client: Any, database_url: str, log_signer: Signer) -> Client:
    app = create_app(Config(database_url=database_url, signer=log_signer, host="127.0.0.1",
                            port=0, policy="registered", admin_keys=(ADMIN_KEY.verifier(),),
                            token_signer=generate_key("log.example.org/tokens"),
                            admin_secret=ADMIN_SECRET, max_wait=0.002))
    client: Client = await aiohttp_client(app)
    return client


async def test_a_token_not_covering_an_entry_refuses_that_entry_alone(
        registered: Client, log_signer: Signer) -> None:
    client, admin = registered, {"Authorization": f"Bearer {ADMIN_SECRET}"}
    acme, other = generate_key("acme"), generate_key("other")
    for name, key in (("acme", acme), ("other", other)):
        resp = await client.post("/v1/admin/entries", headers=admin,
                                 json=registration(name, [f"com.{name}.*"], [key]))
        assert resp.status == 201, await resp.text()
    issued = await client.post("/v1/admin/tokens", headers=admin,
                               json={"publisher": "acme", "scopes": ["com.acme.app"]})
    token = {"Authorization": f"Bearer {(await issued.json())['token']}"}
    entries = [make_release(acme, "com.acme.app", "1.0"),
               make_release(acme, "com.acme.tool", "1.0"),      # outside the token's scopes
               make_release(other, "com.other.app", "1.0"),     # another publisher's
               registration("evil", ["com.evil.*"], [generate_key("evil")]),  # admin API only
               make_release(acme, "com.acme.app", "1.1")]
    before = await log_state(client)
    await expect_error(await client.post(BATCH, json={"entries": entries}), 401,
                       "token_missing")
    assert await log_state(client) == before
    results = await post_batch(client, entries, headers=token)
    assert [r["status"] for r in results] == [201, 403, 403, 403, 201]
    assert [r["error"]["code"] for r in results[1:4]] == [
        "token_out_of_scope", "token_wrong_publisher", "admin_only"]
    for i in (0, 4):
        assert check_receipt(results[i], entries[i], log_signer) == before[0] + 3


async def test_a_batch_that_does_not_fit_the_queue_is_503_and_takes_no_room(
        client: Client, publisher: Signer) -> None:
    """A 1000-entry request cannot push the queue past max_pending and starve others."""
    client.app[SEQUENCER].max_pending = 2
    entries = [make_release(publisher, "com.acme.app", f"1.{i}") for i in range(3)]
    resp = await client.post(BATCH, json={"entries": entries})
    await expect_error(resp, 503, "unavailable")
    assert resp.headers["Retry-After"] == "1"
    assert client.app[SEQUENCER].waiting == 0
    assert [r["status"] for r in await post_batch(client, entries[:2])] == [201, 201]


async def test_each_entry_of_a_batch_costs_the_client_one_submission(
        client: Client, publisher: Signer) -> None:
    buckets = client.app[CLIENT_BUCKETS]
    buckets.burst, buckets.rate = 3, 1e-6  # a full bucket holds 3, and hardly refills
    entries = [make_release(publisher, "com.acme.app", f"1.{i}") for i in range(4)]
    assert len(await post_batch(client, entries[:3])) == 3
    await refused(client, "POST", BATCH, 429, "rate_limited", json={"entries": entries[3:]})
