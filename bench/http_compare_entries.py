"""bench/http_compare.py: the entry signing, the keys and the log's content.

Entries are signed with the `verifier` package of the NEW revision's source tree (the
protocol code), wherever its modules live in that revision; with OLD's if NEW's does not
import. The keys are made with OLD's `tlog keygen`, so both servers read the same files.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

Signer = Any  # verifier's note.Signer, of whichever revision the signing code came from
PUBLISHER_KIND, KEYS_KIND, REVOKE_KIND = "publisher/v1", "keys/v1", "revoke/v1"
NOTE_MODULES = ("verifier.protocol.note", "verifier.note")
SIGNING_MODULES = ("verifier.protocol.entries.signing", "verifier.protocol.entries.release",
                   "verifier.entry")
N_PACKAGES, N_VERSIONS = 30, 20  # 600 releases


@dataclass(frozen=True)
class Protocol:
    """The signing functions of one source tree's `verifier` package."""

    root: Path
    sign_entry: Callable[[dict[str, Any], Signer], dict[str, Any]]
    generate_key: Callable[[str], Signer]
    parse_private_key: Callable[[str], Signer]


def _first_module(names: tuple[str, ...], attr: str) -> ModuleType | None:
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        if hasattr(module, attr):
            return module
    return None


def _try_protocol(root: Path) -> Protocol | None:
    for name in [m for m in sys.modules if m == "verifier" or m.startswith("verifier.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        note = _first_module(NOTE_MODULES, "generate_key")
        signing = _first_module(SIGNING_MODULES, "sign_entry")
        if note is not None and signing is not None:
            return Protocol(root, signing.sign_entry, note.generate_key, note.parse_private_key)
    except (ImportError, SyntaxError) as exc:
        print(f"note: couldn't import the protocol code from {root}: {exc}", file=sys.stderr)
    sys.path.remove(str(root))
    return None


def load_protocol(roots: list[Path]) -> Protocol:
    """The entry signing of the first of `roots` (NEW, then OLD) whose verifier imports."""
    for root in roots:
        proto = _try_protocol(root)
        if proto is not None:
            return proto
    raise RuntimeError("no importable verifier package (entry signing) in NEW or OLD")


@dataclass
class Keys:
    proto: Protocol
    files: dict[str, Path]
    log: Signer
    admin: Signer
    token: Signer
    pub: Signer  # the publisher of the 600 releases
    acme: Signer
    acme2: Signer
    beta: Signer
    mallory: Signer
    admin_secret: str

    def sign(self, fields: dict[str, Any], signer: Signer) -> dict[str, Any]:
        """Any kind: the signed prefix is "tlog/<kind>\\n" (release/v1 included)."""
        return self.proto.sign_entry(fields, signer)

    def release(self, signer: Signer, package: str, version: str, **kw: Any) -> dict[str, Any]:
        return self.sign(release_fields(package, version, **kw), signer)

    def generate(self, name: str) -> Signer:
        return self.proto.generate_key(name)

    def vkey(self, signer: Signer) -> str:
        return str(signer.verifier().text())


def release_fields(package: str, version: str, payload: bytes = b"",
                   counter: int | None = None) -> dict[str, Any]:
    """As tests/support.py release_fields (a release with one artifact)."""
    fields: dict[str, Any] = {
        "kind": "release/v1", "package": package, "version": version,
        "artifacts": [{"name": f"{package.replace('/', '_')}-{version}.tar.gz",
                       "sha256": hashlib.sha256(payload or version.encode()).hexdigest(),
                       "size": len(payload)}],
    }
    if counter is not None:
        fields["counter"] = counter
    return fields


def make_keys(proto: Protocol, keygen_tool: Callable[[list[str]], str], origin: str,
              kdir: Path) -> Keys:
    """The log, admin, token and publisher keys; `keygen_tool` runs OLD's `tlog <args>`."""
    kdir.mkdir()

    def keygen(name: str) -> tuple[Path, Path, Signer]:
        keygen_tool(["keygen", "--name", name, "--out", str(kdir)])
        stem = name.replace("/", "_")
        key, vkey = kdir / f"{stem}.key", kdir / f"{stem}.vkey"
        if not key.exists():
            raise RuntimeError(f"keygen did not write {key}: {sorted(os.listdir(kdir))}")
        return key, vkey, proto.parse_private_key(key.read_text().strip())

    log_key, log_vkey, log_signer = keygen(origin)
    _, admin_vkey, admin = keygen("log-admin")
    token_key, _, token = keygen("tlog-tokens")
    _, _, pub = keygen("cmp-release-bot")
    _, _, acme = keygen("acme")
    secret = "admin-secret-" + base64.urlsafe_b64encode(os.urandom(18)).decode()
    sec_file = kdir / "admin.secret"
    sec_file.write_text(secret + "\n")
    sec_file.chmod(0o600)
    files = {"log": log_key, "log_vkey": log_vkey, "admin_vkey": admin_vkey,
             "token": token_key, "admin_secret": sec_file}
    return Keys(proto, files, log_signer, admin, token, pub, acme, proto.generate_key("acme"),
                proto.generate_key("beta"), proto.generate_key("mallory"), secret)


def bulk_release(k: Keys, p: int, v: int) -> dict[str, Any]:
    """Release v of package p: three shapes (counter, payload, metadata + install window)."""
    pkg, ver = f"org.cmp.pkg{p:02d}", f"1.{v}.0"
    if p % 3 == 0:
        return k.release(k.pub, pkg, ver, counter=v)
    if p % 3 == 1:
        return k.release(k.pub, pkg, ver, payload=f"payload {p} {v}".encode())
    fields = release_fields(pkg, ver)
    fields["metadata"] = {"commit": hashlib.sha1(f"{p}/{v}".encode()).hexdigest(),
                          "note": "é ü ✓"}
    fields["install_window"] = {"not_before": "2025-01-01T00:00:00Z",
                                "not_after": "2035-01-01T00:00:00.5Z"}
    return k.sign(fields, k.pub)


def bulk_releases(k: Keys) -> list[dict[str, Any]]:
    return [bulk_release(k, p, v) for p in range(N_PACKAGES) for v in range(N_VERSIONS)]


def registration(k: Keys, publisher: str, patterns: list[str],
                 keys: list[Signer]) -> dict[str, Any]:
    return {"kind": PUBLISHER_KIND, "publisher": publisher, "packages": patterns,
            "keys": [k.vkey(s) for s in keys]}


def keys_entry(k: Keys, publisher: str, add: list[Signer], remove: list[Signer],
               signer: Signer) -> dict[str, Any]:
    return k.sign({"kind": KEYS_KIND, "publisher": publisher, "add": [k.vkey(s) for s in add],
                   "remove": [k.vkey(s) for s in remove]}, signer)


def revoke_entry(k: Keys, publisher: str, keys: list[Signer] | None, reason: str,
                 signer: Signer) -> dict[str, Any]:
    fields: dict[str, Any] = {"kind": REVOKE_KIND, "publisher": publisher}
    if keys is not None:
        fields["keys"] = [k.vkey(s) for s in keys]
    fields["reason"] = reason
    return k.sign(fields, signer)


def acme_entries(k: Keys) -> dict[str, dict[str, Any]]:
    """The registry entries and the registered publisher's release the log holds."""
    return {
        "pub_acme": k.sign(registration(k, "acme", ["com.acme.*"], [k.acme]), k.admin),
        "keys_add_acme2": keys_entry(k, "acme", [k.acme2], [], k.acme),
        "acme_rel1": k.release(k.acme, "com.acme.app", "1.0.0", counter=1),
        "revoke_acme2": revoke_entry(k, "acme", [k.acme2], "key leaked in CI logs", k.acme),
        "pub_beta": k.sign(registration(k, "beta", ["net.beta.*"], [k.beta]), k.admin),
        "revoke_beta": revoke_entry(k, "beta", None, "publisher retired", k.admin),
    }


SETUP_STEPS = [("pub_acme", "/v1/admin/entries", True), ("keys_add_acme2", "/v1/entries", False),
               ("acme_rel1", "/v1/entries", False), ("revoke_acme2", "/v1/entries", False),
               ("pub_beta", "/v1/admin/entries", True), ("revoke_beta", "/v1/admin/entries", True)]


async def _post_bulk(s: aiohttp.ClientSession, base: str, releases: list[dict[str, Any]],
                     statuses: dict[int, int]) -> None:
    sem = asyncio.Semaphore(64)

    async def one(entry: dict[str, Any]) -> int:
        async with sem, s.post(base + "/v1/entries", json=entry) as r:
            await r.read()
            return r.status

    for st in await asyncio.gather(*(one(e) for e in releases)):
        statuses[st] = statuses.get(st, 0) + 1


async def fill_log(base: str, k: Keys) -> dict[str, Any]:
    """Append the log's content (through OLD); returns the submission statuses."""
    statuses: dict[int, int] = {}
    conn = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=120)) as s:
        await _post_bulk(s, base, bulk_releases(k), statuses)
        acme = acme_entries(k)
        admin = {"Authorization": f"Bearer {k.admin_secret}"}
        for name, path, as_admin in SETUP_STEPS:
            async with s.post(base + path, json=acme[name],
                              headers=admin if as_admin else {}) as r:
                text = await r.text()
                if r.status != 201:
                    raise RuntimeError(f"setup {name}: {r.status} {text}")
                statuses[r.status] = statuses.get(r.status, 0) + 1
    return {"bulk": statuses, "bad": {st: n for st, n in statuses.items() if st != 201}}
