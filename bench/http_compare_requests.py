"""bench/http_compare.py: the POST requests of an `open` log.

Bad, duplicate and conflicting submissions to /v1/entries, then the admin calls (entries,
token issuing and revocation) with good and bad credentials and bodies. Nothing here may
append: every submission is refused or a duplicate of a logged entry.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from http_compare_entries import (
    Keys,
    acme_entries,
    keys_entry,
    registration,
    release_fields,
    revoke_entry,
)
from http_compare_wire import Ctx, J, Req, jbody


def _post(name: str, body: bytes, ct: str | None = J, headers: dict[str, str] | None = None
          ) -> Req:
    """POST /v1/entries (ct None: no Content-Type header at all)."""
    return Req(name, "POST", "/v1/entries", dict(headers or {}), body, ct)


def duplicate_release(k: Keys) -> dict[str, Any]:
    """A release the log holds (bulk package 1, version 1.5.0)."""
    return k.release(k.pub, "org.cmp.pkg01", "1.5.0", payload=b"payload 1 5")


def _bad_signatures(k: Keys) -> dict[str, dict[str, Any]]:
    good = k.release(k.pub, "org.cmp.new", "9.9.9")
    sig = base64.b64decode(good["signature"])
    return {
        "flipped": dict(good, signature=base64.b64encode(bytes([sig[0] ^ 1]) + sig[1:]).decode()),
        "short": dict(good, signature=base64.b64encode(b"x" * 10).decode()),
        "nonb64": dict(good, signature="not base64!!"),
        "bad_key": dict(good, key="not-a-key"),
        "missing": {kk: v for kk, v in good.items() if kk != "artifacts"},
        "good": good,
    }


def _signed_variant(k: Keys, version: str, change: Callable[[dict[str, Any]], None]
                    ) -> dict[str, Any]:
    fields = release_fields("org.cmp.new", version)
    change(fields)
    return k.sign(fields, k.pub)


def _bad_fields(k: Keys) -> dict[str, dict[str, Any]]:
    return {
        "unknown_member": _signed_variant(k, "9.9.8", lambda f: f.update(extra=1)),
        "unknown_kind": _signed_variant(k, "9.9.7", lambda f: f.update(kind="release/v9")),
        "float_size": k.sign(release_fields("org.cmp.new", "9.9.6"), k.pub),
        "big_int": k.sign(release_fields("org.cmp.new", "9.9.5"), k.pub),
        "bad_pkg": k.sign(release_fields("bad package", "1"), k.pub),
        "bad_ver": k.sign(release_fields("org.cmp.new", "1 0"), k.pub),
        "dup_art": _signed_variant(k, "9.9.4",
                                   lambda f: f.update(artifacts=f["artifacts"] * 2)),
        "bad_window": _signed_variant(k, "9.9.3", lambda f: f.update(install_window={
            "not_before": "2030-01-01T00:00:00Z", "not_after": "2025-01-01T00:00:00Z"})),
        "bad_time": _signed_variant(k, "9.9.2", lambda f: f.update(install_window={
            "not_before": "2030-01-01 00:00:00", "not_after": "2031-01-01T00:00:00Z"})),
        "too_big_leaf": _signed_variant(k, "9.9.1",
                                        lambda f: f.update(metadata={"blob": "a" * 70000})),
    }


def _deep_json(depth: int = 40) -> bytes:
    deep: Any = 1
    for _ in range(depth):
        deep = {"a": deep}
    return jbody(deep)


def _malformed_posts(dup: dict[str, Any], good: dict[str, Any]) -> list[Req]:
    return [
        _post("malformed JSON: truncated", b'{"kind": "release/v1", '),
        _post("malformed JSON: empty body", b""),
        _post("malformed JSON: trailing garbage", jbody(dup) + b" x"),
        _post("malformed JSON: NaN", b'{"size": NaN}'),
        _post("malformed JSON: duplicate member", b'{"kind": "release/v1", "kind": "release/v1"}'),
        _post("malformed JSON: not UTF-8", b'{"kind": "\xff\xfe"}'),
        _post("malformed JSON: BOM", b"\xef\xbb\xbf" + jbody(good)),
        _post("malformed JSON: too deep", _deep_json()),
        _post("JSON array instead of object", b"[]"),
        _post("JSON string", b'"hello"'),
        _post("JSON null", b"null"),
        _post("empty object", b"{}"),
    ]


def _with_size(entry: dict[str, Any], size: str) -> bytes:
    """The entry's JSON with its artifact size 0 written as `size` (the signature kept)."""
    return json.dumps(entry).replace('"size": 0', f'"size": {size}').encode()


def _invalid_entry_posts(k: Keys) -> list[Req]:
    s, f = _bad_signatures(k), _bad_fields(k)
    return [
        _post("bad signature (flipped bit)", jbody(s["flipped"])),
        _post("bad signature (10 bytes)", jbody(s["short"])),
        _post("bad signature (not base64)", jbody(s["nonb64"])),
        _post("bad key", jbody(s["bad_key"])),
        _post("missing artifacts", jbody(s["missing"])),
        _post("unknown member", jbody(f["unknown_member"])),
        _post("unknown kind", jbody(f["unknown_kind"])),
        _post("float size", _with_size(f["float_size"], "0.0")),
        _post("integer above 2^53", _with_size(f["big_int"], "9007199254740992")),
        _post("bad package name", jbody(f["bad_pkg"])),
        _post("bad version", jbody(f["bad_ver"])),
        _post("duplicate artifact names", jbody(f["dup_art"])),
        _post("install window out of order", jbody(f["bad_window"])),
        _post("install window bad time", jbody(f["bad_time"])),
        _post("leaf over 65535 bytes (expect 413)", jbody(f["too_big_leaf"])),
        _post("oversized body 200 KiB (expect 413)",
              b'{"kind": "release/v1", "pad": "' + b"x" * (200 * 1024) + b'"}'),
        _post("body exactly 128 KiB + 1", b'{"p": "' + b"y" * (128 * 1024 - 8) + b'"}'),
    ]


def _content_type_posts(dup: dict[str, Any]) -> list[Req]:
    return [
        _post("wrong content type text/plain", jbody(dup), "text/plain"),
        _post("no content type", jbody(dup), None),
        _post("content type latin-1 charset", jbody(dup), "application/json; charset=latin-1"),
        _post("content type utf-8 charset explicit (dup, 200)", jbody(dup),
              "application/json; charset=UTF-8"),
        _post("content type application/json+x", jbody(dup), "application/jsonx"),
        _post("bad Content-Encoding gzip", b"not gzip at all", J, {"Content-Encoding": "gzip"}),
    ]


def _registry_posts(k: Keys) -> list[Req]:
    return [
        _post("publisher/v1 via /v1/entries signed by non-admin (open: 403)",
              jbody(k.sign(registration(k, "mallory", ["org.m.*"], [k.mallory]), k.mallory))),
        _post("keys/v1 for unregistered publisher",
              jbody(keys_entry(k, "mallory", [k.generate("mallory")], [], k.mallory))),
        _post("revoke/v1 of unknown key (409 unknown_key)",
              jbody(revoke_entry(k, "acme", [k.generate("acme")], "x", k.acme))),
        _post("keys/v1 re-adding revoked key, signed by admin (409 key_revoked)",
              jbody(keys_entry(k, "acme", [k.acme2], [], k.admin))),
        _post("keys/v1 removing a key acme does not have (409 unknown_key)",
              jbody(keys_entry(k, "acme", [], [k.generate("acme")], k.acme))),
        _post("revoke/v1 whole publisher signed by publisher key (403)",
              jbody(revoke_entry(k, "acme", None, "bye", k.acme))),
        _post("keys/v1 adding a key not named after the publisher (422)",
              jbody(keys_entry(k, "acme", [k.mallory], [], k.acme))),
        _post("keys/v1 signed by revoked key acme2",
              jbody(keys_entry(k, "acme", [k.generate("acme")], [], k.acme2))),
        _post("keys/v1 adding and removing nothing", jbody(keys_entry(k, "acme", [], [], k.acme))),
        _post("keys/v1 for revoked publisher beta",
              jbody(keys_entry(k, "beta", [k.generate("beta")], [], k.beta))),
    ]


def json_entry_variants(k: Keys) -> list[Req]:
    """Bad, duplicate and conflicting POST /v1/entries (open policy)."""
    acme = acme_entries(k)
    dup = duplicate_release(k)
    good = _bad_signatures(k)["good"]
    reqs = [
        _post("duplicate release (expect 200)", jbody(dup)),
        _post("duplicate release again, compact JSON",
              json.dumps(dup, separators=(",", ":")).encode()),
        _post("duplicate release, members reordered", jbody(dict(reversed(list(dup.items()))))),
        _post("conflicting release same package+version (expect 409)",
              jbody(k.release(k.pub, "org.cmp.pkg01", "1.5.0", payload=b"something else"))),
        _post("conflicting release by another publisher (expect 409)",
              jbody(k.release(k.mallory, "org.cmp.pkg02", "1.0.0"))),
        _post("duplicate registry entry keys/v1 via /v1/entries (expect 200)",
              jbody(acme["keys_add_acme2"])),
        _post("duplicate acme release (expect 200)", jbody(acme["acme_rel1"])),
        *_malformed_posts(dup, good), *_invalid_entry_posts(k), *_content_type_posts(dup),
        *_registry_posts(k),
    ]
    for name, rid in [("POST /v1/entries with X-Request-Id too long", "r" * 65),
                      ("POST /v1/entries with X-Request-Id bad chars", "a b")]:
        reqs.append(Req(name, "POST", "/v1/entries", {"X-Request-Id": rid}, jbody(dup), J,
                        random_request_id=True))
    return reqs


# ------------------------------------------------------------------------------------------
# admin calls


def capture_token(slot: str) -> Callable[[Ctx, bytes], None]:
    """Keep an issued token under `slot`; its token and jti get masked from then on."""
    def cap(ctx: Ctx, body: bytes) -> None:
        info = json.loads(body)
        ctx[slot] = info
        n = len(ctx.setdefault("dynamic", [])) // 2
        ctx["dynamic"].append((info["token"], f"<token#{n}>"))
        ctx["dynamic"].append((info["jti"], f"<jti#{n}>"))
    return cap


def _admin_entries(k: Keys, auth: dict[str, str]) -> list[Req]:
    acme = acme_entries(k)
    pub = jbody(acme["pub_acme"])
    path = "/v1/admin/entries"
    return [
        Req("admin entries: no credentials", "POST", path, {}, pub, J),
        Req("admin entries: wrong secret", "POST", path, {"Authorization": "Bearer wrong"},
            pub, J),
        Req("admin entries: Basic auth", "POST", path,
            {"Authorization": "Basic YWRtaW46YWRtaW4="}, pub, J),
        Req("admin entries: duplicate publisher/v1 (200)", "POST", path, auth, pub, J),
        Req("admin entries: release/v1 refused (422)", "POST", path, auth,
            jbody(acme["acme_rel1"]), J),
        Req("admin entries: publisher/v1 not signed by admin", "POST", path, auth,
            jbody(k.sign(registration(k, "mallory", ["org.m.*"], [k.mallory]), k.mallory)), J),
        Req("admin entries: malformed JSON", "POST", path, auth, b"{", J),
        Req("admin entries: text/plain", "POST", path, auth, pub, "text/plain"),
        Req("admin entries: oversized", "POST", path, auth,
            b'{"x": "' + b"z" * (200 * 1024) + b'"}', J),
    ]


ISSUED = [  # (name, slot, request): the tokens the admin issues (values masked)
    ("acme com.acme.*", "tok_acme", {"publisher": "acme", "scopes": ["com.acme.*"],
                                     "ttl": "15m"}),
    ("mallory", "tok_mallory", {"publisher": "mallory", "scopes": ["org.m.*"]}),
    ("acme, to revoke", "tok_revoked", {"publisher": "acme", "scopes": ["com.acme.app"],
                                        "ttl": "90s"}),
    ("acme wide scopes", "tok_acme_wide", {"publisher": "acme",
                                           "scopes": ["com.acme.*", "org.other.*"],
                                           "ttl": "2h"}),
    ("cmp-release-bot", "tok_bot", {"publisher": "cmp-release-bot", "scopes": ["org.cmp.*"],
                                    "ttl": "600"}),
    ("beta", "tok_beta", {"publisher": "beta", "scopes": ["net.beta.*"], "ttl": "1h"}),
]

BAD_TOKEN_REQUESTS: list[tuple[str, bytes]] = [
    ("no scopes", jbody({"publisher": "acme", "scopes": []})),
    ("bad scope", jbody({"publisher": "acme", "scopes": ["com acme"]})),
    ("ttl 25h", jbody({"publisher": "acme", "scopes": ["x"], "ttl": "25h"})),
    ("ttl 0", jbody({"publisher": "acme", "scopes": ["x"], "ttl": "0"})),
    ("unknown member", jbody({"publisher": "acme", "scopes": ["x"], "foo": 1})),
    ("bad publisher", jbody({"publisher": "a+b", "scopes": ["x"]})),
    ("array body", b"[]"),
    ("malformed JSON", b"{,}"),
    ("too deep", b'{"a": {"b": {"c": {"d": 1}}}}'),
]


def _admin_tokens(auth: dict[str, str]) -> list[Req]:
    path = "/v1/admin/tokens"
    acme = jbody({"publisher": "acme", "scopes": ["com.acme.*"]})
    reqs = [Req("admin tokens: no credentials", "POST", path, {}, acme, J),
            Req("admin tokens: wrong secret", "POST", path, {"Authorization": "Bearer nope"},
                acme, J)]
    reqs += [Req(f"admin tokens: issue {name} (201, masked)", "POST", path, auth, jbody(body),
                 J, capture=capture_token(slot)) for name, slot, body in ISSUED]
    reqs += [Req(f"admin tokens: {name}", "POST", path, auth, body, J)
             for name, body in BAD_TOKEN_REQUESTS]
    reqs += [
        Req("admin tokens: text/plain", "POST", path, auth, b"{}", "text/plain"),
        Req("admin tokens: bad gzip", "POST", path, {**auth, "Content-Encoding": "gzip"},
            b"zzz", J),
        Req("admin tokens: oversized", "POST", path, auth,
            b'{"x": "' + b"z" * (200 * 1024) + b'"}', J),
    ]
    return reqs


def _revoke_path(ctx: Ctx) -> str:
    return f"/v1/admin/tokens/{ctx['tok_revoked']['jti']}/revoke"


def _admin_revoke(auth: dict[str, str]) -> list[Req]:
    return [
        Req("admin revoke: no credentials", "POST", "/v1/admin/tokens/abc/revoke"),
        Req("admin revoke: bad jti", "POST", "/v1/admin/tokens/a.b/revoke", auth),
        Req("admin revoke: jti too long", "POST", f"/v1/admin/tokens/{'a' * 65}/revoke", auth),
        Req("admin revoke: unknown jti (404)", "POST", "/v1/admin/tokens/unknownjti/revoke", auth),
        Req("admin revoke: issued token (200)", "POST", _revoke_path, auth),
        Req("admin revoke: again (404)", "POST", _revoke_path, auth),
        Req("admin revoke: GET (405)", "GET", "/v1/admin/tokens/abc/revoke", auth),
        Req("admin tokens: GET (405)", "GET", "/v1/admin/tokens", auth),
        Req("admin entries: GET (405)", "GET", "/v1/admin/entries"),
        Req("admin unknown path", "POST", "/v1/admin/nothing", auth, b"{}", J),
    ]


def admin_requests(k: Keys) -> list[Req]:
    """The admin endpoints; issues the tokens the `registered` phase then uses."""
    auth = {"Authorization": f"Bearer {k.admin_secret}"}
    return _admin_entries(k, auth) + _admin_tokens(auth) + _admin_revoke(auth)
