"""HTTP calls the `tlog` commands make to a log: JSON in, JSON out, optional mTLS.

The transport is the verifier's (`verifier.client.http`, libcurl): one HTTP client for the
whole project, with its limits on size and time.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
from typing import Any

from verifier.client import keys
from verifier.client.http import HttpFetcher, Tls
from verifier.errors import EXIT_FAILED, EXIT_TRANSPORT, EXIT_USAGE, TransportError, UsageError

MAX_REPLY = 1 << 20
TIMEOUT = 30  # connecting, and silence from the log
DEADLINE = 300  # a whole request: the log answers after its batch is durable


class RemoteError(Exception):
    """A command failed; `code` is its exit status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def add_connection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--ca", metavar="PEM", help="CA bundle to verify an HTTPS log with")
    g.add_argument("--client-cert", metavar="PEM", help="TLS client certificate (mTLS logs)")
    g.add_argument("--client-key", metavar="PEM", help="its private key")


class _SecretOnCommandLine(argparse.Action):
    """Refuses `--token VALUE`: argv is readable by every user of the host (`ps`), so a
    secret there leaks. Kept as an option (not dropped) so that argparse does not take
    `--token` as an abbreviation of `--token-file` and name the secret in its error."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        instead = self.metavar or "--token-file FILE or the TLOG_TOKEN environment variable"
        parser.error(f"{option_string} would put a secret on the command line, where other "
                     f"users see it (ps); use {instead}")


def refuse_secret_option(p: argparse.ArgumentParser, flag: str, instead: str) -> None:
    """`flag VALUE` is refused with a usage error that names `instead`, never the value."""
    p.add_argument(flag, nargs="?", action=_SecretOnCommandLine, metavar=instead,
                   help=argparse.SUPPRESS)


class StrictParser(argparse.ArgumentParser):
    """No abbreviated options: `--admin-token SECRET` must not be read as an abbreviation of
    `--admin-token-file` (whose error would then print the secret as a file name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def add_token_options(p: argparse.ArgumentParser, what: str) -> None:
    """--token-file (what: the help text), and a `--token` that only says to use it."""
    p.add_argument("--token-file", metavar="FILE", help=f"{what} (or TLOG_TOKEN)")
    p.add_argument("--token", nargs="?", action=_SecretOnCommandLine, help=argparse.SUPPRESS)


def tls_files(args: argparse.Namespace) -> Tls:
    """The TLS files of the connection options, each loaded once here: a missing or malformed
    file is the caller's mistake (exit 2), not the log's."""
    if args.ca or args.client_cert:
        try:
            ctx = ssl.create_default_context(cafile=args.ca)
            if args.client_cert:
                ctx.load_cert_chain(args.client_cert, args.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise RemoteError(EXIT_USAGE, f"couldn't load TLS files: {exc}") from exc
    return Tls(args.ca, args.client_cert, args.client_key)


def call_raw(args: argparse.Namespace, method: str, path: str, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request to `args.log` + path; returns (status, reply bytes), redirects refused."""
    try:
        log = HttpFetcher(args.log, timeout=TIMEOUT, deadline=DEADLINE, tls=tls_files(args))
        status, raw = log.request(method, path, data, headers or {}, MAX_REPLY)
    except UsageError as exc:
        raise RemoteError(EXIT_USAGE, str(exc)) from exc
    except TransportError as exc:
        raise RemoteError(EXIT_TRANSPORT, str(exc)) from exc
    if 300 <= status < 400:
        # Never followed (HttpFetcher.request): a redirect would carry the submission and its
        # Authorization header to wherever the log points, perhaps another host.
        raise RemoteError(EXIT_TRANSPORT, f"{args.log.rstrip('/') + path} answered {status}, "
                                          "a redirect, which tlog does not follow with "
                                          "credentials; give the log's own URL as --log")
    return status, raw


def call(args: argparse.Namespace, method: str, path: str, body: Any = None,
         bearer: str | None = None) -> tuple[int, Any]:
    """One JSON request to `args.log` + path; returns (status, parsed JSON reply)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    data = json.dumps(body).encode() if body is not None else None
    status, raw = call_raw(args, method, path, data, headers)
    url = args.log.rstrip("/") + path
    try:
        return status, json.loads(raw)
    except ValueError as exc:
        raise RemoteError(EXIT_TRANSPORT, f"{url} answered {status} with non-JSON") from exc


def expect(status: int, reply: Any, ok: tuple[int, ...], what: str) -> dict[str, Any]:
    """The reply object when `status` is one of `ok`, else RemoteError naming the refusal."""
    if status in ok and isinstance(reply, dict):
        return reply
    err = reply.get("error", {}) if isinstance(reply, dict) else {}
    raise RemoteError(EXIT_FAILED, f"{what} refused ({status} {err.get('code')}): "
                                   f"{err.get('message')}")


def read_secret(path: str | None, env: str, what: str) -> str | None:
    """A secret from a file (or the environment variable `env`), never from argv."""
    if path:
        try:
            return keys.read_secret(path, what, owner_only=False)
        except keys.KeyFileError as exc:
            raise RemoteError(EXIT_USAGE, str(exc)) from exc
    return os.environ.get(env) or None
