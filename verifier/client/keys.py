"""Reading key and secret files: private keys (log, publisher, witness), verifier keys, witness
policies, tokens and PINs.

One reader for the whole project, so every command words a bad file the same way. Errors
are KeyFileError, a UsageError (the caller's file is wrong: exit 2); tlog wraps it in its
own error types. A secret's file must not be readable by group or others unless the caller
says otherwise (`owner_only=False`, for files that were never checked, such as a
publisher's key given to `tlog publish`).
"""

from __future__ import annotations

import stat
from pathlib import Path

from verifier.errors import UsageError
from verifier.protocol.cosignature import CosignatureSigner, parse_witness_private_key
from verifier.protocol.note import NoteError, Signer, Verifier, parse_private_key, parse_vkey
from verifier.protocol.policy import MAX_POLICY_SIZE, Policy, PolicyError, parse_policy


class KeyFileError(UsageError):
    """A key or secret file is unreadable, malformed, or readable by others."""


def read_secret(path: str | Path, what: str = "key file", *, owner_only: bool = True) -> str:
    """The text of a secret's file, stripped; with `owner_only`, refused if group or
    others may read it (the message says how to fix it)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeyFileError(f"couldn't read {what} {p}: {exc.strerror}") from exc
    if owner_only and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{what} {p} is readable by others (mode "
                           f"{stat.S_IMODE(mode):04o}); run: chmod 600 {p}")
    return text


def read_private_key(path: str | Path, what: str = "key file", *,
                     owner_only: bool = True) -> Signer:
    """A private key (note format: PRIVATE+KEY+name+id+data) from its file (read_secret)."""
    p = Path(path)
    text = read_secret(p, what, owner_only=owner_only)
    try:
        return parse_private_key(text)
    except NoteError as exc:
        raise KeyFileError(f"{what} {p} does not hold a private key "
                           f"(PRIVATE+KEY+name+id+data): {exc}") from exc


def read_vkey(path: str | Path, what: str = "verifier key") -> Verifier:
    """A verifier key (name+id+key) from its file."""
    try:
        return parse_vkey(Path(path).read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise KeyFileError(f"couldn't read {what} {path}: {exc.strerror or exc}") from exc
    except (NoteError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path} is not a verifier key (name+id+key): {exc}") from exc




def read_policy(path: str | Path, what: str = "witness policy") -> Policy:
    """A witness policy (c2sp.org/tlog-policy) from its file."""
    try:
        with Path(path).open("rb") as f:
            data = f.read(MAX_POLICY_SIZE + 1)
    except OSError as exc:
        raise KeyFileError(f"couldn't read {what} {path}: {exc.strerror or exc}") from exc
    try:
        return parse_policy(data)
    except PolicyError as exc:
        raise KeyFileError(f"{what} {path}: {exc}") from exc


def read_witness_key(path: str | Path, what: str = "witness key file") -> CosignatureSigner:
    """A witness's private key (PRIVATE+KEY+name+id+data, type 0x04) from its file, which
    no one but its owner may read (read_secret)."""
    p = Path(path)
    text = read_secret(p, what)
    try:
        return parse_witness_private_key(text)
    except NoteError as exc:
        raise KeyFileError(f"{what} {p} does not hold a witness private key "
                           f"(PRIVATE+KEY+name+id+data of type 0x04): {exc}") from exc
