"""schema/openapi.yaml: valid OpenAPI 3.1, complete, and true to what the server sends.

Checked: validity (openapi-spec-validator), routes both ways, the copied entry schema, every
error code, and live answers against the documented statuses, headers and bodies.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import yaml
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from tests.conftest import REPO
from tests.support import make_release
from tlog import app as app_module
from tlog import handlers
from tlog.app import create_app
from tlog.config import Config
from tlog.handlers import SEQUENCER
from verifier import entry as entry_module
from verifier.note import Signer, generate_key

Client = TestClient[web.Request, web.Application]
SPEC = REPO / "schema" / "openapi.yaml"
RELEASE_SCHEMA = REPO / "schema" / "release-v1.schema.json"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def load_spec() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    return doc


def documented_operations() -> set[tuple[str, str]]:
    """(path with parameter names blanked, METHOD) for every operation in the spec."""
    return _operations_from_doc(load_spec())


def _operations_from_doc(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(_blank(path), method.upper())
            for path, item in doc["paths"].items() for method in item if method in METHODS}


def _blank(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def app_operations() -> set[tuple[str, str]]:
    """(path with parameter names blanked, METHOD) for every route of the real app."""
    app = create_app(Config(database_url="postgresql://unused", signer=generate_key("x"),
                            policy="open",
                            host="127.0.0.1", port=0))
    ops = set()
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None
        if route.method != "HEAD":  # every GET also answers HEAD, as the spec says in text
            ops.add((_blank(resource.canonical), route.method))
    return ops


def test_every_route_of_the_app_is_documented_and_nothing_else() -> None:
    documented, served = documented_operations(), app_operations()
    assert served - documented == set(), "routes missing from schema/openapi.yaml"
    assert documented - served == set(), "schema/openapi.yaml documents routes the app lacks"


def test_openapi_document_is_valid_openapi_3_1() -> None:
    import openapi_spec_validator as validator
    doc = load_spec()
    assert doc["openapi"].startswith("3.1.")
    validator.validate(doc)


def test_inlined_release_schema_is_a_faithful_copy_of_the_schema_file() -> None:
    doc = load_spec()
    source = json.loads(RELEASE_SCHEMA.read_text(encoding="utf-8"))
    utc_time = source["$defs"]["utc_time"]
    schemas = doc["components"]["schemas"]

    def inline(value: Any, ref: str, target: Any) -> Any:
        if isinstance(value, dict):
            if value == {"$ref": ref}:
                return target
            return {k: inline(v, ref, target) for k, v in value.items()}
        if isinstance(value, list):
            return [inline(v, ref, target) for v in value]
        return value

    want = {k: v for k, v in source.items() if k not in ("$schema", "$id", "$defs")}
    want = inline(want, "#/$defs/utc_time", utc_time)
    got = inline(schemas["ReleaseV1"], "#/components/schemas/UtcTime", schemas["UtcTime"])
    assert got == want


def test_every_error_code_the_service_can_send_is_in_the_error_schema() -> None:
    doc = load_spec()
    documented = set(doc["components"]["schemas"]["Error"]["properties"]["error"]
                     ["properties"]["code"]["enum"])
    sources = "".join((REPO / "tlog" / name).read_text(encoding="utf-8")
                      for name in ("handlers.py", "app.py"))
    codes = set(re.findall(r'ApiError\(\s*[\w.]+,\s*"(\w+)"', sources))
    codes |= set(re.findall(r'(?:error_body|_json_error)\(\s*(?:\d+,\s*)?"(\w+)"', sources))
    codes |= set(app_module.HTTP_CODES.values()) | {"http_error"}
    codes |= {entry_module.INVALID_JSON, entry_module.INVALID_ENTRY, entry_module.BAD_KEY,
              entry_module.BAD_SIGNATURE, entry_module.ENTRY_TOO_LARGE}
    assert {"not_found", "conflict", "unavailable", "internal", "bad_number"} <= codes
    assert codes - documented == set()
    assert set(handlers.ENTRY_STATUS) <= documented


# -- the spec against real answers -----------------------------------------------------------


class Spec:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def _resolve(self, obj: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in obj:
            node: Any = self.doc
            for part in obj["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            obj = node
        return obj

    async def check(self, resp: ClientResponse, path: str, method: str = "get") -> None:
        """The status is documented for this operation, and so are the body and headers."""
        body = await resp.read()
        responses = self.doc["paths"][path][method]["responses"]
        assert str(resp.status) in responses, f"{method} {path}: {resp.status} {body[:200]!r}"
        documented = self._resolve(responses[str(resp.status)])
        content_type = resp.headers.get("Content-Type", "")
        media = {k.split(";")[0]: k for k in documented.get("content", {})}
        assert resp.content_type in media, f"{method} {path} {resp.status}: {content_type}"
        if media[resp.content_type] != resp.content_type:  # parameters documented: exact
            assert content_type == media[resp.content_type]
        for name, header in documented.get("headers", {}).items():
            assert name in resp.headers, f"{method} {path} {resp.status}: no {name} header"
            jsonschema.validate(resp.headers[name], self._resolve(header)["schema"])
        if resp.content_type == "application/json":
            schema = documented["content"]["application/json"]["schema"]
            root = {"allOf": [schema], "components": self.doc["components"]}
            jsonschema.Draft202012Validator(root).validate(json.loads(body))


async def test_answers_match_the_documented_statuses_bodies_and_headers(
        client: Client, publisher: Signer) -> None:
    spec = Spec(load_spec())
    entry = make_release(publisher, "com.acme.app", "1.0")
    json_type = {"Content-Type": "application/json"}

    async def post(path: str = "/v1/entries", **kw: Any) -> None:
        await spec.check(await client.post(path, **kw), "/v1/entries", "post")

    await spec.check(await client.get("/checkpoint"), "/checkpoint")
    await post(json=entry)                                                       # 201
    await post(json=entry)                                                       # 200
    await post(json=make_release(publisher, "com.acme.app", "1.0", payload=b"x"))  # 409
    await post(data=b"{", headers=json_type)                                     # 400
    await post(data=b"{}", headers=json_type)                                    # 422
    await post(data=b"{}", headers={"Content-Type": "text/plain"})               # 415
    await post(data=json.dumps({**entry, "metadata": {"x": "y" * 70000}}),
               headers=json_type)                                                # 413
    await post(data=b"x" * 140000, headers=json_type)                            # 413
    await spec.check(await client.put("/v1/entries"), "/v1/entries", "post")     # 405
    await spec.check(await client.get("/v1/entries?package=com.acme.app&limit=1"),
                     "/v1/entries")
    await spec.check(await client.get("/v1/entries?package=a&x=1"), "/v1/entries")
    for path in ["/v1/entries/0", "/v1/entries/7", "/v1/entries/07"]:
        await spec.check(await client.get(path), "/v1/entries/{index}")
    leaf = entry_module.validate_entry(entry).leaf_hash.hex()
    for query in [f"leaf_hash={leaf}", f"leaf_hash={leaf}&tree_size=1", f"leaf_hash={leaf}&x=1",
                  "leaf_hash=" + "0" * 64, f"leaf_hash={leaf}&tree_size=0"]:
        await spec.check(await client.get("/v1/proof/inclusion?" + query), "/v1/proof/inclusion")
    for query in ["first=0&second=1", "first=1&second=0", "first=1"]:
        await spec.check(await client.get("/v1/proof/consistency?" + query),
                         "/v1/proof/consistency")
    for path in ["/v1/checkpoints/1", "/v1/checkpoints/5", "/v1/checkpoints/01"]:
        await spec.check(await client.get(path), "/v1/checkpoints/{size}")
    for path in ["/tile/0/000.p/1", "/tile/entries/000.p/1", "/tile/0/000", "/tile/0/x000/000"]:
        await spec.check(await client.get(path), "/tile/{tile_path}")
    await spec.check(await client.post("/tile/0/000.p/1"), "/tile/{tile_path}")
    for path in ["/v1/log", "/metrics", "/healthz", "/readyz"]:
        await spec.check(await client.get(path), path)
    app = client.app
    assert app is not None
    app[SEQUENCER].failed = "test"
    try:
        await spec.check(await client.get("/readyz"), "/readyz")                 # 503
        await post(json=make_release(publisher, "com.acme.app", "2.0"))          # 503
    finally:
        app[SEQUENCER].failed = None
