"""The running service against schema/openapi.yaml, by generated requests (Schemathesis).

Two real `tlog serve` processes, each on a fresh database:

- an open log with an admin token configured, seeded with SEEDED releases: every operation,
  sent as generated (admin calls without the token are refused, which exercises the admin
  authentication);
- a registered log with one registered publisher: the POST operations, admin calls carrying
  the admin token and submissions carrying a submission token of that publisher, so the
  requests get past authentication to the body, token and registry checks.

Generated `release/v1` bodies are signed before they are sent (in the registered log by the
registered publisher, for a package it owns), so that schema-valid ones can be logged and
their receipts checked; the rest answer 4xx. Each operation gets the spec's examples,
Schemathesis's coverage cases (boundary and invalid values of every parameter and body
member) and MAX_EXAMPLES generated cases, derandomized. Every answer must be documented: no
5xx, a documented status, content type, headers and body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import REPO, _create_database
from tests.support import Server, make_release, start_server, submit_all, write_key
from tlog.cli.pgcluster import Cluster
from verifier.protocol.entries.registry_kinds import PUBLISHER_KIND
from verifier.protocol.entries.release import KIND as RELEASE_KIND
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer, generate_key

SPEC = REPO / "schema" / "openapi.yaml"
MAX_EXAMPLES = 30
SEED = 20251
ADMIN_SECRET = "s3cret"
OWNED_PREFIX = "com.acme."
SEEDED = 17  # entries in the open log: the spec's example bundle entries/000.p/17 exists
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
Case = schemathesis.Case[Any]
log = logging.getLogger(__name__)


def _config(no_coverage: dict[str, str]) -> schemathesis.Config:
    """A fixed seed, and no coverage phase for the operations matching `no_coverage`."""
    return schemathesis.Config.from_dict(
        {"seed": SEED, "operations": [{**no_coverage, "phases": {"coverage": {"enabled": False}}}]})


# Coverage cases of a request body run once, where they reach the body checks: the admin
# bodies in the registered log (the open one refuses them before reading the body), the
# submission bodies in the open log (checked there exactly as in the registered one).
open_schema = schemathesis.openapi.from_path(
    SPEC, config=_config({"include-path-regex": "^/v1/admin/"}))
registered_schema = schemathesis.openapi.from_path(
    SPEC, config=_config({"include-path": "/v1/entries"})).exclude(method="GET")


def error_code(response: Any) -> str:
    """The error code of an answer: the JSON error's, or an explorer page's (data-code)."""
    if any(v.startswith("text/html") for v in response.headers.get("content-type", [])):
        found = re.search(r'<p id="error" data-status="\d+" data-code="([^"]*)"', response.text)
        assert found, response.text[:500]
        return found.group(1)
    code: str = response.json()["error"]["code"]
    return code


@dataclass
class Log:
    """A running log, who signs and authenticates for the tests, and what it answered."""

    server: Server
    publisher: Signer
    package_prefix: str = ""
    authorization: dict[str, str] = field(default_factory=dict)
    answers: dict[str, Counter[str]] = field(default_factory=dict)

    def call_and_validate(self, case: Case, **kw: Any) -> None:
        """Send the case, count it by phase, status and error code, and check the answer."""
        phase = case.meta.phase.name.value if case.meta is not None else "explicit"
        answers = self.answers.setdefault(case.operation.label, Counter())
        answers[phase] += 1
        response = case.call_and_validate(base_url=self.server.url, checks=CHECKS, timeout=30,
                                          **kw)
        answers[str(response.status_code)] += 1
        if 400 <= response.status_code < 500:
            answers[error_code(response)] += 1

    def summary(self) -> str:
        return "; ".join(f"{label}: {dict(sorted(counts.items()))}"
                         for label, counts in sorted(self.answers.items()))


def _fresh_database(cluster: Cluster, name: str) -> str:
    return asyncio.run(_create_database(cluster, f"{name}_{os.getpid()}"))


def _write_secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def _post(url: str, body: dict[str, Any], authorization: str = "") -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=30) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def _serve(running: Log, request: pytest.FixtureRequest, test: str) -> Iterator[Log]:
    """Yield the log, stop it, and check that every selected operation got requests."""
    try:
        yield running
    finally:
        running.server.stop()
    log.info("answers per operation: %s", running.summary())
    selected = {item.name.removeprefix(f"{test}[").removesuffix("]")
                for item in request.session.items if item.name.startswith(f"{test}[")}
    if not request.session.testsfailed:
        assert selected <= set(running.answers), "operations that received no request"


def _sign_release(case: Case, running: Log) -> None:
    """Sign a generated release/v1 body as the log's test publisher."""
    body = case.body
    if not isinstance(body, dict) or body.get("kind") != RELEASE_KIND:
        return
    fields = dict(body)
    package = fields.get("package")
    if running.package_prefix and isinstance(package, str):
        fields["package"] = (running.package_prefix + package)[:200]
    with contextlib.suppress(ValueError, TypeError):  # not canonicalizable: sent unsigned
        case.body = sign_entry(fields, running.publisher)


@pytest.fixture(scope="module")
def open_log(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory,
             request: pytest.FixtureRequest) -> Iterator[Log]:
    work = tmp_path_factory.mktemp("schemathesis-open")
    url = _fresh_database(pg_cluster, "schemathesis_open")
    key = write_key(work / "log.key", generate_key("log.example.org/fuzz"))
    secret = _write_secret(work / "admin.token", ADMIN_SECRET)
    server = start_server(url, key, work, extra=("--policy", "open",
                                                 "--admin-token-file", str(secret)))
    publisher = generate_key("acme")
    try:
        seeded = asyncio.run(submit_all([server.url], [
            make_release(publisher, "com.acme.app", f"{i}.0") for i in range(SEEDED)]))
        assert [r.status for r in seeded] == [201] * SEEDED
    except BaseException:
        server.stop()
        raise
    yield from _serve(Log(server, publisher), request,
                      test_open_log_answers_every_request_as_documented.__name__)


@pytest.fixture(scope="module")
def registered_log(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory,
                   request: pytest.FixtureRequest) -> Iterator[Log]:
    work = tmp_path_factory.mktemp("schemathesis-registered")
    url = _fresh_database(pg_cluster, "schemathesis_registered")
    admin_key, acme = generate_key("log-admin"), generate_key("acme")
    key = write_key(work / "log.key", generate_key("log.example.org/fuzz"))
    token_key = write_key(work / "token.key", generate_key("log.example.org/tokens"))
    admin_vkey = work / "admin.vkey"
    admin_vkey.write_text(admin_key.verifier().text() + "\n")
    secret = _write_secret(work / "admin.token", ADMIN_SECRET)
    server = start_server(url, key, work, extra=(
        "--policy", "registered", "--admin-key", str(admin_vkey), "--token-key", str(token_key),
        "--admin-token-file", str(secret)))
    admin = f"Bearer {ADMIN_SECRET}"
    try:
        _post(server.url + "/v1/admin/entries", sign_entry(
            {"kind": PUBLISHER_KIND, "publisher": "acme", "packages": [OWNED_PREFIX + "*"],
             "keys": [acme.verifier().text()]}, admin_key), admin)
        token = _post(server.url + "/v1/admin/tokens",
                      {"publisher": "acme", "scopes": [OWNED_PREFIX + "*"], "ttl": "1h"}, admin)
    except BaseException:
        server.stop()
        raise
    running = Log(server, acme, OWNED_PREFIX,
                  {"admin": admin, "submission": f"Bearer {token['token']}"})
    yield from _serve(running, request,
                      test_registered_log_answers_every_write_as_documented.__name__)


@open_schema.parametrize()
@FUZZ
def test_open_log_answers_every_request_as_documented(case: Case, open_log: Log) -> None:
    _sign_release(case, open_log)
    open_log.call_and_validate(case)


@registered_schema.parametrize()
@FUZZ
def test_registered_log_answers_every_write_as_documented(case: Case,
                                                          registered_log: Log) -> None:
    _sign_release(case, registered_log)
    role = "admin" if case.path.startswith("/v1/admin/") else "submission"
    registered_log.call_and_validate(
        case, headers={"Authorization": registered_log.authorization[role]})
