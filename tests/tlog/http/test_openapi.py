"""schema/openapi.yaml: valid OpenAPI 3.1, complete, and true to what the server sends.

Checked: validity (openapi-spec-validator), routes both ways, the copied entry schemas, every
error code under the status it comes with, the X-Request-Id header on every answer, and live
answers against the documented statuses, headers and bodies, for an open log, a registered
log with its admin API, and logs needing client certificates or issuing no tokens.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from tests.conftest import REPO
from tests.support import make_release
from tests.tlog.sizes import leaves, size_after
from tlog.config import Config, TlsConfig
from tlog.http import errors
from tlog.http.app import create_app
from tlog.http.handlers import CLIENT_BUCKETS, IN_FLIGHT, PUBLISHER_BUCKETS, SEQUENCER
from tlog.http.tokens import TokenAuthority
from verifier.protocol.entries.errors import ENTRY_CODES
from verifier.protocol.entries.kinds import KINDS
from verifier.protocol.entries.lifecycle import LIFECYCLE_KINDS
from verifier.protocol.entries.registry_kinds import KEYS_KIND, PUBLISHER_KIND, REVOKE_KIND
from verifier.protocol.entries.release import KIND as RELEASE_KIND
from verifier.protocol.entries.release import validate_entry
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.package_state import MAP_ROOT_KIND
from verifier.protocol.registry import REFUSAL_CODES

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]
SPEC = REPO / "schema" / "openapi.yaml"
RELEASE_SCHEMA = REPO / "schema" / "release-v1.schema.json"
REGISTRY_SCHEMAS = {"PublisherV1": "publisher-v1.schema.json", "KeysV1": "keys-v1.schema.json",
                    "RevokeV1": "revoke-v1.schema.json",
                    # and the lifecycle kinds, which have no $defs either
                    "RolloutV1": "rollout-v1.schema.json", "HaltV1": "halt-v1.schema.json",
                    "YankV1": "yank-v1.schema.json", "ResumeV1": "resume-v1.schema.json"}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Where tlog raises an error by its code, e.g. ApiError("conflict", ...).
RAISED_CODE = re.compile(r'(?:ApiError|AccessError|TokenError|RefusedError)\(\s*"(\w+)"')
TLOG_SOURCES = sorted((REPO / "tlog").rglob("*.py"))
ADMIN_SECRET = "s3cret"
ADMIN_KEY = generate_key("log-admin")


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


def _inline(value: Any, ref: str, target: Any) -> Any:
    if isinstance(value, dict):
        if value == {"$ref": ref}:
            return target
        return {k: _inline(v, ref, target) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline(v, ref, target) for v in value]
    return value


def test_inlined_release_schema_is_a_faithful_copy_of_the_schema_file() -> None:
    doc = load_spec()
    source = json.loads(RELEASE_SCHEMA.read_text(encoding="utf-8"))
    utc_time = source["$defs"]["utc_time"]
    schemas = doc["components"]["schemas"]
    want = {k: v for k, v in source.items() if k not in ("$schema", "$id", "$defs")}
    want = _inline(want, "#/$defs/utc_time", utc_time)
    got = _inline(schemas["ReleaseV1"], "#/components/schemas/UtcTime", schemas["UtcTime"])
    assert got == want


@pytest.mark.parametrize("name", sorted(REGISTRY_SCHEMAS))
def test_inlined_registry_schemas_are_faithful_copies_of_the_schema_files(name: str) -> None:
    source = json.loads((REPO / "schema" / REGISTRY_SCHEMAS[name]).read_text(encoding="utf-8"))
    assert "$defs" not in source
    want = {k: v for k, v in source.items() if k not in ("$schema", "$id")}
    assert load_spec()["components"]["schemas"][name] == want


def test_log_entry_schemas_name_every_kind_the_log_accepts() -> None:
    schemas = load_spec()["components"]["schemas"]
    kinds = {schemas[ref.rsplit("/", 1)[1]]["properties"]["kind"]["const"]
             for ref in schemas["LogEntry"]["discriminator"]["mapping"].values()}
    # The kinds the log accepts. Its own map-root/v1 is never submittable (so in neither
    # KINDS nor LogEntry), but GET /v1/entries/{index} serves it like any other leaf.
    assert MAP_ROOT_KIND not in KINDS
    assert kinds == set(KINDS) == {RELEASE_KIND, PUBLISHER_KIND, KEYS_KIND, REVOKE_KIND,
                                   *LIFECYCLE_KINDS}
    assert schemas["MapRootV1"]["properties"]["kind"]["const"] == MAP_ROOT_KIND
    served = {ref["$ref"] for ref in schemas["Entry"]["properties"]["entry"]["oneOf"]}
    assert served == {"#/components/schemas/LogEntry", "#/components/schemas/MapRootV1"}
    for name in ("LogEntry", "RegistryEntry"):
        mapping = schemas[name]["discriminator"]["mapping"]
        assert sorted(mapping.values()) == sorted(s["$ref"] for s in schemas[name]["oneOf"])


def emitted_errors() -> set[tuple[int, str]]:
    """(status, code) for every error the service can answer with: the status table of
    tlog.http.errors (the registry's refusals included)."""
    pairs = {(status, code) for code, status in errors.STATUS.items()}
    pairs |= {(errors.STATUS.get(code, errors.ENTRY_ERROR_STATUS), code) for code in ENTRY_CODES}
    return pairs


def raised_codes() -> set[str]:
    """Every error code tlog's sources raise by name."""
    return {code for path in TLOG_SOURCES
            for code in RAISED_CODE.findall(path.read_text(encoding="utf-8"))}


def test_every_code_raised_has_a_status_and_every_status_is_used() -> None:
    raised = raised_codes()
    assert {"conflict", "rate_limited", "token_revoked", "internal", "unavailable"} <= raised
    assert raised - set(errors.STATUS) == set(), "codes raised without a status in STATUS"
    from_elsewhere = (set(errors.HTTP_EXCEPTION_CODES.values()) | set(ENTRY_CODES)
                      | set(REFUSAL_CODES))
    assert set(errors.STATUS) - raised - from_elsewhere == set(), "codes no one raises"
    assert set(ENTRY_CODES) <= set(errors.STATUS)


def test_a_code_with_a_status_of_its_own_keeps_it() -> None:
    assert errors.ApiError("conflict", "x").status == 409
    assert errors.ApiError("rate_limited", "x", retry_after=2.5).response().headers[
        "Retry-After"] == "3"
    assert errors.ApiError(errors.HTTP_ERROR, "x", status=418).status == 418
    with pytest.raises(KeyError):
        errors.ApiError("no_such_code", "x")


def test_every_refusal_of_the_registry_replay_has_a_status() -> None:
    """All but unknown_kind, which no entry the service checked can get (tlog.http.errors)."""
    refusals = {code: errors.STATUS[code] for code in REFUSAL_CODES if code in errors.STATUS}
    assert set(refusals) == set(REFUSAL_CODES) - {"unknown_kind"}
    assert set(refusals.values()) == {403, 409, 422}


def test_every_error_code_the_service_can_send_is_in_the_error_schema() -> None:
    doc = load_spec()
    documented = set(doc["components"]["schemas"]["Error"]["properties"]["error"]
                     ["properties"]["code"]["enum"])
    codes = {code for _, code in emitted_errors()} | {"http_error"}
    assert {"not_found", "conflict", "unavailable", "internal", "bad_number", "rate_limited",
            "token_revoked", "admin_forbidden", "publisher_not_registered"} <= codes
    assert codes - documented == set(), "codes the service sends but the spec lacks"
    assert documented - codes == set(), "codes the spec lists but the service never sends"
    assert set(ENTRY_CODES) <= documented


class Spec:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def resolve(self, obj: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in obj:
            node: Any = self.doc
            for part in obj["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            obj = node
        return obj

    def operations(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(path, method, op) for path, item in self.doc["paths"].items()
                for method, op in item.items() if method in METHODS]

    def responses(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(path, method, status, resolved response) for every documented answer."""
        return [(path, method, status, self.resolve(resp))
                for path, method, op in self.operations()
                for status, resp in op["responses"].items()]

    async def check(self, resp: ClientResponse, path: str, method: str = "get") -> None:
        """The status is documented for this operation, and so are the body and headers."""
        self.check_answer(resp.status, resp.headers, await resp.read(), path, method)

    def check_answer(self, status: int, headers: Mapping[str, str], body: bytes, path: str,
                     method: str) -> None:
        responses = self.doc["paths"][path][method]["responses"]
        assert str(status) in responses, f"{method} {path}: {status} {body[:200]!r}"
        documented = self.resolve(responses[str(status)])
        content_type = headers.get("Content-Type", "")
        mime = content_type.split(";")[0].strip()
        media = {k.split(";")[0]: k for k in documented.get("content", {})}
        assert mime in media, f"{method} {path} {status}: {content_type}"
        if media[mime] != mime:  # parameters documented: exact
            assert content_type == media[mime]
        for name, header in documented.get("headers", {}).items():
            assert name in headers, f"{method} {path} {status}: no {name} header"
            jsonschema.validate(headers[name], self.resolve(header)["schema"])
        if mime == "application/json":
            schema = documented["content"]["application/json"]["schema"]
            root = {"allOf": [schema], "components": self.doc["components"]}
            jsonschema.Draft202012Validator(root).validate(json.loads(body))


def test_every_error_code_is_described_under_the_status_it_comes_with() -> None:
    spec = Spec(load_spec())
    described: dict[int, str] = {}
    for _, _, documented, resp in spec.responses():
        described[int(documented)] = described.get(int(documented), "") + resp["description"]
    for status, code in sorted(emitted_errors()):
        if status != 500:  # `internal` is described once, in the API's description
            assert f"`{code}`" in described.get(status, ""), f"{status} {code} not described"
    assert "500 `internal`" in spec.doc["info"]["description"]


def test_every_answer_documents_the_request_id_and_every_path_takes_one() -> None:
    spec = Spec(load_spec())
    for path, method, status, resp in spec.responses():
        header = resp.get("headers", {}).get("X-Request-Id")
        assert header == {"$ref": "#/components/headers/RequestId"}, f"{method} {path} {status}"
    for path, item in spec.doc["paths"].items():
        assert {"$ref": "#/components/parameters/RequestId"} in item["parameters"], path


def test_writes_and_only_writes_name_their_security() -> None:
    spec = Spec(load_spec())
    schemes = spec.doc["components"]["securitySchemes"]
    assert "security" not in spec.doc
    for path, method, op in spec.operations():
        if path.startswith("/v1/admin/"):
            assert op["security"] == [{"adminToken": []}, {"adminCertificate": []}], path
            for code in ("401", "403", "429", "503"):
                assert code in op["responses"], f"{path} lacks {code}"
        elif method == "post":
            assert op["security"] == [{}, {"submissionToken": []}], path
        else:
            assert "security" not in op, path
    assert schemes["adminCertificate"]["type"] == "mutualTLS"
    assert schemes["submissionToken"]["bearerFormat"] == "JWT"


# -- the spec against real answers -----------------------------------------------------------


class Caller:
    """Sends requests and checks each answer against the spec and the expected outcome."""

    def __init__(self, client: Client, spec: Spec) -> None:
        self.client, self.spec = client, spec

    async def post(self, template: str, status: int, code: str | None = None,
                   path: str | None = None, **kw: Any) -> Any:
        resp = await self.client.post(path or template, **kw)
        return await self._expect(resp, template, "post", status, code)

    async def get(self, template: str, status: int, code: str | None = None,
                  path: str | None = None, **kw: Any) -> Any:
        resp = await self.client.get(path or template, **kw)
        return await self._expect(resp, template, "get", status, code)

    async def _expect(self, resp: ClientResponse, template: str, method: str, status: int,
                      code: str | None) -> Any:
        await self.spec.check(resp, template, method)
        body = await resp.read()
        assert resp.status == status, f"{method} {template}: {resp.status} {body[:300]!r}"
        if resp.content_type != "application/json":
            return body
        doc = json.loads(body)
        if code is not None:
            assert doc["error"]["code"] == code, doc
        return doc


async def raw_post(client: Client, path: str, authorization: bytes,
                   body: bytes = b"{}") -> tuple[int, CIMultiDict[str], bytes]:
    """POST with header bytes an HTTP client library would not send (not UTF-8)."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"POST %s HTTP/1.1\r\nHost: tlog\r\nConnection: close\r\n"
                 b"Content-Type: application/json\r\nAuthorization: %s\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (path.encode(), authorization, len(body), body))
    answer = await reader.read()
    writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(": ")
        headers.add(name, value)
    return int(status_line.split()[1]), headers, payload


def registration(publisher: str, patterns: list[str], keys: list[Signer],
                 signer: Signer = ADMIN_KEY) -> dict[str, Any]:
    return sign_entry({"kind": PUBLISHER_KIND, "publisher": publisher,
                       "packages": patterns,
                       "keys": [k.verifier().text() for k in keys]}, signer)


def rotation(publisher: str, add: list[Signer], remove: list[Signer],
             signer: Signer) -> dict[str, Any]:
    return sign_entry({"kind": KEYS_KIND, "publisher": publisher,
                       "add": [k.verifier().text() for k in add],
                       "remove": [k.verifier().text() for k in remove]}, signer)


def revocation(publisher: str, keys: list[Signer] | None, signer: Signer) -> dict[str, Any]:
    fields: dict[str, Any] = {"kind": REVOKE_KIND, "publisher": publisher,
                              "reason": "key leaked in CI logs"}
    if keys is not None:
        fields["keys"] = [k.verifier().text() for k in keys]
    return sign_entry(fields, signer)


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
    call, batch = Caller(client, spec), "/v1/entries/batch"
    results = (await call.post(batch, 200, json={"entries": [
        entry, make_release(publisher, "com.acme.app", "1.0", payload=b"x"), {},
        make_release(publisher, "com.acme.app", "1.1")]}))["results"]
    assert [r["status"] for r in results] == [200, 409, 422, 201]
    await call.post(batch, 400, "invalid_json", data=b"{", headers=json_type)
    await call.post(batch, 400, "invalid_batch", json={"entries": []})
    await call.post(batch, 413, "too_many_entries", json={"entries": [entry] * 1001})
    await call.post(batch, 415, "unsupported_media_type", data=b"{}",
                    headers={"Content-Type": "text/plain"})
    await spec.check(await client.put(batch), batch, "post")                     # 405
    await spec.check(await client.get("/v1/entries?package=com.acme.app&limit=1"),
                     "/v1/entries")
    await spec.check(await client.get("/v1/entries?package=a&x=1"), "/v1/entries")
    for path in ["/v1/entries/0", "/v1/entries/7", "/v1/entries/07"]:
        await spec.check(await client.get(path), "/v1/entries/{index}")
    leaf = validate_entry(entry).leaf_hash.hex()
    size = leaves(1)  # the one release, and its batch's map root: the published tree
    for query in [f"leaf_hash={leaf}", f"leaf_hash={leaf}&tree_size={size}",
                  f"leaf_hash={leaf}&tree_size=1", f"leaf_hash={leaf}&x=1",
                  "leaf_hash=" + "0" * 64, f"leaf_hash={leaf}&tree_size=0"]:
        await spec.check(await client.get("/v1/proof/inclusion?" + query), "/v1/proof/inclusion")
    for query in [f"first=0&second={size}", "first=1&second=0", "first=1"]:
        await spec.check(await client.get("/v1/proof/consistency?" + query),
                         "/v1/proof/consistency")
    for path in [f"/v1/checkpoints/{size}", "/v1/checkpoints/1", "/v1/checkpoints/5",
                 "/v1/checkpoints/01"]:
        await spec.check(await client.get(path), "/v1/checkpoints/{size}")
    for query in ["covering=0", "covering=01", "covering=1&covering=1"]:
        await spec.check(await client.get("/v1/checkpoints/cosigned?" + query),
                         "/v1/checkpoints/cosigned")
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


async def test_an_open_log_takes_registry_entries_and_ignores_tokens(
        client: Client, publisher: Signer) -> None:
    call = Caller(client, Spec(load_spec()))
    acme = generate_key("acme")
    await call.post("/v1/entries", 201, json=make_release(publisher, "com.acme.app", "1.0"),
                    headers={"Authorization": "Bearer not-a-token"})
    await call.post("/v1/entries", 403, "not_authorized",
                    json=registration("acme", ["com.acme.*"], [acme]))
    await call.post("/v1/entries", 403, "publisher_not_registered",
                    json=rotation("acme", [generate_key("acme")], [], acme))
    await call.post("/v1/entries", 422, "invalid_entry", json=rotation("acme", [], [], acme))
    for kind in [{}, [], 1, None]:
        await call.post("/v1/entries", 422, "invalid_entry",
                        json={**make_release(publisher, "com.acme.app", "2.0"), "kind": kind})
    logged = await call.get("/v1/entries/{index}", 200, path="/v1/entries/0")
    assert logged["entry"]["kind"] == RELEASE_KIND
    for template, path in [("/v1/admin/entries", "/v1/admin/entries"),
                           ("/v1/admin/tokens", "/v1/admin/tokens"),
                           ("/v1/admin/tokens/{jti}/revoke", "/v1/admin/tokens/abc/revoke")]:
        await call.post(template, 403, "admin_forbidden", path=path, json={},
                        headers={"Authorization": f"Bearer {ADMIN_SECRET}"})
        resp = await client.get(path)
        await call.spec.check(resp, template, "post")
        assert resp.status == 405


async def test_request_ids_are_echoed_when_valid_and_made_up_otherwise(client: Client) -> None:
    spec = Spec(load_spec())
    for given, echoed in [("abc-123.X_y", True), ("bad id!", False), ("x" * 65, False)]:
        resp = await client.get("/healthz", headers={"X-Request-Id": given})
        await spec.check(resp, "/healthz")
        if echoed:
            assert resp.headers["X-Request-Id"] == given
        else:
            assert re.fullmatch(r"[0-9a-f]{16}", resp.headers["X-Request-Id"])
    first, second = await client.get("/nowhere"), await client.get("/nowhere")
    assert first.status == 404
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


@pytest.fixture
async def registered(aiohttp_client: ClientFactory, database_url: str,
                     log_signer: Signer) -> tuple[Client, Signer]:
    token_key = generate_key("log.example.org/tokens")
    app = create_app(Config(database_url=database_url, signer=log_signer, host="127.0.0.1",
                            port=0, policy="registered", admin_keys=(ADMIN_KEY.verifier(),),
                            token_signer=token_key, admin_secret=ADMIN_SECRET, max_wait=0.002))
    return await aiohttp_client(app), token_key


async def test_a_registered_log_and_its_admin_api_answer_as_documented(
        registered: tuple[Client, Signer], log_signer: Signer) -> None:
    client, token_key = registered
    call = Caller(client, Spec(load_spec()))
    admin = {"Authorization": f"Bearer {ADMIN_SECRET}"}
    acme, acme2, ghost = generate_key("acme"), generate_key("acme"), generate_key("ghost")

    async def token(publisher: str, scopes: list[str]) -> tuple[dict[str, str], str]:
        issued = await call.post("/v1/admin/tokens", 201, headers=admin,
                                 json={"publisher": publisher, "scopes": scopes, "ttl": "5m"})
        assert issued["publisher"] == publisher and issued["scopes"] == scopes
        return {"Authorization": f"Bearer {issued['token']}"}, issued["jti"]

    tokens = "/v1/admin/tokens"
    await call.post(tokens, 401, "admin_auth_required", json={})
    await call.post(tokens, 401, "admin_auth_required", json={},
                    headers={"Authorization": f"Basic {ADMIN_SECRET}"})
    await call.post(tokens, 403, "admin_forbidden", json={}, headers={"Authorization": "Bearer x"})
    await call.post(tokens, 415, "unsupported_media_type", data=b"{}",
                    headers={**admin, "Content-Type": "text/plain"})
    await call.post(tokens, 400, "invalid_json", data=b"{",
                    headers={**admin, "Content-Type": "application/json"})
    for bad in [{"publisher": "acme"}, {"publisher": "acme", "scopes": ["*"]},
                {"publisher": "acme", "scopes": ["com.acme.*"], "ttl": "48h"},
                {"publisher": "acme", "scopes": ["com.acme.*"], "extra": 1},
                {"publisher": "a\u0000b", "scopes": ["com.acme.*"]},
                {"publisher": "a+b", "scopes": ["com.acme.*"]},
                {"publisher": "acme", "scopes": ["com.acme.*"], "ttl": "9" * 20 + "h"}]:
        await call.post(tokens, 422, "invalid_request", json=bad, headers=admin)
    await call.post(tokens, 413, "body_too_large", data=b"x" * 140000,
                    headers={**admin, "Content-Type": "application/json"})
    resp = await client.get(tokens, headers=admin)
    await call.spec.check(resp, tokens, "post")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"

    entries = "/v1/admin/entries"
    await call.post(entries, 401, "admin_auth_required", json=registration("acme", [], [acme]))
    await call.post(entries, 422, "not_registry_entry", headers=admin,
                    json=make_release(acme, "com.acme.app", "1.0"))
    await call.post(entries, 422, "invalid_entry", headers=admin, json={"kind": "keys/v1"})
    await call.post(entries, 403, "not_authorized", headers=admin,
                    json=registration("acme", ["com.acme.*"], [acme], signer=acme))
    await call.post(entries, 403, "publisher_not_registered", headers=admin,
                    json=rotation("acme", [acme2], [], ADMIN_KEY))
    acme_entry = registration("acme", ["com.acme.*", "acme-cli"], [acme])
    await call.post(entries, 201, headers=admin, json=acme_entry)
    await call.post(entries, 200, headers=admin, json=acme_entry)
    await call.post(entries, 409, "unknown_key", headers=admin,
                    json=rotation("acme", [], [acme2], ADMIN_KEY))

    submit = "/v1/entries"
    release = make_release(acme, "com.acme.app", "1.0", counter=5)
    await call.post(submit, 401, "token_missing", json=release)
    await call.post(submit, 401, "token_malformed", json=release,
                    headers={"Authorization": "Bearer not.a.token"})
    forged, _ = TokenAuthority(generate_key("evil"), log_signer.name).issue(
        "acme", ["com.acme.*"], timedelta(minutes=5))
    await call.post(submit, 401, "token_bad_signature", json=release,
                    headers={"Authorization": f"Bearer {forged}"})
    authority = TokenAuthority(token_key, log_signer.name)
    expired, _ = authority.issue("acme", ["com.acme.*"], timedelta(minutes=5),
                                 now=datetime.now(UTC) - timedelta(hours=1))
    await call.post(submit, 401, "token_expired", json=release,
                    headers={"Authorization": f"Bearer {expired}"})
    early, _ = authority.issue("acme", ["com.acme.*"], timedelta(minutes=5),
                               now=datetime.now(UTC) + timedelta(hours=1))
    await call.post(submit, 401, "token_not_yet_valid", json=release,
                    headers={"Authorization": f"Bearer {early}"})
    unrecorded, _ = authority.issue("acme", ["com.acme.*"], timedelta(minutes=5))
    await call.post(submit, 401, "token_unknown", json=release,
                    headers={"Authorization": f"Bearer {unrecorded}"})

    acme_token, acme_jti = await token("acme", ["com.acme.*", "org.acme.*"])
    await call.post(submit, 201, json=release, headers=acme_token)
    await call.post(submit, 200, json=release, headers=acme_token)
    await call.post(submit, 409, "conflict", headers=acme_token,
                    json=make_release(acme, "com.acme.app", "1.0", counter=6, payload=b"x"))
    await call.post(submit, 409, "counter_not_increasing", headers=acme_token,
                    json=make_release(acme, "com.acme.app", "1.1", counter=5))
    await call.post(submit, 422, "counter_required", headers=acme_token,
                    json=make_release(acme, "com.acme.app", "1.2"))
    await call.post(submit, 403, "token_out_of_scope", headers=acme_token,
                    json=make_release(acme, "acme-cli", "1.0"))
    await call.post(submit, 403, "package_not_owned", headers=acme_token,
                    json=make_release(acme, "org.acme.app", "1.0"))
    await call.post(submit, 403, "key_not_valid", headers=acme_token,
                    json=make_release(acme2, "com.acme.lib", "1.0"))
    await call.post(submit, 403, "token_wrong_publisher", headers=acme_token,
                    json=make_release(ghost, "com.acme.lib", "1.0"))
    await call.post(submit, 403, "admin_only", headers=acme_token,
                    json=registration("acme", ["com.acme.*"], [acme]))
    # The batch route answers each of those entries as the single route did.
    batch = "/v1/entries/batch"
    await call.post(batch, 401, "token_missing", json={"entries": [release]})
    refusals = [(200, None, release),
                (409, "conflict", make_release(acme, "com.acme.app", "1.0", counter=6,
                                               payload=b"x")),
                (409, "counter_not_increasing", make_release(acme, "com.acme.app", "1.1",
                                                             counter=5)),
                (422, "counter_required", make_release(acme, "com.acme.app", "1.2")),
                (403, "token_out_of_scope", make_release(acme, "acme-cli", "1.0")),
                (403, "package_not_owned", make_release(acme, "org.acme.app", "1.0")),
                (403, "key_not_valid", make_release(acme2, "com.acme.lib", "1.0")),
                (403, "token_wrong_publisher", make_release(ghost, "com.acme.lib", "1.0")),
                (403, "admin_only", registration("acme", ["com.acme.*"], [acme]))]
    results = (await call.post(batch, 200, headers=acme_token,
                               json={"entries": [e for _, _, e in refusals]}))["results"]
    assert [(r["status"], r.get("error", {}).get("code")) for r in results] == \
        [(status, code) for status, code, _ in refusals]
    ghost_token, _ = await token("ghost", ["ghost-app"])
    await call.post(submit, 403, "publisher_not_registered", headers=ghost_token,
                    json=make_release(ghost, "ghost-app", "1.0"))

    await call.post(submit, 201, headers=acme_token, json=rotation("acme", [acme2], [], acme))
    await call.post(entries, 201, headers=admin, json=revocation("acme", [acme2], ADMIN_KEY))
    await call.post(submit, 409, "key_revoked", headers=acme_token,
                    json=rotation("acme", [generate_key("acme"), acme2], [], acme))
    await call.post(submit, 403, "key_not_valid", headers=acme_token,
                    json=make_release(acme2, "com.acme.lib", "1.0"))

    for template, path, status, code in [
            (entries, entries, 403, "admin_forbidden"), (tokens, tokens, 403, "admin_forbidden"),
            (submit, submit, 401, "token_malformed")]:
        answer = await raw_post(client, path, b"Bearer \xff\xfe.a.b", json.dumps(release).encode())
        call.spec.check_answer(*answer, template, "post")
        assert (answer[0], json.loads(answer[2])["error"]["code"]) == (status, code)

    revoke = "/v1/admin/tokens/{jti}/revoke"
    await call.post(revoke, 401, "admin_auth_required", path=f"/v1/admin/tokens/{acme_jti}/revoke")
    await call.post(revoke, 400, "bad_token_id", path="/v1/admin/tokens/a.b/revoke", headers=admin)
    await call.post(revoke, 404, "not_found", path="/v1/admin/tokens/nope/revoke", headers=admin)
    revoked = await call.post(revoke, 200, path=f"/v1/admin/tokens/{acme_jti}/revoke",
                              headers=admin)
    assert revoked == {"jti": acme_jti, "revoked": True, "already_revoked": False}
    again = await call.post(revoke, 200, path=f"/v1/admin/tokens/{acme_jti}/revoke",
                            headers=admin)
    assert again == {"jti": acme_jti, "revoked": True, "already_revoked": True}
    await call.post(submit, 401, "token_revoked", headers=acme_token,
                    json=make_release(acme, "com.acme.app", "2.0", counter=7))

    await call.post(entries, 201, headers=admin, json=revocation("acme", None, ADMIN_KEY))
    acme_token, _ = await token("acme", ["com.acme.*"])
    await call.post(submit, 403, "publisher_revoked", headers=acme_token,
                    json=make_release(acme, "com.acme.app", "3.0", counter=8))
    page = await call.get("/v1/entries", 200, path="/v1/entries?package=com.acme.app")
    assert [e["entry"]["version"] for e in page["entries"]] == ["1.0"]
    # Four entries logged, each alone in its batch: every leaf, map roots included.
    for index in range(size_after([1] * 4)):
        await call.get("/v1/entries/{index}", 200, path=f"/v1/entries/{index}")

    await _pushback(client, call, ghost_token, make_release(ghost, "ghost-app", "2.0"))


async def _pushback(client: Client, call: Caller, token: dict[str, str],
                    release: dict[str, Any]) -> None:
    """Quotas and the in-flight cap answer 429 and 503 as documented."""
    app = client.app
    assert app is not None
    admin = {"Authorization": f"Bearer {ADMIN_SECRET}"}
    publishers, in_flight = app[PUBLISHER_BUCKETS], app[IN_FLIGHT]
    publishers.burst = 0
    try:
        await call.post("/v1/entries", 429, "rate_limited", json=release, headers=token)
    finally:
        publishers.burst = 2000
    in_flight.limit = 0
    try:
        await call.post("/v1/entries", 503, "overloaded", json=release, headers=token)
        await call.post("/v1/admin/tokens", 503, "overloaded", json={}, headers=admin)
        await call.post("/v1/admin/entries", 503, "overloaded", json={}, headers=admin)
        # A call with no body to process takes no slot: revocation works under overload.
        await call.post("/v1/admin/tokens/{jti}/revoke", 404, "not_found",
                        path="/v1/admin/tokens/x/revoke", headers=admin)
    finally:
        in_flight.limit = 5000
    app[CLIENT_BUCKETS].burst = 0
    for template, path in [("/v1/entries", None), ("/v1/admin/tokens", None),
                           ("/v1/admin/entries", None),
                           ("/v1/admin/tokens/{jti}/revoke", "/v1/admin/tokens/x/revoke")]:
        await call.post(template, 429, "rate_limited", path=path, json={}, headers=admin)


async def test_logs_needing_client_certificates_or_without_a_token_key_answer_as_documented(
        aiohttp_client: ClientFactory, database_url: str, log_signer: Signer,
        publisher: Signer, tmp_path: Path) -> None:
    tls = TlsConfig(tmp_path / "cert.pem", tmp_path / "key.pem", client_ca=tmp_path / "ca.pem")
    mtls = await aiohttp_client(create_app(Config(
        database_url=database_url, signer=log_signer, host="127.0.0.1", port=0, policy="open",
        admin_secret=ADMIN_SECRET, tls=tls)))
    call = Caller(mtls, Spec(load_spec()))
    admin = {"Authorization": f"Bearer {ADMIN_SECRET}"}
    await call.post("/v1/entries", 401, "client_certificate_required",
                    json=make_release(publisher, "com.acme.app", "1.0"))
    for template, path in [("/v1/admin/entries", None), ("/v1/admin/tokens", None),
                           ("/v1/admin/tokens/{jti}/revoke", "/v1/admin/tokens/x/revoke")]:
        await call.post(template, 401, "client_certificate_required", path=path, json={},
                        headers=admin)
    await call.get("/v1/log", 200)

    no_token_key = await aiohttp_client(create_app(Config(
        database_url=database_url, signer=log_signer, host="127.0.0.1", port=0, policy="open",
        admin_secret=ADMIN_SECRET)))
    call = Caller(no_token_key, Spec(load_spec()))
    await call.post("/v1/admin/tokens", 404, "not_found", headers=admin,
                    json={"publisher": "acme", "scopes": ["com.acme.*"]})
    await call.post("/v1/admin/tokens/{jti}/revoke", 404, "not_found",
                    path="/v1/admin/tokens/x/revoke", headers=admin)
