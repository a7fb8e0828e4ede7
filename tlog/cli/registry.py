"""`tlog token …` and `tlog registry …`: the operator's and publishers' registry commands.

Tokens are issued and revoked through the log's admin API (so every issuance lands in its
audit trail). Registry entries are signed here, locally, with the signer's key file, and
submitted: by the admin through the admin API, by a publisher through POST /v1/entries with
its token.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tlog.cli import proof
from tlog.cli.remote import (
    RemoteError,
    add_connection_options,
    add_token_options,
    call,
    expect,
    read_secret,
    refuse_secret_option,
)
from verifier.client.keys import read_private_key, read_vkey
from verifier.errors import EXIT_OK, EXIT_USAGE, UsageError
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import validate_registry_entry as check_entry
from verifier.protocol.entries.registry_kinds import KEYS_KIND, PUBLISHER_KIND, REVOKE_KIND
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import NoteError, Signer


def _admin_secret(args: argparse.Namespace) -> str:
    secret = read_secret(args.admin_token_file, "TLOG_ADMIN_TOKEN", "admin token file")
    if not secret and not args.client_cert:
        raise RemoteError(EXIT_USAGE, "give --admin-token-file (or TLOG_ADMIN_TOKEN), or an "
                                      "admin --client-cert")
    return secret or ""


def _run(func: Any, args: argparse.Namespace) -> int:
    try:
        code: int = func(args)
        return code
    except RemoteError as exc:
        print(f"tlog: {exc}", file=sys.stderr)
        return exc.code
    except (OSError, NoteError, EntryError, ValueError, UsageError) as exc:
        print(f"tlog: {exc}", file=sys.stderr)
        return EXIT_USAGE


def token_issue(args: argparse.Namespace) -> int:
    body = {"publisher": args.publisher, "scopes": args.scope, "ttl": args.ttl}
    status, reply = call(args, "POST", "/v1/admin/tokens", body, bearer=_admin_secret(args))
    info = expect(status, reply, (201,), "token issuance")
    print(info["token"])
    print(f"token {info['jti']} for {info['publisher']} ({', '.join(info['scopes'])}) "
          f"expires {info['expires_at']}", file=sys.stderr)
    return EXIT_OK


def token_revoke(args: argparse.Namespace) -> int:
    status, reply = call(args, "POST", f"/v1/admin/tokens/{args.jti}/revoke", {},
                         bearer=_admin_secret(args))
    info = expect(status, reply, (200,), "token revocation")
    print(f"token {args.jti} was already revoked" if info.get("already_revoked")
          else f"revoked token {args.jti}")
    return EXIT_OK


def _signer(path: str) -> Signer:
    return read_private_key(path, owner_only=False)


def _vkeys(paths: list[str] | None) -> list[str]:
    return [read_vkey(p).text() for p in paths or []]


def _submit_registry(args: argparse.Namespace, fields: dict[str, Any]) -> int:
    entry = sign_entry(fields, _signer(args.signer))
    checked = check_entry(entry)  # refuse locally what the log would refuse
    log_key = proof.log_key(args, "tlog registry")
    token = read_secret(args.token_file, "TLOG_TOKEN", "token file")
    if token:
        status, reply = call(args, "POST", "/v1/entries", entry, bearer=token)
    else:
        status, reply = call(args, "POST", "/v1/admin/entries", entry,
                             bearer=_admin_secret(args))
    info = expect(status, reply, (200, 201), f"{fields['kind']} entry")
    # A registry change decides which keys may publish: "logged" only once proven so.
    checkpoint = proof.check_inclusion(checked.leaf_hash, info, log_key)
    print(f"logged {fields['kind']} for {fields['publisher']} at index {info['index']} "
          f"(tree size {checkpoint.size}); inclusion proof verified")
    return EXIT_OK


def registry_register(args: argparse.Namespace) -> int:
    return _submit_registry(args, {"kind": PUBLISHER_KIND, "publisher": args.publisher,
                                   "packages": args.package,
                                   "keys": _vkeys(args.publisher_key)})


def registry_rotate(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"kind": KEYS_KIND, "publisher": args.publisher,
                              "add": _vkeys(args.add), "remove": _vkeys(args.remove)}
    if args.halt_only:
        fields["role"] = "halt"
    return _submit_registry(args, fields)


def registry_revoke(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"kind": REVOKE_KIND, "publisher": args.publisher,
                              "reason": args.reason}
    if args.key:
        fields["keys"] = _vkeys(args.key)
    return _submit_registry(args, fields)


def _common(p: argparse.ArgumentParser, admin: bool = True) -> None:
    p.add_argument("--log", required=True, help="the log's base URL")
    if admin:
        p.add_argument("--admin-token-file", help="file holding the admin API secret "
                                                  "(or TLOG_ADMIN_TOKEN)")
        refuse_secret_option(p, "--admin-token", "--admin-token-file FILE or the "
                             "TLOG_ADMIN_TOKEN environment variable")
    add_connection_options(p)


def _registry_common(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--publisher", required=True, help="the publisher's name")
    p.add_argument("--signer", required=True, metavar="KEY_FILE",
                   help="private key that signs the entry: the admin key, or (rotate/revoke "
                        "keys) a current key of the publisher")
    p.add_argument("--log-key", help=proof.LOG_KEY_HELP)
    add_token_options(p, "file holding the publisher's token: submit as the publisher "
                         "(else the admin API is used)")


def add_operator_commands(sub: Any) -> None:
    t = sub.add_parser("token", help="issue or revoke short-lived submission tokens")
    tsub = t.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = tsub.add_parser("issue", help="issue a token for a publisher and package scopes")
    _common(issue)
    issue.add_argument("--publisher", required=True)
    issue.add_argument("--scope", action="append", required=True, metavar="PATTERN",
                       help="package name or prefix ending in '*' (repeatable)")
    issue.add_argument("--ttl", default="15m", help="lifetime: 90s, 15m, 2h (max 24h)")
    issue.set_defaults(func=lambda a: _run(token_issue, a))
    revoke = tsub.add_parser("revoke", help="revoke a token by its id")
    _common(revoke)
    revoke.add_argument("jti", help="the token id printed at issuance")
    revoke.set_defaults(func=lambda a: _run(token_revoke, a))

    r = sub.add_parser("registry", help="register publishers, rotate and revoke keys")
    rsub = r.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    reg = rsub.add_parser("register", help="register a publisher (admin-signed)")
    _registry_common(reg)
    reg.add_argument("--package", action="append", required=True, metavar="PATTERN",
                     help="package name or prefix ending in '*' it owns (repeatable)")
    reg.add_argument("--publisher-key", action="append", required=True, metavar="VKEY_FILE",
                     help="a key of the publisher (repeatable)")
    reg.set_defaults(func=lambda a: _run(registry_register, a))
    rot = rsub.add_parser("rotate", help="add and/or remove keys of a publisher")
    _registry_common(rot)
    rot.add_argument("--add", action="append", metavar="VKEY_FILE", help="key to add")
    rot.add_argument("--remove", action="append", metavar="VKEY_FILE", help="key to remove")
    rot.add_argument("--halt-only", action="store_true",
                     help="--add and --remove name halt-only keys: they may sign tlog halt "
                          "and tlog yank statements for the publisher's releases, nothing else")
    rot.set_defaults(func=lambda a: _run(registry_rotate, a))
    rev = rsub.add_parser("revoke", help="revoke keys of a publisher, or the publisher")
    _registry_common(rev)
    rev.add_argument("--key", action="append", metavar="VKEY_FILE",
                     help="key to revoke (repeatable); none: revoke the whole publisher")
    rev.add_argument("--reason", required=True)
    rev.set_defaults(func=lambda a: _run(registry_revoke, a))
