"""A package state proven against a checkpoint, as a receipt carries it (state_proof, and
the receipt's optional "package_state" member), on an in-memory log that ends each append
with a map root (tests.attacks.evil_log.Tree)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.attacks.evil_log import Tree
from tests.support import make_release
from verifier.protocol.cohort import in_rollout
from verifier.protocol.entries.kinds import validate_log_entry
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.lifecycle_state import ALLOWED, HALTED, OUTSIDE_ROLLOUT
from verifier.protocol.note import b64decode_strict, generate_key
from verifier.protocol.receipt import make_receipt, verify_receipt
from verifier.protocol.state_proof import (
    StateEvidence,
    StateProofError,
    decide_release,
    needed_statements,
    parse_state_member,
)
from verifier.protocol.trust import KeyTrust

LOG, ACME = generate_key("log.example.org/test"), generate_key("acme")
PKG, NOW = "com.acme.app", datetime(2026, 6, 1, tzinfo=UTC)
OUTSIDE = next(f"d{i}" for i in range(1000) if not in_rollout(f"d{i}", PKG, "1.0", 10))


def statement(kind: str, **members: Any) -> bytes:
    entry = sign_entry({"kind": kind, "package": PKG, "version": "1.0", **members}, ACME)
    return validate_log_entry(entry).leaf


def receipt_at(tree: Tree) -> dict[str, Any]:
    """The receipt of release 1.0 (entry 0) with the package state, as --write-bundle writes
    it, against the tree's current checkpoint."""
    size = tree.size
    answer = tree.package_state(PKG, size)
    assert answer is not None
    state = answer["state"]
    leaves = {i: tree.leaves[i] for i in needed_statements(state, "1.0")}
    evidence = StateEvidence(state, b64decode_strict(answer["proof"]), tree.leaves[size - 1],
                             tuple(tree.inclusion_proof(size - 1, size)), leaves)
    return make_receipt(validate_log_entry(make_release(ACME, PKG, "1.0")).entry, 0,
                        tree.inclusion_proof(0, size), tree.notes[size], evidence)


@pytest.fixture
def tree() -> Tree:
    t = Tree(LOG)
    t.append_leaves([validate_log_entry(make_release(ACME, PKG, "1.0")).leaf])
    t.append_leaves([statement("rollout/v1", stage="canary", percent=10)])
    t.append_leaves([statement("halt/v1", reason="crash")])
    return t


def decision(receipt: dict[str, Any], device: str | None) -> str:
    verified = verify_receipt(receipt, KeyTrust(LOG.verifier()))
    assert verified.package_state is not None and verified.package_state.state is not None
    return decide_release(verified.package_state.state, verified.release, verified.index,
                          verified.package_state.statements, device, NOW).code


def test_a_halted_release_is_refused_from_its_receipt(tree: Tree) -> None:
    assert decision(receipt_at(tree), OUTSIDE) == HALTED


def test_after_a_resume_the_rollout_before_the_halt_applies_again(tree: Tree) -> None:
    tree.append_leaves([statement("resume/v1")])
    receipt = receipt_at(tree)
    assert sorted(receipt["package_state"]["statements"]) == ["2", "6"]  # rollout, resume
    assert decision(receipt, OUTSIDE) == OUTSIDE_ROLLOUT
    assert decision(receipt, next(f"d{i}" for i in range(1000)
                                  if in_rollout(f"d{i}", PKG, "1.0", 10))) == ALLOWED


def test_a_receipt_whose_state_leaves_the_halt_out_does_not_verify(tree: Tree) -> None:
    receipt = receipt_at(tree)
    receipt["package_state"]["state"]["lifecycle"] = {}
    receipt["package_state"]["statements"] = {}
    with pytest.raises(StateProofError, match="not proven"):
        verify_receipt(receipt, KeyTrust(LOG.verifier()))


def test_a_map_root_leaf_other_than_the_last_is_refused(tree: Tree) -> None:
    receipt = receipt_at(tree)
    older = Tree(LOG)
    older.append_leaves([validate_log_entry(make_release(ACME, PKG, "1.0")).leaf])
    receipt["package_state"]["map_root_leaf"] = receipt_at(older)["package_state"][
        "map_root_leaf"]
    with pytest.raises(StateProofError, match="not proven as entry 5"):
        verify_receipt(receipt, KeyTrust(LOG.verifier()))


def test_a_statement_leaf_swapped_for_another_is_caught(tree: Tree) -> None:
    receipt = receipt_at(tree)
    receipt["package_state"]["statements"]["4"] = receipt["package_state"]["map_root_leaf"]
    with pytest.raises(StateProofError, match="entry 4 does not hash"):
        decision(receipt, OUTSIDE)


@pytest.mark.parametrize("change", ["null", "unknown-member", "extra-statement",
                                    "missing-statement", "bad-base64", "long-proof"])
def test_the_package_state_member_is_parsed_strictly(tree: Tree, change: str) -> None:
    receipt = receipt_at(tree)
    member = receipt["package_state"]
    if change == "null":
        receipt["package_state"] = None
    elif change == "unknown-member":
        member["note"] = "x"
    elif change == "extra-statement":
        member["statements"]["0"] = member["map_root_leaf"]
    elif change == "missing-statement":
        member["statements"] = {}
    elif change == "bad-base64":
        member["proof"] += "!"
    else:
        member["map_root_proof"] = member["map_root_proof"] * 64
    with pytest.raises(StateProofError):
        verify_receipt(copy.deepcopy(receipt), KeyTrust(LOG.verifier()))


def test_the_member_round_trips(tree: Tree) -> None:
    member = receipt_at(tree)["package_state"]
    parsed = parse_state_member(member)
    # The halt, and the rollout before it (named whatever the latest statement is).
    assert parsed.statements.keys() == {2, 4} and parsed.state is not None
