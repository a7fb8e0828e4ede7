"""`tlog-verify audit`: each test names the attack the audit stops.

Most run the real service (`tlog serve` on a real PostgreSQL database) and play a dishonest
operator by editing the database; a few use an in-memory log for what the service would not
store (a full level-1 tile needs 65,536 entries) or for exact control of a stopped run.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.audit_support import LiveLog, MemoryLog, releases, with_map_roots, write_log
from tests.support import free_port, make_release
from verifier.cli import main as cli
from verifier.cli.progress import ProgressLine
from verifier.client.audit.full import FullAuditResult, full_audit
from verifier.client.audit.incremental import audit
from verifier.client.audit.progress import PROGRESS_FILE
from verifier.client.log import LogClient
from verifier.client.statedir import StateDir
from verifier.errors import LogMisbehaviour, TransportError
from verifier.protocol.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verifier.protocol.merkle import leaf_hash, verify_inclusion
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.receipt import parse_tlog_proof
from verifier.protocol.state import Trusted
from verifier.protocol.trust import KeyTrust

CaptureFixture = pytest.CaptureFixture[str]


@pytest.fixture
def open_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers started by this test take any valid release (no publisher registration)."""
    monkeypatch.setenv("TLOG_POLICY", "open")


@pytest.fixture(scope="module")
def history() -> list[bytes]:
    """1100 leaves, signed once for the whole module: valid releases in three batches, each
    ending with its map-root entry (indices 299, 999, 1099), as the log writes them."""
    return with_map_roots(releases(generate_key("history-bot"), 1097, tag="h"), [299, 699, 99])


@pytest.fixture
def serve(open_log: None, database_url: str, log_signer: Signer,
          tmp_path: Path) -> Iterator[Callable[[Sequence[bytes]], LiveLog]]:
    """Start `tlog serve` on this test's database holding a log of the given leaves."""
    started: list[LiveLog] = []

    def start(leaves: Sequence[bytes]) -> LiveLog:
        write_log(database_url, log_signer, leaves)
        started.append(LiveLog(database_url, log_signer, tmp_path).start())
        return started[-1]

    yield start
    for log in started:
        log.stop()


@pytest.fixture
def live(serve: Callable[[Sequence[bytes]], LiveLog], history: list[bytes]) -> LiveLog:
    """A running log of 300 entries: one full bundle and tile, and partial ones."""
    return serve(history[:300])


def run_audit(capsys: CaptureFixture, log: LiveLog, state: Path,
              *extra: str) -> tuple[int, str, str]:
    """`tlog-verify audit` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main(["audit", "--log", log.url, "--key", str(log.vkey_file),
                     "--state", str(state), "--retries", "0", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def evidence_dirs(state: Path) -> list[Path]:
    root = state / "evidence"
    return sorted(root.iterdir()) if root.exists() else []


def stored_size(state: Path, log: LiveLog) -> int:
    return open_checkpoint((state / "checkpoint").read_text(), log.signer.verifier()).size


def rebuild(log: LiveLog, publisher: Signer, size: int) -> None:
    """The operator wipes the log and starts over under the same key with other entries:
    a tree of `size` leaves, one batch ending with its map-root entry."""
    log.stop()
    # A lying operator also throws away the log's own record of what it published, which
    # would otherwise refuse the wiped database (tlog.log.highwater): clients must catch it.
    (log.workdir / "log.published").unlink()
    log.sql("TRUNCATE entries, tiles, checkpoints, cosignatures, published, witness_state, "
            "map_nodes")
    write_log(log.database_url, log.signer,
              with_map_roots(releases(publisher, size - 1, tag="rebuilt"), [size - 1]))
    log.start()


# -- the incremental audit -------------------------------------------------------------------


def test_first_audit_trusts_then_later_audit_proves_consistency(
        live: LiveLog, publisher: Signer, tmp_path: Path, capsys: CaptureFixture) -> None:
    state = tmp_path / "state"
    code, out, _ = run_audit(capsys, live, state)
    assert code == 0 and "size 300" in out and "trusted on first use" in out
    assert stored_size(state, live) == 300
    size = live.append(publisher, "b", 40)  # 40 entries and a map root per batch
    assert size > 340
    code, out, _ = run_audit(capsys, live, state)
    assert code == 0 and f"size {size}" in out and "consistent with the stored size 300" in out
    assert stored_size(state, live) == size
    assert evidence_dirs(state) == []


def test_log_rebuilt_with_different_entries_under_same_key_is_caught(
        live: LiveLog, publisher: Signer, tmp_path: Path, capsys: CaptureFixture) -> None:
    state = tmp_path / "state"
    assert run_audit(capsys, live, state)[0] == 0
    old_note = (state / "checkpoint").read_text()
    rebuild(live, publisher, 320)
    code, _, err = run_audit(capsys, live, state)
    assert code == 1
    assert "inconsistent: size 320 does not extend size 300" in err and "evidence saved" in err
    [evidence] = evidence_dirs(state)
    key = live.signer.verifier()
    assert open_checkpoint((evidence / "old-checkpoint").read_text(), key).size == 300
    assert open_checkpoint((evidence / "new-checkpoint").read_text(), key).size == 320
    assert (evidence / "consistency-proof").read_text().startswith("consistency 300 320\n")
    assert (state / "checkpoint").read_text() == old_note  # fail closed: nothing replaced
    # A new auditor who pins the old checkpoint with --trust catches the rewrite too.
    trust = tmp_path / "pinned-checkpoint"
    trust.write_text(old_note)
    code, _, err = run_audit(capsys, live, tmp_path / "new-state", "--trust", str(trust))
    assert code == 1 and "does not extend size 300" in err
    assert len(evidence_dirs(tmp_path / "new-state")) == 1


def test_rolled_back_log_is_caught(live: LiveLog, publisher: Signer, tmp_path: Path,
                                   capsys: CaptureFixture) -> None:
    state = tmp_path / "state"
    assert run_audit(capsys, live, state)[0] == 0
    rebuild(live, publisher, 200)
    code, _, err = run_audit(capsys, live, state)
    assert code == 1 and "rollback: the log now shows size 200, it already showed 300" in err
    [evidence] = evidence_dirs(state)
    key = live.signer.verifier()
    assert open_checkpoint((evidence / "old-checkpoint").read_text(), key).size == 300
    assert open_checkpoint((evidence / "new-checkpoint").read_text(), key).size == 200
    assert stored_size(state, live) == 300


def test_forked_log_at_same_size_is_caught(live: LiveLog, publisher: Signer, tmp_path: Path,
                                           capsys: CaptureFixture) -> None:
    state = tmp_path / "state"
    assert run_audit(capsys, live, state)[0] == 0
    rebuild(live, publisher, 300)
    code, _, err = run_audit(capsys, live, state)
    assert code == 1 and "fork: two different roots signed for size 300" in err
    [evidence] = evidence_dirs(state)
    key = live.signer.verifier()
    old = open_checkpoint((evidence / "old-checkpoint").read_text(), key)
    new = open_checkpoint((evidence / "new-checkpoint").read_text(), key)
    assert old.size == new.size == 300 and old.root != new.root


def test_trust_checkpoint_signed_by_another_key_is_refused_as_usage_error(
        live: LiveLog, tmp_path: Path, capsys: CaptureFixture) -> None:
    other = generate_key(live.signer.name)  # same name, different key: an impostor's note
    trust = tmp_path / "trust"
    trust.write_text(sign_checkpoint(Checkpoint(other.name, 0, b"\0" * 32), other))
    code, out, err = run_audit(capsys, live, tmp_path / "state", "--trust", str(trust))
    assert code == 2 and out == ""
    assert "is not a checkpoint signed by the pinned log key" in err
    assert not (tmp_path / "state" / "checkpoint").exists()


def test_unreachable_log_exits_3(log_signer: Signer, tmp_path: Path,
                                 capsys: CaptureFixture) -> None:
    vkey = tmp_path / "log.vkey"
    vkey.write_text(log_signer.verifier().text() + "\n")
    code = cli.main(["audit", "--log", f"http://127.0.0.1:{free_port()}", "--key", str(vkey),
                     "--state", str(tmp_path / "state"), "--retries", "0", "--full"])
    assert code == 3 and "couldn't fetch" in capsys.readouterr().err


# -- the full audit on the real service --------------------------------------------------------


def test_full_audit_checks_every_entry_then_only_new_ones(
        live: LiveLog, publisher: Signer, tmp_path: Path, capsys: CaptureFixture) -> None:
    state = tmp_path / "state"
    code, out, err = run_audit(capsys, live, state, "--full")
    assert code == 0, err
    assert "OK audited 0..300 of log.example.org/test: entries 0..300 validated" in out
    assert "3 tiles and the root match" in out  # tile/0/000, edge 0/001.p/44 and 1/000.p/1
    assert err == ""  # not a terminal: the summary line only
    size = live.append(publisher, "b", 100)  # and the server's map roots: they must check
    code, out, err = run_audit(capsys, live, state, "--full", "--workers", "0")
    assert code == 0, err
    assert f"OK audited 0..{size}: " not in out and f"entries 300..{size} validated" in out
    assert "(0..300 by earlier runs)" in out
    code, out, _ = run_audit(capsys, live, state, "--full")
    assert code == 0 and f"no new entries since the full audit of 0..{size}" in out


@pytest.mark.parametrize("rewrite", ["leaf", "leaf and leaf_hash"])
def test_rewritten_entry_in_database_is_caught_by_full_audit(
        rewrite: str, live: LiveLog, publisher: Signer, tmp_path: Path,
        capsys: CaptureFixture) -> None:
    forged = releases(publisher, 1, tag="forged")[0]  # validly signed, just not what was logged
    if rewrite == "leaf":
        live.sql("UPDATE entries SET leaf = $1 WHERE idx = 100", forged)
    else:
        live.sql("UPDATE entries SET leaf = $1, leaf_hash = sha256('\\x00'::bytea || $1) "
                 "WHERE idx = 100", forged)
    state = tmp_path / "state"
    code, _, err = run_audit(capsys, live, state, "--full")
    assert code == 1
    assert "entry 100: its leaf hash is not hash 100 of the log's tile/0/000" in err
    [evidence] = evidence_dirs(state)
    assert (evidence / "entry-100").read_bytes() == forged
    assert (evidence / "log-tile-0-0").stat().st_size == 8192
    open_checkpoint((evidence / "checkpoint").read_text(), live.signer.verifier())


@pytest.mark.parametrize(("level", "slot", "message"), [
    (0, 7, "entry 7: its leaf hash is not hash 7 of the log's tile/0/000"),
    (1, 0, "the log's tile/1/000.p/1 differs from the tree recomputed from its entries at "
           "hash 0 (entries 0..255)"),
])
def test_rewritten_tile_in_database_is_caught_by_full_audit(
        level: int, slot: int, message: str, live: LiveLog, tmp_path: Path,
        capsys: CaptureFixture) -> None:
    """A full level-0 tile, and the level-1 tile at the right edge (300 entries)."""
    live.sql("UPDATE tiles SET data = set_byte(data, $2, get_byte(data, $2) # 1) "
             "WHERE level = $1 AND idx = 0", level, 32 * slot + 5)
    if level == 0:
        live.restart()  # the server caches full tiles in memory; serve the rewritten one
    state = tmp_path / "state"
    code, _, err = run_audit(capsys, live, state, "--full")
    assert code == 1 and message in err, err
    [evidence] = evidence_dirs(state)
    assert (evidence / f"log-tile-{level}-0").read_bytes() != (
        evidence / f"computed-tile-{level}-0").read_bytes()


def test_invalid_entry_accepted_by_log_is_reported(
        serve: Callable[[Sequence[bytes]], LiveLog], history: list[bytes], publisher: Signer,
        tmp_path: Path, capsys: CaptureFixture, log_signer: Signer) -> None:
    """An operator (or a bug) logged an entry whose publisher signature does not verify."""
    leaves = history[:300]
    bad = make_release(publisher, "evil", "6.6.6")
    bad["version"] = "6.6.7"  # after signing: the signature no longer covers the entry
    leaves[123] = json.dumps(bad, sort_keys=True, separators=(",", ":")).encode()
    code, _, err = run_audit(capsys, serve(leaves), tmp_path / "state", "--full")
    assert code == 1
    assert ("the log's signed tree of size 300 includes entries that are not valid: "
            "entry 123: bad_signature: signature: does not verify") in err
    [evidence] = evidence_dirs(tmp_path / "state")
    assert (evidence / "entry-123").read_bytes() == leaves[123]
    proof = parse_tlog_proof((evidence / "entry-123.tlog-proof").read_text())
    checkpoint = open_checkpoint(proof.checkpoint, log_signer.verifier())
    assert (proof.index, checkpoint.size) == (123, 300)
    verify_inclusion(123, 300, leaf_hash(leaves[123]), proof.hashes, checkpoint.root)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_full_audit_resumes_where_it_stopped(
        serve: Callable[[Sequence[bytes]], LiveLog], history: list[bytes], tmp_path: Path,
        capsys: CaptureFixture, monkeypatch: pytest.MonkeyPatch, workers: str) -> None:
    """The connection drops at the last bundle (in this process, or in a worker process
    whose error must reach this one); the next run checks only what is left."""
    live = serve(history)  # 1100 entries: bundles 0..3 full, 4 partial
    state = tmp_path / "state"
    real = LogClient.entry_bundle

    def failing(self: LogClient, n: int, size: int) -> list[bytes]:
        if n == 4:
            raise TransportError("connection reset (injected)")
        return real(self, n, size)

    monkeypatch.setattr(LogClient, "entry_bundle", failing)
    code, _, err = run_audit(capsys, live, state, "--full", "--workers", workers)
    assert code == 3 and "injected" in err
    saved = json.loads((state / PROGRESS_FILE).read_text())
    stopped = saved["next"]
    assert saved["size"] == 1100 and stopped % 256 == 0 and 0 < stopped < 1100
    monkeypatch.setattr(LogClient, "entry_bundle", real)
    code, out, _ = run_audit(capsys, live, state, "--full")
    assert code == 0
    assert f"OK audited 0..1100 of {live.signer.name}: entries {stopped}..1100 validated" in out
    assert f"(0..{stopped} by earlier runs)" in out


# -- the full audit, in memory -----------------------------------------------------------------


@pytest.fixture
def log_key() -> Signer:
    return generate_key("memory.example/log")


def current(log: LogClient, key: Signer) -> Trusted:
    """The log's checkpoint, verified, without a state directory."""
    return Trusted(*log.checkpoint(KeyTrust(key.verifier())))


def test_full_audit_resumes_against_a_larger_checkpoint_covering_each_entry_once(
        log_key: Signer, history: list[bytes], tmp_path: Path) -> None:
    small, big = MemoryLog(log_key, history[:1000]), MemoryLog(log_key, history)
    seen: list[tuple[int, int]] = []

    class Stop(Exception):
        pass

    def stop_after_two_bundles(done: int, total: int) -> None:
        seen.append((done, total))
        if done >= 512:
            raise Stop

    with StateDir(tmp_path) as state:
        trusted = audit(small, KeyTrust(log_key.verifier()), state)
        with pytest.raises(Stop):
            full_audit(small, trusted, state, workers=2, progress=stop_after_two_bundles)
        trusted = audit(big, KeyTrust(log_key.verifier()), state)
        result = full_audit(big, trusted, state, workers=0,
                            progress=lambda done, total: seen.append((done, total)))
    assert result.start == 512 and result.size == 1100 and result.entries == 588
    first_run = [d for d, t in seen if t == 1000]
    second_run = [d for d, t in seen if t == 588]
    assert max(first_run) == 512 and second_run == [256, 512, 588]
    # Bundles of the second run start at 512: nothing before it is checked again.
    assert not any(p.startswith("tile/entries/000") or p == "tile/entries/001"
                   for p in big.fetched)


def test_rewritten_full_level1_tile_is_caught(log_key: Signer, tmp_path: Path) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(256 * 256 + 300)]
    log = MemoryLog(log_key, leaves)
    tile = bytearray(log.tiles[(1, 0)])
    tile[5 * 32] ^= 1
    log.tiles[(1, 0)] = bytes(tile)
    with StateDir(tmp_path) as state:
        trusted = audit(log, KeyTrust(log_key.verifier()), state)
        with pytest.raises(LogMisbehaviour, match=r"the log's tile/1/000 differs from the tree "
                           r"recomputed from its entries at hash 5 \(entries 1280..1535\)"):
            full_audit(log, trusted, state, validate=False)


def test_full_audit_of_an_honest_log_with_full_level1_tiles(log_key: Signer) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(256 * 256 + 300)]
    log = MemoryLog(log_key, leaves)
    result = full_audit(log, current(log, log_key), None, workers=2, validate=False)
    # 257 level-0 tiles, tile/1/000, then edge tiles 0/257.p/44, 1/001.p/1 and 2/000.p/1
    assert (result.entries, result.tiles) == (len(leaves), 257 + 1 + 3)


def test_bundle_entry_that_is_not_in_the_tree_is_caught(log_key: Signer, publisher: Signer,
                                                       tmp_path: Path) -> None:
    log = MemoryLog(log_key, releases(publisher, 300))
    log.leaves[290] = b"{}"
    with StateDir(tmp_path) as state:
        trusted = audit(log, KeyTrust(log_key.verifier()), state)
        with pytest.raises(LogMisbehaviour, match="the log serves, outside its tree of size 300, "
                           "entries that are not valid: entry 290: "):
            full_audit(log, trusted, state, workers=0)


def test_checkpoint_root_that_entries_do_not_hash_to_is_caught(
        log_key: Signer, tmp_path: Path) -> None:
    log = MemoryLog(log_key, [b"a", b"b", b"c"])
    log.note = sign_checkpoint(Checkpoint(log_key.name, 3, b"\x01" * 32), log_key)
    log.tiles = {(0, 0): log.tiles[(0, 0)]}
    with StateDir(tmp_path) as state:
        trusted = audit(log, KeyTrust(log_key.verifier()), state)
        with pytest.raises(LogMisbehaviour, match=r"hash to root .* but its signed checkpoint "
                           r"of size 3 has root 0101"):
            full_audit(log, trusted, state, validate=False)
        [evidence] = evidence_dirs(tmp_path)
        assert (evidence / "checkpoint").read_text() == log.note


def test_saved_progress_from_another_history_is_not_resumed(
        log_key: Signer, tmp_path: Path) -> None:
    with StateDir(tmp_path) as state:
        first = MemoryLog(log_key, [b"x%d" % i for i in range(600)])
        full_audit(first, audit(first, KeyTrust(log_key.verifier()), state), state, validate=False)
        other = MemoryLog(log_key, [b"y%d" % i for i in range(700)])
        with pytest.raises(LogMisbehaviour, match="does not extend size 600"):
            full_audit(other, current(other, log_key), state, validate=False)


def test_progress_line_draws_a_bar_on_a_terminal_and_stays_quiet_otherwise() -> None:
    tty, log = io.StringIO(), io.StringIO()
    bar, quiet = ProgressLine(tty, tty=True), ProgressLine(log, tty=False)
    for done in (0, 100, 1000):
        bar(done, 1000)
        quiet(done, 1000)
    bar.close()
    quiet.close()
    assert tty.getvalue().startswith("\r[") and "100.0% 1,000/1,000 entries" in tty.getvalue()
    assert tty.getvalue().endswith("\n") and log.getvalue() == ""


def test_summary_names_what_is_audited() -> None:
    cp = Checkpoint("example.org/log", 1000, b"\0" * 32)
    assert FullAuditResult(cp, 400, 5, 2.0, True).summary().startswith(
        "OK audited 0..1000 of example.org/log: entries 400..1000 validated and hashed in "
        "this run (0..400 by earlier runs); 5 tiles and the root match; 600 entries")

