"""`tlog dev`: a complete local log in one command, with its own PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from .cli import _run_app, run_migrations, write_keypair
from .config import Config, load_signer, parse_listen
from .pgcluster import Cluster

DEV_ORIGIN = "localhost/tlog-dev"
DEV_DATABASE = "tlog"


async def _create_database(cluster: Cluster) -> None:
    conn = await asyncpg.connect(cluster.url("postgres"))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DEV_DATABASE):
            await conn.execute(f'CREATE DATABASE "{DEV_DATABASE}"')
    finally:
        await conn.close()


def _ensure_key(home: Path) -> Path:
    key, vkey = home / "log.key", home / "log.vkey"
    if not key.exists():
        write_keypair(DEV_ORIGIN, key, vkey)
        print(f"created log key {key} and {vkey}")
    return key


def _banner(vkey: str, host: str, port: int, home: Path) -> str:
    url = f"http://{host}:{port}"
    return "\n".join([
        f"tlog dev: serving {url} (state in {home})",
        f"  log key (vkey): {vkey}",
        f"  checkpoint:     curl -s {url}/checkpoint",
        f"  log info:       curl -s {url}/v1/log",
        f"  publish:        tlog keygen --name my-publisher --out {home}/keys && \\",
        f"                  tlog publish --log {url} --log-key {home}/log.vkey \\",
        f"                      --key {home}/keys/my-publisher.key \\",
        "                      --package demo --version 1.0 FILE",
        "  stop:           Ctrl-C (PostgreSQL is stopped cleanly)",
    ])


def run_dev(home: Path, listen: str) -> int:
    """Start (or reuse) the cluster, make keys, migrate, serve; always stop PostgreSQL."""
    from .app import create_app

    home = home.absolute()
    host, port = parse_listen(listen)
    cluster = Cluster(home / "postgres")
    print(f"tlog dev: starting PostgreSQL in {cluster.home} ...", flush=True)
    cluster.ensure_running()
    try:
        asyncio.run(_create_database(cluster))
        url = cluster.url(DEV_DATABASE)
        asyncio.run(run_migrations(url))
        signer = load_signer(_ensure_key(home))
        app = create_app(Config(database_url=url, signer=signer, host=host, port=port))
        banner = _banner(signer.verifier().text(), host, port, home)
        return _run_app(app, host, port, banner)
    finally:
        print("tlog dev: stopping PostgreSQL", flush=True)
        cluster.stop()
