"""`tlog-verify`: verify a tlog log without trusting its operator.

Exit codes: 0 verified; 1 verification failed or the log misbehaved; 2 usage or malformed
input; 3 the log could not be reached or answered wrongly at the transport level.
Anything but 0 means "do not trust".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from verifier.client import audit, monitor
from verifier.client.artifacts import hash_file
from verifier.client.log import LogClient
from verifier.client.statedir import StateDir, load_vkey
from verifier.client.tracking import advance
from verifier.errors import (
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    VerificationFailed,
    VerifyError,
)
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.install import check_release
from verifier.protocol.entries.kinds import REGISTRY_KINDS, parse_log_leaf
from verifier.protocol.entries.release import parse_leaf
from verifier.protocol.merkle import ProofError, verify_inclusion
from verifier.protocol.note import Verifier, b64encode
from verifier.protocol.receipt import VerifiedReceipt, verify_receipt
from verifier.protocol.registry import Refusal, Registry
from verifier.protocol.rfc3339 import parse_time
from verifier.protocol.state import Trusted
from verifier.protocol.tiles import TILE_WIDTH

MAX_RECEIPT_BYTES = 1 << 21


def client_for(args: argparse.Namespace, state: StateDir | None = None) -> LogClient:
    cache = state.path / "tiles" if state is not None else None
    return LogClient(args.log, cache_dir=cache, timeout=args.timeout, retries=args.retries)


def cmd_checkpoint(args: argparse.Namespace) -> int:
    key = load_vkey(args.key)
    cp, _ = client_for(args).checkpoint(key)
    print(f"origin {cp.origin}\nsize {cp.size}\nroot {b64encode(cp.root)} ({cp.root.hex()})")
    return EXIT_OK


def _read_receipt(path: str) -> object:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"couldn't read receipt {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_RECEIPT_BYTES:
        raise VerificationFailed(f"receipt {path} is larger than {MAX_RECEIPT_BYTES} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise VerificationFailed(f"receipt {path} is not JSON: {exc}") from exc


def _now(args: argparse.Namespace) -> datetime:
    return parse_time(args.now) if args.now else datetime.now(UTC)


def cmd_bundle(args: argparse.Namespace) -> int:
    """Offline: receipt + pinned keys + files -> verified, or not. No network at all."""
    key = load_vkey(args.key)
    pinned = [load_vkey(p, "publisher key") for p in args.publisher]
    files = [hash_file(Path(a)) for a in args.artifact]
    now = _now(args)
    receipt = _read_receipt(args.receipt)
    try:
        verified = verify_receipt(receipt, key)
    except ValueError as exc:
        raise VerificationFailed(f"receipt {args.receipt} does not verify: {exc}") from exc
    matched = check_release(verified.release, files, pinned, now)
    _report(verified, matched)
    return EXIT_OK


def _report(v: VerifiedReceipt, matched: Sequence[str]) -> None:
    r = v.release
    print(f"OK {r.package} {r.version} by {r.publisher} is entry {v.index} of "
          f"{v.checkpoint.origin} (size {v.checkpoint.size})")
    for name in matched:
        print(f"OK artifact {name}")


def cmd_release(args: argparse.Namespace) -> int:
    """Online: find the release in the log, prove its inclusion, check it like a receipt."""
    key = load_vkey(args.key)
    pinned = [load_vkey(p, "publisher key") for p in args.publisher]
    files = [hash_file(Path(a)) for a in args.artifact]
    now = _now(args)
    state = StateDir(Path(args.state)) if args.state else None
    with state if state is not None else _NoState():
        client = client_for(args, state)
        hints = client.search(args.package, args.version)
        trusted = advance(client, key, state)
        verified = _find_and_prove(client, trusted, hints, args.package, args.version)
        if args.admin_key:
            admins = [load_vkey(p, "admin key") for p in args.admin_key]
            check_key_valid_at(client, trusted, admins, verified)
    matched = check_release(verified.release, files, pinned, now)
    _report(verified, matched)
    return EXIT_OK


def prove_entry(client: LogClient, trusted: Trusted, index: int, leaf_hash: bytes) -> None:
    """Entry `index` with `leaf_hash` is in the tree `trusted` signed: a proof from tiles."""
    try:
        verify_inclusion(index, trusted.size, leaf_hash,
                         client.inclusion_proof(index, trusted.size), trusted.root)
    except ProofError as exc:
        raise VerificationFailed(f"entry {index} is not proven in the checkpoint of size "
                                 f"{trusted.size}: {exc}") from exc


def check_key_valid_at(client: LogClient, trusted: Trusted, admins: Sequence[Verifier],
                       verified: VerifiedReceipt) -> None:
    """The release's key was valid for its package at its index: replay the registry
    entries before it (each fetched from its bundle and proven in `trusted`) with the pinned
    admin keys. The log could leave a registry entry out of its listing; monitors, which
    replay every entry, catch that."""
    registry = Registry(admins, enforce=True)
    for index in sorted({i for i in client.registry_indices() if i < verified.index}):
        try:
            entry = parse_log_leaf(client.entry(index, trusted.size))
        except EntryError as exc:
            raise VerificationFailed(f"registry entry {index} does not verify: {exc}") from exc
        prove_entry(client, trusted, index, entry.leaf_hash)
        if entry.kind not in REGISTRY_KINDS:
            raise VerificationFailed(f"the log lists entry {index} as a registry entry; it is "
                                     "a release")
        try:
            registry.apply(index, entry)
        except Refusal as exc:
            raise VerificationFailed(f"the log accepted registry entry {index}, which the "
                                     f"pinned admin keys do not allow: {exc}") from exc
    r = verified.release
    if r.publisher not in registry.publishers:
        raise VerificationFailed(f"publisher {r.publisher!r} is not registered in the log "
                                 f"before entry {verified.index}")
    problem = registry.release_problem(r.publisher, r.package, r.key.text())
    if problem is not None:
        raise VerificationFailed(f"at entry {verified.index}, {problem}")


class _NoState:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _find_and_prove(client: LogClient, trusted: Trusted, hints: Sequence[int], package: str,
                    version: str) -> VerifiedReceipt:
    """The one entry for (package, version) among the log's hints, proven in `trusted`."""
    try:
        return _find_and_prove_once(client, trusted, hints, package, version)
    except VerificationFailed:
        if not client.drop_cache():
            raise
        return _find_and_prove_once(client, trusted, hints, package, version)


def _find_and_prove_once(client: LogClient, trusted: Trusted, hints: Sequence[int],
                         package: str, version: str) -> VerifiedReceipt:
    size = trusted.size
    found: list[VerifiedReceipt] = []
    bundles: dict[int, list[bytes]] = {}
    for index in sorted(set(hints)):
        if index >= size:
            continue
        n = index // TILE_WIDTH
        if n not in bundles:  # hints are sorted: each bundle is fetched once, then dropped
            bundles = {n: client.entry_bundle(n, size)}
        try:
            release = parse_leaf(bundles[n][index % TILE_WIDTH])
        except EntryError as exc:
            raise VerificationFailed(
                f"entry {index} of the log is not a valid release: {exc}") from exc
        if (release.package, release.version) != (package, version):
            continue
        prove_entry(client, trusted, index, release.leaf_hash)
        found.append(VerifiedReceipt(release, index, trusted.checkpoint))
    if not found:
        raise VerificationFailed(f"the log shows no provable entry for {package} {version} "
                                 f"in its checkpoint of size {size}")
    if len(found) > 1:
        indices = [f.index for f in found]
        raise VerificationFailed(f"the log holds {len(found)} entries for {package} {version} "
                                 f"(indices {indices}); refusing an ambiguous release")
    return found[0]


def _common(p: argparse.ArgumentParser, log: bool = True) -> None:
    if log:
        p.add_argument("--log", required=True, help="the log's base URL")
    p.add_argument("--key", required=True, help="the log's verifier key file (pinned by you)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to connect, and that the log may send nothing (counted in "
                        "whole seconds, at least 1)")
    p.add_argument("--retries", type=int, default=3, help="retries on transient network errors")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tlog-verify", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("checkpoint", help="fetch and verify the log's checkpoint")
    _common(c)
    c.set_defaults(func=cmd_checkpoint)

    b = sub.add_parser("bundle", help="verify a receipt offline (no network)")
    b.add_argument("receipt", help="the receipt written by `tlog publish`")
    _common(b, log=False)
    _release_options(b)
    b.set_defaults(func=cmd_bundle)

    r = sub.add_parser("release", help="find a release in the log and verify it online")
    _common(r)
    r.add_argument("--package", required=True)
    r.add_argument("--version", required=True)
    r.add_argument("--state", help="directory keeping the last trusted checkpoint")
    r.add_argument("--admin-key", action="append", default=[], metavar="VKEY_FILE",
                   help="the log operator's registry admin key (repeatable): also check that "
                        "the release's key was valid for its package at its index")
    _release_options(r)
    r.set_defaults(func=cmd_release)

    audit.register(sub, _common)
    monitor.register(sub, _common)
    return p


def _release_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifact", action="append", default=[], metavar="FILE",
                   help="a file to check against the entry's artifacts (repeatable)")
    p.add_argument("--publisher", action="append", default=[], metavar="VKEY_FILE",
                   help="a pinned publisher key; the entry must be signed by one (repeatable)")
    p.add_argument("--now", help="RFC 3339 time for the install window (default: now)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except VerifyError as exc:
        print(f"tlog-verify: FAIL: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tlog-verify: interrupted", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
