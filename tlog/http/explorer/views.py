"""The explorer's pages: home, search, package and entry. Each reads the log through the
app's LogReader, bounds what it reads, and renders HTML with every entry string escaped
(tlog.http.explorer.markup). Errors are raised as the API's ApiError; the explorer's
middleware (tlog.http.explorer) answers them as HTML pages.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web

from tlog.http.access import client_identity
from tlog.http.checkpoints import served_checkpoint
from tlog.http.errors import ApiError
from tlog.http.explorer.facts import ReleaseRow, Statement, package_rows, parse, summaries
from tlog.http.explorer.markup import Safe, esc, join, link, render, shown, tag
from tlog.http.explorer.page import PageKind, page
from tlog.http.explorer.plot import svg
from tlog.http.handlers import (
    CLIENT_PAGES,
    CONFIG,
    PAGE_COST_BYTES,
    PAGE_SLOTS,
    PAGE_THREADS,
    READ_BUCKETS,
    READER,
    VKEY,
    parse_uint,
    query,
)
from tlog.log.proofs import inclusion_proof
from tlog.store.reader import StoredCheckpoint
from verifier.protocol.checkpoint import CheckpointError, parse_checkpoint
from verifier.protocol.entries.release import PACKAGE_NAME
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import NoteError, parse_note
from verifier.protocol.policy import Policy

RECENT_RELEASES = 20
RECENT_BYTES = 256 * 1024  # the recent releases' leaves read at most
SEARCH_RESULTS = 50
PACKAGE_ENTRIES = 500  # a package page shows its latest entries up to this many
PACKAGE_BYTES = 2 * 1024 * 1024  # and up to this many bytes of them
T = TypeVar("T")


def package_href(name: str) -> str:
    return "/package/" + quote(name, safe="/@+")


async def _in_thread(request: web.Request, work: Callable[..., T], *args: Any) -> T:
    """Parsing a page's worth of leaves runs in a page thread, never on the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[PAGE_THREADS], work, *args)


def _charge(request: web.Request, read_bytes: int) -> None:
    """A page that read many bytes costs reads by its size, as a page of entries does."""
    request.app[READ_BUCKETS].charge(client_identity(request), read_bytes // PAGE_COST_BYTES)


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _checkpoint_html(request: web.Request, stored: StoredCheckpoint | None) -> Safe:
    if stored is None:
        return Safe('<p id="no-checkpoint">The log has not published a checkpoint yet.</p>')
    try:
        note = parse_note(stored.note)
        cp = parse_checkpoint(note.text)
    except (NoteError, CheckpointError) as exc:
        return tag("p", f"The stored checkpoint does not parse: {exc}")
    policy = request.app[CONFIG].witness_policy
    now = int(time.time())
    items, times = [], []
    for sig in note.signatures:
        if sig.name == cp.origin:
            continue  # the log's own signature
        when = ""
        if len(sig.signature) == 72:
            stamp = int.from_bytes(sig.signature[:8], "big")
            times.append(stamp)
            when = f", {_age(max(now - stamp, 0))} ago"
        named = next((w.name for w in (policy.witnesses.values() if policy else ())
                      if w.key.matches(sig)), None)
        name = (shown(sig.name) if named in (None, sig.name)
                else f"{shown(named)} ({shown(sig.name)})")
        items.append(render("cosigner.html", name=name, key_id=sig.key_id.hex(), when=when))
    age = (f"cosigned {_age(max(now - max(times), 0))} ago" if times
           else "not cosigned (the log runs without a witness policy)" if policy is None
           else "no cosignature")
    quorum = policy.describe_quorum() if policy is not None else "none configured"
    cosigners = join(items, "\n") if items else Safe('<li class="none">none</li>')
    return render("checkpoint.html", origin=shown(cp.origin), size=cp.size, root=cp.root.hex(),
                  age=age, quorum=quorum, cosigners=cosigners)


async def home(request: web.Request) -> web.Response:
    query(request, set())
    stored = await served_checkpoint(request)
    rows = await request.app[READER].recent_releases(RECENT_RELEASES, RECENT_BYTES)
    _charge(request, sum(len(leaf) for _, leaf in rows))
    found = await _in_thread(request, summaries, rows)
    if found:
        body = join((tag("tr", join([
            Safe(f"<td>{link(package_href(s.package or ''), shown(s.package or '?'))}</td>"),
            tag("td", shown(s.version or "?")),
            Safe(f"<td>{link(f'/entry/{s.index}', s.index)}</td>"),
            tag("td", shown(s.publisher))])) for s in found), "\n")
        recent = render("recent.html", rows=body)
    else:
        recent = Safe('<p id="no-releases">No releases among the latest entries.</p>')
    return page(request, PageKind.HOME, "Home",
                render("home.html", checkpoint=_checkpoint_html(request, stored),
                       recent=recent))


def search_term(text: str | None) -> str:
    """A package name prefix: the characters of a package name, 1-200 of them."""
    if text is None or not PACKAGE_NAME.fullmatch(text):
        got = "nothing" if not text else f"{shown(text, 40)!r}"
        raise ApiError("bad_package", "search for the start of a package name: 1-200 "
                       f"characters from A-Z a-z 0-9 . _ - + / @ (got {got})")
    return text


async def search(request: web.Request) -> web.Response:
    q = query(request, {"q"})
    if "q" not in q:
        return page(request, PageKind.SEARCH, "Search packages",
                    render("search.html", summary="Type the start of a package name above.",
                           results=""))
    term = search_term(q["q"])
    names = await request.app[READER].packages_with_prefix(term, SEARCH_RESULTS + 1)
    more = len(names) > SEARCH_RESULTS
    names = names[:SEARCH_RESULTS]
    summary = (f"{len(names)} package{'s' if len(names) != 1 else ''} starting with {term}"
               + (f" (the first {SEARCH_RESULTS}; type more to narrow it down)" if more else ""))
    results = join((Safe(f"<li>{link(package_href(n), n)}</li>") for n in names), "\n")
    return page(request, PageKind.SEARCH, f"Packages starting with {term}",
                render("search.html", summary=summary, results=results), query_text=term)


async def package(request: web.Request) -> web.Response:
    query(request, set())
    name = request.match_info["name"]
    if not PACKAGE_NAME.fullmatch(name):
        raise ApiError("bad_package", "a package name is 1-200 characters from A-Z a-z 0-9 "
                       ". _ - + / @")
    async with _heavy_read(request, PACKAGE_BYTES) as cost:
        rows = await request.app[READER].package_latest(name, PACKAGE_ENTRIES + 1,
                                                        PACKAGE_BYTES)
        if not rows:
            raise ApiError("not_found", f"the log holds no release of {name}")
        cost.append(sum(len(leaf) for _, leaf in rows))
        cut = len(rows) > PACKAGE_ENTRIES or cost[0] >= PACKAGE_BYTES
        rows = rows[:PACKAGE_ENTRIES]
        releases, statements = await _in_thread(request, package_rows, rows)
        body = await _in_thread(request, _package_body, name, releases, statements, cut,
                                len(rows))
    return page(request, PageKind.PACKAGE, name, body)


@asynccontextmanager
async def _heavy_read(request: web.Request, max_bytes: int) -> AsyncIterator[list[int]]:
    """A page that may read megabytes pays as a page of entries does (handlers.paged): the
    largest cost before it waits for one of the page slots it shares with the API's pages
    (so parallel requests cannot outrun the read quota), refunded down to the bytes read,
    which the page appends to the list yielded; and a client has at most PAGES_PER_CLIENT
    such pages in progress, so it cannot fill the queue for the slots."""
    client, worst = client_identity(request), max_bytes // PAGE_COST_BYTES
    buckets, in_progress = request.app[READ_BUCKETS], request.app[CLIENT_PAGES]
    read: list[int] = []
    in_progress.enter(client)
    try:
        buckets.charge(client, worst)
        try:
            async with request.app[PAGE_SLOTS]:
                yield read
        finally:
            buckets.charge(client, sum(read) // PAGE_COST_BYTES - worst)
    finally:
        in_progress.leave(client)


def _package_body(name: str, releases: list[ReleaseRow],
                  statements: list[Statement], cut: bool, shown_count: int) -> Safe:
    summary = (f"{len(releases)} release{'s' if len(releases) != 1 else ''} and "
               f"{len(statements)} lifecycle statement{'s' if len(statements) != 1 else ''}")
    if cut:
        summary += (f": the latest {shown_count} entries of this package only; the API lists "
                    "them all")
    table = join((tag("tr", join([
        tag("td", shown(r.version)), Safe(f"<td>{link(f'/entry/{r.index}', r.index)}</td>"),
        tag("td", "none" if r.counter is None else r.counter),
        Safe(f'<td><code title="{esc(shown(r.key, 400))}">{esc(shown(r.publisher))}'
             "</code></td>"),
        tag("td", r.lifecycle(), {"class": "lifecycle"})])) for r in releases), "\n")
    if statements:
        rows = join((tag("tr", join([
            tag("td", shown(s.version)), Safe(f"<td>{link(f'/entry/{s.index}', s.index)}</td>"),
            tag("td", s.describe()), tag("td", shown(s.reason or "")),
            tag("td", shown(s.rollback or "")), tag("td", shown(s.publisher))]))
            for s in statements), "\n")
        listed = render("statements.html", rows=rows)
    else:
        listed = Safe("<p>None.</p>")
    caption = ("Each dot is a release, coloured by its publisher key; marks show rollout "
               "stages (triangle), halts (square), yanks (cross) and resumes (diamond).")
    return render("package.html", package=name, summary=summary,
                  svg=svg(name, releases, statements), caption=caption, releases=table,
                  statements=listed, api="/v1/entries?package=" + quote(name, safe=""))


async def entry(request: web.Request) -> web.Response:
    query(request, set())
    index = parse_uint("index", request.match_info["index"])
    leaf = await request.app[READER].entry(index)
    if leaf is None:
        raise ApiError("not_found", f"the log holds no entry at index {index}")
    obj, pretty = await _in_thread(request, _parsed_and_shown, leaf)
    kind = str(obj.get("kind", "?"))
    name = obj.get("package")
    package_line = Safe("")
    if isinstance(name, str):
        package_line = Safe(f"<dt>Package</dt><dd>{link(package_href(name), shown(name))}</dd>")
    stored = await served_checkpoint(request)
    proof = await _proof_html(request, index, leaf, stored)
    config = request.app[CONFIG]
    policy = config.witness_policy
    witness_keys = join((tag("li", f"{w.name}: {w.key.text()}", {"class": "witness-key"})
                         for w in (policy.witnesses.values() if policy else ())), "\n")
    body = render("entry.html", index=index, kind=shown(kind),
                  leaf_hash=leaf_hash(leaf).hex(), package=package_line, entry_json=pretty,
                  proof=proof, vkey=request.app[VKEY],
                  policy=_first_visit_policy(policy, request.app[VKEY]),
                  keys_source="The keys this log's server gives (first visit).",
                  witness_keys=witness_keys or Safe("<li>none: the log has no witness policy"
                                                    "</li>"),
                  quorum=policy.describe_quorum() if policy else "none")
    return page(request, PageKind.ENTRY, f"Entry {index}", body, script=True)


def _parsed_and_shown(leaf: bytes) -> tuple[dict[str, Any], Safe]:
    """The entry's object and its text for the page, in one trip to a page thread."""
    obj = parse(leaf)
    return obj, _pretty(obj)


def _first_visit_policy(policy: Policy | None, log_vkey: str) -> str:
    """The witness policy the entry page's check uses until keys are pinned (without the
    witnesses' addresses); without one, the log alone with "quorum none"."""
    if policy is None:
        return f"log {log_vkey}\nquorum none\n"
    return policy.text(urls=False)


def _pretty(obj: dict[str, Any]) -> Safe:
    """The entry as indented JSON, non-ASCII as \\u escapes (no look-alike text on show),
    escaped for HTML here, in the page thread: indented, a 64 KiB entry of deeply nested
    lists grows to a megabyte or two."""
    return esc(json.dumps(obj, indent=2, ensure_ascii=True))


async def _proof_html(request: web.Request, index: int, leaf: bytes,
                      stored: StoredCheckpoint | None) -> Safe:
    if stored is None or index >= stored.size:
        return Safe("<p>Not yet in the latest checkpoint: the proof comes with the next "
                    "one.</p>")
    hashes = await inclusion_proof(index, stored.size, request.app[READER].tiles)
    items = join((tag("li", h.hex(), {"class": "hash"}) for h in hashes), "\n")
    return render("proof.html", size=stored.size, root=stored.root.hex(),
                  count=len(hashes), hashes=items)
