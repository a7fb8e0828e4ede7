"""The Fetcher seam: a LogClient verifies a log from a static directory or from memory
exactly as it does over HTTP, and each source keeps its limits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.audit_support import build_tiles, releases
from verifier.client.fetch import DirectoryFetcher, MemoryFetcher, NotFound
from verifier.client.log import LogClient
from verifier.errors import TransportError, UsageError, VerificationFailed
from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.tiles import ENTRIES_LEVEL, TILE_WIDTH, encode_bundle, tile_path, tile_width
from verifier.protocol.trust import KeyTrust

SIZE = 300  # one full tile and bundle, one partial of each


def static_log(signer: Signer, leaves: list[bytes]) -> dict[str, bytes]:
    """The resources of a log as a static mirror holds them: checkpoint, tiles, bundles."""
    tiles, root = build_tiles(leaves)
    size = len(leaves)
    files = {"checkpoint": sign_checkpoint(Checkpoint(signer.name, size, root), signer).encode()}
    for (level, n), data in tiles.items():
        files[tile_path(level, n, tile_width(level, n, size))] = data
    for n in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        width = tile_width(ENTRIES_LEVEL, n, size)
        files[tile_path(ENTRIES_LEVEL, n, width)] = encode_bundle(
            leaves[n * TILE_WIDTH:n * TILE_WIDTH + width])
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def signer() -> Signer:
    return generate_key("static.example/log")


@pytest.fixture(scope="module")
def leaves() -> list[bytes]:
    return releases(generate_key("publisher"), SIZE)


def check_client(client: LogClient, signer: Signer, leaves: list[bytes]) -> None:
    checkpoint, _ = client.checkpoint(KeyTrust(signer.verifier()))
    assert checkpoint.size == SIZE
    for index in (0, 255, 256, SIZE - 1):
        assert client.entry(index, SIZE) == leaves[index]
        proof = client.inclusion_proof(index, SIZE)
        verify_inclusion(index, SIZE, leaf_hash(leaves[index]), proof, checkpoint.root)
    old_root = build_tiles(leaves[:100])[1]
    verify_consistency(100, SIZE, old_root, checkpoint.root,
                       client.consistency_proof(100, SIZE))


def test_a_directory_mirror_verifies_like_the_log(tmp_path: Path, signer: Signer,
                                                  leaves: list[bytes]) -> None:
    root = write_tree(tmp_path, static_log(signer, leaves))
    check_client(LogClient(root.as_uri()), signer, leaves)
    check_client(LogClient(DirectoryFetcher(root)), signer, leaves)


def test_memory_resources_verify_like_the_log(signer: Signer, leaves: list[bytes]) -> None:
    check_client(LogClient(MemoryFetcher(static_log(signer, leaves))), signer, leaves)


def test_a_mirror_with_a_wrong_checkpoint_key_is_refused(tmp_path: Path, signer: Signer,
                                                         leaves: list[bytes]) -> None:
    root = write_tree(tmp_path, static_log(signer, leaves))
    other = generate_key("static.example/log")
    with pytest.raises(VerificationFailed, match="does not verify"):
        LogClient(root.as_uri()).checkpoint(KeyTrust(other.verifier()))


def test_a_missing_tile_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        DirectoryFetcher(tmp_path).fetch("tile/0/000", 8192)
    with pytest.raises(NotFound):
        MemoryFetcher({}).fetch("checkpoint", 100)


def test_sources_keep_their_size_limits(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").write_bytes(b"x" * 101)
    with pytest.raises(TransportError, match="limit of 100 bytes"):
        DirectoryFetcher(tmp_path).fetch("checkpoint", 100)
    with pytest.raises(TransportError, match="limit of 100 bytes"):
        MemoryFetcher({"checkpoint": b"x" * 101}).fetch("checkpoint", 100)
    assert DirectoryFetcher(tmp_path).fetch("checkpoint", 101) == b"x" * 101


def test_a_directory_fetcher_stays_inside_its_directory(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"s")
    inner = tmp_path / "log"
    inner.mkdir()
    for path in ("../secret", "/etc/passwd", "tile/../../secret"):
        with pytest.raises(TransportError, match="not a path inside"):
            DirectoryFetcher(inner).fetch(path, 100)


def test_sources_other_than_http_and_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="http"):
        LogClient("ftp://example.org/log")
    with pytest.raises(UsageError, match="not a directory"):
        LogClient((tmp_path / "absent").as_uri())


def test_tlog_verify_checks_a_mirror_directory(tmp_path: Path, signer: Signer,
                                               leaves: list[bytes]) -> None:
    root = write_tree(tmp_path / "mirror", static_log(signer, leaves))
    vkey = tmp_path / "log.vkey"
    vkey.write_text(signer.verifier().text() + "\n")
    proc = subprocess.run([sys.executable, "-m", "verifier.cli", "checkpoint", "--log",
                           root.as_uri(), "--key", str(vkey)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"size {SIZE}" in proc.stdout or str(SIZE) in proc.stdout


def test_a_static_copy_answers_no_search(tmp_path: Path, signer: Signer,
                                         leaves: list[bytes]) -> None:
    root = write_tree(tmp_path, static_log(signer, leaves))
    (root / "v1").mkdir()
    (root / "v1" / "entries").write_text('{"entries": []}')
    with pytest.raises(TransportError, match="answers no queries"):
        LogClient(root.as_uri()).search("app")
