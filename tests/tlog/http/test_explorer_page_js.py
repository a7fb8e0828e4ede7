"""The explorer's page script (static/explorer.js) under Node, on an entry page of a real log
(PostgreSQL, the aiohttp app): how the check ends when the page or the API lies or stalls.
tests/js/run_explorer.mjs stands in for the DOM and fetches from the running test server;
tests/browser drives a real Chromium through the same pages."""

from __future__ import annotations

import asyncio
import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support import make_release
from tests.tlog.http.test_lifecycle import post
from verifier.protocol.note import Signer

REPO = Path(__file__).resolve().parents[3]
STATIC = REPO / "tlog" / "http" / "explorer" / "static"
HARNESS = REPO / "tests" / "js" / "run_explorer.mjs"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (Debian nodejs)")


async def entry_page(client: Any, index: int) -> dict[str, Any]:
    """What explorer.js reads from the server's entry page."""
    text = await (await client.get(f"/entry/{index}")).text()

    def field(pattern: str) -> str:
        found = re.search(pattern, text, re.S)
        assert found, pattern
        return html.unescape(found.group(1))

    return {"index": int(field(r'id="verification" data-index="(\d+)"')),
            "vkey": field(r'data-log-vkey="([^"]*)"'), "policy": field(r'data-policy="([^"]*)"'),
            "entry_json": field(r'<pre id="entry-json">(.*?)</pre>'),
            "leaf_hash": field(r'<code id="leaf-hash">([0-9a-f]+)</code>'),
            "kind": field(r'<dd id="entry-kind">([^<]*)</dd>')}


async def run_page(client: Any, tmp_path: Path, page: dict[str, Any], **scenario: Any
                   ) -> dict[str, Any]:
    for name in ("explorer.js", "protocol.js", "statemap.js"):
        shutil.copy(STATIC / name, tmp_path / name)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    path = tmp_path / "scenario.json"
    base = str(client.make_url("")).rstrip("/")
    path.write_text(json.dumps({"base": base, "page": page, **scenario}))
    assert NODE is not None
    # A subprocess of the event loop: the test server keeps answering while Node asks.
    proc = await asyncio.create_subprocess_exec(NODE, str(HARNESS), str(tmp_path), str(path),
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def logged(client: Any, publisher: Signer) -> None:
    await post(client, make_release(publisher, "com.acme.app", "1.0", counter=1), 201)
    await post(client, make_release(publisher, "com.acme.app", "1.1", counter=2), 201)


async def test_an_honest_entry_page_is_verified(client: Any, publisher: Signer,
                                                tmp_path: Path) -> None:
    await logged(client, publisher)
    page = await entry_page(client, 0)
    got = await run_page(client, tmp_path, page)
    assert got["result"] == "verified", got
    assert "in the package state of com.acme.app" in got["status"]


async def test_an_api_that_never_answers_ends_the_check_failed_not_pending_forever(
        client: Any, publisher: Signer, tmp_path: Path) -> None:
    """A log that holds the connection open must not leave "Checking…" on the page for
    ever: each request has a deadline, and its passing fails the check."""
    await logged(client, publisher)
    page = await entry_page(client, 0)
    got = await run_page(client, tmp_path, page, hang=["/v1/proof/inclusion"], seconds=5)
    assert got["result"] == "failed", got
    assert "did not answer" in got["status"]


async def test_a_page_showing_a_member_twice_shows_only_what_the_log_proved(
        client: Any, publisher: Signer, tmp_path: Path) -> None:
    """JSON.parse keeps the last of two members of one name: a page whose entry shows a
    forged "version" first and the logged one last parses to the proven entry. Once the
    check passes, the page must show the proven entry, not the server's text."""
    await logged(client, publisher)
    page = await entry_page(client, 0)
    assert page["entry_json"].startswith("{\n")
    page["entry_json"] = '{\n  "version": "6.6.6",' + page["entry_json"][1:]
    got = await run_page(client, tmp_path, page)
    assert got["result"] == "verified", got
    assert "6.6.6" not in got["entry_json"]
    assert json.loads(got["entry_json"])["version"] == "1.0"


async def test_a_page_naming_another_kind_than_the_proven_entry_fails(
        client: Any, publisher: Signer, tmp_path: Path) -> None:
    await logged(client, publisher)
    page = await entry_page(client, 0)
    assert page["kind"] == "release/v1"
    got = await run_page(client, tmp_path, dict(page, kind="yank/v1"))
    assert got["result"] == "failed", got
    assert "not the one the log proves" in got["status"]


async def test_an_entry_of_floats_non_ascii_and_numeric_names_verifies(
        client: Any, publisher: Signer, tmp_path: Path) -> None:
    """The leaf is the entry's JCS (RFC 8785) made in Python; the browser remakes it from
    the API's JSON: floats, the largest safe integer, non-ASCII and integer-like member
    names (which JavaScript orders first in an object) must encode the same."""
    from tests.support import release_fields
    from verifier.protocol.entries.signing import sign_entry
    metadata = {"\u03c0": 3.14159, "big": 9007199254740991, "tiny": 1e-7, "huge": 1.5e300,
                "neg0": -0.0, "text": "\u00e9\u2028\U0001f600\u202e", "10": 1, "2": 2.0,
                "</pre><script>": "<script>alert(1)</script>"}
    entry = sign_entry({**release_fields("com.acme.app", "1.0"), "metadata": metadata},
                       publisher)
    await post(client, entry, 201)
    page = await entry_page(client, 0)
    got = await run_page(client, tmp_path, page)
    assert got["result"] == "verified", got
    shown = json.loads(got["entry_json"])
    assert shown["metadata"]["\u03c0"] == 3.14159 and shown["metadata"]["2"] == 2
    assert shown["metadata"]["text"] == "\u00e9\u2028\U0001f600\u202e"
    assert got["entry_json"].isascii()  # non-ASCII shown as escapes, as the server does
