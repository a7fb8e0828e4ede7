"""What a client decides from a version's lifecycle statements (lifecycle_state.decide), and
the registry replay's rules for them (verifier/protocol/registry.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support import make_release
from verifier.protocol.cohort import in_rollout
from verifier.protocol.entries.kinds import validate_log_entry
from verifier.protocol.entries.lifecycle import HALT_KIND, RESUME_KIND, ROLLOUT_KIND, YANK_KIND
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.lifecycle_state import (
    ALLOWED,
    HALTED,
    NEEDS_DEVICE_ID,
    NOT_STARTED,
    OUTSIDE_ROLLOUT,
    YANKED,
    Decision,
    latest_statements,
)
from verifier.protocol.lifecycle_state import decide as decide_latest
from verifier.protocol.note import generate_key
from verifier.protocol.registry import Refusal, Registry

ACME = generate_key("acme")
MALLORY = generate_key("mallory")
PKG = "com.acme.app"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
# Pinned by test_cohort: device-2 is in from 6 %, device-1 only from 96 % (for version 1.2.0).
INSIDE, OUTSIDE = "device-2", "device-1"


def stmt(kind: str, version: str = "1.2.0", signer: Any = ACME, **members: Any) -> Any:
    fields: dict[str, Any] = {"kind": kind, "package": PKG, "version": version, **members}
    if kind in (HALT_KIND, YANK_KIND):
        fields.setdefault("reason", "crash on start")
    return validate_log_entry(sign_entry(fields, signer))


def rollout(percent: int, **members: Any) -> Any:
    return stmt(ROLLOUT_KIND, stage=f"p{percent}", percent=percent, **members)


def log(*entries: Any) -> list[tuple[int, Any]]:
    release = validate_log_entry(make_release(ACME, PKG, "1.2.0"))
    return list(enumerate([release, *entries]))


def decide(entries: list[tuple[int, Any]], package: str, version: str, device: str | None,
           now: datetime) -> Decision:
    """A decision from a list of entries, as a proven state would give its two statements."""
    return decide_latest(package, version, *latest_statements(entries, package, version),
                         device, now)


def test_a_release_without_statements_is_allowed() -> None:
    assert decide(log(), PKG, "1.2.0", None, NOW).code == ALLOWED


def test_a_halted_version_is_refused_with_its_reason() -> None:
    d = decide(log(rollout(50), stmt(HALT_KIND, rollback_version="1.1.0")), PKG, "1.2.0",
               INSIDE, NOW)
    assert (d.code, d.rollback_version, d.statement_index) == (HALTED, "1.1.0", 2)
    assert "'crash on start'" in d.message and "roll back to 1.1.0" in d.message


def test_a_yanked_version_is_refused_naming_its_rollback_target() -> None:
    d = decide(log(rollout(100), stmt(YANK_KIND, rollback_version="1.1.0")), PKG, "1.2.0",
               INSIDE, NOW)
    assert (d.code, d.rollback_version) == (YANKED, "1.1.0")
    assert "roll back to 1.1.0" in d.message


def test_a_yank_outweighs_whatever_a_log_lists_after_it() -> None:
    """The log refuses statements after a yank; a client shown one anyway stays refused."""
    d = decide(log(stmt(YANK_KIND), rollout(100), stmt(RESUME_KIND)), PKG, "1.2.0", INSIDE, NOW)
    assert d.code == YANKED


def test_a_device_outside_the_cohort_is_refused_and_stays_outside_across_retries() -> None:
    entries = log(rollout(10))
    for _ in range(3):
        d = decide(entries, PKG, "1.2.0", OUTSIDE, NOW)
        assert d.code == OUTSIDE_ROLLOUT and "10%" in d.message


def test_a_device_inside_10_percent_stays_inside_at_50_percent() -> None:
    assert decide(log(rollout(10)), PKG, "1.2.0", INSIDE, NOW).code == ALLOWED
    assert decide(log(rollout(10), rollout(50)), PKG, "1.2.0", INSIDE, NOW).code == ALLOWED
    assert decide(log(rollout(10), rollout(50)), PKG, "1.2.0", OUTSIDE, NOW).code \
        == OUTSIDE_ROLLOUT


def test_a_rollout_start_in_the_future_is_refused() -> None:
    d = decide(log(rollout(100, start_time="2026-06-02T00:00:00Z")), PKG, "1.2.0", INSIDE, NOW)
    assert d.code == NOT_STARTED and "2026-06-02T00:00:00Z" in d.message
    started = decide(log(rollout(100, start_time="2026-06-01T00:00:00Z")), PKG, "1.2.0", None,
                     NOW)
    assert started.code == ALLOWED


def test_a_partial_rollout_without_a_device_id_is_refused_asking_for_one() -> None:
    d = decide(log(rollout(50)), PKG, "1.2.0", None, NOW)
    assert d.code == NEEDS_DEVICE_ID and "--device-id" in d.message
    assert decide(log(rollout(100)), PKG, "1.2.0", None, NOW).code == ALLOWED


def test_resume_brings_back_the_latest_rollout_and_statements_of_other_versions_do_not_count(
        ) -> None:
    entries = log(rollout(10), stmt(HALT_KIND), stmt(RESUME_KIND), stmt(HALT_KIND, "1.3.0"))
    assert decide(entries, PKG, "1.2.0", INSIDE, NOW).code == ALLOWED
    assert decide(entries, PKG, "1.2.0", OUTSIDE, NOW).code == OUTSIDE_ROLLOUT
    assert decide(log(stmt(HALT_KIND), stmt(RESUME_KIND)), PKG, "1.2.0", None, NOW).code \
        == ALLOWED


# -- the replay's rules (what the log applies at submission) -------------------------------------


def registry(enforce: bool = False) -> Registry:
    return Registry(None, enforce=enforce)


def test_a_statement_after_its_release_in_the_same_replay_is_accepted() -> None:
    """A release earlier in the same batch counts as logged: the replay folds it in."""
    r = registry()
    with pytest.raises(Refusal) as refused:
        r.apply(0, rollout(10))
    assert refused.value.code == "release_not_logged"
    r.apply(0, validate_log_entry(make_release(ACME, PKG, "1.2.0")))
    r.apply(1, rollout(10))
    r.apply(2, stmt(YANK_KIND))
    with pytest.raises(Refusal) as after_yank:
        r.apply(3, stmt(RESUME_KIND))
    assert after_yank.value.code == "version_yanked"


def test_a_statement_signed_by_another_publisher_is_refused_by_the_replay() -> None:
    r = registry()
    r.apply(0, validate_log_entry(make_release(ACME, PKG, "1.2.0")))
    with pytest.raises(Refusal) as refused:
        r.apply(1, stmt(HALT_KIND, signer=MALLORY))
    assert refused.value.code == "wrong_publisher"


def test_halt_keys_survive_the_monitors_persistence() -> None:
    r = Registry(None, enforce=True)
    admin = generate_key("admin")
    bot = generate_key("acme")
    r.apply(0, validate_log_entry(sign_entry(
        {"kind": "publisher/v1", "publisher": "acme", "packages": ["com.acme.*"],
         "keys": [ACME.verifier().text()]}, admin)))
    changes = r.apply(1, validate_log_entry(sign_entry(
        {"kind": "keys/v1", "publisher": "acme", "add": [bot.verifier().text()], "remove": [],
         "role": "halt"}, ACME)))
    assert [c.kind for c in changes] == ["halt_key_added"]
    again = Registry(None, enforce=True)
    again.load_json(r.to_json())
    assert again.publishers["acme"].halt_keys == {bot.verifier().text()}
    assert again.publishers["acme"].keys == {ACME.verifier().text()}
    assert in_rollout(INSIDE, PKG, "1.2.0", 10) and not in_rollout(OUTSIDE, PKG, "1.2.0", 50)
