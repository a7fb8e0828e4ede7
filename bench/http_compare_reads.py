"""bench/http_compare.py: the read requests, built from what the log holds.

Every GET path of schema/openapi.yaml with valid and invalid parameters: the checkpoint,
every tile (then again, from the tile cache) and non-canonical tile paths, every entry by
index, entry listings, the registry, every published checkpoint, inclusion and consistency
proofs; HEAD, unknown paths and wrong methods; /metrics (names only).
"""

from __future__ import annotations

from typing import Any

from http_compare_wire import Req

Facts = dict[str, Any]  # "entries": rows of the entries table; "sizes": published tree sizes

BAD_TILES = [
    "0/0", "0/00", "0/0000", "0/x000/000", "0/x000/001", "0/000.p/0", "0/000.p/256",
    "0/000.p/05", "0/000.p/", "0/000.p", "0/000/", "01/000", "-1/000", "a/000",
    "0/000.p/abc", "0/000.P/5", "0/x001/000", "0/x999/x999/x999/x999/x999/x999/999",
    "0/x018/x446/x744/x073/x709/x551/615", "entries/x000/000", "entries/0",
    "entries/000.p/0", "entries/000.p/256", "entries", "entries/", "0", "0/",
    "0/%30%30%30", "entries/%30%30%30", "0/000%2Ep/5", "0/-01", "0/+01",
    "1/x001/000.p/1", "entries/000.p/1/extra", "0/000.p/1?x=1",
]
BAD_INDEXES = [
    "9223372036854775807", "9223372036854775808", "99999999999999999999", "-1", "01", "00",
    "abc", "1e3", "0x10", "%205", "+5", "5%20", "1.0", "%35", "", "0/x",
]
PACKAGES = ["org.cmp.pkg00", "org.cmp.pkg01", "org.cmp.pkg02", "com.acme.app", "nope.nothing"]
BAD_LISTINGS = [
    "package=org.cmp.pkg00&limit=-1", "package=org.cmp.pkg00&limit=abc",
    "package=org.cmp.pkg00&limit=0", "package=org.cmp.pkg00&limit=1001",
    "package=org.cmp.pkg00&limit=05", "package=org.cmp.pkg00&limit=",
    "package=org.cmp.pkg00&limit=1e2", "package=org.cmp.pkg00&limit=%2B5",
    "package=org.cmp.pkg00&after=-1", "package=org.cmp.pkg00&after=",
    "package=org.cmp.pkg00&after=9223372036854775808",
    "package=org.cmp.pkg00&after=01", "package=org.cmp.pkg00&limit=1&limit=2",
    "package=org.cmp.pkg00&package=org.cmp.pkg01", "package=org.cmp.pkg00&foo=1",
    "package=org.cmp.pkg00&version=1%200", "package=org.cmp.pkg00&version=",
    "package=bad%20package", "package=", "package=" + "a" * 201, "package=" + "a" * 200,
    "", "limit=5", "foo=bar", "package=org.cmp.pkg00&limit=5&after=x",
    "package=%E2%9C%93", "package=org.cmp.pkg00&Limit=5", "package",
]
UNKNOWN_PATHS = [
    "/", "/nope", "/v1", "/v1/", "/v1/nope", "/checkpoint/", "//checkpoint",
    "/v1/entries/", "/v1/entries/1/2", "/v1/proof", "/v1/proof/", "/v1/checkpoints",
    "/v1/checkpoints/", "/v1/log/", "/healthz/", "/metrics/", "/v1/admin",
    "/CHECKPOINT", "/checkpoint%20", "/v1/entries/%2e%2e/log", "/v1/../checkpoint",
    "/tile/../checkpoint", "/v1/registry/1",
]
WRONG_METHODS = [
    ("PUT", "/checkpoint"), ("DELETE", "/tile/0/000"), ("POST", "/checkpoint"),
    ("POST", "/tile/0/000"), ("PATCH", "/v1/entries"), ("DELETE", "/v1/entries/0"),
    ("POST", "/v1/log"), ("POST", "/healthz"), ("POST", "/metrics"),
    ("PUT", "/v1/proof/inclusion"), ("OPTIONS", "/checkpoint"),
    ("POST", "/v1/registry"), ("POST", "/v1/checkpoints/1"), ("POST", "/nope"),
    ("PUT", "/nope"), ("POST", "/v1/proof/consistency"),
]


def tile_n(n: int) -> str:
    """C2SP tile index: groups of three digits, all but the last prefixed with x."""
    groups: list[int] = []
    while True:
        groups.insert(0, n % 1000)
        n //= 1000
        if n == 0:
            break
    return "/".join([f"x{g:03d}" for g in groups[:-1]] + [f"{groups[-1]:03d}"])


def get(name: str, path: str, method: str = "GET", **kw: Any) -> Req:
    return Req(name, method, path, **kw)


def basics() -> list[Req]:
    return [
        get("checkpoint", "/checkpoint"), get("checkpoint HEAD", "/checkpoint", "HEAD"),
        get("checkpoint with query (ignored)", "/checkpoint?x=1"),
        get("checkpoint no X-Request-Id", "/checkpoint", random_request_id=True),
        get("log", "/v1/log"), get("log HEAD", "/v1/log", "HEAD"),
        get("healthz", "/healthz"), get("healthz HEAD", "/healthz", "HEAD"),
        get("readyz", "/readyz"),
    ]


def _tile_paths(size: int) -> list[str]:
    full0, w0, w1 = size // 256, size % 256, size // 256 % 256
    tiles = []
    for n in range(full0):
        tiles += [f"0/{tile_n(n)}", f"entries/{tile_n(n)}"]
    last, beyond = tile_n(full0), tile_n(full0 + 1)
    tiles += [f"0/{last}.p/{w0}", f"0/{last}.p/1", f"0/{last}.p/{w0 - 1}",
              f"0/{last}.p/{w0 + 1}", f"0/{last}", f"0/{beyond}.p/1",
              f"entries/{last}.p/{w0}", f"entries/{last}.p/1", f"entries/{last}.p/{w0 + 1}",
              f"entries/{last}", f"entries/{beyond}.p/1",
              "0/000.p/17", "0/000.p/255", "0/001.p/1", "entries/000.p/17", "entries/001.p/255",
              f"1/000.p/{w1}", "1/000.p/1", f"1/000.p/{w1 + 1}", "1/000", "1/001.p/1",
              "2/000.p/1", "2/000", "63/000.p/1", "64/000.p/1", "63/000"]
    return tiles + BAD_TILES


def tiles(size: int) -> list[Req]:
    reqs = [get(f"tile {t}", f"/tile/{t}") for t in _tile_paths(size)]
    for n in range(size // 256):  # served again: from the tile cache this time
        reqs.append(get(f"tile 0/{tile_n(n)} again (cache)", f"/tile/0/{tile_n(n)}"))
        reqs.append(get(f"tile entries/{tile_n(n)} again (cache)",
                        f"/tile/entries/{tile_n(n)}"))
    return [
        *reqs, get("tile HEAD 0/000", "/tile/0/000", "HEAD"),
        get("tile HEAD bad", "/tile/0/0000", "HEAD"),
        get("tile (no rest)", "/tile"), get("tile/ (empty rest)", "/tile/"),
    ]


def entries_by_index(entries: list[dict[str, Any]]) -> list[Req]:
    size = len(entries)
    reqs = [get(f"entry {e['idx']}", f"/v1/entries/{e['idx']}") for e in entries]
    reqs += [get(f"entry {bad!r}", f"/v1/entries/{bad}")
             for bad in [str(size), str(size + 1), *BAD_INDEXES]]
    return [*reqs, get("entry HEAD 0", "/v1/entries/0", "HEAD")]


def listings(entries: list[dict[str, Any]]) -> list[Req]:
    reqs = [get(f"entries package={p}", f"/v1/entries?package={p}") for p in PACKAGES]
    idx0 = [e["idx"] for e in entries if e["package"] == "org.cmp.pkg00"]
    good = ["package=org.cmp.pkg00&limit=5", f"package=org.cmp.pkg00&limit=5&after={idx0[4]}",
            f"package=org.cmp.pkg00&after={idx0[-1]}", "package=org.cmp.pkg00&limit=20",
            "package=org.cmp.pkg00&limit=1000", "package=org.cmp.pkg00&limit=1",
            "package=org.cmp.pkg00&after=0", "package=org.cmp.pkg00&after=300&limit=3",
            "package=org.cmp.pkg00&after=9223372036854775807",
            "package=org.cmp.pkg00&version=1.3.0", "package=org.cmp.pkg00&version=9.9.9",
            "package=org.cmp.pkg02&version=1.3.0&limit=1", "limit=5&package=org.cmp.pkg01"]
    reqs += [get(f"entries ?{q}", f"/v1/entries?{q}") for q in good + BAD_LISTINGS]
    return [*reqs, get("entries HEAD", "/v1/entries?package=org.cmp.pkg00", "HEAD")]


def registry(entries: list[dict[str, Any]]) -> list[Req]:
    reg = [e["idx"] for e in entries if e["kind"] != "release/v1"]
    queries = ["", "?limit=1", "?limit=2", f"?after={reg[0]}", f"?after={reg[1]}&limit=2",
               f"?after={reg[-1]}", "?limit=1000", "?after=0&limit=100",
               "?limit=0", "?limit=-1", "?limit=abc", "?limit=1001", "?after=-1", "?after=abc",
               "?limit=1&limit=1", "?package=x", "?after=9223372036854775808", "?limit="]
    reqs = [get(f"registry {q or '(no query)'}", f"/v1/registry{q}") for q in queries]
    return [*reqs, get("registry HEAD", "/v1/registry", "HEAD")]


def unpublished_sizes(facts: Facts) -> list[int]:
    published = set(facts["sizes"])
    return [n for n in range(1, len(facts["entries"])) if n not in published][:3]


def checkpoints(facts: Facts) -> list[Req]:
    size = len(facts["entries"])
    reqs = [get(f"checkpoint at {s}", f"/v1/checkpoints/{s}") for s in facts["sizes"]]
    for bad in [*map(str, unpublished_sizes(facts)), str(size + 1), "9223372036854775807",
                "9223372036854775808", "-1", "01", "abc", "1e3", ""]:
        reqs.append(get(f"checkpoint at {bad!r}", f"/v1/checkpoints/{bad}"))
    return [*reqs, get("checkpoint at HEAD 0", "/v1/checkpoints/0", "HEAD")]


def _inclusion_of(i: int, h: str, size: int, sset: list[int]) -> list[Req]:
    reqs = [get(f"inclusion idx {i} latest", f"/v1/proof/inclusion?leaf_hash={h}"),
            get(f"inclusion idx {i} size {size}",
                f"/v1/proof/inclusion?leaf_hash={h}&tree_size={size}")]
    after = [s for s in sset if s > i]
    if after and after[0] != size:
        reqs.append(get(f"inclusion idx {i} size {after[0]}",
                        f"/v1/proof/inclusion?tree_size={after[0]}&leaf_hash={h}"))
    before = [s for s in sset if 0 < s <= i]
    if before:
        reqs.append(get(f"inclusion idx {i} size {before[-1]} (not in tree)",
                        f"/v1/proof/inclusion?leaf_hash={h}&tree_size={before[-1]}"))
    return reqs


def _bad_inclusions(h0: str, size: int, unpublished: list[int]) -> list[tuple[str, str]]:
    return [
        ("unpublished size", f"leaf_hash={h0}&tree_size={unpublished[0] if unpublished else 3}"),
        ("beyond tree", f"leaf_hash={h0}&tree_size={size + 1}"),
        ("size 0", f"leaf_hash={h0}&tree_size=0"),
        ("size huge", f"leaf_hash={h0}&tree_size=9223372036854775808"),
        ("size abc", f"leaf_hash={h0}&tree_size=abc"),
        ("size -1", f"leaf_hash={h0}&tree_size=-1"),
        ("uppercase hash", f"leaf_hash={h0.upper()}"),
        ("short hash", f"leaf_hash={h0[:62]}"),
        ("unknown hash", "leaf_hash=" + "ab" * 32),
        ("missing leaf_hash", "tree_size=5"),
        ("no query", ""),
        ("repeated leaf_hash", f"leaf_hash={h0}&leaf_hash={h0}"),
        ("unknown parameter", f"leaf_hash={h0}&index=0"),
        ("empty leaf_hash", "leaf_hash="),
        ("unknown hash + beyond", "leaf_hash=" + "cd" * 32 + f"&tree_size={size + 5}"),
        ("unknown hash + unpublished", "leaf_hash=" + "cd" * 32 + "&tree_size=3"),
    ]


def inclusions(facts: Facts) -> list[Req]:
    entries = facts["entries"]
    size = len(entries)
    sample = sorted({0, 1, 2, 100, 255, 256, 257, 511, 512, 513, size - 2, size - 1,
                     *range(0, size, 37)})
    sset = sorted(facts["sizes"])
    reqs = []
    for i in sample:
        reqs += _inclusion_of(i, entries[i]["leaf_hash"].hex(), size, sset)
    h0 = entries[0]["leaf_hash"].hex()
    reqs += [get(f"inclusion {name}", f"/v1/proof/inclusion?{q}")
             for name, q in _bad_inclusions(h0, size, unpublished_sizes(facts))]
    return [*reqs, get("inclusion HEAD", f"/v1/proof/inclusion?leaf_hash={h0}", "HEAD")]


def _bad_consistencies(size: int) -> list[tuple[str, str]]:
    return [("first > second", "first=5&second=3"),
            ("beyond tree", f"first=0&second={size + 1}"),
            ("both beyond", f"first={size + 2}&second={size + 3}"),
            ("first beyond, second ok", f"first={size + 1}&second={size}"),
            ("missing second", "first=1"), ("missing first", f"second={size}"),
            ("none", ""), ("first -1", f"first=-1&second={size}"),
            ("first abc", "first=abc&second=1"), ("second 01", "first=0&second=01"),
            ("huge", "first=0&second=9223372036854775808"),
            ("max", "first=0&second=9223372036854775807"),
            ("repeated", "first=1&first=1&second=2"),
            ("unknown param", "first=1&second=2&third=3"),
            ("reversed order params", f"second={size}&first=1")]


def consistencies(facts: Facts) -> list[Req]:
    size = len(facts["entries"])
    sset = sorted(facts["sizes"])
    pairs = [(0, size), (1, size), (size, size), (0, 0), (1, 1), (1, 2), (2, 3), (3, 7),
             (255, 256), (256, 257), (256, size), (257, size), (511, 512), (512, size),
             (100, 513), (size - 1, size), (7, 300)]
    for i in range(0, len(sset) - 1, max(1, len(sset) // 15)):
        pairs += [(sset[i], sset[-1]), (sset[i], sset[i + 1])]
    reqs = [get(f"consistency {a}..{b}", f"/v1/proof/consistency?first={a}&second={b}")
            for a, b in pairs]
    reqs += [get(f"consistency {name}", f"/v1/proof/consistency?{q}")
             for name, q in _bad_consistencies(size)]
    return [*reqs, get("consistency HEAD", f"/v1/proof/consistency?first=1&second={size}",
                       "HEAD")]


def elsewhere() -> list[Req]:
    reqs = [get(f"unknown path {p}", p) for p in UNKNOWN_PATHS]
    reqs += [get(f"{m} {p}", p, m) for m, p in WRONG_METHODS]
    return [*reqs, get("metrics", "/metrics", metrics=True)]


def get_requests(facts: Facts) -> list[Req]:
    entries = facts["entries"]
    if facts["sizes"][-1] != len(entries):
        raise RuntimeError(f"latest checkpoint {facts['sizes'][-1]} != {len(entries)} entries")
    return (basics() + tiles(len(entries)) + entries_by_index(entries) + listings(entries)
            + registry(entries) + checkpoints(facts) + inclusions(facts)
            + consistencies(facts) + elsewhere())
