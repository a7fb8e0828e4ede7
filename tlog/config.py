"""One frozen, validated configuration for `tlog serve`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.client.keys import (
    KeyFileError,
    read_policy,
    read_private_key,
    read_secret,
    read_vkey,
)
from verifier.protocol.note import MAX_SIGNATURES, NoteSigner, Signer, Verifier
from verifier.protocol.policy import Policy

DEFAULT_LISTEN = "127.0.0.1:8080"
POLICIES = ("open", "registered")
MAX_BODY_BYTES = 128 * 1024  # an entry is at most 65,535 bytes once canonical
MAX_BODY_TIMEOUT = 300.0  # seconds; a longer deadline would let stalled bodies pile up
MAX_PAGE_BYTES = 4 * 1024 * 1024  # a page of entries (GET /v1/entries, /v1/registry)
MIN_PAGE_BYTES = 1024
MAX_WITNESS_INTERVAL = 3600.0  # seconds between cosigning rounds, at most
MAX_WITNESS_TIMEOUT = 300.0  # seconds one witness request may take, at most
DEFAULT_WITNESS_REFRESH = 60.0  # seconds; an idle log's witnessed time is about this old
MAX_WITNESS_REFRESH = 86400.0
POOLERS = ("none", "pgbouncer")
PKCS11_OPTIONS = ("pkcs11_module", "pkcs11_token", "pkcs11_key", "pkcs11_pin_file")


class ConfigError(ValueError):
    """The operator's configuration is unusable; the message says how to fix it."""


@dataclass(frozen=True)
class TlsConfig:
    """Serve HTTPS; with a client CA, writes and admin calls need a verified client cert."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    admin_names: tuple[str, ...] = ("tlog-admin",)  # client-cert CNs that act as admin


@dataclass(frozen=True)
class Quotas:
    """Pushback: token buckets per publisher and per client (one for writes, one for reads),
    caps on writes in flight, and a deadline on reading a write's body."""

    publisher_rate: float = 100.0  # submissions per second, sustained
    publisher_burst: int = 2000
    client_rate: float = 500.0
    client_burst: int = 5000
    max_in_flight: int = 5000      # write requests being processed at once (503 beyond)
    # One client's writes at once, body reads included (429 beyond): a tenth of the global
    # cap, so that one address stalling its bodies cannot hold every slot.
    max_in_flight_per_client: int = 500
    # Body bytes of the writes being processed (503 beyond). Each holds its body and the
    # entry parsed from it (measured: about 3x the entry's bytes), so this bounds their
    # memory to a small multiple of it, where 5,000 maximal bodies would hold gigabytes.
    max_in_flight_bytes: int = 32 * 1024 * 1024
    body_timeout: float = 10.0     # seconds to receive a write's whole body (408 beyond)
    # Reads, apart from writes: a request costs 1, a page of entries 1 more per 64 KiB of
    # answer. Generous, as an auditor or a mirror fetches every tile as fast as it can.
    read_rate: float = 2000.0
    read_burst: int = 20000


@dataclass(frozen=True)
class Config:
    """Everything `tlog serve` needs. policy "registered" (the production default) needs
    admin_keys and token_signer; "open" accepts any validly signed release."""

    database_url: str
    signer: NoteSigner
    host: str
    port: int
    policy: str = "registered"
    admin_keys: tuple[Verifier, ...] = ()
    token_signer: Signer | None = None
    admin_secret: str | None = None
    tls: TlsConfig | None = None
    quotas: Quotas = Quotas()
    max_batch: int = 512
    max_wait: float = 0.005
    max_body: int = MAX_BODY_BYTES
    tile_cache: Path | None = None  # where full tiles are kept once served (tlog.store.tilecache)
    checkpoint_ttl: float = 0.25  # how old a checkpoint /checkpoint may serve (tlog.http.recent)
    max_page_bytes: int = MAX_PAGE_BYTES  # entries of one page, as answered
    # With a witness policy, /checkpoint serves only checkpoints its quorum cosigned
    # (tlog.log.witness asks the witnesses every witness_interval seconds, and asks
    # again for a size they cosigned more than witness_refresh seconds ago).
    witness_policy: Policy | None = None
    witness_interval: float = 2.0
    witness_timeout: float = 10.0
    witness_refresh: float = DEFAULT_WITNESS_REFRESH
    # The largest checkpoint the log published, kept outside the database
    # (tlog.log.highwater): a database restored from an older backup is refused. None: not
    # kept (tests that build a Config by hand); `tlog serve` always has one.
    published_file: Path | None = None
    # Serve a database behind published_file for reads only, appends refused (never signs).
    allow_behind_published: bool = False
    # Reads about sizes a streaming-replication standby has replayed go to it
    # (tlog.store.routing); everything else stays on database_url.
    read_database_url: str | None = None
    # "pgbouncer": the URLs lead to PgBouncer in transaction mode, which hands each
    # transaction any server connection, so no prepared statement may outlive one.
    database_pooler: str = "none"

    def __post_init__(self) -> None:
        if self.database_pooler not in POOLERS:
            raise ConfigError(f"--database-pooler must be one of {', '.join(POOLERS)}")
        if self.policy not in POLICIES:
            raise ConfigError(f"--policy must be one of {', '.join(POLICIES)}")
        if self.policy == "registered" and (not self.admin_keys or self.token_signer is None):
            raise ConfigError("policy 'registered' needs --admin-key (the operator's registry "
                              "key) and --token-key (signs submission tokens); "
                              "or run with --policy open")
        if self.max_page_bytes < MIN_PAGE_BYTES:
            raise ConfigError(f"--max-page-bytes must be at least {MIN_PAGE_BYTES}")
        if not 0 < self.witness_interval <= MAX_WITNESS_INTERVAL:
            raise ConfigError(f"--witness-interval must be > 0 and at most "
                              f"{MAX_WITNESS_INTERVAL:.0f} s")
        if not 0 < self.witness_timeout <= MAX_WITNESS_TIMEOUT:
            raise ConfigError(f"--witness-timeout must be > 0 and at most "
                              f"{MAX_WITNESS_TIMEOUT:.0f} s")
        if not self.witness_interval <= self.witness_refresh <= MAX_WITNESS_REFRESH:
            raise ConfigError(f"--witness-refresh must be at least --witness-interval "
                              f"({self.witness_interval:g} s) and at most "
                              f"{MAX_WITNESS_REFRESH:.0f} s")
        if self.witness_policy is not None:
            check_witness_policy(self.witness_policy, self.signer.verifier())

    @property
    def origin(self) -> str:
        return self.signer.name


def pool_options(config: Config) -> dict[str, Any]:
    """asyncpg pool options for the configured pooler. Behind PgBouncer in transaction
    mode a named prepared statement lives on one server connection while the next
    transaction may get another: asyncpg's statement cache must be off (it then sends
    unnamed statements, parsed and run before the transaction ends). The append lock is
    transaction-scoped (pg_advisory_xact_lock) and no session state is used, so
    transaction pooling keeps the single-writer guarantee."""
    return {"statement_cache_size": 0} if config.database_pooler == "pgbouncer" else {}


def quorum_witnesses(policy: Policy, name: str | None = None) -> set[str]:
    """The names of the witnesses the quorum (or the group `name`) is made of."""
    name = policy.quorum if name is None else name
    group = policy.groups.get(name)
    if group is None:
        return {name} if name in policy.witnesses else set()
    return set().union(*(quorum_witnesses(policy, m) for m in group.members))


def check_witness_policy(policy: Policy, log_key: Verifier) -> None:
    """A policy the log can publish under: it names the log's own key, and the log can
    reach every witness its quorum needs. Anything else would never publish a checkpoint
    (or publish one no client of the policy accepts)."""
    if all(log.key != log_key for log in policy.logs):
        listed = ", ".join(log.key.name for log in policy.logs) or "none"
        raise ConfigError(f"the witness policy's log lines do not include this log's key "
                          f"{log_key.text()} (they list: {listed})")
    no_url = sorted(w for w in quorum_witnesses(policy) if not policy.witnesses[w].url)
    if no_url:
        raise ConfigError(f"the witness policy's quorum needs witnesses without a URL to "
                          f"submit to: {', '.join(no_url)} (write: witness NAME VKEY URL)")
    if len(policy.witnesses) >= MAX_SIGNATURES:
        raise ConfigError(f"the witness policy names {len(policy.witnesses)} witnesses; a "
                          f"cosigned note holds at most {MAX_SIGNATURES - 1} cosignatures")


def quorum_rule(policy: Policy) -> str:
    """What makes a cosigned note valid under `policy`, in one canonical text: its witness
    keys, groups and quorum (not URLs, not the file's layout or comments). Published notes
    are stored per rule (tlog.store.cosigned), so a policy change is seen as one."""
    lines = [f"witness {w.name} {w.key.text()}" for _, w in sorted(policy.witnesses.items())]
    lines += [f"group {g.name} {g.threshold} {' '.join(g.members)}"
              for _, g in sorted(policy.groups.items())]
    lines.append(f"quorum {policy.quorum}")
    return "\n".join(lines) + "\n"


def load_witness_policy(path: str | Path) -> Policy:
    """Read and parse a witness policy file (c2sp.org/tlog-policy)."""
    with _as_config_error():
        return read_policy(path)


def _witness_options(access: dict[str, Any]) -> dict[str, Any]:
    """The witness policy (--witness-policy or TLOG_WITNESS_POLICY) and its timings."""
    path = access.get("witness_policy") or os.environ.get("TLOG_WITNESS_POLICY")
    out: dict[str, Any] = {"witness_policy": load_witness_policy(path) if path else None}
    for name in ("witness_interval", "witness_timeout", "witness_refresh"):
        if access.get(name) is not None:
            if not path:
                raise ConfigError(f"--{name.replace('_', '-')} needs --witness-policy")
            out[name] = access[name]
    if "witness_refresh" not in out and "witness_interval" in out:
        # Unsaid, the refresh follows a long interval up rather than refusing it.
        out["witness_refresh"] = max(DEFAULT_WITNESS_REFRESH, out["witness_interval"])
    return out


def parse_listen(text: str, option: str = "--listen", any_port: bool = False
                 ) -> tuple[str, int]:
    """HOST:PORT of `option`; port 0 (a free port) only with `any_port`."""
    host, sep, port = text.rpartition(":")
    low = 0 if any_port else 1
    if not sep or not host or not port.isdigit() or not low <= int(port) < 65536:
        raise ConfigError(f"{option} must be HOST:PORT with a port {low}-65535, not {text!r}")
    return host.strip("[]"), int(port)


@contextmanager
def _as_config_error() -> Iterator[None]:
    """Key-file errors (verifier.client.keys) as ConfigError, with the same message."""
    try:
        yield
    except KeyFileError as exc:
        raise ConfigError(str(exc)) from exc


def read_secret_file(path: str | Path, what: str = "key file") -> str:
    """A secret's text, refusing a file that group or others may read."""
    with _as_config_error():
        return read_secret(path, what)


def load_vkey(path: str | Path) -> Verifier:
    with _as_config_error():
        return read_vkey(path)


def load_signer(path: str | Path) -> Signer:
    """Read a private key (note format), refusing a file that others may read."""
    with _as_config_error():
        return read_private_key(path)


def load_pkcs11_signer(vkey_file: str | Path, module: str, token: str, key_label: str,
                       pin_file: str | Path) -> NoteSigner:
    """The log's signer whose key is in a PKCS#11 token (see tlog.log.hsm).

    ``vkey_file`` holds the log's verifier key: its name is the origin, and its public key
    must be the token's key labelled ``key_label``. The PIN file must not be readable by
    group or others. Every failure (python-pkcs11 missing, module, token, PIN, key, or a
    mismatch with the vkey) raises ConfigError saying which.
    """
    try:
        vkey = load_vkey(vkey_file)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (with --pkcs11-module, --key names the log's public vkey "
                          "file, NAME+KEYID+KEY, not a private key)") from exc
    pin = read_secret_file(pin_file, "PKCS#11 PIN file")
    try:
        from tlog.log.hsm import HsmError, Pkcs11Signer
    except ImportError as exc:
        raise ConfigError(f"--pkcs11-module needs python-pkcs11 (pip install 'tlog[hsm]'): "
                          f"{exc}") from exc
    try:
        signer = Pkcs11Signer(module, token, key_label, pin, vkey.name)
    except HsmError as exc:
        raise ConfigError(str(exc)) from exc
    if signer.verifier() != vkey:
        signer.close()
        raise ConfigError(f"the token's key {key_label!r} is {signer.verifier().text()}, "
                          f"not the log key in {vkey_file} ({vkey.text()})")
    return signer


def _log_signer(key_file: str, access: dict[str, Any]) -> NoteSigner:
    given: dict[str, str] = {name: access.get(name) or "" for name in PKCS11_OPTIONS}
    if not any(given.values()):
        return load_signer(key_file)
    missing = [name for name, value in given.items() if not value]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise ConfigError(f"PKCS#11 signing also needs {flags}")
    return load_pkcs11_signer(key_file, given["pkcs11_module"], given["pkcs11_token"],
                              given["pkcs11_key"], given["pkcs11_pin_file"])


def from_options(database_url: str | None, key: str | None, listen: str | None,
                 **access: Any) -> Config:
    """Build the config from command-line values, falling back to TLOG_* variables.

    `access` holds the optional access-control options of `tlog serve` (policy, admin_key,
    token_key, admin_token_file, tls_cert, tls_key, client_ca, admin_cn) and the PKCS#11
    options (PKCS11_OPTIONS). Without the latter, `key` (or TLOG_KEY) is the log's private
    key file; with them, all four are needed, the log's key stays in the token, and `key`
    is the log's vkey file, which names the log and must hold the token's public key.
    """
    url = database_url or os.environ.get("TLOG_DATABASE_URL")
    key_file = key or os.environ.get("TLOG_KEY")
    if not url:
        raise ConfigError("no database: give --database-url or set TLOG_DATABASE_URL")
    if not key_file and any(access.get(name) for name in PKCS11_OPTIONS):
        raise ConfigError("no log key: with --pkcs11-module give --key VKEY_FILE or set "
                          "TLOG_KEY (make one: tlog keygen --pkcs11-module ...)")
    if not key_file:
        raise ConfigError("no log key: give --key FILE or set TLOG_KEY (make one: tlog keygen)")
    host, port = parse_listen(listen or os.environ.get("TLOG_LISTEN") or DEFAULT_LISTEN)
    return Config(
        database_url=url, signer=_log_signer(key_file, access), host=host, port=port,
        policy=access.get("policy") or os.environ.get("TLOG_POLICY") or "registered",
        admin_keys=tuple(load_vkey(p) for p in access.get("admin_key") or []),
        token_signer=load_signer(access["token_key"]) if access.get("token_key") else None,
        admin_secret=(read_secret_file(access["admin_token_file"], "admin token file")
                      if access.get("admin_token_file") else None),
        tls=_tls(access), quotas=quotas_from_options(access), tile_cache=_tile_cache(access),
        max_page_bytes=_given(access.get("max_page_bytes"), MAX_PAGE_BYTES),
        checkpoint_ttl=_checkpoint_ttl(access.get("checkpoint_ttl")),
        published_file=published_file(key_file, access),
        allow_behind_published=bool(access.get("allow_behind_published")),
        read_database_url=(access.get("read_database_url")
                           or os.environ.get("TLOG_READ_DATABASE_URL") or None),
        database_pooler=(access.get("database_pooler")
                         or os.environ.get("TLOG_DATABASE_POOLER") or "none"),
        **_witness_options(access))


def published_file(key_file: str, access: dict[str, Any]) -> Path:
    """--published-file, TLOG_PUBLISHED_FILE, or KEYSTEM.published beside the log's key
    (or vkey) file: the key is the log's identity and outlives any database, so its
    directory is per-log state the operator keeps (and does not restore with the database)."""
    given = access.get("published_file") or os.environ.get("TLOG_PUBLISHED_FILE")
    if given:
        return Path(given).absolute()
    key = Path(key_file).absolute()
    return key.with_name(key.stem + ".published")


def _checkpoint_ttl(given: float | None) -> float:
    if given is None:
        return Config.checkpoint_ttl
    if not 0 <= given <= 60:
        raise ConfigError("--checkpoint-ttl must be between 0 and 60 seconds")
    return given


def _tile_cache(access: dict[str, Any]) -> Path | None:
    given = access.get("tile_cache") or os.environ.get("TLOG_TILE_CACHE")
    return Path(given) if given else None


QUOTA_OPTIONS = ("publisher_rate", "publisher_burst", "client_rate", "client_burst",
                 "max_in_flight", "max_in_flight_per_client", "max_in_flight_bytes",
                 "body_timeout", "read_rate", "read_burst")


def _given(value: int | None, default: int) -> int:
    """An option's value when given (0 included, for the range check to refuse)."""
    return default if value is None else value


def quotas_from_options(access: dict[str, Any]) -> Quotas:
    """The quotas of the options `access` gives (--publisher-rate ...); defaults for the rest."""
    given = {name: access[name] for name in QUOTA_OPTIONS if access.get(name) is not None}
    quotas = Quotas(**given)
    if min(quotas.publisher_rate, quotas.client_rate, quotas.read_rate) <= 0 or min(
            quotas.publisher_burst, quotas.client_burst, quotas.read_burst, quotas.max_in_flight,
            quotas.max_in_flight_per_client) < 1:
        raise ConfigError("quota rates must be > 0, and bursts, --max-in-flight and "
                          "--max-in-flight-per-client >= 1")
    if quotas.max_in_flight_bytes < MAX_BODY_BYTES:
        raise ConfigError(f"--max-in-flight-bytes must be at least the largest body "
                          f"({MAX_BODY_BYTES})")
    if not 0 < quotas.body_timeout <= MAX_BODY_TIMEOUT:
        raise ConfigError(f"--body-timeout must be > 0 and at most {MAX_BODY_TIMEOUT:.0f} s")
    return quotas


def _tls(access: dict[str, Any]) -> TlsConfig | None:
    cert, key = access.get("tls_cert"), access.get("tls_key")
    if not cert and not key:
        if access.get("client_ca"):
            raise ConfigError("--client-ca needs --tls-cert and --tls-key")
        return None
    if not cert or not key:
        raise ConfigError("give both --tls-cert and --tls-key")
    read_secret_file(key, "TLS key file")  # refuse a private key others can read
    ca = access.get("client_ca")
    names = tuple(access.get("admin_cn") or ["tlog-admin"])
    return TlsConfig(Path(cert), Path(key), Path(ca) if ca else None, names)
