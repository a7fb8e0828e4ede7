"""Monitors that halt: `--halt-key KEY --halt-on RULE...` turns chosen alerts into halt/v1.

When an alert of a chosen rule fires for a release of a watched package (the alert's entry is
a release, or for invalid_entry an entry whose package and version can be read), the monitor
records a halt *intent* for that (package, version) in its state, in the same transaction as
the alert (db.MonitorDB.save), then signs a halt/v1 with the halt key, submits it and checks
the log's answer (run.Monitor._run_halts). `external:FILE` is an outside signal: every
``package version reason`` line of FILE whose release the monitor has seen logged becomes an
intent. A (package, version) gets at most one intent, ever (the halts table's key), so the
monitor halts it once across rounds and restarts.

Crash safety: the intent (with its reason text) is durable before anything is submitted, so
a crash after submitting and before recording the answer submits again on the next run. That
resubmission is harmless: Ed25519 signatures are deterministic and the reason is stored, so
the entry is byte for byte the same and the log answers with the entry it already holds
(200, same index) instead of logging a second halt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.client.http import HttpFetcher
from verifier.client.monitor.summary import Event, Seen
from verifier.client.monitor.watch import (
    COUNTER_NOT_GROWING,
    INVALID_ENTRY,
    NEW_PUBLISHER_KEY,
    RELEASE_NOT_AUTHORIZED,
    SECOND_ARTIFACT_SET,
    VERSION_NOT_GROWING,
    PackageState,
)
from verifier.client.submit import check_logged, submit_entry
from verifier.errors import UsageError
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import validate_log_entry
from verifier.protocol.entries.lifecycle import HALT_KIND
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer
from verifier.protocol.policy import PolicyTrust
from verifier.protocol.trust import KeyTrust, LogTrust

RULES = (NEW_PUBLISHER_KEY, VERSION_NOT_GROWING, COUNTER_NOT_GROWING, SECOND_ARTIFACT_SET,
         INVALID_ENTRY, RELEASE_NOT_AUTHORIZED)
EXTERNAL = "external:"
MAX_REASON = 1000  # halt/v1's reason: 1-1000 characters
MAX_EXTERNAL_BYTES = 1 << 20  # an external signal file
HALT = "halt"  # the "type" of a halt event
# Alert members that say what was seen, kept in the reason as its evidence summary.
_EVIDENCE = ("index", "leaf_hash", "key", "counter", "previous_counter", "previous_version",
             "previous_index", "scheme")


@dataclass(frozen=True)
class Intent:
    """A halt the monitor has decided to submit."""

    package: str
    version: str
    reason: str

    @property
    def name(self) -> str:
        return f"{self.package} {self.version}"


@dataclass(frozen=True)
class HaltConfig:
    """--halt-key, --halt-on and where to submit."""

    signer: Signer
    rules: frozenset[str]
    external: tuple[Path, ...]
    log: HttpFetcher
    token: str | None


def parse_rules(values: list[str]) -> tuple[frozenset[str], tuple[Path, ...]]:
    """--halt-on values -> (alert codes, external signal files); UsageError for others."""
    rules: set[str] = set()
    files: list[Path] = []
    for value in values:
        if value.startswith(EXTERNAL) and len(value) > len(EXTERNAL):
            files.append(Path(value[len(EXTERNAL):]))
        elif value in RULES:
            rules.add(value)
        else:
            raise UsageError(f"--halt-on {value!r}: not one of {', '.join(RULES)} or "
                             f"{EXTERNAL}FILE")
    return frozenset(rules), tuple(files)


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def reason_for(event: Event) -> str:
    """The alert's code, message and evidence, bounded to halt/v1's 1000 characters."""
    facts = ", ".join(f"{k}={event[k]}" for k in _EVIDENCE if event.get(k) is not None)
    return _bounded(f"tlog-verify monitor: {event['alert']}: {event['message']} ({facts})")


def intents(events: list[str | Event], seen: list[Seen], rules: frozenset[str]) -> list[Intent]:
    """The halts the alerts among `events` call for: only for a logged release, or an invalid
    entry whose package and version can be read."""
    by_index = {s.entry_index: s for s in seen}
    found: dict[str, Intent] = {}
    for e in events:
        if isinstance(e, str) or e.get("alert") not in rules:
            continue
        s = by_index.get(e.get("index", -1))
        name = None if s is None else _names(s, e["alert"] == INVALID_ENTRY)
        if name is None:
            continue
        intent = Intent(*name, reason_for(e))
        found.setdefault(intent.name, intent)  # the version's first alert names the reason
    return list(found.values())


def _names(s: Seen, invalid: bool) -> tuple[str, str] | None:
    """(package, version) of a valid release; of an invalid entry, when its JSON names them."""
    if not invalid:
        ok = s.kind == "release/v1" and s.error is None and s.package and s.version
        return (s.package, s.version) if ok else None
    try:
        entry = json.loads(s.leaf or b"")
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    package, version = entry.get("package"), entry.get("version")
    if isinstance(package, str) and isinstance(version, str) and package and version:
        return package, version
    return None


def read_external(path: Path) -> list[Intent]:
    """The `package version reason` lines of an external signal file (blank lines and lines
    starting with # skipped); UsageError when unreadable or malformed."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_EXTERNAL_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--halt-on {EXTERNAL}{path}: {exc}") from exc
    if len(data) > MAX_EXTERNAL_BYTES:
        raise UsageError(f"--halt-on {EXTERNAL}{path}: larger than {MAX_EXTERNAL_BYTES} bytes")
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise UsageError(f"{path}:{n}: expected 'package version reason'")
        found.append(Intent(parts[0], parts[1], _bounded(f"external signal: {parts[2]}")))
    return found


def publisher_of(pkg: PackageState | None) -> str | None:
    """The name of the first key that released the package: its publisher."""
    if pkg is None or not pkg.keys:
        return None
    first = min(pkg.keys, key=lambda k: pkg.keys[k])
    return first.split("+", 1)[0]


def check_publisher(config: HaltConfig, intent: Intent, pkg: PackageState | None) -> None:
    """UsageError when the halt key is not the package's publisher's: the log would refuse
    every halt it signs."""
    publisher = publisher_of(pkg)
    if publisher is not None and publisher != config.signer.name:
        raise UsageError(f"--halt-key is a key of {config.signer.name!r}, but {intent.package} "
                         f"is published by {publisher!r}: a halt must be signed by the "
                         "publisher (a current or halt-only key)")


def submit_halt(config: HaltConfig, trust: LogTrust, intent: Intent) -> dict[str, Any]:
    """Sign, submit and check one halt; the halt event's members (without type and seq).

    {"status": "logged", "index": i} when the log holds it (201, or 200 for a resubmission
    it already had), {"status": "refused", "refusal": {...}} when the log refuses it (4xx:
    not retried). TransportError (retry later) and LogMisbehaviour propagate."""
    fields = {"kind": HALT_KIND, "package": intent.package, "version": intent.version,
              "reason": intent.reason}
    base: dict[str, Any] = {"package": intent.package, "version": intent.version,
                            "reason": intent.reason}
    entry = sign_entry(fields, config.signer)
    try:
        checked = validate_log_entry(entry)
    except EntryError as exc:  # an invalid entry's package or version the schema refuses
        return {**base, "status": "refused",
                "refusal": {"status": None, "code": exc.code, "message": str(exc)}}
    answer = submit_entry(config.log, entry, config.token)
    if answer.status not in (200, 201):
        return {**base, "status": "refused", "refusal": answer.refusal}
    # Under a policy, a submission's answer carries the log's freshly integrated checkpoint,
    # not yet cosigned: the log's signature on it is what commits the log to the halt (the
    # monitor's later rounds see the halt in witnessed checkpoints like any entry).
    if isinstance(trust, PolicyTrust):
        trust = KeyTrust(trust.log)
    checkpoint = check_logged(checked.leaf_hash, answer.body, trust)
    return {**base, "status": "logged", "index": int(answer.body["index"]),
            "tree_size": checkpoint.size}


def encode_result(result: dict[str, Any]) -> str:
    return json.dumps(result, sort_keys=True)
