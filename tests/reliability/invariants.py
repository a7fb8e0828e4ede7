"""The log's core promise, checked after a test has done its worst.

Given the database, the running log's URL, the log's key and every submission the load
clients made (with every receipt the log ever returned to them):

- every receipt is still true: the entry at its index has its leaf hash, its checkpoint
  verifies with the log's key and is the one stored for that size, its inclusion proof
  verifies against it, and the log proves that checkpoint consistent with its latest;
- the indices are dense (0..size-1, exactly the latest checkpoint's size), no leaf hash is
  stored twice, and every stored leaf hash is the hash of its stored leaf;
- every answer to one submission (its retries, and resubmissions after the acknowledgment)
  gave the same index;
- every stored checkpoint verifies and its root is that of the stored leaves' prefix of its
  size: each one is consistent with the last;
- `tlog-verify audit --full` passes against the running log.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from tests.reliability.load import Submission
from verifier.protocol.checkpoint import open_checkpoint
from verifier.protocol.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from verifier.protocol.note import Verifier
from verifier.protocol.tiles import TreeBuilder

REPO = Path(__file__).resolve().parents[2]
MAX_PROBLEMS = 20  # enough to see what broke without drowning the failure message


@dataclass
class Report:
    entries: int = 0
    checkpoints: int = 0
    receipts: int = 0
    acknowledged: int = 0
    lost: int = 0  # acknowledged submissions whose index no longer holds their entry
    duplicates: int = 0  # leaf hashes stored twice, and submissions answered two indices
    audit_ok: bool = False
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    @property
    def ok(self) -> bool:
        return not self.problems and self.audit_ok

    def explain(self) -> str:
        return (f"{self.entries} entries, {self.checkpoints} checkpoints, {self.receipts} "
                f"receipts, lost {self.lost}, duplicates {self.duplicates}, audit "
                f"{'OK' if self.audit_ok else 'FAILED'}:\n" + "\n".join(self.problems))


@dataclass(frozen=True)
class Stored:
    leaves: list[tuple[int, bytes, bytes]]  # (idx, leaf, leaf_hash) in index order
    checkpoints: list[tuple[int, bytes, str]]  # (tree_size, root, note) by size


async def _read(database_url: str) -> Stored:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch("SELECT idx, leaf, leaf_hash FROM entries ORDER BY idx")
            cps = await conn.fetch("SELECT tree_size, root, note FROM checkpoints "
                                   "ORDER BY tree_size")
    finally:
        await conn.close()
    return Stored([(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows],
                  [(int(r[0]), bytes(r[1]), str(r[2])) for r in cps])


def check(database_url: str, log_url: str, vkey: Verifier, vkey_file: Path,
          submissions: Sequence[Submission], workdir: Path) -> Report:
    """Every invariant above; a Report whose `ok` says whether the log kept its promise."""
    stored = asyncio.run(_read(database_url))
    report = Report(entries=len(stored.leaves), checkpoints=len(stored.checkpoints))
    roots = _check_tree(stored, vkey, report)
    notes = {size: note for size, _, note in stored.checkpoints}
    hashes = [h for _, _, h in stored.leaves]
    for sub in submissions:
        _check_submission(sub, hashes, notes, vkey, report)
    _check_consistency_proofs(log_url, roots, submissions, report)
    report.audit_ok = audit(log_url, vkey_file, workdir, report)
    return report


def _check_tree(stored: Stored, vkey: Verifier, report: Report) -> dict[int, bytes]:
    """Dense indices, honest leaf hashes, no duplicate; every checkpoint is the root of the
    stored prefix of its size. Returns the root of each stored checkpoint size."""
    for n, (idx, leaf, stored_hash) in enumerate(stored.leaves):
        if idx != n:
            report.problem(f"indices not dense: entry {n} is stored at {idx}")
            break
        if leaf_hash(leaf) != stored_hash:
            report.problem(f"entry {idx}: stored leaf hash is not the hash of its leaf")
    for h, count in Counter(h for _, _, h in stored.leaves).items():
        if count > 1:
            report.duplicates += count - 1
            report.problem(f"leaf hash {h.hex()[:16]} stored {count} times")
    wanted = {size for size, _, _ in stored.checkpoints}
    builder, roots = TreeBuilder(), {}
    if 0 in wanted:
        roots[0] = builder.root()
    for _, _, h in stored.leaves:
        builder.append(h)
        if builder.size in wanted:
            roots[builder.size] = builder.root()
    for size, root, note in stored.checkpoints:
        try:
            cp = open_checkpoint(note, vkey)
        except ValueError as exc:
            report.problem(f"stored checkpoint {size} does not verify: {exc}")
            continue
        if (cp.size, cp.root) != (size, root):
            report.problem(f"stored checkpoint {size}: columns disagree with its note")
        if roots.get(size) != root:
            report.problem(f"stored checkpoint {size} is not the root of the first {size} "
                           "stored entries: not consistent with the latest")
    latest = stored.checkpoints[-1][0] if stored.checkpoints else 0
    if latest != len(stored.leaves):
        report.problem(f"{len(stored.leaves)} entries stored, latest checkpoint has {latest}")
    return roots


def _check_submission(sub: Submission, hashes: list[bytes], notes: dict[int, str],
                      vkey: Verifier, report: Report) -> None:
    for answer in sub.rejected:
        report.problem(f"a submission was refused: {answer}")
    if not sub.receipts:
        return
    report.acknowledged += 1
    if 201 in sub.statuses[1:]:
        report.duplicates += 1
        report.problem("one submission was answered 201 (newly logged) twice")
    indices = {r["index"] for r in sub.receipts}
    if len(indices) > 1:
        report.duplicates += 1
        report.problem(f"one submission was answered with indices {sorted(indices)}")
    broken = False
    for r in sub.receipts:
        report.receipts += 1
        try:
            _check_receipt(r, hashes, notes, vkey)
        except (ValueError, KeyError) as exc:
            broken = True
            report.problem(f"receipt for index {r.get('index')} is no longer true: {exc}")
    report.lost += broken


def _check_receipt(r: dict[str, object], hashes: list[bytes], notes: dict[int, str],
                   vkey: Verifier) -> None:
    index, size, note = r["index"], r["tree_size"], r["checkpoint"]
    assert isinstance(index, int) and isinstance(size, int) and isinstance(note, str)
    leaf = bytes.fromhex(str(r["leaf_hash"]))
    if index >= len(hashes) or hashes[index] != leaf:
        raise ValueError(f"entry {index} is not the receipt's leaf")
    cp = open_checkpoint(note, vkey)
    if cp.size != size or notes.get(size) != note:
        raise ValueError(f"the receipt's checkpoint of size {size} is not the stored one")
    proof = r["inclusion_proof"]
    assert isinstance(proof, list)
    try:
        verify_inclusion(index, size, leaf, [bytes.fromhex(h) for h in proof], cp.root)
    except ProofError as exc:
        raise ValueError(f"inclusion proof fails: {exc}") from exc


def _check_consistency_proofs(log_url: str, roots: dict[int, bytes],
                              submissions: Sequence[Submission], report: Report) -> None:
    """The log proves each receipt's checkpoint consistent with its latest, over HTTP."""
    if not roots:
        return
    latest = max(roots)
    sizes = {r["tree_size"] for s in submissions for r in s.receipts}
    for size in sorted(sizes):
        if not 0 < size < latest or size not in roots:
            continue  # a size missing from `roots` is already a reported problem
        url = f"{log_url}/v1/proof/consistency?first={size}&second={latest}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                hashes = [bytes.fromhex(h) for h in json.load(resp)["hashes"]]
            verify_consistency(size, latest, roots[size], roots[latest], hashes)
        except (OSError, ValueError, KeyError) as exc:
            report.problem(f"no valid consistency proof {size} -> {latest}: {exc}")


def audit(log_url: str, vkey_file: Path, workdir: Path, report: Report) -> bool:
    """`tlog-verify audit --full` against the running log, from a fresh state directory."""
    state = workdir / f"audit-{len(list(workdir.glob('audit-*')))}"
    # TLOG_AUDIT_VERIFIER_PATH: audit with another checkout's verifier (to try a branch).
    env = {**os.environ, "PYTHONPATH": os.environ.get("TLOG_AUDIT_VERIFIER_PATH", str(REPO))}
    run = subprocess.run(
        [sys.executable, "-m", "verifier.cli", "audit", "--log", log_url, "--key",
         str(vkey_file), "--state", str(state), "--full", "--workers", "0"],
        capture_output=True, text=True, env=env, cwd=workdir, timeout=300, check=False)
    if run.returncode != 0:
        report.problem(f"audit --full exit {run.returncode}: "
                       f"{(run.stderr or run.stdout).strip()[-800:]}")
    return run.returncode == 0
