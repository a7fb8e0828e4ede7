"""`tlog dev`: a complete local log in one command, with its own PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from tlog.cli.common import run_app, write_keypair
from tlog.cli.pgcluster import Cluster
from tlog.config import Config, load_signer, load_vkey, parse_listen, read_secret_file
from tlog.store import migrate

DEV_ORIGIN = "localhost/tlog-dev"
DEV_DATABASE = "tlog"


def _ensure_key(home: Path, stem: str, name: str, what: str) -> Path:
    key, vkey = home / f"{stem}.key", home / f"{stem}.vkey"
    if not key.exists():
        write_keypair(name, key, vkey)
        print(f"created {what} {key} and {vkey}")
    return key


def _ensure_admin_token(home: Path) -> Path:
    path = home / "admin-token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        print(f"created admin API secret {path}")
    return path


def dev_config(home: Path, url: str, host: str, port: int, policy: str) -> Config:
    """The log key, admin key, token key and admin secret under `home`, made when absent."""
    signer = load_signer(_ensure_key(home, "log", DEV_ORIGIN, "log key"))
    admin = _ensure_key(home, "admin", "tlog-dev-admin", "registry admin key")
    token_key = load_signer(_ensure_key(home, "token", "tlog-dev-tokens", "token key"))
    secret = read_secret_file(_ensure_admin_token(home), "admin token file")
    return Config(database_url=url, signer=signer, host=host, port=port, policy=policy,
                  admin_keys=(load_vkey(admin.with_suffix(".vkey")),), token_signer=token_key,
                  admin_secret=secret, tile_cache=home / "tile-cache")


def _banner(vkey: str, host: str, port: int, home: Path, policy: str) -> str:
    url = f"http://{host}:{port}"
    return "\n".join([
        f"tlog dev: serving {url} (policy {policy}; state in {home})",
        f"  log key (vkey): {vkey}",
        f"  checkpoint:     curl -s {url}/checkpoint",
        f"  log info:       curl -s {url}/v1/log",
        f"  publish:        tlog keygen --name my-publisher --out {home}/keys && \\",
        f"                  tlog publish --log {url} --log-key {home}/log.vkey \\",
        f"                      --key {home}/keys/my-publisher.key \\",
        "                      --package demo --version 1.0 FILE",
        "  stop:           Ctrl-C (PostgreSQL is stopped cleanly)",
    ])


def run_dev(home: Path, listen: str, policy: str = "open") -> int:
    """Start (or reuse) the cluster, make keys, migrate, serve; always stop PostgreSQL."""
    from tlog.http.app import create_app

    home = home.absolute()
    host, port = parse_listen(listen)
    cluster = Cluster(home / "postgres")
    print(f"tlog dev: starting PostgreSQL in {cluster.home} ...", flush=True)
    cluster.ensure_running()
    try:
        asyncio.run(migrate.create_database(cluster.url("postgres"), DEV_DATABASE))
        url = cluster.url(DEV_DATABASE)
        asyncio.run(migrate.migrate_database(url))
        config = dev_config(home, url, host, port, policy)
        app = create_app(config)
        banner = _banner(config.signer.verifier().text(), host, port, home, policy)
        return run_app(app, host, port, banner)
    finally:
        print("tlog dev: stopping PostgreSQL", flush=True)
        cluster.stop()
