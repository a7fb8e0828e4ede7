"""One frozen, validated configuration for `tlog serve`."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from verifier.note import NoteError, Signer, parse_private_key

DEFAULT_LISTEN = "127.0.0.1:8080"
MAX_BODY_BYTES = 128 * 1024  # an entry is at most 65,535 bytes once canonical


class ConfigError(ValueError):
    """The operator's configuration is unusable; the message says how to fix it."""


@dataclass(frozen=True)
class Config:
    database_url: str
    signer: Signer
    host: str
    port: int
    max_batch: int = 512
    max_wait: float = 0.005
    max_body: int = MAX_BODY_BYTES

    @property
    def origin(self) -> str:
        return self.signer.name


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen must be HOST:PORT with a port 1-65535, not {text!r}")
    return host.strip("[]"), int(port)


def load_signer(path: str | Path) -> Signer:
    """Read the log's private key, refusing a file that others may read."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"couldn't read key file {p}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"key file {p} is readable by others (mode {stat.S_IMODE(mode):04o}); "
                          f"run: chmod 600 {p}")
    try:
        return parse_private_key(text)
    except NoteError as exc:
        raise ConfigError(f"key file {p} does not hold a private key "
                          f"(PRIVATE+KEY+name+id+data): {exc}") from exc


def from_options(database_url: str | None, key: str | None, listen: str | None) -> Config:
    """Build the config from command-line values, falling back to TLOG_* variables."""
    url = database_url or os.environ.get("TLOG_DATABASE_URL")
    key_file = key or os.environ.get("TLOG_KEY")
    if not url:
        raise ConfigError("no database: give --database-url or set TLOG_DATABASE_URL")
    if not key_file:
        raise ConfigError("no log key: give --key FILE or set TLOG_KEY (make one: tlog keygen)")
    host, port = parse_listen(listen or os.environ.get("TLOG_LISTEN") or DEFAULT_LISTEN)
    return Config(database_url=url, signer=load_signer(key_file), host=host, port=port)
