"""Who may publish what: the publisher registry as a pure replay of logged entries.

The registry kinds (publisher/v1, keys/v1, revoke/v1: verifier.protocol.entries.
registry_kinds) register publishers, rotate and revoke their keys. Which keys may sign which
packages at index i is the replay of the entries before i (``Registry.apply`` in log order);
the log, monitors and clients all run the same code, so they reach the same answer.

An entry the registry does not allow at its point of the log raises :class:`Refusal`, whose
``code`` is one of REFUSAL_CODES; what a code means to HTTP clients is the service's
business (tlog.http.errors.STATUS). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from verifier.protocol.entries.kinds import LogEntry
from verifier.protocol.entries.lifecycle import (
    HALT_KIND,
    RESUME_KIND,
    ROLLOUT_KIND,
    YANK_KIND,
    Lifecycle,
)
from verifier.protocol.entries.registry_kinds import (
    KEYS_KIND,
    PUBLISHER_KIND,
    REVOKE_KIND,
    RegistryEntry,
)
from verifier.protocol.entries.release import KIND as RELEASE_KIND
from verifier.protocol.entries.release import Release
from verifier.protocol.note import Verifier

__all__ = ["REFUSAL_CODES", "REPLAYED_KINDS", "Change", "Publisher", "Refusal", "Registry",
           "ReleaseFacts", "pattern_matches", "patterns_overlap"]

PUBLISHER_NOT_REGISTERED = "publisher_not_registered"
PUBLISHER_REVOKED = "publisher_revoked"
PACKAGE_NOT_OWNED = "package_not_owned"
KEY_NOT_VALID = "key_not_valid"
KEY_REVOKED = "key_revoked"
UNKNOWN_KEY = "unknown_key"
NOT_AUTHORIZED = "not_authorized"
COUNTER_REQUIRED = "counter_required"
COUNTER_NOT_INCREASING = "counter_not_increasing"
# An entry of a kind the replay has no step for. Entries are checked into a kind of
# entries.kinds.KINDS first, and the replay has a step for each
# (tests/verifier/protocol/test_registry.py), so only a table changed on one side and not
# the other could make this happen.
UNKNOWN_KIND = "unknown_kind"
# Lifecycle statements (rollout/v1, halt/v1, yank/v1, resume/v1) about a release.
RELEASE_NOT_LOGGED = "release_not_logged"
WRONG_PUBLISHER = "wrong_publisher"
HALT_KEY_ONLY = "halt_key_only"
VERSION_YANKED = "version_yanked"
ROLLBACK_NOT_LOGGED = "rollback_not_logged"
ROLLBACK_YANKED = "rollback_yanked"
KEY_ROLE_CONFLICT = "key_role_conflict"
REFUSAL_CODES = (PUBLISHER_NOT_REGISTERED, PUBLISHER_REVOKED, PACKAGE_NOT_OWNED, KEY_NOT_VALID,
                 KEY_REVOKED, UNKNOWN_KEY, NOT_AUTHORIZED, COUNTER_REQUIRED,
                 COUNTER_NOT_INCREASING, UNKNOWN_KIND, RELEASE_NOT_LOGGED, WRONG_PUBLISHER,
                 HALT_KEY_ONLY, VERSION_YANKED, ROLLBACK_NOT_LOGGED, ROLLBACK_YANKED,
                 KEY_ROLE_CONFLICT)
# keys/v1 with "role": "halt" adds and removes halt-only keys: they may sign halt/v1 and
# yank/v1 statements for the publisher's releases, and nothing else (a monitoring bot that
# can stop a rollout but not publish).
HALT_ROLE = "halt"
HALT_ONLY_KINDS = (HALT_KIND, YANK_KIND)


def pattern_matches(pattern: str, package: str) -> bool:
    """Whether a package pattern ("com.acme.*" or an exact name) covers `package`."""
    return package.startswith(pattern[:-1]) if pattern.endswith("*") else package == pattern


def patterns_overlap(a: str, b: str) -> bool:
    """Whether some package name matches both patterns (each a name or a prefix ending in
    '*'): "com.*" and "c*" both overlap "com.acme.*", though neither reads like it as text."""
    a_prefix, b_prefix = a.endswith("*"), b.endswith("*")
    if a_prefix and b_prefix:
        return a.startswith(b[:-1]) or b.startswith(a[:-1])
    if a_prefix:
        return pattern_matches(a, b)
    if b_prefix:
        return pattern_matches(b, a)
    return a == b


class Refusal(Exception):
    """An entry the registry does not allow at this point of the log: a stable ``code``
    (one of REFUSAL_CODES) and a message for people (str(refusal))."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Publisher:
    name: str
    patterns: list[str]
    keys: set[str]
    revoked_keys: set[str] = field(default_factory=set)
    revoked: bool = False
    halt_keys: set[str] = field(default_factory=set)  # may only halt and yank

    def owns(self, package: str) -> bool:
        return any(pattern_matches(p, package) for p in self.patterns)


@dataclass
class ReleaseFacts:
    """What lifecycle statements about a logged release are checked against."""

    publisher: str
    index: int
    yanked: bool = False


@dataclass(frozen=True)
class Change:
    """What a registry entry changed, for monitors: kind is one of publisher_registered,
    ownership_changed, key_added, key_removed, halt_key_added, halt_key_removed, key_revoked,
    publisher_revoked."""

    index: int
    kind: str
    publisher: str
    detail: str


def _stale_key(p: Publisher, key: str) -> str:
    """Why `key`, not a current key of `p`, may not sign its releases (key_not_valid)."""
    state = "was revoked" if key in p.revoked_keys else "is not a current key"
    return f"the signing key of publisher {p.name!r} {state}"


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
        # Logged releases that lifecycle statements may name, by (package, version). Like
        # max_counter, the log loads the ones a batch needs from its database per batch;
        # releases and yanks applied here are added as the replay goes.
        self.releases: dict[tuple[str, str], ReleaseFacts] = {}

    def owners(self, package: str) -> list[str]:
        if not self.publishers:  # an open log: asked once per release a monitor scans
            return []
        return sorted(p.name for p in self.publishers.values()
                      if not p.revoked and p.owns(package))

    def release_problem(self, publisher: str, package: str, key: str) -> str | None:
        """Why the registry does not authorize this release, or None: the one rule of
        monitors and clients (`tlog-verify release --admin-key`) alike.

        A registered publisher must be live, own the package and sign with a current key. An
        unregistered one may not release a package some publisher owns; with pinned admin
        keys (which make the registry authoritative), it may release nothing at all.
        """
        p = self.publishers.get(publisher)
        if p is None:
            owners = self.owners(package)
            if owners:
                return (f"publisher {publisher!r} is not registered, and package {package!r} "
                        f"belongs to {', '.join(repr(o) for o in owners)}")
            if self.admins is not None:
                return f"publisher {publisher!r} is not registered"
            return None
        if p.revoked:
            return f"publisher {publisher!r} is revoked"
        if not p.owns(package):
            return f"publisher {publisher!r} does not own package {package!r}"
        if key not in p.keys:
            return _stale_key(p, key)
        return None

    # replay -------------------------------------------------------------------------------

    def authorize(self, e: LogEntry) -> None:
        """Raise Refusal unless `e` may be appended at the current end of the replay."""
        _step(e).authorize(self, e)

    def apply(self, index: int, e: LogEntry) -> list[Change]:
        """Authorize `e` at `index` and fold it into the state; return what changed."""
        step = _step(e)
        step.authorize(self, e)
        return step.fold(self, index, e)

    # authorization (no state change) ------------------------------------------------------

    def _authorize_release(self, r: Release) -> None:
        if not self.enforce:
            return
        p = self.publishers.get(r.publisher)
        if p is None:
            raise Refusal(PUBLISHER_NOT_REGISTERED,
                          f"publisher {r.publisher!r} is not registered with this log")
        if p.revoked:
            raise Refusal(PUBLISHER_REVOKED, f"publisher {r.publisher!r} is revoked")
        if not p.owns(r.package):
            raise Refusal(PACKAGE_NOT_OWNED,
                          f"publisher {r.publisher!r} does not own package {r.package!r}")
        if r.key.text() not in p.keys:
            raise Refusal(KEY_NOT_VALID, _stale_key(p, r.key.text()))
        self._authorize_counter(r)

    def _authorize_counter(self, r: Release) -> None:
        last = self.max_counter.get(r.package)
        if r.counter is None:
            if last is not None:
                raise Refusal(COUNTER_REQUIRED,
                              f"package {r.package!r} uses release counters; give one > {last}")
        elif last is not None and r.counter <= last:
            raise Refusal(COUNTER_NOT_INCREASING,
                          f"counter {r.counter} is not greater than {last}, the highest "
                          f"counter of {r.package!r} so far")

    def _authorize_lifecycle(self, e: Lifecycle) -> None:
        """A statement about a release logged earlier, by its publisher, with a key that may
        make it; nothing but another yank after a yank; a logged rollback target."""
        name = f"{e.package} {e.version}"
        facts = self.releases.get((e.package, e.version))
        if facts is None:
            raise Refusal(RELEASE_NOT_LOGGED, f"{e.kind}: no release {name} is logged before it")
        if facts.publisher != e.publisher:
            raise Refusal(WRONG_PUBLISHER, f"{e.kind}: {name} was released by "
                                           f"{facts.publisher!r}, not {e.publisher!r}")
        if self.enforce:
            self._authorize_lifecycle_key(e)
        if facts.yanked and e.kind != YANK_KIND:
            raise Refusal(VERSION_YANKED, f"{e.kind}: {name} is yanked for good")
        target = e.rollback_version
        if target is not None:
            rollback = self.releases.get((e.package, target))
            if rollback is None:
                raise Refusal(ROLLBACK_NOT_LOGGED, f"{e.kind}: rollback_version {target!r} is "
                                                   f"not a logged release of {e.package!r}")
            if rollback.yanked:
                raise Refusal(ROLLBACK_YANKED, f"{e.kind}: rollback_version {target!r} of "
                                               f"{e.package!r} is yanked")

    def _authorize_lifecycle_key(self, e: Lifecycle) -> None:
        p = self.publishers.get(e.publisher)
        if p is None:
            raise Refusal(PUBLISHER_NOT_REGISTERED,
                          f"publisher {e.publisher!r} is not registered with this log")
        if p.revoked:
            raise Refusal(PUBLISHER_REVOKED, f"publisher {e.publisher!r} is revoked")
        if not p.owns(e.package):
            raise Refusal(PACKAGE_NOT_OWNED,
                          f"publisher {e.publisher!r} does not own package {e.package!r}")
        key = e.key.text()
        if key in p.keys:
            return
        if key in p.halt_keys:
            if e.kind in HALT_ONLY_KINDS:
                return
            raise Refusal(HALT_KEY_ONLY, f"a halt-only key of {p.name!r} may sign "
                                         f"{' and '.join(HALT_ONLY_KINDS)}, not {e.kind}")
        raise Refusal(KEY_NOT_VALID, _stale_key(p, key))

    def _authorize_registration(self, e: RegistryEntry) -> None:
        self._require_admin(e)
        old = self.publishers.get(e.publisher)
        if old is not None and set(e.entry["keys"]) & old.revoked_keys:
            raise Refusal(KEY_REVOKED, "a revoked key cannot be registered again")

    def _is_admin(self, key: str) -> bool:
        return self.admins is None or key in self.admins

    def _require_admin(self, e: RegistryEntry) -> None:
        if not self._is_admin(e.key.text()):
            raise Refusal(NOT_AUTHORIZED, f"{e.kind} must be signed by an admin key")

    def _authorize_change(self, e: RegistryEntry) -> None:
        p = self.publishers.get(e.publisher)
        if p is None or p.revoked:
            raise Refusal(PUBLISHER_NOT_REGISTERED,
                          f"publisher {e.publisher!r} is not registered or is revoked")
        signer = e.key.text()
        whole_publisher = e.kind == REVOKE_KIND and "keys" not in e.entry
        if not self._is_admin(signer) and (whole_publisher or signer not in p.keys):
            raise Refusal(NOT_AUTHORIZED,
                          f"{e.kind} for {e.publisher!r} must be signed by an admin key"
                          + ("" if whole_publisher else " or a current key of the publisher"))
        self._check_key_lists(e, p)

    def _check_key_lists(self, e: RegistryEntry, p: Publisher) -> None:
        halt = e.entry.get("role") == HALT_ROLE
        current = p.halt_keys if halt else p.keys
        if e.kind == REVOKE_KIND:
            current = p.keys | p.halt_keys
        removing = e.entry.get("remove", []) + (e.entry.get("keys", [])
                                                if e.kind == REVOKE_KIND else [])
        unknown = [k for k in removing if k not in current]
        if unknown:
            raise Refusal(UNKNOWN_KEY, f"{len(unknown)} key(s) to remove or revoke are "
                                       f"not current keys of {e.publisher!r}")
        dead = [k for k in e.entry.get("add", []) if k in p.revoked_keys]
        if dead:
            raise Refusal(KEY_REVOKED, "a revoked key cannot be added again")
        # One role per key: a halt-only key that is also a publishing key would not be
        # halt-only at all.
        other = p.keys if halt else p.halt_keys
        if any(k in other for k in e.entry.get("add", [])):
            raise Refusal(KEY_ROLE_CONFLICT, "a key cannot be both a publishing key and a "
                                             f"halt-only key of {p.name!r}")

    # state changes (after authorization) --------------------------------------------------

    def _count(self, index: int, r: Release) -> list[Change]:
        if r.counter is not None:
            self.max_counter[r.package] = max(r.counter, self.max_counter.get(r.package, 0))
        self.releases[(r.package, r.version)] = ReleaseFacts(r.publisher, index)
        return []

    def _state(self, index: int, e: Lifecycle) -> list[Change]:
        if e.kind == YANK_KIND:
            self.releases[(e.package, e.version)].yanked = True
        return []

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
        if e.entry.get("role") == HALT_ROLE:
            p.halt_keys = (p.halt_keys | add) - remove
            return ([Change(index, "halt_key_added", p.name, k) for k in sorted(add)]
                    + [Change(index, "halt_key_removed", p.name, k) for k in sorted(remove)])
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
        p.halt_keys -= revoked
        p.revoked_keys |= revoked
        return [Change(index, "key_revoked", p.name, f"{k}: {reason}") for k in sorted(revoked)]

    # persistence (monitors keep the replay between runs) -----------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "publishers": {n: {"patterns": p.patterns, "keys": sorted(p.keys),
                               "revoked_keys": sorted(p.revoked_keys), "revoked": p.revoked,
                               "halt_keys": sorted(p.halt_keys)}
                           for n, p in sorted(self.publishers.items())},
            "max_counter": dict(sorted(self.max_counter.items())),
        }

    def load_json(self, data: Mapping[str, Any]) -> None:
        self.publishers = {
            n: Publisher(n, list(p["patterns"]), set(p["keys"]), set(p["revoked_keys"]),
                         bool(p["revoked"]), set(p.get("halt_keys", [])))
            for n, p in data.get("publishers", {}).items()}
        self.max_counter = {k: int(v) for k, v in data.get("max_counter", {}).items()}


@dataclass(frozen=True)
class _Step:
    """What the replay does with an entry of one kind: check it may come next, then fold it
    into the state. Each takes the entry class of its kind (entries.kinds.KINDS)."""

    authorize: Callable[[Registry, Any], None]
    fold: Callable[[Registry, int, Any], list[Change]]


_STEPS: Mapping[str, _Step] = {
    RELEASE_KIND: _Step(Registry._authorize_release, Registry._count),
    PUBLISHER_KIND: _Step(Registry._authorize_registration, Registry._register),
    KEYS_KIND: _Step(Registry._authorize_change, Registry._rotate),
    REVOKE_KIND: _Step(Registry._authorize_change, Registry._revoke),
    ROLLOUT_KIND: _Step(Registry._authorize_lifecycle, Registry._state),
    HALT_KIND: _Step(Registry._authorize_lifecycle, Registry._state),
    YANK_KIND: _Step(Registry._authorize_lifecycle, Registry._state),
    RESUME_KIND: _Step(Registry._authorize_lifecycle, Registry._state),
}
REPLAYED_KINDS = tuple(_STEPS)


def _step(e: LogEntry) -> _Step:
    """The replay step of `e`'s kind; an unknown kind is refused, never guessed at."""
    step = _STEPS.get(e.kind)
    if step is None:
        raise Refusal(UNKNOWN_KIND, f"{e.kind} entries have no place in the registry replay")
    return step
