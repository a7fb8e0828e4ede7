"""The `tlog` command: keygen, migrate, serve, publish, dev."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from aiohttp import web

from verifier.note import NoteError, generate_key

from . import migrate as migrations
from .config import DEFAULT_LISTEN, ConfigError, from_options
from .pgcluster import ClusterError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def key_files(out: Path, name: str) -> tuple[Path, Path]:
    """Where keygen puts a key: a '/' in the name (an origin) becomes '_' in the file name."""
    stem = name.replace("/", "_")
    return out / f"{stem}.key", out / f"{stem}.vkey"


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


def cmd_keygen(args: argparse.Namespace) -> int:
    key_path, vkey_path = key_files(Path(args.out), args.name)
    if key_path.exists():
        print(f"tlog keygen: {key_path} exists; refusing to overwrite a key", file=sys.stderr)
        return EXIT_USAGE
    try:
        vkey = write_keypair(args.name, key_path, vkey_path)
    except NoteError as exc:
        print(f"tlog keygen: bad key name {args.name!r}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"private key: {key_path} (mode 0600; keep it secret)")
    print(f"public key:  {vkey_path}")
    print(vkey)
    return EXIT_OK


async def run_migrations(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return await migrations.migrate(conn)
    finally:
        await conn.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    url = args.database_url or os.environ.get("TLOG_DATABASE_URL")
    if not url:
        print("tlog migrate: give --database-url or set TLOG_DATABASE_URL", file=sys.stderr)
        return EXIT_USAGE
    try:
        applied = asyncio.run(run_migrations(url))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"tlog migrate: couldn't migrate: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except migrations.SchemaError as exc:
        print(f"tlog migrate: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(f"applied {', '.join(applied)}" if applied else "schema is up to date")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import create_app

    try:
        config = from_options(args.database_url, args.key, args.listen)
    except ConfigError as exc:
        print(f"tlog serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    app = create_app(config)
    return _run_app(app, config.host, config.port)


def _run_app(app: web.Application, host: str, port: int, banner: str | None = None) -> int:
    """Serve until SIGINT/SIGTERM; `banner` is printed once the port is listening."""
    from .app import StartupError

    try:
        web.run_app(app, host=host, port=port, access_log=None,
                    print=lambda s: print(banner or s, flush=True))
    except (StartupError, migrations.SchemaError) as exc:
        print(f"tlog: refusing to serve: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"tlog: couldn't start: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    from .publish import publish

    return publish(args)


def cmd_dev(args: argparse.Namespace) -> int:
    from .dev import run_dev

    try:
        return run_dev(Path(args.home), args.listen)
    except (ClusterError, ConfigError) as exc:
        print(f"tlog dev: {exc}", file=sys.stderr)
        return EXIT_FAIL


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tlog", description="tlog: an append-only transparency log for software releases")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    k = sub.add_parser("keygen", help="make an Ed25519 key pair (log or publisher key)")
    k.add_argument("--name", required=True,
                   help="key name: the log's origin (e.g. example.com/log) or the publisher")
    k.add_argument("--out", default=".", help="directory for NAME.key and NAME.vkey")
    k.set_defaults(func=cmd_keygen)

    m = sub.add_parser("migrate", help="create or upgrade the database schema")
    m.add_argument("--database-url", help="PostgreSQL URL (or TLOG_DATABASE_URL)")
    m.set_defaults(func=cmd_migrate)

    s = sub.add_parser("serve", help="serve the log")
    s.add_argument("--database-url", help="PostgreSQL URL (or TLOG_DATABASE_URL)")
    s.add_argument("--key", help="the log's private key file (or TLOG_KEY); its name is the origin")
    s.add_argument("--listen", help=f"HOST:PORT (or TLOG_LISTEN; default {DEFAULT_LISTEN})")
    s.set_defaults(func=cmd_serve)

    pub = sub.add_parser("publish", help="sign a release, log it and save the verified receipt")
    pub.add_argument("--log", required=True, help="the log's base URL")
    pub.add_argument("--key", required=True, help="the publisher's private key file")
    pub.add_argument("--log-key", help="the log's vkey file to verify the receipt with "
                     "(default: ask the log, which only proves the log is self-consistent)")
    pub.add_argument("--package", required=True)
    pub.add_argument("--version", required=True)
    pub.add_argument("--counter", type=int, help="release counter; must grow between releases")
    pub.add_argument("--out", help="receipt file (default: FIRST_ARTIFACT.tlog-receipt.json)")
    pub.add_argument("artifacts", nargs="+", metavar="ARTIFACT")
    pub.set_defaults(func=cmd_publish)

    d = sub.add_parser("dev", help="run a local log with its own PostgreSQL (the embedded default)")
    d.add_argument("--home", default=".tlog", help="state directory (default ./.tlog)")
    d.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    d.set_defaults(func=cmd_dev)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
