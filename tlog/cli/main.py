"""The `tlog` command: keygen, migrate, serve, publish, rollout, halt, yank, resume, dev."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from tlog.cli.bench import add_bench_command
from tlog.cli.common import run_app, write_keypair
from tlog.cli.lifecycle import add_lifecycle_commands
from tlog.cli.mirror import add_mirror_command
from tlog.cli.pgcluster import ClusterError
from tlog.cli.proof import LOG_KEY_HELP
from tlog.cli.registry import add_operator_commands
from tlog.cli.releases_from import add_releases_from_command
from tlog.cli.remote import (
    StrictParser,
    add_connection_options,
    add_token_options,
    refuse_secret_option,
)
from tlog.cli.status import add_status_command
from tlog.config import (
    DEFAULT_LISTEN,
    PKCS11_OPTIONS,
    QUOTA_OPTIONS,
    Config,
    ConfigError,
    from_options,
    quotas_from_options,
    read_secret_file,
)
from tlog.store import migrate as migrations
from verifier.errors import EXIT_FAILED, EXIT_OK, EXIT_TRANSPORT, EXIT_USAGE
from verifier.protocol.note import NoteError, Verifier, is_valid_key_name, key_id


def key_files(out: Path, name: str) -> tuple[Path, Path]:
    """Where keygen puts a key: a '/' in the name (an origin) becomes '_' in the file name."""
    stem = name.replace("/", "_")
    return out / f"{stem}.key", out / f"{stem}.vkey"


def cmd_keygen(args: argparse.Namespace) -> int:
    if any(getattr(args, name) for name in PKCS11_OPTIONS):
        return keygen_pkcs11(args)
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


def keygen_pkcs11(args: argparse.Namespace) -> int:
    """Make the key pair in the token; write only NAME.vkey (the private key stays there)."""
    missing = [name for name in PKCS11_OPTIONS if not getattr(args, name)]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        print(f"tlog keygen: PKCS#11 keygen also needs {flags}", file=sys.stderr)
        return EXIT_USAGE
    _, vkey_path = key_files(Path(args.out), args.name)
    if vkey_path.exists():
        print(f"tlog keygen: {vkey_path} exists; refusing to overwrite it", file=sys.stderr)
        return EXIT_USAGE
    try:
        from tlog.log.hsm import HsmError, generate_ed25519_key
    except ImportError as exc:
        print(f"tlog keygen: needs python-pkcs11 (pip install 'tlog[hsm]'): {exc}",
              file=sys.stderr)
        return EXIT_FAILED
    try:
        if not is_valid_key_name(args.name):
            raise NoteError(f"bad key name {args.name!r}")
        pin = read_secret_file(args.pkcs11_pin_file, "PKCS#11 PIN file")
        public_key = generate_ed25519_key(args.pkcs11_module, args.pkcs11_token,
                                          args.pkcs11_key, pin)
    except (ConfigError, NoteError) as exc:
        print(f"tlog keygen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HsmError as exc:
        print(f"tlog keygen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    vkey = Verifier(args.name, key_id(args.name, public_key), public_key).text()
    vkey_path.parent.mkdir(parents=True, exist_ok=True)
    vkey_path.write_text(vkey + "\n", encoding="utf-8")
    print(f"private key: in token {args.pkcs11_token!r}, label {args.pkcs11_key!r}")
    print(f"public key:  {vkey_path} (give it to tlog serve as --key)")
    print(vkey)
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    url = args.database_url or os.environ.get("TLOG_DATABASE_URL")
    if not url:
        print("tlog migrate: give --database-url or set TLOG_DATABASE_URL", file=sys.stderr)
        return EXIT_USAGE
    try:
        applied = asyncio.run(migrations.migrate_database(url))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"tlog migrate: couldn't migrate: {exc}", file=sys.stderr)
        return EXIT_TRANSPORT
    except migrations.SchemaError as exc:
        print(f"tlog migrate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"applied {', '.join(applied)}" if applied else "schema is up to date")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from tlog.http.app import create_app

    access = {name: getattr(args, name) for name in (*ACCESS_OPTIONS, *PKCS11_OPTIONS)}
    try:
        config = from_options(args.database_url, args.key, args.listen, **access)
        ssl_context = server_ssl_context(config)
    except ConfigError as exc:
        print(f"tlog serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    app = create_app(config)
    return run_app(app, config.host, config.port, ssl_context=ssl_context,
                   event_loop=args.event_loop)


def server_ssl_context(config: Config) -> ssl.SSLContext | None:
    """TLS for `tlog serve`; with a client CA, client certificates are verified when sent
    (CERT_OPTIONAL: reads stay public, writes and admin calls demand one)."""
    if config.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.tls.cert, config.tls.key)
        if config.tls.client_ca is not None:
            ctx.load_verify_locations(cafile=str(config.tls.client_ca))
            ctx.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"couldn't load the TLS certificate, key or client CA: {exc}") from exc
    return ctx


def cmd_publish(args: argparse.Namespace) -> int:
    from tlog.cli.publish import publish

    return publish(args)


def cmd_dev(args: argparse.Namespace) -> int:
    from tlog.cli.dev import run_dev
    from tlog.cli.devwitness import DevWitnessError
    from verifier.client.keys import KeyFileError

    try:
        quotas = quotas_from_options({name: getattr(args, name) for name in QUOTA_OPTIONS})
        witness = None if args.no_witness else args.witness_listen
        return run_dev(Path(args.home), args.listen, args.policy, quotas, witness)
    except (ClusterError, ConfigError, DevWitnessError, KeyFileError) as exc:
        print(f"tlog dev: {exc}", file=sys.stderr)
        return EXIT_FAILED


ACCESS_OPTIONS = ("policy", "admin_key", "token_key", "admin_token_file", "tls_cert", "tls_key",
                  "client_ca", "admin_cn", *QUOTA_OPTIONS, "max_page_bytes", "tile_cache",
                  "checkpoint_ttl",
                  "witness_policy", "witness_interval", "witness_timeout", "witness_refresh",
                  "published_file", "allow_behind_published", "read_database_url",
                  "database_pooler")


def add_access_options(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("access control")
    g.add_argument("--policy", choices=["registered", "open"],
                   help="registered (default, or TLOG_POLICY): only registered publishers, "
                        "their current keys and packages, with tokens; open: any signed release")
    g.add_argument("--admin-key", action="append", metavar="VKEY_FILE",
                   help="an admin verifier key allowed to sign registry entries (repeatable)")
    g.add_argument("--token-key", metavar="FILE", help="private key that signs submission tokens")
    g.add_argument("--admin-token-file", metavar="FILE",
                   help="file holding the admin API secret (mode 0600)")
    refuse_secret_option(s, "--admin-token", "--admin-token-file FILE")
    t = s.add_argument_group("TLS")
    t.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    t.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (mode 0600)")
    t.add_argument("--client-ca", metavar="PEM",
                   help="require client certificates from this CA for writes and admin calls")
    t.add_argument("--admin-cn", action="append", metavar="NAME",
                   help="client-certificate common name that acts as admin (default tlog-admin)")
    add_quota_options(s)
    c = s.add_argument_group("caching")
    c.add_argument("--tile-cache", metavar="DIR",
                   help="keep every full tile and entry bundle served in DIR (or "
                        "TLOG_TILE_CACHE), so serving it again needs no database query; "
                        "files from another database, or a restore without their tree, are "
                        "deleted at startup")
    c.add_argument("--checkpoint-ttl", type=float, metavar="SECONDS",
                   help="serve GET /checkpoint and proofs without a tree size from a "
                        "checkpoint read at most this long ago (default 0.25; 0 reads it for "
                        "every request); never older than one this server published")
    b = s.add_argument_group(
        "backup and restore",
        "The log keeps the signed note of the largest checkpoint it published in a file "
        "outside its database, and refuses to serve a database restored from a backup older "
        "than it (docs/BACKUP.md).")
    b.add_argument("--published-file", metavar="PATH",
                   help="that file (or TLOG_PUBLISHED_FILE; default KEYSTEM.published beside "
                        "--key): on persistent storage, never restored with the database")
    b.add_argument("--allow-behind-published", action="store_true",
                   help="serve a database behind the published size for reads only: "
                        "appends are refused (the log never signs a tree that could fork "
                        "the published one) until a database holding it is restored")
    r = s.add_argument_group("scaling reads")
    r.add_argument("--read-database-url", metavar="URL",
                   help="a PostgreSQL streaming-replication standby of --database-url (or "
                        "TLOG_READ_DATABASE_URL): proof, entry, tile, bundle, package-state "
                        "and search reads about sizes it has replayed go to it; the rest, "
                        "and whatever it cannot answer, to the primary")
    r.add_argument("--database-pooler", choices=["none", "pgbouncer"],
                   help="pgbouncer (or TLOG_DATABASE_POOLER): the database URLs lead to "
                        "PgBouncer in transaction mode (no prepared statement cache)")
    w = s.add_argument_group(
        "witnesses",
        "With a witness policy, the log asks the policy's witnesses to cosign its latest "
        "checkpoint and GET /checkpoint serves the latest one the quorum cosigned (appends "
        "never wait for witnesses).")
    w.add_argument("--witness-policy", metavar="FILE",
                   help="a c2sp.org/tlog-policy file (or TLOG_WITNESS_POLICY) whose log line is "
                        "this log's key and whose witness lines carry their URLs")
    w.add_argument("--witness-interval", type=float, metavar="SECONDS",
                   help="seconds between rounds of cosigning requests (2)")
    w.add_argument("--witness-timeout", type=float, metavar="SECONDS",
                   help="seconds a witness has to answer one request (10)")
    w.add_argument("--witness-refresh", type=float, metavar="SECONDS",
                   help="ask a witness again to cosign the same checkpoint once its "
                        "cosignature is this old, so an idle log's witnessed time stays "
                        "within it and clients' --max-age holds; at least "
                        "--witness-interval (60, or the interval when longer)")


def add_quota_options(s: argparse.ArgumentParser, pages: bool = True) -> None:
    """The quotas of `tlog serve`; `tlog dev` takes them too (bulk loading needs more), all
    but the page bound (`pages`)."""
    q = s.add_argument_group("quotas")
    q.add_argument("--publisher-rate", type=float, help="submissions/s per publisher (100)")
    q.add_argument("--publisher-burst", type=int, help="burst per publisher (2000)")
    q.add_argument("--client-rate", type=float, help="write requests/s per client (500)")
    q.add_argument("--client-burst", type=int, help="burst per client (5000)")
    q.add_argument("--max-in-flight", type=int, help="writes processed at once (5000)")
    q.add_argument("--max-in-flight-per-client", type=int,
                   help="one client's writes at once, body reads included (500)")
    q.add_argument("--max-in-flight-bytes", type=int,
                   help="body bytes of the writes processed at once (33554432)")
    q.add_argument("--body-timeout", type=float,
                   help="seconds to receive a write's whole body (10)")
    q.add_argument("--read-rate", type=float,
                   help="read requests/s per client (2000); a page of entries costs one more "
                        "per 64 KiB")
    q.add_argument("--read-burst", type=int, help="read burst per client (20000)")
    if not pages:  # tlog dev serves its pages with the default bound
        return
    q.add_argument("--max-page-bytes", type=int,
                   help="bytes of entries in one page of GET /v1/entries or /v1/registry "
                        "(4194304, at least 1024); the page ends earlier, with next_after")


def add_pkcs11_options(s: argparse.ArgumentParser, keygen: bool = False) -> None:
    what = "make the log key in" if keygen else "sign with the log key in"
    g = s.add_argument_group(
        "hardware key (PKCS#11; needs python-pkcs11: pip install 'tlog[hsm]')",
        f"{what} a PKCS#11 token (an HSM or SoftHSM2) instead of a key file: Ed25519, "
        "CKM_EDDSA. All four options go together. "
        + ("Only NAME.vkey is written; give it to tlog serve as --key." if keygen else
           "--key is then the log's public vkey file (from tlog keygen --pkcs11-...): its "
           "name is the origin, and serve refuses to start unless it holds the token's key."))
    g.add_argument("--pkcs11-module", metavar="PATH",
                   help="the token's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so")
    g.add_argument("--pkcs11-token", metavar="LABEL", help="the token's label")
    g.add_argument("--pkcs11-key", metavar="LABEL",
                   help="label of the Ed25519 key pair (private and public key)")
    g.add_argument("--pkcs11-pin-file", metavar="FILE",
                   help="file holding the token's user PIN (mode 0600)")


def build_parser() -> argparse.ArgumentParser:
    p = StrictParser(
        prog="tlog", description="tlog: an append-only transparency log for software releases")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    k = sub.add_parser("keygen", help="make an Ed25519 key pair (log or publisher key)")
    k.add_argument("--name", required=True,
                   help="key name: the log's origin (e.g. example.com/log) or the publisher")
    k.add_argument("--out", default=".", help="directory for NAME.key and NAME.vkey")
    add_pkcs11_options(k, keygen=True)
    k.set_defaults(func=cmd_keygen)

    m = sub.add_parser("migrate", help="create or upgrade the database schema")
    m.add_argument("--database-url", help="PostgreSQL URL (or TLOG_DATABASE_URL)")
    m.set_defaults(func=cmd_migrate)

    s = sub.add_parser("serve", help="serve the log")
    s.add_argument("--database-url", help="PostgreSQL URL (or TLOG_DATABASE_URL)")
    s.add_argument("--key", help="the log's private key file (or TLOG_KEY); its name is the origin."
                   " With --pkcs11-module: the log's vkey file instead")
    s.add_argument("--listen", help=f"HOST:PORT (or TLOG_LISTEN; default {DEFAULT_LISTEN})")
    s.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop",
                   help="the event loop to serve on (default uvloop; asyncio: the standard "
                        "library's)")
    add_access_options(s)
    add_pkcs11_options(s)
    s.set_defaults(func=cmd_serve)

    pub = sub.add_parser("publish", help="sign a release, log it and save the verified receipt")
    pub.add_argument("--log", required=True, help="the log's base URL")
    pub.add_argument("--key", required=True, help="the publisher's private key file")
    pub.add_argument("--log-key", help=LOG_KEY_HELP)
    pub.add_argument("--package", help="the release's package (not with --batch)")
    pub.add_argument("--version", help="the release's version (not with --batch)")
    pub.add_argument("--counter", type=int, help="release counter; must grow between releases")
    pub.add_argument("--out", help="receipt file (default: FIRST_ARTIFACT.tlog-receipt.json)")
    pub.add_argument("--wait-cosigned", action="store_true",
                     help="wait until a checkpoint cosigned by the --policy quorum covers the "
                          "release, and write the receipt with that checkpoint (what clients "
                          "with --policy require)")
    pub.add_argument("--policy", metavar="FILE",
                     help="witness policy (c2sp.org/tlog-policy) for --wait-cosigned; its log "
                          "line is the log key")
    pub.add_argument("--wait-timeout", default="5m", metavar="DUR",
                     help="how long --wait-cosigned waits (default 5m; like 90s, 15m)")
    add_token_options(pub, "file holding the submission token (registered logs)")
    add_connection_options(pub)
    pub.add_argument("--artifact", action="append", dest="artifact_specs",
                     metavar="NAME:SHA256:SIZE",
                     help="an artifact not on this machine, by name, SHA-256 (64 lowercase hex) "
                          "and size in bytes, instead of FILE arguments (repeatable)")
    b = pub.add_argument_group(
        "bulk publishing",
        "--batch FILE publishes every line of FILE (JSON Lines, one release a line: package, "
        "version, artifacts [{name, sha256, size}] and any of counter, metadata, "
        "install_window, rollout), signed with --key, through POST /v1/entries/batch. Every "
        "line is checked before anything is sent. Each receipt is verified and appended to "
        "--receipts; a rerun skips the lines whose receipt is there.")
    b.add_argument("--batch", metavar="FILE", help="the JSON Lines file of releases")
    b.add_argument("--receipts", metavar="FILE",
                   help="JSON Lines file of receipts (default FILE.receipts.jsonl)")
    b.add_argument("--chunk-size", type=int, metavar="N",
                   help="releases per request and per fsync of the receipts (1-1000, "
                        "default 500)")
    pub.add_argument("artifacts", nargs="*", metavar="ARTIFACT",
                     help="the release's files, hashed here")
    pub.set_defaults(func=cmd_publish)

    add_operator_commands(sub)
    add_lifecycle_commands(sub)
    add_mirror_command(sub)
    add_bench_command(sub)
    add_releases_from_command(sub)
    add_status_command(sub)

    d = sub.add_parser("dev", help="run a local log with its own PostgreSQL (the embedded default)")
    d.add_argument("--home", default=".tlog", help="state directory (default ./.tlog)")
    d.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    d.add_argument("--policy", choices=["open", "registered"], default="open",
                   help="open (default here: any signed release) or registered (admin key, "
                        "token key and admin secret are created under --home)")
    d.add_argument("--no-witness", action="store_true",
                   help="run no demo witness: /checkpoint is then signed by the log alone")
    d.add_argument("--witness-listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="where the demo witness listens (default: a free port on 127.0.0.1)")
    add_quota_options(d, pages=False)
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
