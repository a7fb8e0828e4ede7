"""LogClient against fake logs: listings read to their end, and a tile cache that takes in
nothing unverified."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from verifier.client import log as log_module
from verifier.client.fetch import NotFound
from verifier.client.log import LogClient
from verifier.errors import TransportError, VerificationFailed

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
