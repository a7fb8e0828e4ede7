"""LogClient against fake logs: listings read to their end, and a tile cache that takes in
nothing unverified."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from verifier.client import log as log_module
from verifier.client.fetch import MemoryFetcher, NotFound
from verifier.client.log import LogClient
from verifier.errors import TransportError, VerificationFailed
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.tiles import ENTRIES_LEVEL, encode_bundle, tile_path

REGISTRY_ENTRIES = 12_345  # past the 10,000 where listings used to stop


class Listing:
    """A log whose /v1/registry lists `count` indices, `page` at a time, as tlog serve pages."""

    def __init__(self, count: int, page: int = 1000, endless: bool = False) -> None:
        self.count, self.page, self.endless = count, page, endless
        self.requests = 0

    def fetch(self, path: str, limit: int) -> bytes:
        self.requests += 1
        url = urllib.parse.urlsplit(path)
        if url.path != "v1/registry":
            raise NotFound(path)
        after = int(urllib.parse.parse_qs(url.query).get("after", ["-1"])[0])
        end = after + 1 + self.page if self.endless else min(after + 1 + self.page, self.count)
        found = list(range(after + 1, end))
        more = self.endless or end < self.count
        return json.dumps({"entries": [{"index": i} for i in found],
                           "next_after": found[-1] if more and found else None}).encode()

    def where(self, path: str) -> str:
        return f"listing:{path}"

    def copy(self) -> Listing:
        return self


def test_registry_listing_past_ten_thousand_entries_is_read_to_the_end() -> None:
    listing = Listing(REGISTRY_ENTRIES)
    indices = LogClient(listing).registry_indices()
    assert indices == list(range(REGISTRY_ENTRIES))
    assert listing.requests == 13


def test_endless_registry_listing_fails_naming_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_module, "MAX_SEARCH_RESULTS", 5_000)
    with pytest.raises(TransportError, match="more than 5000 entries"):
        LogClient(Listing(0, endless=True)).registry_indices()


def test_listing_that_pages_backwards_is_refused() -> None:
    class Backwards(Listing):
        def fetch(self, path: str, limit: int) -> bytes:
            self.requests += 1
            return json.dumps({"entries": [{"index": 1}, {"index": 2}],
                               "next_after": 2}).encode()

    with pytest.raises(VerificationFailed, match="goes backwards"):
        LogClient(Backwards(0)).registry_indices()


# -- the tile cache ----------------------------------------------------------------------------

FULL_TILE = bytes(range(256)) * 32  # 256 hashes of 32 bytes


def cached_files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


def test_wrong_length_tile_answer_is_never_cached(tmp_path: Path) -> None:
    cache = tmp_path / "tiles"
    error_page = b"<html>502 Bad Gateway</html>"
    client = LogClient(MemoryFetcher({tile_path(0, 0): error_page}), cache_dir=cache)
    with pytest.raises(VerificationFailed, match=f"has {len(error_page)} bytes, not 8192"):
        client.hash_tile(0, 0, 300)
    client.keep_verified()  # even a caller that goes on: the answer was never held
    assert cached_files(cache) == []


def test_tile_enters_the_cache_only_after_a_proof_from_it_verified(tmp_path: Path) -> None:
    cache = tmp_path / "tiles"
    client = LogClient(MemoryFetcher({tile_path(0, 0): FULL_TILE}), cache_dir=cache)
    assert client.hash_tile(0, 0, 300) == FULL_TILE
    assert cached_files(cache) == []
    client.drop_cache()  # the proof failed: what it used is forgotten
    client.keep_verified()
    assert cached_files(cache) == []

    client.hash_tile(0, 0, 300)
    client.keep_verified()
    assert cached_files(cache) == [cache / tile_path(0, 0)]


def test_entry_bundle_not_matching_its_proven_tile_is_not_cached(tmp_path: Path) -> None:
    cache = tmp_path / "tiles"
    leaves = [b"entry %d" % i for i in range(256)]
    tile = b"".join(leaf_hash(leaf) for leaf in leaves)
    swapped = [*leaves[:7], b"another entry", *leaves[8:]]
    client = LogClient(MemoryFetcher({tile_path(0, 0): tile,
                                      tile_path(ENTRIES_LEVEL, 0): encode_bundle(swapped)}),
                       cache_dir=cache)
    client.entry_bundle(0, 300)
    client.hash_tile(0, 0, 300)
    client.keep_verified()
    assert cached_files(cache) == [cache / tile_path(0, 0)]

    client.fetcher = MemoryFetcher({tile_path(ENTRIES_LEVEL, 0): encode_bundle(leaves)})
    client.entry_bundle(0, 300)
    client.keep_verified()
    assert sorted(cached_files(cache)) == sorted([cache / tile_path(0, 0),
                                                  cache / tile_path(ENTRIES_LEVEL, 0)])
