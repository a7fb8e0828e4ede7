"""The web explorer on a real PostgreSQL: every page renders its content in the HTML (it
works without JavaScript), carries the Content-Security-Policy, holds no inline script or
style, shows hostile entry content as text, and answers errors as HTML pages."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web

from tests.support import make_release, release_fields
from tests.tlog.http.test_lifecycle import post, statement
from tlog.config import Config, Quotas
from tlog.http.app import create_app
from tlog.http.explorer import views
from tlog.http.explorer.page import CSP
from verifier.protocol.entries.lifecycle import HALT_KIND, ROLLOUT_KIND, YANK_KIND
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer, generate_key

SCRIPT_TAG = re.compile(r"<script\b[^>]*>", re.I)
TAG = re.compile(r"<[A-Za-z][^>]*>")  # a start tag: escaped text never holds a literal <
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)


async def html(client: Any, path: str, status: int = 200) -> str:
    resp = await client.get(path, allow_redirects=False)
    text: str = await resp.text()
    assert resp.status == status, text[:2000]
    assert resp.content_type == "text/html", resp.content_type
    assert_page_is_safe(resp, text)
    return text


def assert_page_is_safe(resp: Any, text: str) -> None:
    """The contract of every explorer page: headers, one h1, main, no inline script/style."""
    assert resp.headers["Content-Security-Policy"] == CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert text.startswith("<!DOCTYPE html>") and '<html lang="en">' in text
    assert text.count("<h1") == 1 and '<main id="main">' in text
    assert '<a class="home" href="/">tlog</a>' in text
    assert '<form role="search" action="/search" method="get">' in text
    assert '<label for="q">Package</label>' in text
    for tag in SCRIPT_TAG.findall(text):  # every script is a file of this origin
        assert re.search(r'\ssrc="/static/[a-z]+\.js\?v=[0-9a-f]+"', tag), tag
    assert not re.search(r"<script\b[^>]*>[^<]", text), "inline script"
    tags = TAG.findall(text)
    assert not [t for t in tags if INLINE_HANDLER.search(t) or re.search(r"\sstyle\s*=", t)]
    assert "<style" not in text


def h1(text: str) -> str:
    found = re.search(r"<h1[^>]*>(.*?)</h1>", text, re.S)
    assert found
    return found.group(1)


async def test_home_shows_the_checkpoint_and_recent_releases(client: Any,
                                                            publisher: Signer) -> None:
    for version in ("1.0", "1.1"):
        await post(client, make_release(publisher, "com.acme.app", version), 201)
    text = await html(client, "/")
    assert h1(text) == "tlog explorer"
    assert '<section id="checkpoint"' in text and '<section id="recent"' in text
    assert '<dd id="tree-size">4</dd>' in text  # two batches of a release and a map root
    assert "log.example.org/test" in text
    assert 'href="/package/com.acme.app"' in text
    assert 'href="/entry/2">2</a>' in text and 'href="/entry/0">0</a>' in text
    assert text.index('href="/entry/2"') < text.index('href="/entry/0"')  # newest first


async def test_home_of_an_empty_log(client: Any) -> None:
    text = await html(client, "/")
    assert "No releases among the latest entries." in text


async def test_recent_releases_are_the_last_twenty(client: Any, publisher: Signer) -> None:
    entries = [make_release(publisher, f"pkg{n}", "1.0") for n in range(views.RECENT_RELEASES
                                                                        + 5)]
    resp = await client.post("/v1/entries/batch", json={"entries": entries})
    assert resp.status in (200, 201), await resp.text()
    text = await html(client, "/")
    assert len(re.findall(r'href="/package/pkg\d+"', text)) == views.RECENT_RELEASES
    assert 'href="/package/pkg24"' in text and 'href="/package/pkg4"' not in text


async def test_search_finds_packages_by_prefix(client: Any, publisher: Signer) -> None:
    entries = [make_release(publisher, name, "1.0")
               for name in ("com.acme.app", "com.acme.lib", "com.acmeco.x", "org.other")]
    resp = await client.post("/v1/entries/batch", json={"entries": entries})
    assert resp.status in (200, 201)
    text = await html(client, "/search?q=com.acme")
    results = re.search(r'<ul id="results">(.*?)</ul>', text, re.S)
    assert results
    names = re.findall(r'<li><a href="/package/([^"]+)">', results.group(1))
    assert names == ["com.acme.app", "com.acme.lib", "com.acmeco.x"]
    assert 'value="com.acme"' in text  # the search box keeps the term
    text = await html(client, "/search?q=com.acme.l")
    assert re.findall(r'<li><a href="/package/([^"]+)">', text) == ["com.acme.lib"]
    text = await html(client, "/search?q=zzz")
    assert '<ul id="results">\n\n</ul>' in text and "0 packages" in text


async def test_search_stops_at_its_limit(client: Any, publisher: Signer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "SEARCH_RESULTS", 3)
    entries = [make_release(publisher, f"lib{n}", "1.0") for n in range(5)]
    await client.post("/v1/entries/batch", json={"entries": entries})
    text = await html(client, "/search?q=lib")
    assert re.findall(r'<li><a href="/package/([^"]+)">', text) == ["lib0", "lib1", "lib2"]
    assert "the first 3" in text


@pytest.mark.parametrize("term", ["", "a b", "<script>", "x" * 201, "é", "a%00"])
async def test_search_refuses_what_no_package_name_starts_with(client: Any, term: str) -> None:
    from urllib.parse import quote
    text = await html(client, "/search?q=" + quote(term), 400)
    assert h1(text) == "Bad request"
    assert "start of a package name" in text
    assert "<script>" not in text.split("<main")[1]


async def test_search_without_a_term_shows_the_form(client: Any) -> None:
    text = await html(client, "/search")
    assert "Type the start of a package name" in text


async def test_package_page_shows_releases_lifecycle_and_plot(client: Any,
                                                              publisher: Signer) -> None:
    for version, counter in (("1.0", 1), ("1.1", 2)):
        await post(client, make_release(publisher, "com.acme.app", version, counter=counter),
                   201)
    await post(client, statement(publisher, ROLLOUT_KIND, "com.acme.app", "1.1"), 201)
    await post(client, statement(publisher, HALT_KIND, "com.acme.app", "1.1"), 201)
    await post(client, statement(publisher, YANK_KIND, "com.acme.app", "1.1",
                                 rollback_version="1.0"), 201)
    text = await html(client, "/package/com.acme.app")
    assert h1(text) == "com.acme.app"
    table = re.search(r'<table id="releases">(.*?)</table>', text, re.S)
    assert table
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]
    assert len(rows) == 2
    assert "1.0" in rows[0] and 'href="/entry/0"' in rows[0] and "released" in rows[0]
    assert "1.1" in rows[1] and "yanked" in rows[1] and "acme-release-bot" in rows[1]
    assert "<td>2</td>" in rows[1]  # the counter
    assert '<table id="statements">' in text and "rollout canary (10 %)" in text
    assert "halted" in text and "crash reports from the canary" in text
    figure = re.search(r'<figure id="plot">(.*?)</figure>', text, re.S)
    assert figure
    svg = figure.group(1)
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in svg and 'role="img"' in svg
    assert '<title id="plot-title">' in svg and '<desc id="plot-desc">' in svg
    assert svg.count("<circle") >= 2 + 1  # two releases, one legend key
    assert "release counter" in svg
    labels = re.findall(r'<text [^>]*font-size="11">([^<]*)</text>', svg)
    assert labels == ["1.0", "1.1"]  # each release's version beside its dot


async def test_package_page_caps_the_entries_shown(client: Any, publisher: Signer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "PACKAGE_ENTRIES", 3)
    entries = [make_release(publisher, "big", f"1.{n}") for n in range(5)]
    await client.post("/v1/entries/batch", json={"entries": entries})
    text = await html(client, "/package/big")
    table = re.search(r'<table id="releases">(.*?)</table>', text, re.S)
    assert table
    assert re.findall(r"<td>(1\.\d)</td>", table.group(1)) == ["1.2", "1.3", "1.4"]
    assert "the latest 3 entries of this package only" in text


async def test_unknown_package_is_a_404_page(client: Any) -> None:
    text = await html(client, "/package/no.such.package", 404)
    assert h1(text) == "Not found" and "no release of no.such.package" in text


async def test_bad_package_name_is_a_400_page(client: Any) -> None:
    text = await html(client, "/package/%3Cb%3E", 400)
    assert h1(text) == "Bad request" and "<b>" not in text


async def test_entry_page_shows_the_entry_its_proof_and_the_check(client: Any,
                                                                  publisher: Signer) -> None:
    await post(client, make_release(publisher, "com.acme.app", "1.0"), 201)
    await post(client, make_release(publisher, "com.acme.app", "1.1"), 201)
    resp = await client.get("/v1/entries/2")
    leaf_hash = (await resp.json())["leaf_hash"]
    text = await html(client, "/entry/2")
    assert h1(text) == "Entry 2"
    assert f'<code id="leaf-hash">{leaf_hash}</code>' in text
    assert '<dd id="entry-kind">release/v1</dd>' in text
    assert re.search(r'<pre id="entry-json">\{\n  &quot;artifacts&quot;', text)
    assert '<ol id="proof-hashes">' in text
    assert '<section id="verification" data-index="2"' in text
    assert '<button id="verify" type="button" hidden>Verify in this browser</button>' in text
    assert ('<p id="verify-status" role="status" aria-live="polite" data-result="pending">'
            in text)
    assert '<ul id="verify-steps"></ul>' in text
    keys = re.search(r'<section id="keys-used" data-log-vkey="([^"]+)" data-policy="([^"]+)"',
                     text)
    assert keys and keys.group(1).startswith("log.example.org/test+")
    assert keys.group(2) == f"log {keys.group(1)}\nquorum none\n"
    # Shown by the script (pinning needs it): pin while unpinned, forget once pinned.
    assert '<button id="pin-keys" type="button" hidden>' in text and 'id="unpin-keys"' in text


@pytest.mark.parametrize("path,status", [("/entry/99", 404), ("/entry/-1", 400),
                                         ("/entry/01", 400), ("/entry/x", 400),
                                         ("/entry/99999999999999999999", 400)])
async def test_bad_or_unknown_entry_is_an_html_error(client: Any, path: str,
                                                     status: int) -> None:
    await html(client, path, status)


async def test_unknown_query_parameters_are_refused_as_html(client: Any) -> None:
    text = await html(client, "/?debug=1", 400)
    assert "unknown query parameter" in text


async def test_the_api_keeps_its_json_errors(client: Any) -> None:
    for path in ("/v1/entries/x", "/no/such/route", "/v1/entries/99"):
        resp = await client.get(path)
        assert resp.content_type == "application/json"
        assert "error" in await resp.json()
        assert "Content-Security-Policy" not in resp.headers


async def test_a_post_to_a_page_is_a_405_page(client: Any) -> None:
    resp = await client.post("/", data=b"x")
    text = await resp.text()
    assert resp.status == 405 and resp.content_type == "text/html"
    assert_page_is_safe(resp, text)


HOSTILE_VERSION = "<script>alert(1)</script>"
HOSTILE_TEXT = ('</pre><script>alert("x")</script><img src=x onerror=alert(1)> '
                "\u202eevil\u200b \"quoted' & " + "A" * 5000)
HOSTILE_KEY = '"><svg/onload=alert(1)>'


async def test_hostile_entry_content_is_shown_as_text(client: Any) -> None:
    signer = generate_key(HOSTILE_KEY)
    fields = release_fields("com.evil/app", HOSTILE_VERSION)
    fields["metadata"] = {"description": HOSTILE_TEXT, "<script>": ["</pre>"]}
    fields["artifacts"][0]["name"] = "<script>alert(2)</script>"
    body = await post(client, sign_entry(fields, signer), 201)
    index = body["index"]
    await post(client, statement(signer, HALT_KIND, "com.evil/app", HOSTILE_VERSION,
                                 reason=HOSTILE_TEXT[:1000]), 201)
    pages = [await html(client, path) for path in
             ("/", f"/entry/{index}", "/package/com.evil/app", "/search?q=com.evil")]
    pages.append(await html(client, f"/entry/{index + 2}"))  # the halt
    for text in pages:
        main = text.split('<main id="main">')[1]
        assert "<script>" not in main and "<svg/onload" not in main
        assert "<img" not in main and "</pre><" not in main
        assert "\u202e" not in main and "\u200b" not in main
    entry = pages[1]
    pre = re.search(r'<pre id="entry-json">(.*?)</pre>', entry, re.S)
    assert pre and "&lt;/pre&gt;&lt;script&gt;alert(\\&quot;x\\&quot;)" in pre.group(1)
    assert "\\u202eevil" in pre.group(1)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[2]  # the version, escaped
    assert "&quot;&gt;&lt;svg/onload=alert(1)&gt;" in pages[2]  # the key's name, escaped
    assert "\\u202eevil" in pages[2]  # the halt's reason, its bidi override shown as code


async def test_static_files_carry_the_policy_and_cache_by_version(client: Any) -> None:
    text = await html(client, "/entry/0", 404)  # any page names the files' versions
    css = re.search(r'href="/static/explorer.css\?v=([0-9a-f]+)"', text)
    assert css
    resp = await client.get(f"/static/explorer.css?v={css.group(1)}")
    assert resp.status == 200 and resp.content_type == "text/css"
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert resp.headers["Content-Security-Policy"] == CSP
    resp = await client.get("/static/explorer.js")
    body = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/javascript"
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    assert re.search(r'from "\./protocol\.js\?v=[0-9a-f]{16}"', body)
    assert re.search(r'from "\./statemap\.js\?v=[0-9a-f]{16}"', body)
    assert (await client.get("/static/protocol.js")).status == 200
    statemap = await client.get("/static/statemap.js")  # imports protocol.js, versioned
    assert re.search(r'from "\./protocol\.js\?v=[0-9a-f]{16}"', await statemap.text())
    await html(client, "/static/nope.js", 404)


async def test_pages_pass_the_read_quota(aiohttp_client: Any, database_url: str,
                                         log_signer: Signer) -> None:
    """A client over its read quota gets 429 on pages too, with Retry-After: the explorer
    is no way around the limits that keep one client from starving the others."""
    app = create_app(Config(database_url=database_url, signer=log_signer, policy="open",
                            host="127.0.0.1", port=0, max_wait=0.002,
                            quotas=Quotas(read_rate=0.001, read_burst=3)))
    client = await aiohttp_client(app)
    for _ in range(3):
        assert (await client.get("/search")).status == 200
    text = await html(client, "/search", 429)
    assert h1(text) == "Too many requests"
    resp = await client.get("/")
    assert resp.status == 429 and "Retry-After" in resp.headers


def test_the_explorer_registers_with_the_app(log_signer: Signer) -> None:
    app = create_app(Config(database_url="postgresql://unused/x", signer=log_signer,
                            policy="open", host="127.0.0.1", port=0))
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert {"/", "/search", "/package/{name}", "/entry/{index}", "/static/{name}"} <= paths
    assert isinstance(app, web.Application)
