"""What `tlog bench` sends: signed unique releases (one per request or in batches), reads
of what a log already holds (targets picked from its current size), or a mix of both; and
the same requests translated for the baseline server."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tlog.cli.benchload import Request, Stats
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer
from verifier.protocol.tiles import ENTRIES_LEVEL, TILE_WIDTH, tile_path

SAMPLED_LEAVES = 64  # leaf hashes read up front for inclusion proofs
READ_KINDS = (("proof", 4), ("tile", 3), ("bundle", 1), ("checkpoint", 2))  # the read mix
MIX = "mix"  # --read-kind for the weighted mix of READ_KINDS
MINIMAL_REPLY = 0  # the body of "the trivial GET" proofs are also compared with


class BenchError(Exception):
    """The benchmark cannot run; `code` is the exit status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def spread(i: int) -> float:
    """A fraction in [0, 1) that looks random over i yet is the same in every run, so the
    baseline gets the very mix the log got (Fibonacci hashing)."""
    return ((i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) / 2**64


@dataclass
class Releases:
    """Unique release entries of `packages` packages, signed by `signer` (each has its own
    version and a random artifact digest, so none is a duplicate of an earlier run's)."""

    signer: Signer
    package: str
    headers: Mapping[str, str]
    packages: int = 1  # release i goes to package i % packages (PACKAGE-k), or PACKAGE if 1
    run: str = field(default_factory=lambda: secrets.token_hex(4))

    def package_of(self, i: int) -> str:
        return self.package if self.packages == 1 else f"{self.package}-{i % self.packages}"

    def entry(self, i: int) -> dict[str, Any]:
        fields = {"kind": "release/v1", "package": self.package_of(i),
                  "version": f"0.{i}+{self.run}",
                  "artifacts": [{"name": f"bench-{self.run}-{i}.tar.gz",
                                 "sha256": secrets.token_hex(32), "size": i}]}
        return sign_entry(fields, self.signer)

    def append(self, i: int) -> Request:
        body = json.dumps(self.entry(i)).encode()
        return Request("append", "POST", "/v1/entries", body, self.headers, entries=1)

    def batch(self, i: int, size: int) -> Request:
        entries = [self.entry(i * size + k) for k in range(size)]
        body = json.dumps({"entries": entries}).encode()
        return Request("batch", "POST", "/v1/entries/batch", body, self.headers,
                       entries=size, parse=batch_statuses)


def batch_statuses(body: bytes) -> list[int]:
    """The per-entry statuses of a POST /v1/entries/batch answer (ValueError if malformed)."""
    try:
        results = json.loads(body)["results"]
        return [int(r["status"]) for r in results]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a batch answer: {exc}") from exc


@dataclass
class ReadTargets:
    """What the log holds to read: sampled leaf hashes, tiles and bundles of its size."""

    size: int
    leaf_hashes: list[str]

    def tiles(self) -> list[str]:
        """Level-0 tiles: the full ones, or the one partial tile of a log under 256."""
        full = self.size // TILE_WIDTH
        if full:
            return [tile_path(0, n) for n in range(full)]
        return [tile_path(0, 0, self.size)]

    def bundles(self) -> list[str]:
        full = self.size // TILE_WIDTH
        if full:
            return [tile_path(ENTRIES_LEVEL, n) for n in range(full)]
        return [tile_path(ENTRIES_LEVEL, 0, self.size)]

    def reader(self, only: str = MIX) -> Callable[[int], Request]:
        """Reads of kind `only`, or (MIX) the weighted mix of READ_KINDS."""
        tiles, bundles = self.tiles(), self.bundles()
        weights = sum(w for _, w in READ_KINDS)

        def make(i: int) -> Request:
            kind = read_kind(int(spread(i) * weights)) if only == MIX else only
            slot = int(spread(i + 1) * 1_000_003)
            if kind == "proof":
                leaf = self.leaf_hashes[slot % len(self.leaf_hashes)]
                return Request(kind, "GET", f"/v1/proof/inclusion?leaf_hash={leaf}")
            if kind == "tile":
                return Request(kind, "GET", "/" + tiles[slot % len(tiles)])
            if kind == "bundle":
                return Request(kind, "GET", "/" + bundles[slot % len(bundles)])
            return Request(kind, "GET", "/checkpoint")

        return make


def read_kind(pick: int) -> str:
    """The read kind at position `pick` of the weighted READ_KINDS."""
    for kind, weight in READ_KINDS:
        if pick < weight:
            return kind
        pick -= weight
    return READ_KINDS[-1][0]


def mixed(append: Callable[[int], Request], read: Callable[[int], Request],
          read_ratio: float) -> Callable[[int], Request]:
    """Requests of which `read_ratio` are reads (spread evenly) and the rest appends."""
    def make(i: int) -> Request:
        return read(i) if spread(i + 7) < read_ratio else append(i)
    return make


def for_baseline(make: Callable[[int], Request], measured: Stats) -> Callable[[int], Request]:
    """The same requests for the baseline server: a POST with the same body whose answer is
    as long as the log's was, a GET answering as many bytes as the log's read of that kind.
    Each request is still made (signed, encoded) as for the log: the client's cost is the
    same on both sides."""
    def make_baseline(i: int) -> Request:
        req = make(i)
        reply = measured.mean_reply(req.kind)
        if req.method == "POST":
            return Request(req.kind, "POST", f"/post?reply={reply}", req.body)
        return Request(req.kind, "GET", f"/get/{reply}")
    return make_baseline


def for_minimal(make: Callable[[int], Request]) -> Callable[[int], Request]:
    """The same requests for the baseline server, every GET answering MINIMAL_REPLY bytes:
    the trivial GET whatever the log's answer weighs."""
    def make_minimal(i: int) -> Request:
        req = make(i)
        if req.method == "POST":
            return Request(req.kind, "POST", f"/post?reply={MINIMAL_REPLY}", req.body)
        return Request(req.kind, "GET", f"/get/{MINIMAL_REPLY}")
    return make_minimal


async def log_size(session: aiohttp.ClientSession, base: str) -> int:
    """The log's tree size from GET /v1/log; BenchError 3 when it cannot be reached."""
    try:
        async with session.get(base + "/v1/log") as resp:
            body = await resp.read()
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise BenchError(3, f"can't reach the log at {base}: {exc or type(exc).__name__}"
                         ) from exc
    try:
        if status != 200:
            raise ValueError(f"HTTP {status}")
        return int(json.loads(body)["tree_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(1, f"{base} does not answer GET /v1/log as a tlog log: {exc}") from exc


async def read_targets(session: aiohttp.ClientSession, base: str, size: int) -> ReadTargets:
    """Leaf hashes of up to SAMPLED_LEAVES random entries of the tree of `size`."""
    if size == 0:
        raise BenchError(1, "the log is empty: nothing to read (run `tlog bench append` first)")
    indices = random.sample(range(size), min(SAMPLED_LEAVES, size))

    async def leaf(index: int) -> str:
        async with session.get(f"{base}/v1/entries/{index}") as resp:
            if resp.status != 200:
                raise BenchError(1, f"GET /v1/entries/{index} answered HTTP {resp.status}")
            return str((await resp.json())["leaf_hash"])

    try:
        return ReadTargets(size, list(await asyncio.gather(*map(leaf, indices))))
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise BenchError(3, f"reading entries of {base}: {exc or type(exc).__name__}") from exc


async def check_batch_endpoint(session: aiohttp.ClientSession, base: str,
                               headers: Mapping[str, str]) -> None:
    """An empty batch must be refused with 400; a 404 or 405 means there is no endpoint."""
    try:
        async with session.post(base + "/v1/entries/batch", json={"entries": []},
                                headers=headers) as resp:
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise BenchError(3, f"can't reach the log at {base}: {exc or type(exc).__name__}"
                         ) from exc
    if status in (404, 405):
        raise BenchError(1, f"this log has no batch endpoint (POST /v1/entries/batch answered "
                            f"HTTP {status})")
