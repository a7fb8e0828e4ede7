"""The publisher registry replay: each test is named after the attack or mistake it stops."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import make_release
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import (
    KINDS,
    parse_log_leaf,
    validate_log_entry,
    validate_registry_entry,
)
from verifier.protocol.entries.registry_kinds import KEYS_KIND, PUBLISHER_KIND, REVOKE_KIND
from verifier.protocol.entries.release import validate_entry
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.registry import (
    REFUSAL_CODES,
    REPLAYED_KINDS,
    Refusal,
    Registry,
    pattern_matches,
    patterns_overlap,
)

ADMIN = generate_key("log-admin")
ACME = generate_key("acme")
ACME2 = generate_key("acme")
EVIL = generate_key("acme")  # named like acme, but never registered
OTHER = generate_key("other")


def registration(publisher: Signer, patterns: list[str], keys: list[Signer],
                 signer: Signer = ADMIN) -> Any:
    return validate_registry_entry(sign_entry(
        {"kind": PUBLISHER_KIND, "publisher": publisher.name, "packages": patterns,
         "keys": [k.verifier().text() for k in keys]}, signer))


def rotation(publisher: str, add: list[Signer], remove: list[Signer], signer: Signer) -> Any:
    return validate_registry_entry(sign_entry(
        {"kind": KEYS_KIND, "publisher": publisher, "add": [k.verifier().text() for k in add],
         "remove": [k.verifier().text() for k in remove]}, signer))


def revocation(publisher: str, keys: list[Signer] | None, signer: Signer) -> Any:
    fields: dict[str, Any] = {"kind": REVOKE_KIND, "publisher": publisher,
                              "reason": "key leaked in CI logs"}
    if keys is not None:
        fields["keys"] = [k.verifier().text() for k in keys]
    return validate_registry_entry(sign_entry(fields, signer))


def release(signer: Signer, package: str, version: str, counter: int | None = None) -> Any:
    return validate_entry(make_release(signer, package, version, counter=counter))


@pytest.fixture
def registry() -> Registry:
    r = Registry([ADMIN.verifier()])
    r.apply(0, registration(ACME, ["com.acme.*", "acme-cli"], [ACME]))
    r.apply(1, registration(OTHER, ["org.other.*"], [OTHER]))
    return r


def refused(registry: Registry, entry: Any, code: str) -> None:
    with pytest.raises(Refusal) as info:
        registry.apply(99, entry)
    assert info.value.code == code
    assert code in REFUSAL_CODES


def test_registered_publisher_may_release_its_own_packages(registry: Registry) -> None:
    assert registry.apply(2, release(ACME, "com.acme.app", "1.0", counter=1)) == []
    registry.apply(3, release(ACME, "acme-cli", "2.0"))
    assert registry.owners("com.acme.app") == ["acme"]


def test_release_for_another_publishers_package_is_refused(registry: Registry) -> None:
    refused(registry, release(ACME, "org.other.lib", "1.0"), "package_not_owned")


def test_release_by_unregistered_publisher_is_refused(registry: Registry) -> None:
    refused(registry, release(generate_key("mallory"), "com.acme.app", "1.0"),
            "publisher_not_registered")


def test_release_signed_by_unregistered_key_with_the_publishers_name_is_refused(
        registry: Registry) -> None:
    refused(registry, release(EVIL, "com.acme.app", "1.0"), "key_not_valid")


def test_removed_key_is_valid_before_its_removal_and_refused_after(registry: Registry) -> None:
    registry.apply(2, rotation("acme", [ACME2], [], ACME))
    registry.apply(3, release(ACME, "com.acme.app", "1.0"))  # accepted before removal
    changes = registry.apply(4, rotation("acme", [], [ACME], ACME2))
    assert [c.kind for c in changes] == ["key_removed"]
    refused(registry, release(ACME, "com.acme.app", "1.1"), "key_not_valid")
    registry.apply(5, release(ACME2, "com.acme.app", "1.1"))


def test_counter_rollback_is_refused(registry: Registry) -> None:
    registry.apply(2, release(ACME, "com.acme.app", "1.0", counter=5))
    refused(registry, release(ACME, "com.acme.app", "0.9", counter=5), "counter_not_increasing")
    refused(registry, release(ACME, "com.acme.app", "0.9", counter=4), "counter_not_increasing")
    refused(registry, release(ACME, "com.acme.app", "0.9"), "counter_required")
    registry.apply(3, release(ACME, "com.acme.app", "1.1", counter=6))


def test_rotation_signed_by_a_key_that_is_not_the_publishers_is_refused(
        registry: Registry) -> None:
    refused(registry, rotation("acme", [EVIL], [], EVIL), "not_authorized")
    refused(registry, rotation("acme", [EVIL], [], OTHER), "not_authorized")


def test_forged_admin_signature_is_rejected() -> None:
    entry = sign_entry(
        {"kind": PUBLISHER_KIND, "publisher": "acme", "packages": ["com.*"],
         "keys": [ACME.verifier().text()]}, ADMIN)
    entry["packages"] = ["org.*"]  # changed after signing
    with pytest.raises(EntryError) as info:
        validate_registry_entry(entry)
    assert info.value.code == "bad_signature"


def test_registration_by_a_non_admin_key_is_refused() -> None:
    r = Registry([ADMIN.verifier()])
    refused(r, registration(ACME, ["com.*"], [ACME], signer=ACME), "not_authorized")


def test_revoked_key_is_dead_forever(registry: Registry) -> None:
    registry.apply(2, rotation("acme", [ACME2], [], ACME))
    changes = registry.apply(3, revocation("acme", [ACME], ACME2))
    assert [c.kind for c in changes] == ["key_revoked"]
    refused(registry, release(ACME, "com.acme.app", "1.0"), "key_not_valid")
    refused(registry, rotation("acme", [ACME], [], ACME2), "key_revoked")
    refused(registry, registration(ACME, ["com.acme.*"], [ACME]), "key_revoked")


def test_publisher_revocation_needs_the_admin(registry: Registry) -> None:
    refused(registry, revocation("acme", None, ACME), "not_authorized")
    assert [c.kind for c in registry.apply(2, revocation("acme", None, ADMIN))] == [
        "publisher_revoked"]
    refused(registry, release(ACME, "com.acme.app", "1.0"), "publisher_revoked")


def test_admin_recovers_a_compromised_publisher(registry: Registry) -> None:
    registry.apply(2, rotation("acme", [ACME2], [ACME], ADMIN))
    registry.apply(3, release(ACME2, "com.acme.app", "1.0"))


def test_ownership_change_is_reported(registry: Registry) -> None:
    changes = registry.apply(2, registration(OTHER, ["org.other.*", "com.acme.app"], [OTHER]))
    assert [c.kind for c in changes] == ["ownership_changed"]
    assert registry.owners("com.acme.app") == ["acme", "other"]


def test_key_named_after_another_publisher_cannot_be_registered() -> None:
    with pytest.raises(EntryError, match="not after the publisher"):
        registration(ACME, ["com.*"], [OTHER])


def test_open_policy_accepts_any_signed_release_but_still_guards_the_registry() -> None:
    r = Registry([ADMIN.verifier()], enforce=False)
    r.apply(0, release(EVIL, "anything", "1"))
    refused(r, registration(ACME, ["com.*"], [ACME], signer=ACME), "not_authorized")


def test_replay_state_survives_a_round_trip(registry: Registry) -> None:
    registry.apply(2, release(ACME, "com.acme.app", "1.0", counter=3))
    copy = Registry([ADMIN.verifier()])
    copy.load_json(registry.to_json())
    assert copy.to_json() == registry.to_json()
    with pytest.raises(Refusal):
        copy.apply(3, release(ACME, "com.acme.app", "1.1", counter=2))


def test_every_kind_parses_back_from_its_leaf() -> None:
    for entry in (registration(ACME, ["com.*"], [ACME]), rotation("acme", [ACME2], [], ACME),
                  revocation("acme", [ACME], ADMIN), release(ACME, "com.x", "1")):
        assert parse_log_leaf(entry.leaf).leaf_hash == entry.leaf_hash
        assert validate_log_entry(entry.entry).leaf == entry.leaf


def test_registry_signature_is_domain_separated_from_releases() -> None:
    """A signature over a registry entry can never pass as a release signature."""
    entry = sign_entry({"kind": KEYS_KIND, "publisher": "acme",
                        "add": [ACME2.verifier().text()], "remove": []}, ACME)
    forged = dict(entry, kind="release/v1")
    with pytest.raises(EntryError):
        validate_log_entry(forged)


def test_the_replay_has_a_step_for_every_kind_of_the_table() -> None:
    assert tuple(KINDS) == REPLAYED_KINDS


def test_an_entry_of_a_kind_the_replay_does_not_know_is_refused(registry: Registry) -> None:
    """No fall-through: a kind without a replay step is refused, and changes nothing."""
    known = rotation("acme", [ACME2], [], ACME)
    unknown = dataclasses.replace(known, signed=dataclasses.replace(known.signed,
                                                                    kind="future/v1"))
    state = registry.to_json()
    for check in (registry.authorize, lambda e: registry.apply(2, e)):
        with pytest.raises(Refusal) as info:
            check(unknown)
        assert (info.value.code, str(info.value)) == (
            "unknown_kind", "future/v1 entries have no place in the registry replay")
    assert registry.to_json() == state


def test_refusals_carry_a_code_and_a_message_but_no_status(registry: Registry) -> None:
    with pytest.raises(Refusal) as info:
        registry.apply(2, release(ACME, "org.other.lib", "1"))
    assert info.value.code == "package_not_owned"
    assert info.value.message == str(info.value)
    assert not hasattr(info.value, "status")


# -- overlapping package patterns ------------------------------------------------------------

ALPHABET = "ab."
small_pattern = st.builds(lambda body, star: body + ("*" if star else ""),
                          st.text(ALPHABET, min_size=1, max_size=3), st.booleans())


def brute_overlap(a: str, b: str) -> bool:
    """Some name over the alphabet, up to one character longer than either pattern, matches
    both: enough, since a prefix pattern matches the prefix itself."""
    longest = max(len(a), len(b)) + 1
    names = ("".join(t) for n in range(1, longest + 1)
             for t in itertools.product(ALPHABET, repeat=n))
    return any(pattern_matches(a, name) and pattern_matches(b, name) for name in names)


@settings(max_examples=400, deadline=None)
@given(small_pattern, small_pattern)
def test_patterns_overlap_agrees_with_brute_force(a: str, b: str) -> None:
    assert patterns_overlap(a, b) == brute_overlap(a, b) == patterns_overlap(b, a)


@pytest.mark.parametrize("grant", ["com.*", "c*", "com.acme.*", "com.acme.app", "com.acme.a*"])
def test_broader_grant_than_the_watched_pattern_overlaps(grant: str) -> None:
    assert patterns_overlap("com.acme.*", grant)


@pytest.mark.parametrize("grant", ["org.*", "com.acmf*", "com.acme", "d*"])
def test_disjoint_grant_does_not_overlap(grant: str) -> None:
    assert not patterns_overlap("com.acme.*", grant)
