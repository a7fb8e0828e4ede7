"""The monitor's registry alerts (verifier.client.monitor.watch), fed entries in log order:
grants that overlap a watched package, releases the registry does not authorize, and
look-alike publisher names. Pure: no log, no database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support import release_fields
from verifier.client.monitor.watch import Watcher
from verifier.protocol.entries.kinds import validate_log_entry
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.leaves import Checked
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.registry import Registry

NOW = datetime(2026, 11, 24, tzinfo=UTC)
ADMIN, ACME, MALLORY = generate_key("admin"), generate_key("acme-bot"), generate_key("mallory")


def register(name: str, key: Signer, packages: list[str]) -> dict[str, Any]:
    return sign_entry({"kind": "publisher/v1", "publisher": name, "packages": packages,
                       "keys": [key.verifier().text()]}, ADMIN)


def release(key: Signer, package: str = "com.acme.app", version: str = "1.0") -> dict[str, Any]:
    return sign_entry(release_fields(package, version), key)


def feed(w: Watcher, *entries: dict[str, Any]) -> list[list[str]]:
    """The alert codes of each entry, fed after what `w` has seen."""
    codes = []
    for entry in entries:
        validated = validate_log_entry(entry)
        checked = Checked(w.next_index, validated.leaf_hash, validated.entry, None)
        codes.append([e["alert"] for e in w.observe(checked, NOW) if e["type"] == "alert"])
    return codes


def watcher(pinned: bool, globs: tuple[str, ...] = ("com.acme.*",)) -> Watcher:
    return Watcher(globs, registry=Registry([ADMIN.verifier()] if pinned else None,
                                            enforce=False))


@pytest.mark.parametrize("grant", ["com.*", "c*", "com.acme.app", "com.acme.a*"])
def test_broader_grant_to_another_publisher_is_alerted(grant: str) -> None:
    w = watcher(pinned=True)
    assert feed(w, register("acme-bot", ACME, ["com.acme.*"]),
                register("mallory", MALLORY, [grant])) == [["publisher_registered"],
                                                            ["publisher_registered"]]


@pytest.mark.parametrize("glob", ["com.acme.*", "com.acme.app", "com.*.app"])
def test_grant_widened_to_cover_a_watched_package_is_alerted(glob: str) -> None:
    w = watcher(pinned=True, globs=(glob,))
    codes = feed(w, register("mallory", MALLORY, ["org.mallory.*"]),
                 register("mallory", MALLORY, ["org.mallory.*", "co*"]))
    assert codes[1] == ["ownership_changed"]


@pytest.mark.parametrize("grant", ["org.*", "com.acmf*", "com.acme"])
def test_grant_of_other_packages_is_not_alerted(grant: str) -> None:
    assert feed(watcher(pinned=True), register("mallory", MALLORY, [grant])) == [[]]


@pytest.mark.parametrize("pinned", [True, False], ids=["admin-key", "no-admin-key"])
def test_release_of_an_owned_package_by_an_unregistered_publisher_is_alerted(
        pinned: bool) -> None:
    w = watcher(pinned)
    codes = feed(w, register("acme-bot", ACME, ["com.acme.*"]), release(ACME), release(MALLORY))
    assert codes[1] == []
    assert "release_not_authorized" in codes[2], codes


@pytest.mark.parametrize("pinned", [True, False], ids=["admin-key", "no-admin-key"])
def test_release_by_a_publisher_granted_a_broader_pattern_is_seen(pinned: bool) -> None:
    """The grant is alerted when logged; the releases it allows are then the registry's."""
    w = watcher(pinned)
    codes = feed(w, register("acme-bot", ACME, ["com.acme.*"]),
                 register("mallory", MALLORY, ["com.*"]), release(MALLORY))
    assert codes[1] == ["publisher_registered"]


def test_release_of_an_unowned_package_by_an_unregistered_publisher_needs_admin_keys() -> None:
    """The same rule as `tlog-verify release --admin-key`: pinned admin keys make the registry
    authoritative, so an unregistered publisher may release nothing."""
    assert feed(watcher(pinned=False), release(MALLORY)) == [[]]
    assert feed(watcher(pinned=True), release(MALLORY)) == [["release_not_authorized"]]


def test_release_rule_is_the_one_the_client_applies() -> None:
    registry = Registry([ADMIN.verifier()], enforce=False)
    registry.apply(0, validate_log_entry(register("acme-bot", ACME, ["com.acme.*"])))
    key = MALLORY.verifier().text()
    assert "belongs to 'acme-bot'" in str(registry.release_problem("mallory", "com.acme.app",
                                                                   key))
    assert "is not registered" in str(registry.release_problem("mallory", "org.x", key))
    assert registry.release_problem("acme-bot", "com.acme.app", ACME.verifier().text()) is None


# Publisher names are ASCII (the schema refuses others), so mixed scripts cannot be logged;
# lookalike.mixes_scripts is tested on its own.
@pytest.mark.parametrize("name", ["acrne-bot", "Acme-bot", "acme-b0t", "ACME-BOT"])
def test_lookalike_publisher_registration_is_alerted(name: str) -> None:
    w = watcher(pinned=True)
    codes = feed(w, register("acme-bot", ACME, ["com.acme.*"]),
                 register(name, generate_key(name), ["org.lookalike.*"]))
    assert codes[1] == ["publisher_registered", "lookalike_publisher"], codes


def test_distinct_publisher_registration_is_not_called_a_lookalike() -> None:
    w = watcher(pinned=True, globs=())
    codes = feed(w, register("acme-bot", ACME, ["com.acme.*"]),
                 register("acme-builds", generate_key("acme-builds"), ["org.x.*"]))
    assert codes[1] == ["publisher_registered"]
