"""`tlog releases-from debian`: a Debian Packages index to `tlog publish --batch` JSON Lines.

The index is written here: a plain stanza, an epoch version, the same package and version
for two architectures, an `Architecture: all` file listed twice, a file name given twice with
different hashes, and stanzas no release can be made of. Every line written must pass the
publisher's own line check (tlog.cli.publish_batch.read_batch: parse, sign, validate).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import start_server, write_key
from tlog.cli.main import main
from tlog.cli.publish_batch import read_batch
from tlog.cli.releases_from import convert
from verifier.protocol.note import Signer, generate_key

H = [f"{i:x}" * 64 for i in range(10, 16)] * 2  # 64-hex digests (a-f, a-f again)


def stanza(package: str, version: str, arch: str, digest: str, size: int = 100,
           source: str | None = None, filename: str | None = None) -> str:
    name = filename or f"{package}_{version.split(':')[-1]}_{arch}.deb"
    lines = [f"Package: {package}", *([f"Source: {source}"] if source else []),
             f"Version: {version}", f"Architecture: {arch}",
             "Description: a package", " with a long description",
             f"Filename: pool/main/{package[0]}/{package}/{name}", f"Size: {size}",
             f"MD5sum: {'0' * 32}", f"SHA256: {digest}"]
    return "\n".join(lines) + "\n"


INDEX = "\n".join([
    stanza("hello", "2.10-3", "amd64", H[1], 53_456),
    stanza("libssl3", "3.0.15-1~deb12u1", "amd64", H[2], source="openssl"),
    # A paragraph with no field: python-debian's iter_paragraphs would stop here and drop
    # every stanza after it without a word.
    "this is not a stanza at all\n",
    stanza("base-passwd", "1:3.6.1", "amd64", H[3], source="base-passwd (3.6.1)"),  # epoch
    stanza("libc6", "2.36-9", "amd64", H[4], source="glibc"),
    stanza("libc6", "2.36-9", "arm64", H[5], source="glibc"),  # multi-arch: merged
    stanza("tzdata", "2024a-0", "all", H[0]),
    stanza("tzdata", "2024a-0", "all", H[0]),  # the same file in another index: nothing new
    stanza("tzdata", "2024a-0", "all", H[1]),  # same file name, another hash: skipped
    stanza("nohash", "1.0", "amd64", H[2]).replace(f"SHA256: {H[2]}\n", ""),
    stanza("spaced", "1.0 beta", "amd64", H[2]),
    stanza("Bad~Name", "1.0", "amd64", H[2]),
    stanza("upper", "1.0", "amd64", H[2].upper()),
    stanza("hugesize", "1.0", "amd64", H[2], size=2**53),
    "Description: a stanza of none of the fields a release needs\n",
])
STANZAS, RELEASES = 15, 5  # hello, libssl3, base-passwd, libc6, tzdata
SKIPPED = {"no Package": 2, "conflicting duplicate": 1, "no SHA256": 1, "bad Version": 1,
           "bad Package": 1, "bad SHA256": 1, "bad Size": 1}


def tlog(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "tlog", *args], input=stdin,
                          capture_output=True, timeout=120, check=False)


def checked_lines(path: Path) -> list[dict[str, Any]]:
    """The file's releases as `tlog publish --batch` reads them (BadLines if any is bad)."""
    return [p.entry for _, p in read_batch(path, generate_key("debian-test"))]


@pytest.mark.parametrize("compress", [None, gzip.compress, lzma.compress, bz2.compress])
def test_every_line_written_is_a_release_publish_batch_accepts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], compress: Any) -> None:
    index = tmp_path / "Packages"
    index.write_bytes(compress(INDEX.encode()) if compress else INDEX.encode())
    out = tmp_path / "releases.jsonl"
    assert main(["releases-from", "debian", str(index), "--output", str(out)]) == 0
    entries = checked_lines(out)
    assert [(e["package"], e["version"]) for e in entries] == [
        ("hello", "2.10-3"), ("libssl3", "3.0.15-1~deb12u1"), ("base-passwd", "1:3.6.1"),
        ("libc6", "2.36-9"), ("tzdata", "2024a-0")]
    hello = entries[0]
    assert hello["artifacts"] == [{"name": "hello_2.10-3_amd64.deb", "sha256": H[1],
                                   "size": 53_456}]
    assert hello["metadata"] == {"architectures": ["amd64"], "source": "hello",
                                 "source_version": "2.10-3"}
    assert entries[1]["metadata"]["source"] == "openssl"
    assert entries[2]["metadata"] == {"architectures": ["amd64"], "source": "base-passwd",
                                      "source_version": "3.6.1"}
    err = capsys.readouterr().err
    assert "15 stanzas -> 5 releases (1 stanzas merged" in err
    assert "1 repeating an artifact); 8 skipped" in err
    assert "5 written" in err


def test_two_architectures_of_one_version_become_one_release_not_a_log_conflict() -> None:
    # Two releases of libc6 2.36-9 would be the same version logged twice: the log refuses
    # the second (409), so the converter must merge them into one release.
    result = convert([("Packages", _stream(INDEX))])
    libc = result.releases[("libc6", "2.36-9")]
    assert [a["name"] for a in libc["artifacts"]] == ["libc6_2.36-9_amd64.deb",
                                                      "libc6_2.36-9_arm64.deb"]
    assert libc["metadata"]["architectures"] == ["amd64", "arm64"]
    assert len(result.releases) == RELEASES and result.stanzas == STANZAS
    assert (result.merged, result.repeated) == (1, 1)


def test_a_file_name_given_a_second_hash_is_skipped_and_counted_not_merged() -> None:
    # A stanza naming the same .deb with another hash must not replace (or join) the one
    # already in the release: which file is the real one is not the converter's to choose.
    result = convert([("Packages", _stream(INDEX))])
    assert result.releases[("tzdata", "2024a-0")]["artifacts"] == [
        {"name": "tzdata_2024a-0_all.deb", "sha256": H[0], "size": 100}]
    assert dict(result.skipped) == SKIPPED
    assert any("stanza 9: conflicting duplicate" in e for e in result.examples)


def test_stdin_limit_and_stdout(tmp_path: Path) -> None:
    proc = tlog("releases-from", "debian", "-", "--limit", "3", stdin=gzip.compress(
        INDEX.encode()))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "r.jsonl"
    out.write_bytes(proc.stdout)
    assert [e["package"] for e in checked_lines(out)] == ["hello", "libssl3", "base-passwd"]
    assert b"8 skipped" in proc.stderr and b"3 written" in proc.stderr
    assert b"skipped Packages" not in proc.stderr and b"-: stanza 10: no SHA256" in proc.stderr


def test_apt_lz4_lists_are_refused_with_how_to_decompress_them(tmp_path: Path) -> None:
    index = tmp_path / "Packages.lz4"
    index.write_bytes(b"\x04\x22\x4d\x18" + b"\0" * 32)
    proc = tlog("releases-from", "debian", str(index))
    assert proc.returncode == 2 and proc.stdout == b""
    assert b"lz4-compressed" in proc.stderr and b"lz4cat" in proc.stderr


@pytest.mark.parametrize(("argv", "says"), [
    (["Packages", "--limit", "0"], "--limit must be at least 1"),
    (["-", "-"], "standard input ('-') can be read once"),
    (["no/such/Packages"], "cannot read no/such/Packages"),
])
def test_bad_options_and_missing_files_are_usage_errors(
        argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["releases-from", "debian", *argv]) == 2
    assert says in capsys.readouterr().err


def test_an_index_without_a_valid_stanza_writes_nothing_and_fails(tmp_path: Path) -> None:
    index = tmp_path / "Packages"
    index.write_text(stanza("nohash", "1.0", "amd64", H[2]).replace(f"SHA256: {H[2]}\n", ""))
    out = tmp_path / "r.jsonl"
    proc = tlog("releases-from", "debian", str(index), "--output", str(out))
    assert proc.returncode == 1 and b"no release in the index" in proc.stderr
    assert b"1 skipped (1 no SHA256); 0 written" in proc.stderr
    assert not out.exists()


def test_the_converted_index_is_logged_by_publish_batch(
        tmp_path: Path, log_signer: Signer, database_url: str) -> None:
    index = tmp_path / "Packages.gz"
    index.write_bytes(gzip.compress(INDEX.encode()))
    batch = tmp_path / "releases.jsonl"
    assert tlog("releases-from", "debian", str(index), "-o", str(batch)).returncode == 0
    log_vkey = tmp_path / "log.vkey"
    log_vkey.write_text(log_signer.verifier().text() + "\n")
    server = start_server(database_url, write_key(tmp_path / "log.key", log_signer), tmp_path)
    try:
        proc = tlog("publish", "--log", server.url, "--log-key", str(log_vkey), "--key",
                    str(write_key(tmp_path / "debian.key", generate_key("debian"))),
                    "--batch", str(batch))
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert b"logged 5 new, 0 already logged, 0 skipped" in proc.stdout
    receipts = (tmp_path / "releases.jsonl.receipts.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["entry"]["version"] for r in receipts) == [
        "1:3.6.1", "2.10-3", "2.36-9", "2024a-0", "3.0.15-1~deb12u1"]


def _stream(text: str) -> io.BytesIO:
    return io.BytesIO(text.encode())
