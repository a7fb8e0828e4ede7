"""`tlog-verify`: verify a tlog log without trusting its operator.

Exit codes: 0 verified; 1 verification failed or the log misbehaved; 2 usage or malformed
input; 3 the log could not be reached or answered wrongly at the transport level.
Anything but 0 means "do not trust".
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

from verifier.cli import audit, monitor, witness
from verifier.cli.common import add_common, client_for, duration, now_of, trust_for
from verifier.client.artifacts import hash_file
from verifier.client.release import (
    VerifiedRelease,
    check_cooldown,
    check_install,
    check_key_valid_at,
    check_lifecycle,
    prove_release,
    verify_receipt_file,
    write_receipt,
)
from verifier.client.statedir import StateDir, load_vkey
from verifier.errors import EXIT_OK, EXIT_USAGE, UsageError, VerifyError
from verifier.protocol.note import b64encode
from verifier.protocol.policy import PolicyTrust


def cmd_checkpoint(args: argparse.Namespace) -> int:
    trust = trust_for(args)
    cp, note = client_for(args).checkpoint(trust)
    print(f"origin {cp.origin}\nsize {cp.size}\nroot {b64encode(cp.root)} ({cp.root.hex()})")
    if isinstance(trust, PolicyTrust):
        w = trust.witnessed(note)
        for name, ts in sorted(w.times.items()):
            print(f"cosigned by {name} at {_utc(ts)}")
        if w.quorum_time is not None and w.fresh_time is not None:
            print(f"quorum at {_utc(w.quorum_time)}, fresh as of {_utc(w.fresh_time)}")
    return EXIT_OK


def _utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _artifacts(args: argparse.Namespace) -> list[Path]:
    """The files to check. An updater that forgot --artifact must not be told "OK" about a
    release whose files nobody looked at: checking inclusion only takes --no-artifact."""
    if args.artifact and args.no_artifact:
        raise UsageError("--artifact and --no-artifact exclude each other")
    if not args.artifact and not args.no_artifact:
        raise UsageError("give the file(s) to check with --artifact FILE, or --no-artifact to "
                         "check only that the release is logged")
    return [Path(a) for a in args.artifact]


def cmd_bundle(args: argparse.Namespace) -> int:
    """Offline: receipt + pinned keys + files -> verified, or not. No network at all."""
    paths = _artifacts(args)
    trust = trust_for(args)
    min_age = duration(args, "min_age")
    pinned = [load_vkey(p, "publisher key") for p in args.publisher]
    files = [hash_file(a) for a in paths]
    now = now_of(args)
    device_id = _device_id(args)
    verified = verify_receipt_file(args.receipt, trust, files, pinned, now, min_age=min_age,
                                   device_id=device_id)
    _report(verified)
    if verified.decision is not None:
        print(f"OK {verified.decision.message} (as of the receipt's checkpoint)")
    else:
        print("note: the receipt carries no package state: halts, yanks and rollouts were "
              "not checked")
    return EXIT_OK


def _device_id(args: argparse.Namespace) -> str | None:
    device_id: str | None = args.device_id
    if device_id is not None and not 1 <= len(device_id.encode("utf-8")) <= 256:
        raise UsageError("--device-id: 1-256 bytes of UTF-8")
    return device_id


def _report(v: VerifiedRelease) -> None:
    r, where = v.release, v.receipt
    print(f"OK {r.package} {r.version} by {r.publisher} is entry {where.index} of "
          f"{where.checkpoint.origin} (size {where.checkpoint.size})")
    for name in v.artifacts:
        print(f"OK artifact {name}")


def cmd_release(args: argparse.Namespace) -> int:
    """Online: find the release in the log, prove its inclusion, check it like a receipt."""
    paths = _artifacts(args)
    trust = trust_for(args)
    min_age = duration(args, "min_age")
    pinned = [load_vkey(p, "publisher key") for p in args.publisher]
    files = [hash_file(a) for a in paths]
    now = now_of(args)
    device_id = _device_id(args)
    state = StateDir(Path(args.state)) if args.state else None
    # The steps of verify_release, not the one call: the admin key files are read only once
    # the log checked out, so which error a run reports stays what it always was.
    with state if state is not None else nullcontext():
        client = client_for(args, state)
        proven = prove_release(client, trust, args.package, args.version, state)
        if min_age is not None:
            check_cooldown(client, trust, proven, min_age, int(now.timestamp()), state)
        if args.admin_key:
            admins = [load_vkey(p, "admin key") for p in args.admin_key]
            check_key_valid_at(client, proven, admins)
    verified = check_install(proven.receipt, files, pinned, now)
    # Halts, yanks and rollouts, as the package state proven in the checkpoint names them.
    decision = check_lifecycle(proven, device_id, now)
    if args.write_bundle:
        write_receipt(args.write_bundle, proven)
    _report(verified)
    print(f"OK {decision.message}")
    if args.write_bundle:
        print(f"OK wrote {args.write_bundle}: receipt with the package state as of size "
              f"{proven.trusted.size}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tlog-verify", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("checkpoint", help="fetch and verify the log's checkpoint")
    add_common(c)
    c.set_defaults(func=cmd_checkpoint)

    b = sub.add_parser("bundle", help="verify a receipt offline (no network)")
    b.add_argument("receipt", help="the receipt written by `tlog publish`")
    add_common(b, log=False)
    _release_options(b)
    b.set_defaults(func=cmd_bundle)

    r = sub.add_parser("release", help="find a release in the log and verify it online")
    add_common(r)
    r.add_argument("--package", required=True)
    r.add_argument("--version", required=True)
    r.add_argument("--state", help="directory keeping the last trusted checkpoint")
    r.add_argument("--admin-key", action="append", default=[], metavar="VKEY_FILE",
                   help="the log operator's registry admin key (repeatable): also check that "
                        "the release's key was valid for its package at its index")
    r.add_argument("--write-bundle", metavar="FILE",
                   help="once every check passed, write a receipt for the release proven "
                        "against this checkpoint, carrying the package state proven against "
                        "it, for `tlog-verify bundle` offline")
    _release_options(r)
    r.set_defaults(func=cmd_release)

    audit.register(sub, add_common)
    monitor.register(sub, add_common)
    witness.register(sub)
    return p


def _release_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifact", action="append", default=[], metavar="FILE",
                   help="a file to check against the entry's artifacts (repeatable; this "
                        "or --no-artifact is required)")
    p.add_argument("--no-artifact", action="store_true",
                   help="check no file: only that the release is logged (and signed by a "
                        "pinned publisher key)")
    p.add_argument("--publisher", action="append", default=[], metavar="VKEY_FILE",
                   help="a pinned publisher key; the entry must be signed by one (repeatable)")
    p.add_argument("--min-age", metavar="DUR",
                   help="the witnessed cooldown: accept the release only once a checkpoint "
                        "holding it was cosigned by the policy's quorum at least DUR (90s, "
                        "15m, 24h, 7d) before --now; needs --policy")
    p.add_argument("--device-id", metavar="ID",
                   help="this device's id (1-256 bytes): decides whether it is in a partial "
                        "rollout of the version. Without it, a version rolled out to less "
                        "than 100%% is refused. Halted and yanked versions are refused either "
                        "way (a yank names the version to roll back to). With `bundle`, the "
                        "receipt must carry the package state")
    p.add_argument("--now", help="RFC 3339 time for the install window and the witnessed "
                                 "ages (default: now)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except UsageError as exc:
        # The caller's own mistake: nothing was verified, but nothing failed to verify either.
        print(f"tlog-verify: usage error: {exc}", file=sys.stderr)
        return exc.exit_code
    except VerifyError as exc:
        print(f"tlog-verify: FAIL: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tlog-verify: interrupted", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
