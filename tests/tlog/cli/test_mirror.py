"""`tlog mirror`: a verified static copy served by a real nginx, audited like the log itself;
and clients failing over between the log and its mirrors (`tlog-verify --log A --log B`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audit_support import LiveLog
from tests.conftest import SHARED
from tests.mirror_support import NGINX, Nginx, start_nginx
from tests.support import free_port
from tests.witness_support import TiledLog, policy_text, witnesses
from tlog.cli.mirror import PROGRESS_FILE, mirror_once
from verifier.client.fetch import FailoverFetcher, Fetcher, MemoryFetcher, NotFound
from verifier.client.http import HttpFetcher
from verifier.errors import TransportError
from verifier.protocol.checkpoint import open_checkpoint
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.tiles import parse_tile_path
from verifier.protocol.trust import KeyTrust

GO_VERIFIER = SHARED / "interop" / "go-verifier" / "run.sh"
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make nginx)")


def run(*args: str, module: str = "tlog") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, timeout=300, check=False)


def mirror(log: LiveLog, out: Path, source: str | None = None) -> subprocess.CompletedProcess[str]:
    return run("mirror", "--log", source or log.url, "--key", str(log.vkey_file),
               "--out", str(out))


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return run(*args, module="verifier.cli")


def files(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `root`: relative path -> (inode, bytes)."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def log(database_url: str, log_signer: Signer, tmp_path: Path) -> Iterator[LiveLog]:
    live = LiveLog(database_url, log_signer, tmp_path).start()
    yield live
    live.stop()


@pytest.fixture
def publisher() -> Signer:
    return generate_key("mirror-bot")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Nginx]]:
    """The mirror directory, served by nginx."""
    out = tmp_path / "mirror"
    out.mkdir()
    server = start_nginx(out, tmp_path / "nginx")
    yield out, server
    server.stop()


def tile_paths_only(names: set[str]) -> bool:
    """Whether every name is a C2SP tlog-tiles path (no temporary or state files)."""
    for name in names - {"checkpoint"}:
        try:
            parse_tile_path(name)
        except ValueError:
            return False
    return True


@needs_nginx
def test_a_mirror_behind_nginx_audits_like_the_log_and_grows_by_new_files_only(
        log: LiveLog, publisher: Signer, served: tuple[Path, Nginx], tmp_path: Path) -> None:
    out, nginx = served
    log.append(publisher, "a", 300)
    first = mirror(log, out)
    assert first.returncode == 0, first.stderr
    before = files(out)
    assert tile_paths_only(set(before)), sorted(before)
    with open(out / "checkpoint", "rb") as f:
        size = open_checkpoint(f.read(), log.signer.verifier()).size
    assert size > 300 and "tile/entries/000" in before and "tile/0/000" in before
    audit = verify("audit", "--full", "--log", nginx.url, "--key", str(log.vkey_file),
                   "--state", str(tmp_path / "audit"), "--workers", "0")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert f"OK audited 0..{size}" in audit.stdout

    log.append(publisher, "b", 300)
    second = mirror(log, out)
    assert second.returncode == 0, second.stderr
    after = files(out)
    full = {p for p in before if ".p/" not in p and p != "checkpoint"}
    # Incremental: every full file of the first run is the same file (never rewritten).
    assert all(after[p] == before[p] for p in full)
    new = set(after) - set(before)
    assert new and f" {len(new)} files written" in second.stdout, (sorted(new), second.stdout)
    # The partial tiles the new full tiles replace are gone; the copy still has only
    # tlog-tiles paths, the log's own bytes.
    assert "tile/entries/001.p" not in {str(Path(p).parent) for p in after}
    assert tile_paths_only(set(after))
    with open(out / "checkpoint", "rb") as f:
        grown = open_checkpoint(f.read(), log.signer.verifier()).size
    assert grown > size + 300
    audit = verify("audit", "--full", "--log", nginx.url, "--key", str(log.vkey_file),
                   "--state", str(tmp_path / "audit"), "--workers", "0")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert f"consistent with the stored size {size}" in audit.stdout
    again = mirror(log, out)  # nothing new: nothing written
    assert again.returncode == 0 and " 0 files written" in again.stdout, again.stdout
    if not GO_VERIFIER.exists():
        pytest.skip("the Go verifier (../shared/interop) is not beside this clone")
    go = subprocess.run([str(GO_VERIFIER), "verify-all", nginx.url, str(log.vkey_file)],
                        capture_output=True, text=True, timeout=600, check=False)
    assert go.returncode == 0 and "OK" in go.stdout, go.stdout + go.stderr


def test_a_mirror_never_replaces_a_bundle_with_other_bytes(
        log: LiveLog, publisher: Signer, tmp_path: Path) -> None:
    out = tmp_path / "mirror"
    log.append(publisher, "a", 300)
    assert mirror(log, out).returncode == 0
    old_checkpoint = (out / "checkpoint").read_bytes()
    log.append(publisher, "b", 300)
    # A full bundle the next run must fetch is already there, with other bytes (the log
    # served another version of it before, or someone altered the copy).
    planted = out / "tile" / "entries" / "001"
    planted.write_bytes(b"\x00\x01x" * 256)
    refused = mirror(log, out)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "tile/entries/001" in refused.stderr and "not replaced" in refused.stderr
    assert planted.read_bytes() == b"\x00\x01x" * 256
    assert (out / "checkpoint").read_bytes() == old_checkpoint
    evidence = list((tmp_path / "mirror.mirror-state" / "evidence").rglob("001"))
    assert {p.parent.parent.parent.name for p in evidence} == {"ours", "theirs"}


def test_a_mirror_refuses_a_source_serving_a_rewritten_tile(
        log: LiveLog, publisher: Signer, tmp_path: Path) -> None:
    good = tmp_path / "good"
    log.append(publisher, "a", 300)
    assert mirror(log, good).returncode == 0
    forged = tmp_path / "forged"
    shutil.copytree(good, forged)
    tile = forged / "tile" / "0" / "000"
    tile.write_bytes(bytes(32) + tile.read_bytes()[32:])  # the first leaf hash rewritten
    out = tmp_path / "copy"
    refused = mirror(log, out, source=forged.as_uri())
    assert refused.returncode == 1, refused.stderr
    assert "tile/0/000" in refused.stderr
    assert not (out / "checkpoint").exists()
    assert not (out / "tile" / "0" / "000").exists()


class _Cut:
    """A source that breaks (a transport error) at one path, like a dropped connection."""

    def __init__(self, inner: Fetcher, at: str) -> None:
        self.inner, self.at = inner, at

    def where(self, path: str) -> str:
        return self.inner.where(path)

    def fetch(self, path: str, limit: int) -> bytes:
        if path == self.at:
            raise TransportError(f"{path}: connection reset (test)")
        return self.inner.fetch(path, limit)

    def copy(self) -> _Cut:
        return self


def test_an_interrupted_mirror_leaves_a_valid_copy_and_resumes(
        log: LiveLog, publisher: Signer, tmp_path: Path) -> None:
    out, state = tmp_path / "mirror", tmp_path / "state"
    log.append(publisher, "a", 600)
    trust = KeyTrust(log.signer.verifier())
    with pytest.raises(TransportError):
        mirror_once(_Cut(HttpFetcher(log.url, retries=0), "tile/entries/001"), trust, out,
                    state)
    # Bundle 0 and its tile were checked and written before the progress saying so; no
    # checkpoint yet: a reader sees no log rather than one with missing tiles.
    kept = files(out)
    assert {"tile/entries/000", "tile/0/000"} <= set(kept)
    assert "checkpoint" not in kept
    assert '"next": 256' in (state / PROGRESS_FILE).read_text()
    result = mirror_once(HttpFetcher(log.url, retries=0), trust, out, state)
    assert result.trusted.size > 600
    now = files(out)
    assert all(now[p] == kept[p] for p in kept)  # resumed: nothing fetched again was rewritten
    assert "checkpoint" in now and "tile/entries/001" in now
    assert result.written == len(now) - len(kept) - 1  # and the checkpoint, last


@needs_nginx
def test_clients_fail_over_from_a_dead_log_to_its_mirror(
        log: LiveLog, publisher: Signer, served: tuple[Path, Nginx], tmp_path: Path) -> None:
    out, nginx = served
    log.append(publisher, "a", 50)
    assert mirror(log, out).returncode == 0
    dead = f"http://127.0.0.1:{free_port()}"
    done = verify("audit", "--full", "--log", dead, "--log", nginx.url, "--key",
                  str(log.vkey_file), "--state", str(tmp_path / "a"), "--retries", "0",
                  "--workers", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "failed over" in done.stderr and nginx.url in done.stderr


def test_a_source_whose_checkpoint_does_not_verify_is_not_failed_over(
        log: LiveLog, publisher: Signer, tmp_path: Path) -> None:
    """Falling back on a bad answer would let any one bad source pick what is believed."""
    out = tmp_path / "mirror"
    log.append(publisher, "a", 50)
    assert mirror(log, out).returncode == 0
    forged = tmp_path / "forged"
    shutil.copytree(out, forged)
    note = (forged / "checkpoint").read_text().splitlines(keepends=True)
    note[1] = str(int(note[1]) + 1) + "\n"  # the size changed under the log's signature
    (forged / "checkpoint").write_text("".join(note))
    failed = verify("audit", "--log", forged.as_uri(), "--log", log.url, "--key",
                    str(log.vkey_file), "--state", str(tmp_path / "a"))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "failed over" not in failed.stderr


def test_failover_goes_on_transport_errors_in_order_and_stays_with_who_answered() -> None:
    said: list[str] = []
    dead = _Cut(MemoryFetcher({}), "checkpoint")
    lagging = MemoryFetcher({"checkpoint": b"A"})
    full = MemoryFetcher({"checkpoint": b"B", "tile/0/000": b"T"})
    f = FailoverFetcher([dead, lagging, full], said.append)
    assert f.fetch("checkpoint", 10) == b"A"
    assert len(said) == 1 and "memory:checkpoint answered" in said[0]
    assert f.fetch("tile/0/000", 10) == b"T"  # missing at the mirror that answered: next one
    assert f.fetch("checkpoint", 10) == b"B"  # stays with the source that answered last
    with pytest.raises(NotFound):
        f.fetch("tile/0/001", 10)
    with pytest.raises(TransportError, match="exceeds the limit"):
        f.fetch("tile/0/000", 0)


def test_a_mirror_under_a_witness_policy_copies_only_quorum_cosigned_checkpoints(
        log_signer: Signer, publisher: Signer, tmp_path: Path) -> None:
    a, b = witnesses("a", "b")
    policy = tmp_path / "policy"
    policy.write_text(policy_text(log_signer, "g", [a, b], extra="group g all a b"))
    upstream = TiledLog(tmp_path / "log", log_signer)
    upstream.releases(publisher, *(f"1.{i}" for i in range(300)))
    now = int(time.time())
    upstream.serve(upstream.cosign(300, {a: now, b: now}))
    out = tmp_path / "mirror"
    done = run("mirror", "--log", upstream.file_url, "--policy", str(policy), "--out", str(out))
    assert done.returncode == 0, done.stderr
    copied = (out / "checkpoint").read_text()
    assert copied == upstream.cosigned[300]  # the cosignature lines kept: clients need them
    # The log moves on with only one witness's cosignature: short of the quorum, not copied.
    upstream.releases(publisher, *(f"2.{i}" for i in range(300)))
    upstream.serve(upstream.cosign(600, {a: now}))
    refused = run("mirror", "--log", upstream.file_url, "--policy", str(policy), "--out",
                  str(out))
    assert refused.returncode == 1 and "short of quorum" in refused.stderr, refused.stderr
    assert (out / "checkpoint").read_text() == copied
    assert not (out / "tile" / "entries" / "001").exists()
