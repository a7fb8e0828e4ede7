"""The package state map on a real PostgreSQL: every batch ends with a map-root/v1 entry,
and GET /v1/package-state answers a state with a proof that verifies against it."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import rfc8785

from tests.support import make_release
from tests.tlog.http.test_lifecycle import post, statement
from verifier.protocol.entries.kinds import parse_log_leaf
from verifier.protocol.entries.lifecycle import HALT_KIND, ROLLOUT_KIND, YANK_KIND
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import Signer
from verifier.protocol.package_state import (
    Record,
    build_states,
    check_map_root_leaf,
    package_key,
    parse_map_root_entry,
    state_hash,
    verify_no_state,
    verify_state,
)
from verifier.protocol.statemap import MapProofError, SparseMap


async def state_at(client: Any, package: str, size: int | None = None) -> dict[str, Any]:
    path = f"/v1/package-state?package={package}" + ("" if size is None else f"&size={size}")
    resp = await client.get(path)
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


async def leaf(client: Any, index: int) -> bytes:
    resp = await client.get(f"/v1/entries/{index}")
    assert resp.status == 200
    body = await resp.json()
    data = bytes(rfc8785.dumps(body["entry"]))
    assert leaf_hash(data).hex() == body["leaf_hash"]
    return data


async def tree_size(client: Any) -> int:
    return int((await (await client.get("/v1/log")).json())["tree_size"])


async def test_each_batch_ends_with_a_map_root_over_the_entries_before_it(
        client: Any, publisher: Signer) -> None:
    body = await post(client, make_release(publisher, "com.acme.app", "1.0"), 201)
    assert body["index"] == 0
    size = await tree_size(client)
    assert size == 2
    covered, root = parse_map_root_entry(await leaf(client, 1))
    assert covered == 1
    answer = await state_at(client, "com.acme.app")
    assert answer["size"] == 2 and answer["map_root"] == root.hex()
    state = answer["state"]
    assert [r["version"] for r in state["releases"]] == ["1.0"]
    verify_state(root, "com.acme.app", state, base64.b64decode(answer["proof"]))


async def test_a_state_that_omits_a_halt_does_not_verify(client: Any, publisher: Signer) -> None:
    await post(client, make_release(publisher, "com.acme.app", "1.0"), 201)
    await post(client, statement(publisher, ROLLOUT_KIND, "com.acme.app", "1.0"), 201)
    await post(client, statement(publisher, HALT_KIND, "com.acme.app", "1.0"), 201)
    answer = await state_at(client, "com.acme.app")
    root = check_map_root_leaf(answer["size"], await leaf(client, answer["size"] - 1))
    state, proof = answer["state"], base64.b64decode(answer["proof"])
    verify_state(root, "com.acme.app", state, proof)
    assert state["lifecycle"]["1.0"]["kind"] == HALT_KIND
    omitted = {**state, "lifecycle": {}}
    with pytest.raises(MapProofError):
        verify_state(root, "com.acme.app", omitted, proof)
    older = {**state, "lifecycle": {"1.0": {**state["lifecycle"]["1.0"], "kind": ROLLOUT_KIND}}}
    with pytest.raises(MapProofError):
        verify_state(root, "com.acme.app", older, proof)


async def recomputed_root(client: Any, size: int) -> bytes:
    """The map root over entries [0, size - 1), recomputed from the entries alone, as a
    monitor does."""
    records = []
    for index in range(size - 1):
        data = await leaf(client, index)
        try:
            parse_map_root_entry(data)
            continue
        except ValueError:
            pass
        e: Any = parse_log_leaf(data)
        records.append(Record(index, leaf_hash(data), e.kind, e.package, e.version,
                              getattr(e, "counter", None)))
    mirror = SparseMap()
    mirror.apply(mirror.update(
        (package_key(p), state_hash(s)) for p, s in build_states(records).items()))
    return mirror.root()


async def test_the_map_root_is_what_a_monitor_recomputes_from_the_entries(
        client: Any, publisher: Signer) -> None:
    for i in range(5):
        await post(client, make_release(publisher, f"pkg{i % 3}", f"1.{i}"), 201)
    await post(client, statement(publisher, YANK_KIND, "pkg0", "1.0"), 201)
    size = await tree_size(client)
    _, root = parse_map_root_entry(await leaf(client, size - 1))
    assert await recomputed_root(client, size) == root


async def test_a_package_never_released_is_proven_absent(client: Any, publisher: Signer) -> None:
    await post(client, make_release(publisher, "com.acme.app", "1.0"), 201)
    answer = await state_at(client, "com.acme.other")
    assert answer["state"] is None
    root = bytes.fromhex(answer["map_root"])
    verify_no_state(root, "com.acme.other", base64.b64decode(answer["proof"]))


async def test_old_sizes_answer_the_state_as_it_was(client: Any, publisher: Signer) -> None:
    await post(client, make_release(publisher, "com.acme.app", "1.0"), 201)
    first = await tree_size(client)
    await post(client, make_release(publisher, "com.acme.app", "1.1"), 201)
    then = await state_at(client, "com.acme.app", first)
    assert [r["version"] for r in then["state"]["releases"]] == ["1.0"]
    root = check_map_root_leaf(first, await leaf(client, first - 1))
    verify_state(root, "com.acme.app", then["state"], base64.b64decode(then["proof"]))
    resp = await client.get(f"/v1/package-state?package=com.acme.app&size={first}")
    assert "immutable" in resp.headers["Cache-Control"]


@pytest.mark.parametrize("query,code,status", [
    ("", "bad_package", 400),
    ("package=a%20b", "bad_package", 400),
    ("package=p&size=01", "bad_number", 400),
    ("package=p&size=999", "beyond_tree", 400),
    ("package=p&size=1", "no_package_state", 404),
    ("package=p&other=1", "unknown_parameter", 400),
])
async def test_bad_package_state_queries_are_refused_with_4xx(
        client: Any, publisher: Signer, query: str, code: str, status: int) -> None:
    await post(client, make_release(publisher, "p", "1.0"), 201)
    resp = await client.get(f"/v1/package-state?{query}")
    body = await resp.json()
    assert resp.status == status and body["error"]["code"] == code, body


async def test_a_submitted_map_root_entry_is_refused(client: Any) -> None:
    from verifier.protocol.package_state import map_root_entry
    resp = await client.post("/v1/entries", data=map_root_entry(0, b"\0" * 32),
                             headers={"Content-Type": "application/json"})
    assert resp.status in (400, 422)
    assert await tree_size(client) == 0
