"""GET /v1/package-state answers as schema/openapi.yaml documents it (the route's own live
check, beside tests/tlog/http/test_openapi.py), and its state proves against the map root
of the tree's last leaf."""

from __future__ import annotations

import base64

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support import make_release
from tests.tlog.http.test_openapi import Spec, load_spec
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import Signer
from verifier.protocol.package_state import (
    check_map_root_leaf,
    map_root_entry,
    verify_no_state,
    verify_state,
)

Client = TestClient[web.Request, web.Application]
PATH = "/v1/package-state"


async def test_package_state_answers_match_the_documented_statuses_bodies_and_headers(
        client: Client, publisher: Signer) -> None:
    spec = Spec(load_spec())

    async def get(query: str, status: int, code: str | None = None) -> dict[str, object]:
        resp = await client.get(f"{PATH}?{query}")
        await spec.check(resp, PATH)
        body: dict[str, object] = await resp.json()
        assert resp.status == status, body
        if code is not None:
            assert body["error"]["code"] == code, body  # type: ignore[index]
        return body

    await get("package=com.acme.app", 404, "no_package_state")  # empty tree: no map root
    assert (await client.post("/v1/entries", json=make_release(
        publisher, "com.acme.app", "1.0"))).status == 201
    latest = await get("package=com.acme.app", 200)
    assert latest["size"] == 2 and latest["state"] is not None
    at = await client.get(f"{PATH}?package=com.acme.app&size=2")
    await spec.check(at, PATH)
    assert at.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert await at.json() == latest
    # The client's checks: the root from leaf size - 1, the state's proof against it.
    last = await (await client.get("/v1/entries/1")).json()
    leaf = map_root_entry(1, bytes.fromhex(last["entry"]["root"]))
    assert leaf_hash(leaf).hex() == last["leaf_hash"]
    root = check_map_root_leaf(2, leaf)
    assert root.hex() == latest["map_root"]
    verify_state(root, "com.acme.app", latest["state"],  # type: ignore[arg-type]
                 base64.b64decode(str(latest["proof"])))
    absent = await get("package=com.acme.other", 200)
    assert absent["state"] is None
    verify_no_state(root, "com.acme.other", base64.b64decode(str(absent["proof"])))
    await get("package=", 400, "bad_package")
    await get("size=2", 400, "bad_package")
    await get("package=com.acme.app&size=02", 400, "bad_number")
    await get("package=com.acme.app&size=3", 400, "beyond_tree")
    await get("package=com.acme.app&x=1", 400, "unknown_parameter")
    await get("package=com.acme.app&size=1&size=1", 400, "repeated_parameter")
    # Leaf 0 of the tree of size 1 is the release, not a map root.
    await get("package=com.acme.app&size=1", 404, "no_package_state")
