"""HTTP calls the `tlog` commands make to a log: JSON in, JSON out, optional mTLS."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import urllib.error
import urllib.request
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
MAX_REPLY = 1 << 20
TIMEOUT = 30


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


def ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.ca or args.client_cert):
        return None
    try:
        ctx = ssl.create_default_context(cafile=args.ca)
        if args.client_cert:
            ctx.load_cert_chain(args.client_cert, args.client_key)
    except (OSError, ssl.SSLError) as exc:
        raise RemoteError(EXIT_USAGE, f"couldn't load TLS files: {exc}") from exc
    return ctx


def call(args: argparse.Namespace, method: str, path: str, body: Any = None,
         bearer: str | None = None) -> tuple[int, Any]:
    """One JSON request to `args.log` + path; returns (status, parsed JSON reply)."""
    url = args.log.rstrip("/") + path
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT, context=ssl_context(args)) as resp:
            status, raw = int(resp.status), resp.read(MAX_REPLY)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(MAX_REPLY)
    except (urllib.error.URLError, OSError) as exc:
        raise RemoteError(EXIT_UNREACHABLE, f"couldn't reach the log at {url}: {exc}") from exc
    try:
        return status, json.loads(raw)
    except ValueError as exc:
        raise RemoteError(EXIT_UNREACHABLE, f"{url} answered {status} with non-JSON") from exc


def expect(status: int, reply: Any, ok: tuple[int, ...], what: str) -> dict[str, Any]:
    """The reply object when `status` is one of `ok`, else RemoteError naming the refusal."""
    if status in ok and isinstance(reply, dict):
        return reply
    err = reply.get("error", {}) if isinstance(reply, dict) else {}
    raise RemoteError(EXIT_FAIL, f"{what} refused ({status} {err.get('code')}): "
                                 f"{err.get('message')}")


def read_secret(path: str | None, env: str, what: str) -> str | None:
    """A secret from a file (or the environment variable `env`), never from argv."""
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
        except OSError as exc:
            raise RemoteError(EXIT_USAGE, f"couldn't read {what} {path}: {exc}") from exc
    return os.environ.get(env) or None
