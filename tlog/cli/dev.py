"""`tlog dev`: a complete local log in one command, with its own PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import uuid
from dataclasses import replace
from pathlib import Path

from tlog.cli.common import run_app, write_keypair
from tlog.cli.devdemo import write_rollout_script
from tlog.cli.devwitness import ensure_witness_key, running_witness, write_policy
from tlog.cli.pgcluster import Cluster, unreachable_parent
from tlog.config import Config, Quotas, load_signer, load_vkey, parse_listen, read_secret_file
from tlog.store import migrate
from verifier.client.keys import read_policy

DEV_ORIGIN = "localhost/tlog-dev"
DEV_DATABASE = "tlog"
# Where root's dev clusters go when `postgres` cannot reach the dev home (a 0700 /root, a
# fresh mktemp -d): root-owned and searchable, one directory per dev home.
ROOT_CLUSTERS = Path("/var/lib/tlog-dev")
DEMO_PUBLISHER = "my-publisher"
DEMO_PACKAGE = "demo"
DEFAULT_QUOTAS = Quotas()
DEV_WITNESS_INTERVAL = 1.0  # seconds between cosigning rounds: a demo should be quick


def cluster_home(home: Path) -> Path:
    """Where the cluster of the dev home `home` lives: home/postgres, unless root runs
    tlog and the `postgres` user could not reach that; then under ROOT_CLUSTERS. A
    cluster already made in either place stays there."""
    own = home / "postgres"
    if os.geteuid() != 0 or Cluster(own).is_initialised():
        return own
    # A short name derived from the path: the socket path must stay under 108 bytes.
    elsewhere = ROOT_CLUSTERS / uuid.uuid5(uuid.NAMESPACE_URL, home.as_uri()).hex[:16]
    if Cluster(elsewhere).is_initialised() or unreachable_parent(own) is not None:
        ROOT_CLUSTERS.mkdir(mode=0o755, parents=True, exist_ok=True)
        return elsewhere
    return own


def _ensure_key(home: Path, stem: str, name: str, what: str) -> Path:
    key, vkey = home / f"{stem}.key", home / f"{stem}.vkey"
    if not key.exists():
        write_keypair(name, key, vkey)
        print(f"created {what} {key} and {vkey}")
    return key


def _write_private(path: Path, text: str) -> None:
    """`text` in `path`, mode 0600 even when the file was there before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _ensure_admin_token(home: Path) -> Path:
    path = home / "admin-token"
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32) + "\n")
        print(f"created admin API secret {path}")
    return path


def dev_config(home: Path, url: str, host: str, port: int, policy: str,
               quotas: Quotas = DEFAULT_QUOTAS) -> Config:
    """The log key, admin key, token key and admin secret under `home`, made when absent."""
    signer = load_signer(_ensure_key(home, "log", DEV_ORIGIN, "log key"))
    admin = _ensure_key(home, "admin", "tlog-dev-admin", "registry admin key")
    token_key = load_signer(_ensure_key(home, "token", "tlog-dev-tokens", "token key"))
    secret = read_secret_file(_ensure_admin_token(home), "admin token file")
    return Config(database_url=url, signer=signer, host=host, port=port, policy=policy,
                  admin_keys=(load_vkey(admin.with_suffix(".vkey")),), token_signer=token_key,
                  admin_secret=secret, tile_cache=home / "tile-cache", quotas=quotas,
                  # the high-water mark of what it published (tlog.log.highwater)
                  published_file=home / "log.published")


def _publish_recipe(url: str, home: Path, policy: str, witnessed: bool) -> list[str]:
    """Commands that publish FILE to this dev log, as printed (and run by the tests)."""
    q = {name: shlex.quote(str(home / name)) for name in (
        "keys", "log.vkey", "admin.key", "admin-token", "witness-policy")}
    keys = home / "keys"
    key, vkey = (shlex.quote(str(keys / f"{DEMO_PUBLISHER}.{ext}")) for ext in ("key", "vkey"))
    publish = [f"tlog publish --log {url} --log-key {q['log.vkey']} \\", f"    --key {key} \\",
               f"    --package {DEMO_PACKAGE} --version 1.0 FILE"]
    if witnessed:
        publish.insert(1, f"    --wait-cosigned --policy {q['witness-policy']} \\")
    steps = [f"tlog keygen --name {DEMO_PUBLISHER} --out {q['keys']} && \\"]
    if policy == "registered":
        token = shlex.quote(str(keys / f"{DEMO_PUBLISHER}.token"))
        steps += [
            f"tlog registry register --log {url} --log-key {q['log.vkey']} \\",
            f"    --admin-token-file {q['admin-token']} \\",
            f"    --signer {q['admin.key']} --publisher {DEMO_PUBLISHER} \\",
            f"    --package {DEMO_PACKAGE} --publisher-key {vkey} && \\",
            f"(umask 077 && tlog token issue --log {url} --admin-token-file {q['admin-token']} \\",
            f"    --publisher {DEMO_PUBLISHER} --scope {DEMO_PACKAGE} --ttl 1h > {token}) && \\",
        ]
        at = next(i for i, line in enumerate(publish) if line.lstrip().startswith("--key"))
        publish[at] = publish[at].replace(" \\", f" --token-file {token} \\")
    return steps + publish


def _join_recipe(home: Path, policy: str, witnessed: bool) -> str:
    """A second `tlog serve` on this dev log's database (the URL file holds the password)."""
    q = {name: shlex.quote(str(home / name)) for name in (
        "database-url", "log.key", "admin.vkey", "token.key", "admin-token", "witness-policy")}
    access = (f" --admin-key {q['admin.vkey']} --token-key {q['token.key']} "
              f"--admin-token-file {q['admin-token']}" if policy == "registered" else "")
    if witnessed:
        access += f" --witness-policy {q['witness-policy']}"
    return (f"TLOG_DATABASE_URL=\"$(cat {q['database-url']})\" tlog serve --key {q['log.key']} "
            f"--policy {policy}{access} --listen 127.0.0.1:PORT")


def _redacted(url: str, password: str) -> str:
    return url.replace(password, "***") if password else url


def _witness_lines(home: Path, witness_url: str | None) -> list[str]:
    if witness_url is None:
        return ["  witnesses:      none (--no-witness): /checkpoint is signed by the log alone"]
    policy = shlex.quote(str(home / "witness-policy"))
    return [
        f"  witness:        a demo witness at {witness_url}, policy {policy}",
        "                  (it runs here, beside the log, so it protects nothing: point the "
        "log at",
        "                  witnesses others run with tlog serve --witness-policy FILE; see "
        "README, Witnesses)",
        f"  verify:         tlog-verify bundle FILE.tlog-receipt.json --policy {policy} \\",
        "                    --min-age 10s --artifact FILE",
    ]


def _rollout_lines(config: Config, home: Path, url: str, witnessed: bool) -> list[str]:
    """The banner's pointer to the rollout walk-through, written to the home for this run
    (tlog.cli.devdemo). Open policy only: a registered log would need the registration and
    token steps of the publish recipe first."""
    if config.policy != "open":
        return ["  rollout demo:   with the open policy (tlog dev without --policy registered)"]
    script = shlex.quote(str(write_rollout_script(home, url, witnessed)))
    return [f"  rollout demo:   sh {script}",
            "                  (10 % -> 50 % -> halt -> yank with rollback, and what two "
            "devices are told;",
            "                  README, Rollouts, halts and rollback)"]


def _banner(config: Config, home: Path, cluster: Cluster, witness_url: str | None) -> str:
    url = f"http://{config.host}:{config.port}"
    db_file = shlex.quote(str(home / "database-url"))
    recipe = _publish_recipe(url, home, config.policy, witness_url is not None)
    rollout = _rollout_lines(config, home, url, witness_url is not None)
    return "\n".join([
        f"tlog dev: serving {url} (policy {config.policy}; state in {home})",
        f"  log key (vkey): {config.signer.verifier().text()}",
        f"  explorer:       {url}/ (in a browser; README, Explorer)",
        f"  status:         tlog status --log {url}",
        f"  checkpoint:     curl -s {url}/checkpoint",
        f"  log info:       curl -s {url}/v1/log",
        f"  publish:        {recipe[0]}",
        *(f"                  {line}" for line in recipe[1:]),
        *_witness_lines(home, witness_url),
        *rollout,
        f"  database:       {_redacted(config.database_url, cluster.password())}",
        f"                  (PostgreSQL in {cluster.home}; the URL with its password is in "
        f"{db_file})",
        f"  psql:           psql \"$(cat {db_file})\"",
        f"  second server:  {_join_recipe(home, config.policy, witness_url is not None)}",
        "  stop:           Ctrl-C (PostgreSQL is stopped cleanly)",
    ])


def _serve(config: Config, home: Path, cluster: Cluster, witness_listen: str | None) -> int:
    """Serve the dev log, with the demo witness and its policy unless `witness_listen` is
    None (--no-witness)."""
    from tlog.http.app import create_app

    if witness_listen is None:
        return run_app(create_app(config), config.host, config.port,
                       _banner(config, home, cluster, None))
    key, witness_vkey = ensure_witness_key(home)
    host, port = parse_listen(witness_listen, "--witness-listen", any_port=True)
    with running_witness(home, key, home / "log.vkey", host, port) as witness_url:
        policy = write_policy(home, config.signer.verifier().text(), witness_vkey, witness_url)
        config = replace(config, witness_policy=read_policy(policy),
                         witness_interval=DEV_WITNESS_INTERVAL)
        return run_app(create_app(config), config.host, config.port,
                       _banner(config, home, cluster, witness_url))


def run_dev(home: Path, listen: str, policy: str = "open",
            quotas: Quotas = DEFAULT_QUOTAS, witness_listen: str | None = "127.0.0.1:0") -> int:
    """Start (or reuse) the cluster, make keys, migrate, serve; always stop PostgreSQL."""
    home = home.absolute()
    host, port = parse_listen(listen)
    cluster = Cluster(cluster_home(home))
    home.mkdir(parents=True, exist_ok=True)
    print(f"tlog dev: starting PostgreSQL in {cluster.home} ...", flush=True)
    cluster.ensure_running()
    try:
        asyncio.run(migrate.create_database(cluster.url("postgres"), DEV_DATABASE))
        url = cluster.url(DEV_DATABASE)
        asyncio.run(migrate.migrate_database(url))
        _write_private(home / "database-url", url + "\n")
        config = dev_config(home, url, host, port, policy, quotas)
        return _serve(config, home, cluster, witness_listen)
    finally:
        print("tlog dev: stopping PostgreSQL", flush=True)
        cluster.stop()
