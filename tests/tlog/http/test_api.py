"""The HTTP API on a real PostgreSQL: every endpoint, every refusal, and proofs that verify.

Each refusal test checks the status, the stable JSON error code, and that nothing changed:
the tree size from GET /v1/log and the latest signed checkpoint are the same afterwards.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support import make_release
from tests.tlog.sizes import alone, leaves, logged_leaf, size_after, with_map_roots
from tlog.http.handlers import SEQUENCER
from tlog.log.sequencer import Sequencer
from verifier.protocol.checkpoint import Checkpoint, open_checkpoint
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.release import validate_entry
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.merkle import leaf_hash, root_of, verify_consistency, verify_inclusion
from verifier.protocol.note import Signer, b64encode, generate_key
from verifier.protocol.package_state import parse_map_root_entry
from verifier.protocol.receipt import make_receipt, verify_receipt
from verifier.protocol.tiles import decode_bundle, hash_up, split_hashes
from verifier.protocol.trust import KeyTrust

Client = TestClient[web.Request, web.Application]

IMMUTABLE = "public, max-age=31536000, immutable"
MAX_INT = 2**63 - 1
TILE = 256
# Not canonical decimals 0..2^63-1: signs, spaces, exponents, hex, leading zeros, non-ASCII
# digits, fractions, and values at or beyond 2^63.
NON_CANONICAL = ["-1", "0x10", "1e3", " 5", "5 ", "+5", "05", "00", "1.0", "\u0665", "five",
                 str(2**63), "99999999999999999999"]


# -- helpers --------------------------------------------------------------------------------


async def log_state(client: Client) -> tuple[int, str]:
    """(tree size from /v1/log, latest checkpoint note): what a refusal must not change."""
    info = await client.get("/v1/log")
    assert info.status == 200
    checkpoint = await client.get("/checkpoint")
    assert checkpoint.status == 200
    return (await info.json())["tree_size"], await checkpoint.text()


async def expect_error(resp: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """Assert a JSON error body with this status and code; return its "error" object."""
    text = await resp.text()
    assert resp.status == status, f"{resp.method} {resp.url}: {resp.status} {text}"
    assert resp.content_type == "application/json", text
    body = json.loads(text)
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, f"{resp.method} {resp.url}: {text}"
    assert isinstance(error["message"], str) and error["message"]
    return error


async def refused(client: Client, method: str, path: str, status: int, code: str,
                  **kw: Any) -> dict[str, Any]:
    """Make a request that must be refused, and check the log did not change."""
    before = await log_state(client)
    error = await expect_error(await client.request(method, path, **kw), status, code)
    assert await log_state(client) == before, f"{method} {path} changed the log"
    return error


async def post_json(client: Client, entry: dict[str, Any]) -> ClientResponse:
    return await client.post("/v1/entries", json=entry)


async def submit(client: Client, entry: dict[str, Any], status: int = 201) -> dict[str, Any]:
    resp = await post_json(client, entry)
    body: dict[str, Any] = await resp.json()
    assert resp.status == status, body
    return body


async def submit_many(client: Client, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """POST all at once: the sequencer gathers them into batches."""
    return list(await asyncio.gather(*(submit(client, e) for e in entries)))


async def seed(client: Client, publisher: Signer, count: int = 1) -> list[dict[str, Any]]:
    """`count` entries appended one after another, each in a batch of its own (entry i at
    index alone(i)), so every size size_after([1] * k) for k in 1..count is published."""
    return [await submit(client, make_release(publisher, "seed", f"0.{i}")) for i in range(count)]


def sequencer(client: Client) -> Sequencer:
    app = client.app
    assert app is not None
    return app[SEQUENCER]


def leaf_of(entry: dict[str, Any]) -> bytes:
    return validate_entry(entry).leaf


def checkpoint_of(note: str | bytes, log_signer: Signer) -> Checkpoint:
    return open_checkpoint(note, log_signer.verifier())


def unhex(hashes: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hashes]


def with_member(entry: dict[str, Any], member: str) -> str:
    """The entry's JSON text with `member` (raw JSON text `"name": value`) appended."""
    text = json.dumps(entry)
    return text[:-1] + ", " + member + "}"


def query_path(path: str, params: Sequence[tuple[str, str]]) -> str:
    """`path?k=v&...` with every value percent-encoded exactly (no "+" for spaces)."""
    return path + "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)


async def fill_two_tiles(client: Client, publisher: Signer,
                         count: int = 300) -> dict[int, bytes]:
    """Append `count` (>= 256) entries concurrently; return index -> leaf for every leaf
    of the tree: the map-root/v1 leaf ending each batch is a real leaf of the tiles and
    bundles too (tests.tlog.sizes.with_map_roots)."""
    entries = [make_release(publisher, f"bulk{i % 7}", f"1.{i}") for i in range(count)]
    receipts = await submit_many(client, entries)
    stored = {r["index"]: leaf_of(e) for r, e in zip(receipts, entries, strict=True)}
    assert len(stored) == count
    every = await with_map_roots(client, stored, [r["tree_size"] for r in receipts])
    assert len(every) == (await log_state(client))[0] < 2 * TILE
    return dict(enumerate(every))


# -- submitting entries: happy paths --------------------------------------------------------


async def test_new_entry_is_appended_with_201_and_a_receipt_that_verifies(
        client: Client, publisher: Signer, log_signer: Signer) -> None:
    await seed(client, publisher, 2)
    entry = make_release(publisher, "com.acme.app", "2.4.1", counter=42)
    resp = await post_json(client, entry)
    assert resp.status == 201
    assert resp.content_type == "application/json"
    receipt = await resp.json()
    assert set(receipt) == {"index", "leaf_hash", "tree_size", "inclusion_proof", "checkpoint"}
    assert receipt["index"] == alone(2)
    assert receipt["leaf_hash"] == leaf_hash(leaf_of(entry)).hex()
    cp = checkpoint_of(receipt["checkpoint"], log_signer)
    assert cp.size == receipt["tree_size"] == size_after([1, 1, 1])
    verify_inclusion(receipt["index"], cp.size, bytes.fromhex(receipt["leaf_hash"]),
                     unhex(receipt["inclusion_proof"]), cp.root)
    # The same answer as the offline receipt `tlog publish` writes.
    offline = make_receipt(entry, receipt["index"], unhex(receipt["inclusion_proof"]),
                           receipt["checkpoint"])
    assert verify_receipt(offline, KeyTrust(log_signer.verifier())).index == alone(2)
    assert await log_state(client) == (size_after([1, 1, 1]), receipt["checkpoint"])


async def test_same_entry_again_returns_200_with_the_same_index_and_appends_nothing(
        client: Client, publisher: Signer, log_signer: Signer) -> None:
    entry = make_release(publisher, "com.acme.app", "1.0")
    first = await submit(client, entry, 201)
    before = await log_state(client)
    again = await submit(client, entry, 200)
    assert again["index"] == first["index"]
    assert again["leaf_hash"] == first["leaf_hash"]
    cp = checkpoint_of(again["checkpoint"], log_signer)
    verify_inclusion(again["index"], cp.size, bytes.fromhex(again["leaf_hash"]),
                     unhex(again["inclusion_proof"]), cp.root)
    assert await log_state(client) == before


async def test_second_artifact_set_for_same_version_is_refused_with_409_naming_the_index(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher, 1)
    first = await submit(client, make_release(publisher, "com.acme.app", "1.0", payload=b"a"))
    other = make_release(publisher, "com.acme.app", "1.0", payload=b"b")
    error = await refused(client, "POST", "/v1/entries", 409, "conflict", json=other)
    assert error["index"] == first["index"] == alone(1)
    # Another publisher key cannot take the version over either.
    intruder = make_release(generate_key("intruder"), "com.acme.app", "1.0", payload=b"a")
    error = await refused(client, "POST", "/v1/entries", 409, "conflict", json=intruder)
    assert error["index"] == alone(1)


async def test_conflicting_entries_submitted_together_append_only_one(
        client: Client, publisher: Signer) -> None:
    entries = [make_release(publisher, "race", "1.0", payload=bytes([i])) for i in range(4)]
    resps = await asyncio.gather(*(post_json(client, e) for e in entries))
    bodies = [await r.json() for r in resps]
    statuses = sorted(r.status for r in resps)
    assert statuses == [201, 409, 409, 409], bodies
    winner = next(b for r, b in zip(resps, bodies, strict=True) if r.status == 201)
    assert all(b["error"]["index"] == winner["index"] for b in bodies if "error" in b)
    assert (await log_state(client))[0] == leaves(1)


# -- submitting entries: refusals -----------------------------------------------------------


async def test_malformed_json_is_refused_with_400(client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    good = json.dumps(make_release(publisher, "p", "1.0"))
    bodies: list[bytes | str] = [
        "", "{", "not json", good[:-1], good + "x", good + "{}", "{'kind': 'release/v1'}",
        b"\xff\xfe{}", "\ufeff" + good, good.encode("utf-16"), b'{"kind": "\xc3"}',
    ]
    for body in bodies:
        await refused(client, "POST", "/v1/entries", 400, "invalid_json", data=body,
                      headers={"Content-Type": "application/json"})


async def test_wrong_content_type_is_refused_with_415(client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    body = json.dumps(make_release(publisher, "p", "1.0"))
    for content_type in ["text/plain", "application/x-www-form-urlencoded",
                         "application/octet-stream", "application/jsonx", "text/json",
                         "application/json; charset=latin-1", "application/json; charset=utf-16"]:
        await refused(client, "POST", "/v1/entries", 415, "unsupported_media_type", data=body,
                      headers={"Content-Type": content_type})
    # No Content-Type at all.
    await refused(client, "POST", "/v1/entries", 415, "unsupported_media_type",
                  data=body.encode(), skip_auto_headers=["Content-Type"])


async def test_unknown_members_are_refused_with_422(client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    fields: dict[str, Any] = {"kind": "release/v1", "package": "p", "version": "1.0",
                              "artifacts": [{"name": "a", "sha256": "00" * 32, "size": 1}]}
    extras: list[dict[str, Any]] = [{"extra": 1}, {"Package": "p"}, {"signature2": "x"}]
    for extra in extras:
        entry = sign_entry({**fields, **extra}, publisher)  # properly signed: only the member
        error = await refused(client, "POST", "/v1/entries", 422, "invalid_entry", json=entry)
        assert next(iter(extra)) in error["message"]
    nested = sign_entry({**fields, "artifacts": [{"name": "a", "sha256": "00" * 32, "size": 1,
                                                  "url": "https://x"}]}, publisher)
    await refused(client, "POST", "/v1/entries", 422, "invalid_entry", json=nested)


async def test_entries_that_break_the_schema_are_refused_with_422(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    base = {"kind": "release/v1", "package": "p", "version": "1.0",
            "artifacts": [{"name": "a", "sha256": "00" * 32, "size": 1}]}
    broken: list[Any] = [
        {**base, "counter": 5.0},                 # a float where an integer belongs
        {**base, "counter": 2**53},               # beyond the safe integers
        {**base, "counter": -1},
        {**base, "counter": True},
        {**base, "kind": "release/v2"},
        {**base, "artifacts": []},
        {**base, "artifacts": [{"name": "a", "sha256": "AA" * 32, "size": 1}]},
        {**base, "artifacts": [base["artifacts"][0], base["artifacts"][0]]},
        {**base, "version": "1.0\n"},
        {**base, "package": "bad package"},
        {**base, "install_window": {"not_before": "2026-02-01T00:00:00Z",
                                    "not_after": "2026-01-01T00:00:00Z"}},
        {**base, "metadata": {"big": 2**60}},     # JCS cannot encode it exactly
    ]
    for fields in broken:
        try:
            entry = sign_entry(fields, publisher)
        except EntryError:  # unsignable: the entry is refused before its signature is read
            entry = {**fields, "key": publisher.verifier().text(), "signature": "A" * 88}
        await refused(client, "POST", "/v1/entries", 422, "invalid_entry", json=entry)
    for not_an_object in ["[]", '"release/v1"', "5", "null"]:
        await refused(client, "POST", "/v1/entries", 422, "invalid_entry", data=not_an_object,
                      headers={"Content-Type": "application/json"})


async def test_invalid_publisher_signature_is_refused_with_422(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    entry = make_release(publisher, "com.acme.app", "1.0")
    tampered = {**entry, "version": "1.1"}
    other = make_release(generate_key("acme-release-bot"), "com.acme.app", "1.0")
    wrong_key = {**other, "key": entry["key"]}      # same name, signed by another key
    not_base64 = {**entry, "signature": "!!!" + entry["signature"][3:]}
    short = {**entry, "signature": b64encode(bytes(63))}
    zeros = {**entry, "signature": b64encode(bytes(64))}
    for bad in [tampered, wrong_key, not_base64, short, zeros]:
        await refused(client, "POST", "/v1/entries", 422, "bad_signature", json=bad)
    unsigned = {k: v for k, v in entry.items() if k != "signature"}
    await refused(client, "POST", "/v1/entries", 422, "invalid_entry", json=unsigned)


async def test_bad_vkey_is_refused_with_422_bad_key(client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    entry = make_release(publisher, "com.acme.app", "1.0")
    name, kid, data = entry["key"].split("+", 2)  # base64 may hold "+" too
    wrong_id = f"{int(kid, 16) ^ 1:08x}"
    keys = [
        "", "not a key", f"{name}+{kid}", f"{name}+{wrong_id}+{data}",
        f"{name}+{kid}+{data[:-4]}", f"{name}+{kid}+{data}=", f"{name}+{kid} +{data}",
        f"{name}+{kid}+{b64encode(bytes([2]) + bytes(32))}",   # not an Ed25519 key type
        f"other-name+{kid}+{data}", f"bad name+{kid}+{data}",
    ]
    if kid != kid.upper():  # key IDs are lowercase hex
        keys.append(f"{name}+{kid.upper()}+{data}")
    for key in keys:
        await refused(client, "POST", "/v1/entries", 422, "bad_key", json={**entry, "key": key})


async def test_entry_over_65535_bytes_is_refused_with_413_entry_too_large(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    entry = sign_entry({"kind": "release/v1", "package": "p", "version": "1.0",
                        "artifacts": [{"name": "a", "sha256": "00" * 32, "size": 1}],
                        "metadata": {"notes": "x" * 65500}}, publisher)
    body = json.dumps(entry).encode()
    assert 65535 < len(body) < 128 * 1024
    await refused(client, "POST", "/v1/entries", 413, "entry_too_large", data=body,
                  headers={"Content-Type": "application/json"})


async def test_body_over_128_kib_is_refused_with_413(client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    entry = make_release(publisher, "p", "1.0")
    body = with_member(entry, json.dumps("metadata") + ": " + json.dumps({"n": "x" * 131072}))
    await refused(client, "POST", "/v1/entries", 413, "body_too_large", data=body,
                  headers={"Content-Type": "application/json"})


async def test_duplicate_member_names_are_refused_with_400(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    entry = make_release(publisher, "com.acme.app", "1.0")
    bodies = [
        with_member(entry, '"package": "com.acme.app"'),       # the same value twice
        with_member(entry, '"version": "6.6.6"'),              # a second, different value
        with_member(entry, '"metadata": {"a": 1, "a": 2}'),    # nested
        with_member(entry, '"pack\\u0061ge": "x"'),             # equal once unescaped
    ]
    for body in bodies:
        await refused(client, "POST", "/v1/entries", 400, "invalid_json", data=body,
                      headers={"Content-Type": "application/json"})


async def test_nan_infinity_and_overflowing_numbers_are_refused_with_400(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    entry = make_release(publisher, "p", "1.0")
    for value in ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 5000]:
        body = with_member(entry, f'"metadata": {{"x": {value}}}')
        await refused(client, "POST", "/v1/entries", 400, "invalid_json", data=body,
                      headers={"Content-Type": "application/json"})


async def test_deep_nesting_is_refused_with_400(client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    entry = make_release(publisher, "p", "1.0")
    deep = '{"a": ' * 40 + "1" + "}" * 40
    bodies = [with_member(entry, f'"metadata": {deep}'),  # balanced and small: only too deep
              "[" * 60_000 + "]" * 60_000, '{"a":' * 15_000 + "1" + "}" * 15_000]
    for body in bodies:
        await refused(client, "POST", "/v1/entries", 400, "invalid_json", data=body,
                      headers={"Content-Type": "application/json"})


async def test_undecodable_content_encoding_is_400_with_connection_close_not_500(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    good = json.dumps(make_release(publisher, "p", "1.0")).encode()
    for encoding, body in [("gzip", b"not gzip"), ("deflate", b"not deflate"),
                           ("gzip", good)]:
        before = await log_state(client)
        resp = await client.post("/v1/entries", data=body, headers={
            "Content-Type": "application/json", "Content-Encoding": encoding})
        await expect_error(resp, 400, "bad_request")
        # The server drops the connection after an unreadable body, and must say so.
        assert resp.headers["Connection"] == "close"
        assert await log_state(client) == before
    resp = await client.post("/v1/entries", data=gzip.compress(good), headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert resp.status == 201


async def test_submissions_answer_503_and_append_nothing_while_appends_are_stopped(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    sequencer(client).failed = "test: self-check failed"
    try:
        before = await log_state(client)
        resp = await post_json(client, make_release(publisher, "p", "1.0"))
        await expect_error(resp, 503, "unavailable")
        assert resp.headers["Retry-After"] == "1"
        resp = await client.get("/readyz")
        await expect_error(resp, 503, "not_ready")
        assert resp.headers["Retry-After"] == "1"
        assert await log_state(client) == before
    finally:
        sequencer(client).failed = None
    await submit(client, make_release(publisher, "p", "1.0"))


# -- reading entries ------------------------------------------------------------------------


async def test_get_entry_returns_the_logged_entry_and_its_leaf_hash(
        client: Client, publisher: Signer) -> None:
    entries = [make_release(publisher, "p", f"1.{i}") for i in range(3)]
    for e in entries:
        await submit(client, e)
    for i, entry in enumerate(entries):
        resp = await client.get(f"/v1/entries/{alone(i)}")
        assert resp.status == 200
        body = await resp.json()
        assert body == {"index": alone(i), "leaf_hash": leaf_hash(leaf_of(entry)).hex(),
                        "entry": entry}


async def test_entries_and_checkpoints_beyond_the_tree_are_404(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher, 2)
    size = size_after([1, 1])
    for path in [f"/v1/entries/{size}", "/v1/entries/1000", f"/v1/entries/{MAX_INT}",
                 f"/v1/checkpoints/{size + 1}", f"/v1/checkpoints/{MAX_INT}"]:
        await refused(client, "GET", path, 404, "not_found")


async def test_list_by_package_filters_by_version_and_pages_with_next_after(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher, 1)
    mine = [make_release(publisher, "com.acme.app", f"2.{i}") for i in range(5)]
    for i, entry in enumerate(mine):
        await submit(client, entry)
        await submit(client, make_release(publisher, "com.acme.other", f"2.{i}"))
    # Interleaved with the other package, each entry alone in its batch after the seed.
    indices = [alone(1 + 2 * i) for i in range(5)]

    resp = await client.get("/v1/entries", params={"package": "com.acme.app"})
    assert resp.status == 200
    page = await resp.json()
    assert [e["index"] for e in page["entries"]] == indices
    assert [e["entry"] for e in page["entries"]] == mine
    assert all(e["leaf_hash"] == leaf_hash(leaf_of(e["entry"])).hex() for e in page["entries"])
    assert page["next_after"] is None

    seen: list[int] = []
    after: int | None = None
    while True:
        params = {"package": "com.acme.app", "limit": "2"}
        if after is not None:
            params["after"] = str(after)
        page = await (await client.get("/v1/entries", params=params)).json()
        seen += [e["index"] for e in page["entries"]]
        if page["next_after"] is None:
            break
        assert page["next_after"] == seen[-1]
        after = page["next_after"]
    assert seen == indices

    page = await (await client.get("/v1/entries", params={
        "package": "com.acme.app", "version": "2.3"})).json()
    assert [(e["index"], e["entry"]["version"]) for e in page["entries"]] == [(indices[3], "2.3")]
    assert page["next_after"] is None
    page = await (await client.get("/v1/entries", params={
        "package": "com.acme.app", "version": "9.9"})).json()
    assert page == {"entries": [], "next_after": None}
    page = await (await client.get("/v1/entries", params={
        "package": "com.acme.app", "after": str(MAX_INT)})).json()
    assert page == {"entries": [], "next_after": None}
    page = await (await client.get("/v1/entries", params={"package": "nobody"})).json()
    assert page == {"entries": [], "next_after": None}


async def test_list_without_package_or_with_a_bad_package_or_version_is_refused_with_400(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    for params in [[], [("version", "1.0")], [("package", "")], [("package", "a b")],
                   [("package", "x" * 201)], [("package", "p\u00e9")], [("package", "p\x00")]]:
        await refused(client, "GET", query_path("/v1/entries", params), 400, "bad_package")
    for version in ["", "1 0", "x" * 101, "1.0\n", "\u00e9"]:
        await refused(client, "GET", query_path("/v1/entries", [("package", "p"),
                                                                ("version", version)]),
                      400, "bad_version")


async def test_limit_outside_1_to_1000_is_refused_with_400(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    for limit in ["0", "1001", str(MAX_INT)]:
        await refused(client, "GET", query_path("/v1/entries", [("package", "p"),
                                                                ("limit", limit)]),
                      400, "bad_number")
    resp = await client.get("/v1/entries", params={"package": "seed", "limit": "1000"})
    assert resp.status == 200


# -- proofs and checkpoints -----------------------------------------------------------------


async def test_inclusion_proof_at_the_latest_size_verifies(
        client: Client, publisher: Signer, log_signer: Signer) -> None:
    receipts = await seed(client, publisher, 6)
    cp = checkpoint_of(await (await client.get("/checkpoint")).text(), log_signer)
    assert cp.size == size_after([1] * 6)
    for r in receipts:
        resp = await client.get("/v1/proof/inclusion", params={"leaf_hash": r["leaf_hash"]})
        assert resp.status == 200
        proof = await resp.json()
        assert set(proof) == {"index", "tree_size", "hashes"}
        assert (proof["index"], proof["tree_size"]) == (r["index"], cp.size)
        verify_inclusion(r["index"], cp.size, bytes.fromhex(r["leaf_hash"]), unhex(proof["hashes"]),
                         cp.root)


async def test_inclusion_proof_at_an_older_published_size_verifies(
        client: Client, publisher: Signer, log_signer: Signer) -> None:
    receipts = await seed(client, publisher, 5)
    first = receipts[0]
    for r in receipts:  # every size 2, 4, .., 10 was published by one of these receipts
        cp = checkpoint_of(r["checkpoint"], log_signer)
        resp = await client.get("/v1/proof/inclusion", params={
            "leaf_hash": first["leaf_hash"], "tree_size": str(cp.size)})
        assert resp.status == 200
        proof = await resp.json()
        assert (proof["index"], proof["tree_size"]) == (0, cp.size)
        verify_inclusion(0, cp.size, bytes.fromhex(first["leaf_hash"]), unhex(proof["hashes"]),
                         cp.root)


async def test_inclusion_proof_in_a_tree_without_the_entry_is_404_not_in_tree(
        client: Client, publisher: Signer) -> None:
    receipts = await seed(client, publisher, 3)
    # Entry 2 is at index alone(2) = 4: no tree of size <= 4 holds it (0, 2, 4 published).
    for size in ["0", "2", str(alone(2))]:
        path = query_path("/v1/proof/inclusion", [("leaf_hash", receipts[2]["leaf_hash"]),
                                                  ("tree_size", size)])
        await refused(client, "GET", path, 404, "not_in_tree")


async def test_inclusion_proof_for_an_unknown_leaf_hash_is_404(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher, 2)
    path = query_path("/v1/proof/inclusion", [("leaf_hash", "ab" * 32)])
    await refused(client, "GET", path, 404, "not_found")


async def test_leaf_hash_of_wrong_length_case_or_alphabet_is_refused_with_400(
        client: Client, publisher: Signer) -> None:
    receipts = await seed(client, publisher)
    good = receipts[0]["leaf_hash"]
    for bad in [good[:-1], good + "0", good[:-2], good.upper(), good[:-1] + "A", "g" * 64,
                "0x" + good[2:], " " + good[1:], good + "\n", "", "\u0661" * 64]:
        path = query_path("/v1/proof/inclusion", [("leaf_hash", bad)])
        await refused(client, "GET", path, 400, "bad_hash")


async def test_missing_required_parameters_are_refused_with_400(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher, 2)
    for path in ["/v1/proof/inclusion", "/v1/proof/inclusion?tree_size=1",
                 "/v1/proof/consistency", "/v1/proof/consistency?first=1",
                 "/v1/proof/consistency?second=1"]:
        await refused(client, "GET", path, 400, "missing_parameter")


async def test_tree_size_that_was_never_published_is_404_no_checkpoint(
        client: Client, publisher: Signer) -> None:
    receipts = await seed(client, publisher, 1)
    seq = sequencer(client)
    # Queued together before the sequencer runs: one batch, one checkpoint at size 5 only
    # (2 after the seed, plus this batch's 2 entries and its map root).
    batch = [validate_entry(make_release(publisher, "batch", f"1.{i}")) for i in range(2)]
    done = await asyncio.gather(*(seq.submit(r) for r in batch))
    assert {d.tree_size for d in done} == {size_after([1, 2])} == {5}
    for unpublished in ["1", "3", "4"]:
        assert (await client.get(f"/v1/checkpoints/{unpublished}")).status == 404
        path = query_path("/v1/proof/inclusion", [("leaf_hash", receipts[0]["leaf_hash"]),
                                                  ("tree_size", unpublished)])
        await refused(client, "GET", path, 404, "no_checkpoint")
    for published in ["2", "5"]:
        resp = await client.get("/v1/proof/inclusion", params={
            "leaf_hash": receipts[0]["leaf_hash"], "tree_size": published})
        assert resp.status == 200


async def test_sizes_beyond_the_tree_are_refused_with_400_beyond_tree(
        client: Client, publisher: Signer) -> None:
    receipts = await seed(client, publisher, 3)
    h = receipts[0]["leaf_hash"]
    for size in [str(size_after([1, 1, 1]) + 1), "1000", str(MAX_INT)]:
        await refused(client, "GET", query_path("/v1/proof/inclusion", [("leaf_hash", h),
                                                                         ("tree_size", size)]),
                      400, "beyond_tree")
        await refused(client, "GET", query_path("/v1/proof/consistency", [("first", "1"),
                                                                          ("second", size)]),
                      400, "beyond_tree")


async def test_first_greater_than_second_is_refused_with_400_bad_range(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher, 3)
    for first, second in [("2", "1"), ("3", "0"), (str(MAX_INT), "1"), ("5", "4")]:
        path = query_path("/v1/proof/consistency", [("first", first), ("second", second)])
        await refused(client, "GET", path, 400, "bad_range")


async def test_consistency_proofs_between_published_checkpoints_verify(
        client: Client, publisher: Signer, log_signer: Signer) -> None:
    receipts = await seed(client, publisher, 7)
    empty = await (await client.get("/v1/checkpoints/0")).text()
    checkpoints = [checkpoint_of(empty, log_signer)]
    checkpoints += [checkpoint_of(r["checkpoint"], log_signer) for r in receipts]
    assert [c.size for c in checkpoints] == [size_after([1] * k) for k in range(8)]
    for i, old in enumerate(checkpoints):
        for new in checkpoints[i:]:
            resp = await client.get("/v1/proof/consistency", params={
                "first": str(old.size), "second": str(new.size)})
            assert resp.status == 200
            proof = await resp.json()
            assert (proof["first"], proof["second"]) == (old.size, new.size)
            verify_consistency(old.size, new.size, old.root, new.root, unhex(proof["hashes"]))
            if old.size in (0, new.size):
                assert proof["hashes"] == []


async def test_checkpoint_at_a_size_is_the_exact_note_published_and_immutable(
        client: Client, publisher: Signer, log_signer: Signer) -> None:
    receipts = await seed(client, publisher, 3)
    for r in receipts:
        resp = await client.get(f"/v1/checkpoints/{r['tree_size']}")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert resp.headers["Cache-Control"] == IMMUTABLE
        assert await resp.read() == r["checkpoint"].encode()
    resp = await client.get("/v1/checkpoints/0")
    assert resp.status == 200
    cp = checkpoint_of(await resp.text(), log_signer)
    assert (cp.size, cp.root) == (0, hashlib.sha256(b"").digest())


async def test_checkpoint_is_signed_text_and_is_never_cached_as_immutable(
        client: Client, publisher: Signer, log_signer: Signer) -> None:
    resp = await client.get("/checkpoint")
    assert resp.status == 200
    assert checkpoint_of(await resp.text(), log_signer).size == 0
    receipts = await seed(client, publisher, 2)
    resp = await client.get("/checkpoint")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-cache"
    note = await resp.read()
    assert note == receipts[-1]["checkpoint"].encode()
    cp = checkpoint_of(note, log_signer)
    assert cp.origin == log_signer.name and cp.size == size_after([1, 1])


async def test_log_names_its_origin_vkey_and_size(
        client: Client, publisher: Signer, log_signer: Signer) -> None:
    await seed(client, publisher, 2)
    resp = await client.get("/v1/log")
    assert resp.status == 200
    assert await resp.json() == {"origin": log_signer.name, "vkey": log_signer.verifier().text(),
                                 "tree_size": size_after([1, 1])}


# -- numbers and query strings everywhere ---------------------------------------------------


@pytest.mark.parametrize("template", ["/v1/entries/{}", "/v1/checkpoints/{}"])
async def test_non_canonical_numbers_in_paths_are_refused_with_400(
        client: Client, publisher: Signer, template: str) -> None:
    await seed(client, publisher, 6)
    for text in NON_CANONICAL:
        await refused(client, "GET", template.format(quote(text, safe="")), 400, "bad_number")


@pytest.mark.parametrize(("path", "name", "others"), [
    ("/v1/entries", "after", [("package", "seed")]),
    ("/v1/entries", "limit", [("package", "seed")]),
    ("/v1/proof/inclusion", "tree_size", [("leaf_hash", "LEAF")]),
    ("/v1/proof/consistency", "first", [("second", "6")]),
    ("/v1/proof/consistency", "second", [("first", "0")]),
])
async def test_non_canonical_numbers_in_query_parameters_are_refused_with_400(
        client: Client, publisher: Signer, path: str, name: str,
        others: list[tuple[str, str]]) -> None:
    receipts = await seed(client, publisher, 6)
    others = [(k, receipts[0]["leaf_hash"] if v == "LEAF" else v) for k, v in others]
    for text in [*NON_CANONICAL, ""]:
        await refused(client, "GET", query_path(path, [*others, (name, text)]), 400, "bad_number")
    # The canonical form works (6 = size_after([1, 1, 1]), a published tree size).
    resp = await client.get(query_path(path, [*others, (name, "6")]))
    assert resp.status == 200, await resp.text()


async def test_unknown_query_parameters_are_refused_with_400(
        client: Client, publisher: Signer) -> None:
    receipts = await seed(client, publisher, 2)
    h = receipts[0]["leaf_hash"]
    for path, params in [
        ("/v1/entries", [("package", "seed"), ("pkg", "seed")]),
        ("/v1/entries", [("package", "seed"), ("Limit", "5")]),
        ("/v1/entries", [("package", "seed"), ("", "")]),
        ("/v1/proof/inclusion", [("leaf_hash", h), ("index", "0")]),
        ("/v1/proof/consistency", [("first", "1"), ("second", "2"), ("third", "3")]),
    ]:
        await refused(client, "GET", query_path(path, params), 400, "unknown_parameter")


async def test_repeated_query_parameters_are_refused_with_400(
        client: Client, publisher: Signer) -> None:
    receipts = await seed(client, publisher, 2)
    h = receipts[0]["leaf_hash"]
    for path, params in [
        ("/v1/entries", [("package", "seed"), ("package", "seed")]),
        ("/v1/entries", [("package", "seed"), ("package", "other")]),
        ("/v1/entries", [("package", "seed"), ("limit", "1"), ("limit", "2")]),
        ("/v1/entries", [("package", "seed"), ("after", "0"), ("after", "0")]),
        ("/v1/entries", [("package", "seed"), ("version", "0.0"), ("version", "0.1")]),
        ("/v1/proof/inclusion", [("leaf_hash", h), ("leaf_hash", h)]),
        ("/v1/proof/inclusion", [("leaf_hash", h), ("tree_size", "1"), ("tree_size", "2")]),
        ("/v1/proof/consistency", [("first", "1"), ("first", "1"), ("second", "2")]),
        ("/v1/proof/consistency", [("first", "1"), ("second", "2"), ("second", "2")]),
    ]:
        await refused(client, "GET", query_path(path, params), 400, "repeated_parameter")


# -- unknown paths and wrong methods --------------------------------------------------------


async def test_unknown_paths_are_404_json(client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    # (GET / is the explorer's home page: tests/tlog/http/test_explorer.py)
    for method, path in [("GET", "/nope"), ("GET", "/v1"), ("GET", "/v1/"),
                         ("GET", "/v1/entries/0/extra"), ("GET", "/v1/entries/"),
                         ("GET", "/v1/proof"), ("GET", "/v1/proof/other"),
                         ("GET", "/v1/checkpoints"), ("GET", "/v1/checkpoints/"),
                         ("GET", "/checkpoint/"), ("GET", "/tile"), ("GET", "/tile/"),
                         ("GET", "/v2/entries"), ("POST", "/v1/entry"),
                         ("POST", "/v1/entries/")]:
        await refused(client, method, path, 404, "not_found")


async def test_wrong_methods_are_405_json_with_an_allow_header(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    entry = make_release(publisher, "p", "1.0")
    cases = [
        ("POST", "/checkpoint", "GET, HEAD"), ("PUT", "/checkpoint", "GET, HEAD"),
        ("POST", "/tile/0/000.p/1", "GET, HEAD"), ("DELETE", "/tile/entries/000.p/1", "GET, HEAD"),
        ("PUT", "/v1/entries", "GET, HEAD, POST"), ("DELETE", "/v1/entries", "GET, HEAD, POST"),
        ("PATCH", "/v1/entries", "GET, HEAD, POST"),
        ("POST", "/v1/entries/0", "GET, HEAD"), ("DELETE", "/v1/entries/0", "GET, HEAD"),
        ("PUT", "/v1/entries/0", "GET, HEAD"),
        ("POST", "/v1/proof/inclusion", "GET, HEAD"),
        ("POST", "/v1/proof/consistency", "GET, HEAD"),
        ("POST", "/v1/checkpoints/1", "GET, HEAD"), ("PUT", "/v1/log", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"), ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/readyz", "GET, HEAD"),
    ]
    for method, path, allow in cases:
        before = await log_state(client)
        resp = await client.request(method, path, json=entry)
        await expect_error(resp, 405, "method_not_allowed")
        assert resp.headers["Allow"] == allow, (method, path)
        assert await log_state(client) == before


# -- tiles and entry bundles ----------------------------------------------------------------


async def test_bad_tile_paths_are_404(client: Client, publisher: Signer) -> None:
    await fill_two_tiles(client, publisher, 260)
    for rest in ["0/x000/005", "0/5", "0/05", "0/0005", "0/000.p/0", "0/000.p/256",
                 "0/000.p/05", "0/000.p/", "0/000.p/1000", "0/000.p", "0/000/", "0/000.P/1",
                 "64/000", "99/000", "00/000", "01/000", "-1/000", "8/0/000", "0/x001",
                 "0/x1/000", "0/X001/000", "0/000.p/-1", "entry/000", "entries/x000/000",
                 "entries/000.p/0", "entries/000.p/256", "entries/5", "entries/000/",
                 "Entries/000", "0/x001/x002/x003/x004/x005/x006/x007/000"]:
        await refused(client, "GET", "/tile/" + rest, 404, "not_found")


async def test_tile_index_beyond_the_database_range_is_404_not_500(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher)
    # N = 2^64 - 1 is a well-formed tile path; no 64-bit database column can hold it.
    huge = "x018/x446/x744/x073/x709/x551/615"
    for rest in [f"0/{huge}", f"0/{huge}.p/1", f"63/{huge}", f"entries/{huge}",
                 f"entries/{huge}.p/1"]:
        await refused(client, "GET", "/tile/" + rest, 404, "not_found")


async def test_tiles_and_bundles_beyond_the_tree_are_404(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher, 3)
    assert size_after([1, 1, 1]) == 6
    for rest in ["0/000", "0/000.p/7", "0/000.p/255", "0/001.p/1", "1/000.p/1", "1/000",
                 "63/000.p/1", "entries/000", "entries/000.p/7", "entries/001.p/1",
                 "entries/x001/000"]:
        await refused(client, "GET", "/tile/" + rest, 404, "not_found")
    for rest in ["0/000.p/6", "0/000.p/4", "0/000.p/2", "entries/000.p/6", "entries/000.p/4"]:
        assert (await client.get("/tile/" + rest)).status == 200, rest


async def test_full_tiles_and_bundles_are_immutable_and_partial_ones_are_not(
        client: Client, publisher: Signer) -> None:
    width = len(await fill_two_tiles(client, publisher, 300)) - TILE
    for rest in ["0/000", "entries/000"]:
        resp = await client.get("/tile/" + rest)
        assert resp.status == 200, rest
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Cache-Control"] == IMMUTABLE
    for rest in [f"0/001.p/{width}", "0/000.p/255", "1/000.p/1", f"entries/001.p/{width}",
                 "entries/000.p/1"]:
        resp = await client.get("/tile/" + rest)
        assert resp.status == 200, rest
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Cache-Control"] == "public, max-age=60", rest
    resp = await client.get("/checkpoint")
    assert "immutable" not in resp.headers["Cache-Control"]
    assert "max-age=31536000" not in resp.headers["Cache-Control"]


async def test_tile_bytes_equal_hashes_recomputed_from_the_entries(
        client: Client, publisher: Signer, log_signer: Signer) -> None:
    stored = await fill_two_tiles(client, publisher, 300)
    size = len(stored)
    hashes = [leaf_hash(stored[i]) for i in range(size)]
    full = await (await client.get("/tile/0/000")).read()
    assert split_hashes(full) == hashes[:256]
    partial = await (await client.get(f"/tile/0/001.p/{size - TILE}")).read()
    assert split_hashes(partial) == hashes[256:]
    older = await (await client.get("/tile/0/001.p/10")).read()  # an older, narrower view
    assert split_hashes(older) == hashes[256:266]
    level1 = await (await client.get("/tile/1/000.p/1")).read()
    assert split_hashes(level1) == [hash_up(hashes[:256])]
    cp = checkpoint_of(await (await client.get("/checkpoint")).text(), log_signer)
    assert (cp.size, cp.root) == (size, root_of(hashes))


async def test_entry_bundle_decodes_to_exactly_the_stored_leaves(
        client: Client, publisher: Signer) -> None:
    stored = await fill_two_tiles(client, publisher, 300)
    size = len(stored)
    full = await (await client.get("/tile/entries/000")).read()
    assert decode_bundle(full, 256) == [stored[i] for i in range(256)]
    partial = await (await client.get(f"/tile/entries/001.p/{size - TILE}")).read()
    assert decode_bundle(partial, size - TILE) == [stored[i] for i in range(256, size)]
    older = await (await client.get("/tile/entries/001.p/3")).read()
    assert decode_bundle(older, 3) == [stored[i] for i in range(256, 259)]
    # The JSON API serves the same entries; the last leaf is the last batch's map root.
    for i in (0, 255, 256, size - 1):
        assert await logged_leaf(client, i) == stored[i]
    assert parse_map_root_entry(stored[size - 1])[0] == size - 1


# -- operations -----------------------------------------------------------------------------


async def test_metrics_count_batches_tree_size_and_requests_by_route_and_status(
        client: Client, publisher: Signer) -> None:
    await seed(client, publisher, 3)
    await client.get("/v1/entries/99")
    await client.get("/no/such/path")
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(await resp.text())
               for s in family.samples}
    assert samples[("tlog_append_batch_size_count", ())] == 3
    assert samples[("tlog_append_batch_size_sum", ())] == 3
    # Three batches of one submission each; each batch also appended its map root.
    assert samples[("tlog_tree_size", ())] == size_after([1, 1, 1])
    requests = "tlog_http_requests_total"
    assert samples[(requests, (("route", "/v1/entries"), ("status", "201")))] == 3
    assert samples[(requests, (("route", "/v1/entries/{index}"), ("status", "404")))] == 1
    assert samples[(requests, (("route", "unmatched"), ("status", "404")))] == 1
    assert re.search(r'^tlog_http_requests_total\{route="/v1/entries",status="201"\} 3\.0$',
                     await resp.text(), re.MULTILINE)


async def test_healthz_and_readyz_answer_200(client: Client, log_signer: Signer) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {
        "status": "ready", "origin": log_signer.name, "appends": "running",
        "database": {"reachable": True, "read_only": False, "in_recovery": False}}


async def test_registry_listing_pages_through_registry_entries_only(
        aiohttp_client: Any, database_url: str, log_signer: Signer, publisher: Signer) -> None:
    from tlog.config import Config
    from tlog.http.app import create_app
    from verifier.protocol.entries.registry_kinds import PUBLISHER_KIND

    admin = generate_key("admin")
    client = await aiohttp_client(create_app(Config(
        database_url=database_url, signer=log_signer, host="127.0.0.1", port=0, policy="open",
        admin_keys=(admin.verifier(),), max_wait=0.002)))
    await seed(client, publisher)
    registrations = [sign_entry(
        {"kind": PUBLISHER_KIND, "publisher": f"pub{i}", "packages": [f"com.p{i}.*"],
         "keys": [generate_key(f"pub{i}").verifier().text()]}, admin) for i in range(3)]
    indices = []
    for entry in registrations:
        resp = await client.post("/v1/entries", json=entry)
        assert resp.status == 201, await resp.text()
        indices.append((await resp.json())["index"])
    first = await (await client.get("/v1/registry?limit=2")).json()
    assert [e["index"] for e in first["entries"]] == indices[:2]
    assert first["next_after"] == indices[1]
    rest = await (await client.get(f"/v1/registry?after={indices[1]}")).json()
    assert [e["index"] for e in rest["entries"]] == indices[2:] and rest["next_after"] is None
    assert rest["entries"][0]["entry"]["publisher"] == "pub2"
    for bad in ("limit=0", "after=-1", "limit=1001", "after=05", "kind=x"):
        resp = await client.get(f"/v1/registry?{bad}")
        assert resp.status == 400, bad
