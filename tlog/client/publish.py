"""An async publishing client: sign releases, log them, verify every receipt.

`tlog publish --batch` is built on it; a release pipeline can use it directly::

    from tlog.client.publish import Publisher
    from verifier.client.keys import read_private_key, read_vkey

    releases = [{"package": "com.acme.app", "version": "2.4.1", "counter": 42,
                 "artifacts": [{"name": "app-2.4.1.apk", "sha256": "<64 hex>", "size": 1234}]}]
    async with Publisher("https://log.example.org", read_private_key("acme.key"),
                         read_vkey("log.vkey"), token=None) as p:
        for outcome in await p.publish_many(releases):
            print(outcome.entry["version"], outcome.index, outcome.error)

A release is a mapping with `package`, `version`, `artifacts` ({name, sha256, size}) and
any of release/v1's optional members (`counter`, `metadata`, `install_window`, `rollout`);
the publisher's key signs it (`key` and `signature` are added here). Releases go to the log
in chunks of at most 1000 through `POST /v1/entries/batch`; a log without that endpoint
(404/405) gets them one by one through `POST /v1/entries`, `concurrency` at a time, after a
notice; either way a package's releases with counters are logged in the order given (give
them in counter order: a registered log refuses a counter that does not grow). Submitting
is idempotent (an entry already logged is answered 200 with its receipt), so transport
failures and 503/429 are retried with backoff.

Every answer is checked before it is returned: the leaf hash is our entry's, the
checkpoint is signed by the pinned log key, and the inclusion proof puts the entry under
its root (verifier.protocol.receipt). An answer that does not verify fails the whole call
(VerificationFailed): a log that lies once is not trusted for the rest. An entry the log
refuses (4xx: not registered, conflict, ...) is an Outcome with `error` set; the others go
on. Signing and verifying run in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from verifier.client.http import HttpFetcher, Tls
from verifier.errors import TransportError, UsageError, VerificationFailed
from verifier.protocol.entries.errors import INVALID_ENTRY, EntryError
from verifier.protocol.entries.release import validate_entry
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer, Verifier
from verifier.protocol.receipt import make_receipt, verify_receipt
from verifier.protocol.trust import KeyTrust

__all__ = ["MAX_BATCH", "OPTIONAL_MEMBERS", "Outcome", "Prepared", "Publisher", "prepare"]

MAX_BATCH = 1000
"""Entries in one POST /v1/entries/batch: the endpoint's own limit."""
OPTIONAL_MEMBERS = frozenset({"counter", "metadata", "install_window", "rollout"})
_REQUIRED = ("package", "version", "artifacts")
# A receipt is a few KiB (checkpoint note, up to 63 proof hashes); 1000 of them fit.
_BATCH_REPLY_LIMIT = 16 << 20
_REPLY_LIMIT = 1 << 20
_TIMEOUT, _DEADLINE = 30.0, 300.0  # the log answers once the batch is durable
_ABSENT = (404, 405)  # a log older than the batch endpoint

T = TypeVar("T")


@dataclass(frozen=True)
class Prepared:
    """A signed release/v1 entry, valid as the log checks it, and its leaf hash."""

    entry: dict[str, Any]
    leaf_hash: bytes

    @property
    def package(self) -> str:
        return str(self.entry["package"])

    @property
    def version(self) -> str:
        return str(self.entry["version"])


@dataclass(frozen=True)
class Outcome:
    """What the log did with one entry: a verified receipt (`created` when it was new), or
    the log's refusal of that entry in `error` ("403 forbidden: ...")."""

    prepared: Prepared
    receipt: dict[str, Any] | None = None
    index: int | None = None
    created: bool = False
    error: str | None = None

    @property
    def entry(self) -> dict[str, Any]:
        return self.prepared.entry

    @property
    def ok(self) -> bool:
        return self.receipt is not None


def prepare(release: Mapping[str, Any], key: Signer) -> Prepared:
    """Sign `release` with `key`; EntryError (invalid_entry, ...) for what the log refuses."""
    if not isinstance(release, Mapping):
        raise EntryError(INVALID_ENTRY, "a release is a JSON object")
    unknown = set(release) - set(_REQUIRED) - OPTIONAL_MEMBERS - {"kind"}
    if unknown:
        raise EntryError(INVALID_ENTRY, f"unknown members {sorted(unknown)} (allowed: "
                                        f"{', '.join([*_REQUIRED, *sorted(OPTIONAL_MEMBERS)])})")
    missing = [m for m in _REQUIRED if m not in release]
    if missing:
        raise EntryError(INVALID_ENTRY, f"missing {', '.join(missing)}")
    if release.get("kind", "release/v1") != "release/v1":
        raise EntryError(INVALID_ENTRY, "kind must be release/v1")
    entry = sign_entry({**release, "kind": "release/v1"}, key)
    return Prepared(entry, validate_entry(entry).leaf_hash)


class Publisher:
    """Publishes releases to the log at `log_url` and verifies every answer with `log_key`.

    `token` is the bearer token of a registered log (one that covers every package
    published); `tls` the CA bundle and client certificate of an HTTPS or mTLS log;
    `chunk_size` the entries per batch request (1..1000); `concurrency` the requests in
    flight when the log has no batch endpoint; `notice` receives messages for the user
    (the fallback).
    """

    def __init__(self, log_url: str, key: Signer, log_key: Verifier, token: str | None = None,
                 *, tls: Tls | None = None, chunk_size: int = 500, concurrency: int = 64,
                 retries: int = 6, notice: Callable[[str], None] | None = None) -> None:
        if not 1 <= chunk_size <= MAX_BATCH:
            raise UsageError(f"chunk size must be 1..{MAX_BATCH}, not {chunk_size}")
        if not 1 <= concurrency <= 256:
            raise UsageError(f"concurrency must be 1..256, not {concurrency}")
        self.key, self.chunk_size, self.concurrency = key, chunk_size, concurrency
        self.retries = retries
        self._http = HttpFetcher(log_url, timeout=_TIMEOUT, deadline=_DEADLINE,
                                  tls=tls or Tls())
        self._trust = KeyTrust(log_key)
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._notice = notice or (lambda message: None)
        self._batch: bool | None = None  # unknown until the log answers the first batch
        self._pool: ThreadPoolExecutor | None = None

    async def __aenter__(self) -> Publisher:
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="tlog-publish")
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @property
    def batch_endpoint(self) -> bool | None:
        """Whether the log has POST /v1/entries/batch (None until the first chunk)."""
        return self._batch

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            raise RuntimeError("use Publisher as `async with Publisher(...) as p`")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def publish(self, release: Mapping[str, Any]) -> dict[str, Any]:
        """Log one release; its verified tlog-receipt/v1. VerificationFailed if refused."""
        [outcome] = await self.publish_many([release])
        if outcome.receipt is None:
            raise VerificationFailed(f"the log refused {outcome.prepared.package} "
                                     f"{outcome.prepared.version}: {outcome.error}")
        return outcome.receipt

    async def publish_many(self, releases: Iterable[Mapping[str, Any]]) -> list[Outcome]:
        """Sign and log every release; one Outcome per release, in order. EntryError before
        anything is sent if a release is invalid."""
        releases = list(releases)
        prepared = await self._thread(lambda: [prepare(r, self.key) for r in releases])
        outcomes: list[Outcome] = []
        async for chunk in self.submit(prepared):
            outcomes.extend(chunk)
        return outcomes

    async def submit(self, prepared: Sequence[Prepared]) -> AsyncIterator[list[Outcome]]:
        """Log signed entries chunk by chunk; yields each chunk's verified Outcomes as soon
        as the log answered it (so a caller can store the receipts before the next one)."""
        for start in range(0, len(prepared), self.chunk_size):
            chunk = prepared[start:start + self.chunk_size]
            answers = await self._answers(chunk)
            yield await self._thread(self._outcomes, chunk, answers)

    async def _answers(self, chunk: Sequence[Prepared]) -> list[tuple[int, Any]]:
        if self._batch is not False:
            answers = await self._post_batch(chunk)
            if answers is not None:
                self._batch = True
                return answers
            self._batch = False
            self._notice("the log has no POST /v1/entries/batch; submitting one entry per "
                         "request to POST /v1/entries instead (slower)")
        return await self._one_by_one(chunk)

    async def _one_by_one(self, chunk: Sequence[Prepared]) -> list[tuple[int, Any]]:
        """Each entry in its own request, `concurrency` at a time; a package's entries with
        counters in the order given, each once the one before is logged: a registered log
        refuses a counter that does not grow, so they must not overtake each other."""
        answers: list[tuple[int, Any]] = [(-1, None)] * len(chunk)
        chains: dict[str, list[int]] = {}
        for i, p in enumerate(chunk):
            # Entries without a counter have no order to keep: each is a chain of its own.
            chain = p.package if "counter" in p.entry else f"#{i}"
            chains.setdefault(chain, []).append(i)
        limit = asyncio.Semaphore(self.concurrency)

        async def in_order(indices: list[int]) -> None:
            for i in indices:
                async with limit:
                    answers[i] = await self._post("/v1/entries", chunk[i].entry, _REPLY_LIMIT)

        await asyncio.gather(*(in_order(indices) for indices in chains.values()))
        return answers

    async def _post_batch(self, chunk: Sequence[Prepared]) -> list[tuple[int, Any]] | None:
        """Per-entry (status, answer) of one batch request; None if the log lacks it."""
        status, reply = await self._post("/v1/entries/batch",
                                         {"entries": [p.entry for p in chunk]},
                                         _BATCH_REPLY_LIMIT)
        if status in _ABSENT and self._batch is None:
            return None
        if status == 413 and len(chunk) == 1:
            return [(status, reply)]  # this entry alone is over the log's cap: its refusal
        if status == 413:
            # Too many entries, or too many bytes (large metadata) for the log's body cap:
            # halves until each fits. A single entry too large is its own refusal (413).
            half = len(chunk) // 2
            first = await self._post_batch(chunk[:half])
            second = await self._post_batch(chunk[half:])
            if first is None or second is None:
                return None
            return first + second
        if status != 200:
            raise VerificationFailed(f"the log refused the batch: {_refusal(status, reply)}")
        results = reply.get("results") if isinstance(reply, dict) else None
        if not isinstance(results, list) or len(results) != len(chunk):
            raise VerificationFailed("the log's batch answer does not have one result per "
                                     "entry")
        # A result without an integer status is checked (and refused) by _outcome.
        return [(_status(r), r) for r in results]

    async def _post(self, path: str, body: Any, limit: int) -> tuple[int, Any]:
        """POST JSON; (status, parsed answer). Transport failures, 429 and 503 are retried:
        a submission repeated is answered 200 with the same receipt, never logged twice."""
        data, last = json.dumps(body).encode(), ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 10.0))
            try:
                status, raw = await self._thread(self._http.request, "POST", path, data,
                                                 self._headers, limit)
            except TransportError as exc:
                last = str(exc)
                continue
            if 300 <= status < 400:
                raise TransportError(f"{self._http.where(path.lstrip('/'))} answered {status}, "
                                     "a redirect, which tlog does not follow with credentials")
            if status in (429, 503):
                last = f"HTTP {status}"
                continue
            try:
                return status, json.loads(raw)
            except ValueError:
                if status in _ABSENT:  # a plain-text 404: no such endpoint
                    return status, None
                raise TransportError(f"{self._http.where(path.lstrip('/'))} answered "
                                     f"{status} with non-JSON") from None
        raise TransportError(f"POST {path}: no answer after {self.retries + 1} attempts: "
                             f"{last}")

    def _outcomes(self, chunk: Sequence[Prepared],
                  answers: Sequence[tuple[int, Any]]) -> list[Outcome]:
        return [self._outcome(p, status, reply)
                for p, (status, reply) in zip(chunk, answers, strict=True)]

    def _outcome(self, p: Prepared, status: int, reply: Any) -> Outcome:
        """Outcome of one entry; VerificationFailed when the log's answer does not prove it
        logged (wrong leaf, bad signature, bad proof)."""
        if status not in (200, 201):
            if isinstance(status, int) and 400 <= status < 500:
                return Outcome(p, error=_refusal(status, reply))
            raise VerificationFailed(f"the log answered {status} for {p.package} {p.version}")
        what = f"the log's receipt for {p.package} {p.version}"
        if not isinstance(reply, dict) or reply.get("leaf_hash") != p.leaf_hash.hex():
            raise VerificationFailed(f"{what} is not for our entry (leaf hash differs)")
        try:
            receipt = make_receipt(p.entry, int(reply["index"]),
                                   [bytes.fromhex(h) for h in reply["inclusion_proof"]],
                                   str(reply["checkpoint"]))
            verified = verify_receipt(receipt, self._trust)
        except (KeyError, TypeError, ValueError) as exc:
            raise VerificationFailed(f"{what} does not verify: {exc}") from exc
        return Outcome(p, receipt, verified.index, status == 201)


def _status(result: Any) -> int:
    status = result.get("status") if isinstance(result, dict) else None
    return status if isinstance(status, int) and not isinstance(status, bool) else -1


def _refusal(status: int, reply: Any) -> str:
    err = reply.get("error") if isinstance(reply, dict) else None
    if not isinstance(err, dict):
        return f"{status}"
    return f"{status} {err.get('code')}: {err.get('message')}"
