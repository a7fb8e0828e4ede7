"""Who may publish what: the publisher registry as a pure replay of logged entries.

The registry kinds (publisher/v1, keys/v1, revoke/v1: verifier.protocol.entries.
registry_kinds) register publishers, rotate and revoke their keys. Which keys may sign which
packages at index i is the replay of the entries before i (``Registry.apply`` in log order);
the log, monitors and clients all run the same code, so they reach the same answer. Nothing
here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from verifier.protocol.entries.kinds import LogEntry
from verifier.protocol.entries.registry_kinds import (
    KEYS_KIND,
    PUBLISHER_KIND,
    REVOKE_KIND,
    RegistryEntry,
)
from verifier.protocol.entries.release import Release
from verifier.protocol.note import Verifier


def pattern_matches(pattern: str, package: str) -> bool:
    """Whether a package pattern ("com.acme.*" or an exact name) covers `package`."""
    return package.startswith(pattern[:-1]) if pattern.endswith("*") else package == pattern


class Refusal(Exception):
    """An entry the registry does not allow at this point of the log."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Publisher:
    name: str
    patterns: list[str]
    keys: set[str]
    revoked_keys: set[str] = field(default_factory=set)
    revoked: bool = False

    def owns(self, package: str) -> bool:
        return any(pattern_matches(p, package) for p in self.patterns)


@dataclass(frozen=True)
class Change:
    """What a registry entry changed, for monitors: kind is one of publisher_registered,
    ownership_changed, key_added, key_removed, key_revoked, publisher_revoked."""

    index: int
    kind: str
    publisher: str
    detail: str


class Registry:
    """The publisher registry and package counters, replayed entry by entry in log order.

    `enforce` is the log's policy for releases: True ("registered") checks publisher,
    package ownership, key validity and counters; False ("open") accepts any validly signed
    release. Registry entries are always checked against who may sign them.
    """

    def __init__(self, admin_keys: Iterable[Verifier] | None, enforce: bool = True) -> None:
        # None: no admin key is pinned (a monitor that only reports): any signer may act as
        # admin, so registrations are reported but not authenticated.
        self.admins = None if admin_keys is None else {k.text() for k in admin_keys}
        self.enforce = enforce
        self.publishers: dict[str, Publisher] = {}
        self.max_counter: dict[str, int] = {}

    def owners(self, package: str) -> list[str]:
        return sorted(p.name for p in self.publishers.values()
                      if not p.revoked and p.owns(package))

    def release_problem(self, publisher: str, package: str, key: str) -> str | None:
        """Why a registered publisher's release breaks the registry (None if it does not, or
        if the publisher is not registered: an open log accepts those)."""
        p = self.publishers.get(publisher)
        if p is None:
            return None
        if p.revoked:
            return f"publisher {publisher!r} is revoked"
        if not p.owns(package):
            return f"publisher {publisher!r} does not own package {package!r}"
        if key not in p.keys:
            return f"the signing key is not a current key of {publisher!r}"
        return None

    def key_valid(self, publisher: str, key: str) -> bool:
        p = self.publishers.get(publisher)
        return p is not None and not p.revoked and key in p.keys

    # authorization (no state change) ------------------------------------------------------

    def authorize(self, e: LogEntry) -> None:
        """Raise Refusal unless `e` may be appended at the current end of the replay."""
        if isinstance(e, Release):
            self._authorize_release(e)
        elif e.kind == PUBLISHER_KIND:
            self._require_admin(e)
            old = self.publishers.get(e.publisher)
            if old is not None and set(e.entry["keys"]) & old.revoked_keys:
                raise Refusal(409, "key_revoked", "a revoked key cannot be registered again")
        else:
            self._authorize_change(e)

    def _authorize_release(self, r: Release) -> None:
        if not self.enforce:
            return
        p = self.publishers.get(r.publisher)
        if p is None:
            raise Refusal(403, "publisher_not_registered",
                          f"publisher {r.publisher!r} is not registered with this log")
        if p.revoked:
            raise Refusal(403, "publisher_revoked", f"publisher {r.publisher!r} is revoked")
        if not p.owns(r.package):
            raise Refusal(403, "package_not_owned",
                          f"publisher {r.publisher!r} does not own package {r.package!r}")
        if r.key.text() not in p.keys:
            state = "was revoked" if r.key.text() in p.revoked_keys else "is not a current key"
            raise Refusal(403, "key_not_valid",
                          f"the signing key {state} of publisher {r.publisher!r}")
        self._authorize_counter(r)

    def _authorize_counter(self, r: Release) -> None:
        last = self.max_counter.get(r.package)
        if r.counter is None:
            if last is not None:
                raise Refusal(422, "counter_required",
                              f"package {r.package!r} uses release counters; give one > {last}")
        elif last is not None and r.counter <= last:
            raise Refusal(409, "counter_not_increasing",
                          f"counter {r.counter} is not greater than {last}, the highest "
                          f"counter of {r.package!r} so far")

    def _is_admin(self, key: str) -> bool:
        return self.admins is None or key in self.admins

    def _require_admin(self, e: RegistryEntry) -> None:
        if not self._is_admin(e.key.text()):
            raise Refusal(403, "not_authorized", f"{e.kind} must be signed by an admin key")

    def _authorize_change(self, e: RegistryEntry) -> None:
        p = self.publishers.get(e.publisher)
        if p is None or p.revoked:
            raise Refusal(403, "publisher_not_registered",
                          f"publisher {e.publisher!r} is not registered or is revoked")
        signer = e.key.text()
        whole_publisher = e.kind == REVOKE_KIND and "keys" not in e.entry
        if not self._is_admin(signer) and (whole_publisher or signer not in p.keys):
            raise Refusal(403, "not_authorized",
                          f"{e.kind} for {e.publisher!r} must be signed by an admin key"
                          + ("" if whole_publisher else " or a current key of the publisher"))
        self._check_key_lists(e, p)

    def _check_key_lists(self, e: RegistryEntry, p: Publisher) -> None:
        removing = e.entry.get("remove", []) + (e.entry.get("keys", [])
                                                if e.kind == REVOKE_KIND else [])
        unknown = [k for k in removing if k not in p.keys]
        if unknown:
            raise Refusal(409, "unknown_key", f"{len(unknown)} key(s) to remove or revoke are "
                                              f"not current keys of {e.publisher!r}")
        dead = [k for k in e.entry.get("add", []) if k in p.revoked_keys]
        if dead:
            raise Refusal(409, "key_revoked", "a revoked key cannot be added again")

    # replay -------------------------------------------------------------------------------

    def apply(self, index: int, e: LogEntry) -> list[Change]:
        """Authorize `e` at `index` and fold it into the state; return what changed."""
        self.authorize(e)
        if isinstance(e, Release):
            if e.counter is not None:
                self.max_counter[e.package] = max(e.counter, self.max_counter.get(e.package, 0))
            return []
        if e.kind == PUBLISHER_KIND:
            return self._register(index, e)
        if e.kind == KEYS_KIND:
            return self._rotate(index, e)
        return self._revoke(index, e)

    def _register(self, index: int, e: RegistryEntry) -> list[Change]:
        name, patterns, keys = e.publisher, list(e.entry["packages"]), set(e.entry["keys"])
        old = self.publishers.get(name)
        if old is None:
            self.publishers[name] = Publisher(name, patterns, keys)
            return [Change(index, "publisher_registered", name, ", ".join(patterns))]
        changes = []
        if sorted(old.patterns) != sorted(patterns):
            changes.append(Change(index, "ownership_changed", name,
                                  f"{', '.join(old.patterns)} -> {', '.join(patterns)}"))
        changes += [Change(index, "key_added", name, k) for k in sorted(keys - old.keys)]
        changes += [Change(index, "key_removed", name, k) for k in sorted(old.keys - keys)]
        old.patterns, old.keys, old.revoked = patterns, keys, False
        return changes

    def _rotate(self, index: int, e: RegistryEntry) -> list[Change]:
        p = self.publishers[e.publisher]
        add, remove = set(e.entry["add"]), set(e.entry["remove"])
        p.keys = (p.keys | add) - remove
        return ([Change(index, "key_added", p.name, k) for k in sorted(add)]
                + [Change(index, "key_removed", p.name, k) for k in sorted(remove)])

    def _revoke(self, index: int, e: RegistryEntry) -> list[Change]:
        p = self.publishers[e.publisher]
        reason = e.entry["reason"]
        if "keys" not in e.entry:
            p.revoked = True
            return [Change(index, "publisher_revoked", p.name, reason)]
        revoked = set(e.entry["keys"])
        p.keys -= revoked
        p.revoked_keys |= revoked
        return [Change(index, "key_revoked", p.name, f"{k}: {reason}") for k in sorted(revoked)]

    # persistence (monitors keep the replay between runs) -----------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "publishers": {n: {"patterns": p.patterns, "keys": sorted(p.keys),
                               "revoked_keys": sorted(p.revoked_keys), "revoked": p.revoked}
                           for n, p in sorted(self.publishers.items())},
            "max_counter": dict(sorted(self.max_counter.items())),
        }

    def load_json(self, data: Mapping[str, Any]) -> None:
        self.publishers = {
            n: Publisher(n, list(p["patterns"]), set(p["keys"]), set(p["revoked_keys"]),
                         bool(p["revoked"]))
            for n, p in data.get("publishers", {}).items()}
        self.max_counter = {k: int(v) for k, v in data.get("max_counter", {}).items()}
