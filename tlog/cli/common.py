"""What several `tlog` commands share: making a key pair, serving an app until a signal.

Kept apart from tlog.cli.main so that `tlog dev` (tlog.cli.dev) and the command table in
main both use them without importing each other.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from pathlib import Path

import asyncpg
from aiohttp import web

from tlog.store import migrate
from verifier.errors import EXIT_FAILED, EXIT_OK, EXIT_TRANSPORT
from verifier.protocol.note import generate_key


def write_keypair(name: str, key_path: Path, vkey_path: Path) -> str:
    """Create a new Ed25519 key pair; never overwrite an existing private key."""
    signer = generate_key(name)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(signer.text() + "\n")
    vkey = signer.verifier().text()
    vkey_path.write_text(vkey + "\n", encoding="utf-8")
    return vkey


def run_app(app: web.Application, host: str, port: int, banner: str | None = None,
            ssl_context: ssl.SSLContext | None = None, event_loop: str = "uvloop") -> int:
    """Serve until SIGINT/SIGTERM; `banner` is printed once the port is listening.

    The exit status: EXIT_OK after a signal, EXIT_FAILED when the stored log fails its
    startup check or its schema is not this tlog's, EXIT_TRANSPORT when the port or the
    database cannot be reached.
    """
    from tlog.log.startup import StartupError

    try:
        web.run_app(app, host=host, port=port, access_log=None, ssl_context=ssl_context,
                    print=lambda s: print(banner or s, flush=True), loop=new_loop(event_loop))
    except (StartupError, migrate.SchemaError) as exc:
        print(f"tlog: refusing to serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"tlog: couldn't start: {exc}{_pooler_hint(exc)}", file=sys.stderr)
        return EXIT_TRANSPORT
    return EXIT_OK


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """The event loop to serve on: uvloop's (libuv, in C: the same handlers cost the loop
    less per request) unless "asyncio" asks for the standard library's."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _pooler_hint(exc: BaseException) -> str:
    """What to do when prepared statements break: the URL leads to a transaction pooler."""
    if isinstance(exc, (asyncpg.DuplicatePreparedStatementError,
                        asyncpg.InvalidSQLStatementNameError)):
        return ("\ntlog: is the database behind PgBouncer in transaction mode? "
                "Run with --database-pooler pgbouncer")
    return ""
