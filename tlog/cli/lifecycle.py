"""`tlog rollout`, `tlog halt`, `tlog yank`, `tlog resume`: signed lifecycle statements.

Each signs one statement about a logged release (verifier.protocol.entries.lifecycle) with
the publisher's key (or, for halt and yank in a registered log, one of its halt-only keys),
submits it like `tlog publish`, checks the log's answer against the log key (the checkpoint
verifies and proves the statement included) and writes the receipt,
``<package>-<version>.<kind>.tlog-receipt.json`` by default. The log decides whether the
statement may follow what it holds (the release logged before it, same publisher, a yank is
final); its refusal is printed with its code, exit 1.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlog.cli import proof
from tlog.cli.remote import (
    RemoteError,
    add_connection_options,
    add_token_options,
    call,
    expect,
    read_secret,
)
from verifier.client.keys import read_private_key
from verifier.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import validate_log_entry
from verifier.protocol.entries.lifecycle import HALT_KIND, RESUME_KIND, ROLLOUT_KIND, YANK_KIND
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import NoteError
from verifier.protocol.receipt import make_receipt

# Characters a default receipt file name keeps from a package or version ("/" and the like
# would name another directory).
_UNSAFE = re.compile(r"[^A-Za-z0-9._+@-]")


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The unsigned statement of the command's kind, from its options."""
    fields: dict[str, Any] = {"kind": args.kind, "package": args.package,
                              "version": args.version}
    if args.kind == ROLLOUT_KIND:
        fields.update(stage=args.stage, percent=args.percent)
        if args.start_time is not None:
            fields["start_time"] = args.start_time
    if args.reason is not None:
        fields["reason"] = args.reason
    elif args.kind == RESUME_KIND:
        # Signatures are deterministic and the log dedups identical entries: a second resume
        # with the same text would only find the first again, and not take effect.
        fields["reason"] = f"resumed at {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    if getattr(args, "rollback_version", None) is not None:
        fields["rollback_version"] = args.rollback_version
    return fields


def default_out(package: str, version: str, kind: str) -> Path:
    """<package>-<version>.<kind>.tlog-receipt.json, unsafe characters replaced by '_'."""
    name = f"{package}-{version}.{kind.split('/')[0]}.tlog-receipt.json"
    return Path(_UNSAFE.sub("_", name))


def _last_listed(args: argparse.Namespace) -> int:
    """The last index the log lists for the package version (releases and statements)."""
    last, after = -1, None
    for _ in range(1000):  # 1000 pages of 1000: far beyond any version's statements
        query = {"package": args.package, "version": args.version, "limit": "1000"}
        if after is not None:
            query["after"] = str(after)
        page = expect(*call(args, "GET", "/v1/entries?" + urllib.parse.urlencode(query)),
                      (200,), "the log's listing")
        indices = [int(e["index"]) for e in page.get("entries", [])]
        last = max([last, *indices])
        after = page.get("next_after")
        if after is None:
            return last
    raise RemoteError(EXIT_FAILED, "the log's listing of the version does not end")


def _check_still_latest(args: argparse.Namespace, index: int) -> None:
    """An identical statement found again (200) takes effect only if nothing followed it:
    a halt -> resume -> halt with the same reason would otherwise leave the version resumed
    while the command said "already logged"."""
    last = _last_listed(args)
    if last > index:
        raise RemoteError(EXIT_FAILED, f"this exact {args.kind} statement was logged before, "
                                       f"at index {index}, and later entries (up to {last}) "
                                       "override it; log a new one with another --reason (or "
                                       "--stage)")


def submit_statement(args: argparse.Namespace) -> int:
    command = f"tlog {args.kind.split('/')[0]}"
    try:
        signer = read_private_key(args.key, owner_only=False)
        entry = sign_entry(_fields(args), signer)
        checked = validate_log_entry(entry)  # refuse locally what the log would refuse
        log_key = proof.log_key(args, command)
        token = read_secret(args.token_file, "TLOG_TOKEN", "token file")
        status, reply = call(args, "POST", "/v1/entries", entry, bearer=token)
        info = expect(status, reply, (200, 201), "the log")
        checkpoint = proof.check_inclusion(checked.leaf_hash, info, log_key)
        if status == 200:
            _check_still_latest(args, int(info["index"]))
        receipt = make_receipt(entry, int(info["index"]),
                               [bytes.fromhex(h) for h in info["inclusion_proof"]],
                               str(info["checkpoint"]))
    except RemoteError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return exc.code
    except (OSError, NoteError, EntryError, UsageError, ValueError) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out) if args.out else default_out(args.package, args.version, args.kind)
    out.write_text(json.dumps(receipt, indent=2) + "\n", encoding="utf-8")
    state = "logged" if status == 201 else "already logged:"
    print(f"{state} {args.kind} for {args.package} {args.version} at index {info['index']} "
          f"(tree size {checkpoint.size}); inclusion proof verified, receipt written to {out}")
    return EXIT_OK


def _percent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer 0..100") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} is not in 0..100")
    return value


def _common(p: argparse.ArgumentParser, kind: str, key_help: str) -> None:
    p.add_argument("--log", required=True, help="the log's base URL")
    p.add_argument("--key", required=True, help=key_help)
    p.add_argument("--log-key", help=proof.LOG_KEY_HELP)
    p.add_argument("--package", required=True, help="the package of the logged release")
    p.add_argument("--version", required=True, help="the logged release's version")
    p.add_argument("--out", help="receipt file (default: "
                                 f"PACKAGE-VERSION.{kind.split('/')[0]}.tlog-receipt.json, "
                                 "other characters than A-Z a-z 0-9 . _ + @ - as '_')")
    add_token_options(p, "file holding the submission token (registered logs)")
    add_connection_options(p)
    p.set_defaults(func=submit_statement, kind=kind, reason=None)


def add_lifecycle_commands(sub: Any) -> None:
    publisher_key = "the publisher's private key file (a current key of the publisher)"
    halt_key = ("the publisher's private key file: a current key, or (registered logs) a "
                "halt-only key (tlog registry rotate --halt-only)")
    r = sub.add_parser("rollout", help="log a rollout stage of a logged release",
                       description="Log a rollout/v1 statement: devices in the cohort of "
                                   "--percent (a stable hash of device id, package and "
                                   "version) may install the release, from --start-time on. "
                                   "Widening the percent never drops a device.")
    _common(r, ROLLOUT_KIND, publisher_key)
    r.add_argument("--stage", required=True, help="stage name, 1-64 printable ASCII characters")
    r.add_argument("--percent", required=True, type=_percent, help="share of devices, 0..100")
    r.add_argument("--start-time", metavar="T",
                   help="RFC 3339 UTC time before which clients do not install it, "
                        "like 2026-01-31T12:00:00Z")
    stops = (("halt", HALT_KIND, "halt the rollout of a logged release",
              "Log a halt/v1 statement: clients stop installing the version until a tlog "
              "resume (or a new tlog rollout)."),
             ("yank", YANK_KIND, "withdraw a logged release for good",
              "Log a yank/v1 statement: clients never install the version again and are "
              "pointed to --rollback-version; the log accepts no rollout, halt or resume of "
              "it afterwards."))
    for name, kind, summary, description in stops:  # the same options, another statement
        h = sub.add_parser(name, help=summary, description=description)
        _common(h, kind, halt_key)
        h.add_argument("--reason", required=True, help="why, 1-1000 characters (public)")
        h.add_argument("--rollback-version", metavar="V",
                       help="a logged, known-good version of the package to go back to")
    u = sub.add_parser("resume", help="resume a halted rollout",
                       description="Log a resume/v1 statement: the latest rollout stage of "
                                   "the version applies again.")
    _common(u, RESUME_KIND, publisher_key)
    u.add_argument("--reason", help="why, 1-1000 characters (public; default: 'resumed at' "
                                    "and the time, so that each resume is a new statement)")
