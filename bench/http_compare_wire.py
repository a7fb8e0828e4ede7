"""bench/http_compare.py: sending the requests, masking the answers, comparing and reporting.

What is masked, and why, is in bench/http_compare.py's docstring; `normalise` does it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

IGNORED_HEADERS = {"date", "server"}
J = "application/json"
Ctx = dict[str, Any]  # per replay: issued tokens by slot, and "dynamic" (value, placeholder)


@dataclass
class Req:
    name: str
    method: str
    path: str | Callable[[Ctx], str]
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Callable[[Ctx], bytes] | None = None
    content_type: str | None = None  # None: send no Content-Type at all
    capture: Callable[[Ctx, bytes], None] | None = None
    metrics: bool = False  # compare only the metric names
    random_request_id: bool = False  # the request sends no/invalid X-Request-Id
    auth: Callable[[Ctx], str] | None = None  # a bearer token known only at run time

    @property
    def path_label(self) -> str:
        return "<dynamic>" if callable(self.path) else self.path


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    notes: list[str] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        for k, v in self.headers:
            if k.lower() == "content-type":
                return v
        return ""


def jbody(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _request_headers(req: Req, seq: int, ctx: Ctx) -> tuple[dict[str, str], list[str]]:
    headers = dict(req.headers)
    if req.auth is not None:
        headers["Authorization"] = f"Bearer {req.auth(ctx)}"
    if not req.random_request_id and "X-Request-Id" not in headers:
        headers["X-Request-Id"] = f"cmp-{seq}"
    if req.content_type is not None:
        headers["Content-Type"] = req.content_type
        return headers, []
    return headers, ["Content-Type"]


async def do_request(session: aiohttp.ClientSession, base: str, req: Req, seq: int,
                     ctx: Ctx) -> Answer:
    path = req.path(ctx) if callable(req.path) else req.path
    body = req.body(ctx) if callable(req.body) else req.body
    headers, skip = _request_headers(req, seq, ctx)
    url = URL(base + path, encoded=True)
    try:
        async with session.request(req.method, url, headers=headers, data=body,
                                   skip_auto_headers=skip, allow_redirects=False) as resp:
            data = await resp.read()
            hdrs = [(k, v) for k, v in resp.headers.items() if k.lower() not in IGNORED_HEADERS]
            ans = Answer(resp.status, hdrs, data)
    except (aiohttp.ClientError, OSError) as exc:
        return Answer(-1, [], f"client error: {type(exc).__name__}: {exc}".encode())
    if req.capture is not None and 200 <= ans.status < 300:
        try:
            req.capture(ctx, ans.body)
        except Exception as exc:
            ans.notes.append(f"capture failed: {exc}")
    return ans


def _mask_request_id(headers: list[tuple[str, str]], notes: list[str]
                     ) -> list[tuple[str, str]]:
    fixed = []
    for k, v in headers:
        if k.lower() == "x-request-id":
            if re.fullmatch(r"[0-9a-f]{16}", v):
                v = "<random 16 hex>"
            else:
                notes.append(f"X-Request-Id {v!r} is not 16 hex digits")
        fixed.append((k, v))
    return fixed


def _metric_names(body: bytes) -> bytes:
    names = set()
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return ("metric names (values ignored):\n" + "\n".join(sorted(names)) + "\n").encode()


def normalise(req: Req, ans: Answer, ctx: Ctx) -> Answer:
    """Mask what legitimately changes between runs (see bench/http_compare.py)."""
    body, headers, notes = ans.body, list(ans.headers), list(ans.notes)
    for value, placeholder in ctx.get("dynamic", []):
        body = body.replace(value.encode(), placeholder.encode())
        headers = [(k, v.replace(value, placeholder)) for k, v in headers]
    if req.random_request_id:
        headers = _mask_request_id(headers, notes)
    if req.metrics and ans.status == 200:
        body = _metric_names(body)
        headers = [(k, "<masked: metrics>" if k.lower() == "content-length" else v)
                   for k, v in headers]
    if b'"expires_at"' in body:
        body = re.sub(rb'"expires_at": ?"[^"]*"', b'"expires_at": "<masked>"', body)
    # A quota refusal's message says how long to wait: a time, so it moves between runs.
    body = re.sub(rb"retry in [0-9]+(\.[0-9]+)? s", b"retry in <seconds> s", body)
    if body != ans.body and not req.metrics:
        # keep checking that Content-Length is the body's length, on the masked body
        headers = [(k, str(len(body)) if k.lower() == "content-length"
                    and v == str(len(ans.body)) else v) for k, v in headers]
    return Answer(ans.status, headers, body, notes)


async def replay(base: str, reqs: list[Req], ctx: Ctx) -> list[Answer]:
    """The requests one after the other, each on a new connection, answers masked."""
    out = []
    conn = aiohttp.TCPConnector(force_close=True, limit=4)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout, auto_decompress=False,
                                     skip_auto_headers=["User-Agent"]) as session:
        for i, req in enumerate(reqs):
            ans = await do_request(session, base, req, i, ctx)
            out.append(normalise(req, ans, ctx))
    return out


# ------------------------------------------------------------------------------------------
# comparison and report


def _is_text(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def short_body(b: bytes, limit: int = 600) -> str:
    text = b.decode("utf-8", errors="backslashreplace") if b else "(empty)"
    if not b.isascii() and not _is_text(b):
        text = (f"<{len(b)} bytes binary, sha256 {hashlib.sha256(b).hexdigest()[:16]}…> "
                f"{b[:48].hex()}…")
    return text if len(text) <= limit else text[:limit] + f"… ({len(b)} bytes)"


def _text_lines(a: bytes, b: bytes) -> tuple[list[str], list[str], bool]:
    """Both bodies as lines (indented JSON when both parse); True if equal as JSON."""
    try:
        la = json.dumps(json.loads(a), indent=1, ensure_ascii=False).splitlines()
        lb = json.dumps(json.loads(b), indent=1, ensure_ascii=False).splitlines()
        return la, lb, la == lb
    except ValueError:
        return a.decode().splitlines(), b.decode().splitlines(), False


def body_diff(a: bytes, b: bytes) -> str:
    if not (_is_text(a) and _is_text(b)):
        i = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
        return f"binary: lengths {len(a)} vs {len(b)}, first difference at byte {i}"
    la, lb, same_json = _text_lines(a, b)
    if same_json:
        return ("JSON equal, bytes differ (formatting/order): "
                f"old={short_body(a, 200)!r} new={short_body(b, 200)!r}")
    d = [ln for ln in difflib.unified_diff(la, lb, "old", "new", n=0, lineterm="")
         if not ln.startswith(("---", "+++", "@@"))]
    out = "; ".join(d)
    return out if len(out) < 700 else out[:700] + "…"


@dataclass
class Row:
    phase: str
    name: str
    method: str
    path: str
    old: Answer
    new: Answer

    def problems(self) -> list[str]:
        p = []
        if self.old.status != self.new.status:
            p.append(f"status {self.old.status} != {self.new.status}")
        if self.old.content_type != self.new.content_type:
            p.append(f"content-type {self.old.content_type!r} != {self.new.content_type!r}")
        ho = {k.lower(): v for k, v in self.old.headers if k.lower() != "content-type"}
        hn = {k.lower(): v for k, v in self.new.headers if k.lower() != "content-type"}
        for key in sorted(set(ho) | set(hn)):
            if ho.get(key) != hn.get(key):
                p.append(f"header {key}: {ho.get(key)!r} != {hn.get(key)!r}")
        if self.old.body != self.new.body:
            p.append("body: " + body_diff(self.old.body, self.new.body))
        p += [f"old note: {n}" for n in self.old.notes]
        p += [f"new note: {n}" for n in self.new.notes]
        return p


def print_table(rows: list[Row], only_diffs: bool) -> None:
    w = min(max(len(r.name) for r in rows), 70)
    print(f"\n{'#':>4}  {'phase':<10} {'request':<{w}}  {'old':>4} {'new':>4}  result")
    print("-" * (w + 40))
    for i, r in enumerate(rows):
        probs = r.problems()
        if only_diffs and not probs:
            continue
        name = r.name if len(r.name) <= w else r.name[:w - 1] + "…"
        verdict = "same" if not probs else "DIFF: " + " | ".join(probs)
        print(f"{i:>4}  {r.phase:<10} {name:<{w}}  {r.old.status:>4} {r.new.status:>4}  {verdict}")


def print_details(diffs: list[Row]) -> None:
    print("\nDifferences in detail:")
    for r in diffs:
        print(f"\n== [{r.phase}] {r.name}: {r.method} {r.path}")
        for p in r.problems():
            print(f"   {p}")
        print(f"   OLD {r.old.status} {r.old.content_type!r}: {short_body(r.old.body)}")
        print(f"   NEW {r.new.status} {r.new.content_type!r}: {short_body(r.new.body)}")


def save_results(rows: list[Row], path: Path) -> None:
    """Every request with both (masked) answers and its problems, as JSON."""
    def ans(a: Answer) -> dict[str, Any]:
        body = (a.body.decode("utf-8", errors="backslashreplace") if _is_text(a.body)
                else "hex:" + a.body.hex())
        return {"status": a.status, "headers": a.headers, "body": body, "notes": a.notes}
    data = [{"phase": r.phase, "name": r.name, "method": r.method, "path": r.path,
             "old": ans(r.old), "new": ans(r.new), "problems": r.problems()} for r in rows]
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False))
