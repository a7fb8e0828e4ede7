"""Install-time checks of a logged release (verifier/protocol/entries/install.py), the file
hashing behind them (verifier/client/artifacts.py) and the one RFC 3339 time parser."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.verifier.protocol.test_entry import fields
from verifier.client.artifacts import hash_file
from verifier.errors import UsageError, VerificationFailed
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.install import FileDigest, check_release, window_problem
from verifier.protocol.entries.release import Release, validate_entry
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import generate_key
from verifier.protocol.rfc3339 import TimeFormatError, parse_time

ALICE = generate_key("example.com/alice")
PAYLOAD = b"tool 1.2.0\n" * 100
WINDOW = {"not_before": "2026-01-01T00:00:00Z", "not_after": "2026-02-01T00:00:00.5Z"}


def release(**changes: object) -> Release:
    artifact = {"name": "tool.tar.gz", "sha256": hashlib.sha256(PAYLOAD).hexdigest(),
                "size": len(PAYLOAD)}
    return validate_entry(sign_entry(fields(artifacts=[artifact], **changes), ALICE))


def test_hash_file_reads_name_digest_and_size(tmp_path: Path) -> None:
    path = tmp_path / "tool.tar.gz"
    path.write_bytes(PAYLOAD)
    assert hash_file(path) == FileDigest(str(path), "tool.tar.gz",
                                         hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD))
    with pytest.raises(UsageError, match="couldn't read artifact"):
        hash_file(tmp_path / "missing")


def test_check_release_matches_files_keys_and_window(tmp_path: Path) -> None:
    path = tmp_path / "renamed.bin"
    path.write_bytes(PAYLOAD)
    r = release(install_window=WINDOW)
    inside = datetime(2026, 1, 15, tzinfo=UTC)
    assert check_release(r, [hash_file(path)], [ALICE.verifier()], inside) == ["tool.tar.gz"]
    with pytest.raises(VerificationFailed, match="not among the pinned publisher keys"):
        check_release(r, [], [generate_key("example.com/bob").verifier()], inside)
    with pytest.raises(VerificationFailed, match=r"install window closed at "
                                                 r"2026-02-01T00:00:00\.5Z"):
        check_release(r, [], [], datetime(2026, 3, 1, tzinfo=UTC))


def test_a_file_of_the_same_name_but_other_bytes_is_named_in_the_refusal(tmp_path: Path) -> None:
    path = tmp_path / "tool.tar.gz"
    path.write_bytes(b"tampered")
    with pytest.raises(VerificationFailed) as info:
        check_release(release(), [hash_file(path)], [], datetime.now(UTC))
    assert str(info.value).startswith(f"artifact {path} (sha256 ")
    assert "the entry's tool.tar.gz has sha256" in str(info.value)


APP, DEBUG = b"app build\n" * 50, b"debug build, logs every secret\n" * 50


def two_artifacts() -> Release:
    """An entry listing app-2.4.1.apk and app-2.4.1-debug.apk: both signed, both logged."""
    artifacts = [{"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                 for name, data in (("app-2.4.1.apk", APP), ("app-2.4.1-debug.apk", DEBUG))]
    return validate_entry(sign_entry(fields(artifacts=artifacts), ALICE))


def test_a_file_named_like_one_artifact_with_the_bytes_of_another_is_refused(
        tmp_path: Path) -> None:
    # A mirror serves the debug build under the release build's name: its bytes are in the
    # entry, but not as the artifact the client asked for.
    path = tmp_path / "app-2.4.1.apk"
    path.write_bytes(DEBUG)
    with pytest.raises(VerificationFailed) as info:
        check_release(two_artifacts(), [hash_file(path)], [], datetime.now(UTC))
    assert "its bytes are the entry's app-2.4.1-debug.apk, not its app-2.4.1.apk" in str(
        info.value)
    path.write_bytes(APP)
    assert check_release(two_artifacts(), [hash_file(path)], [], datetime.now(UTC)) == [
        "app-2.4.1.apk"]


def test_a_renamed_file_passes_on_its_bytes_as_the_artifact_it_is(tmp_path: Path) -> None:
    """Harmless: a file saved under another name (evil.apk) with an artifact's very bytes is
    that artifact, and the name returned (printed by tlog-verify) says which one."""
    release_build, debug_build = tmp_path / "evil.apk", tmp_path / "download.bin"
    release_build.write_bytes(APP)
    debug_build.write_bytes(DEBUG)
    assert check_release(two_artifacts(), [hash_file(release_build), hash_file(debug_build)],
                         [], datetime.now(UTC)) == ["app-2.4.1.apk", "app-2.4.1-debug.apk"]


def test_window_problem_says_when_the_window_opens() -> None:
    r = release(install_window=WINDOW)
    assert window_problem(r, datetime(2025, 12, 31, tzinfo=UTC)) == (
        "install window opens at 2026-01-01T00:00:00Z")
    assert window_problem(release(), datetime(1970, 1, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize("text", ["2026-11-24T10:00:00Z", "2026-11-24T10:00:00z",
                                  "2026-11-24T11:00:00+01:00", "2026-11-24T10:00:00.000000001Z"])
def test_parse_time_reads_rfc3339_with_either_case_of_z(text: str) -> None:
    assert parse_time(text) == datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert parse_time(text).tzinfo is UTC


@pytest.mark.parametrize(("text", "message"), [
    ("2026-11-24T10:00:00", "time '2026-11-24T10:00:00' needs a zone, e.g. "
                            "2026-11-24T10:00:00Z"),
    ("yesterday", "not an RFC 3339 time: 'yesterday'"),
    ("2026-02-30T10:00:00Z", "not an RFC 3339 time: '2026-02-30T10:00:00Z'"),
])
def test_parse_time_refusals_are_usage_errors_and_value_errors(text: str, message: str) -> None:
    with pytest.raises(TimeFormatError) as info:
        parse_time(text)
    assert str(info.value) == message
    assert isinstance(info.value, UsageError) and isinstance(info.value, ValueError)


def test_entries_keep_refusing_a_lower_case_z_through_their_schema() -> None:
    """The parser takes "z"; the release/v1 schema's pattern does not, and decides first."""
    window = {"not_before": "2026-01-01T00:00:00z", "not_after": "2026-02-01T00:00:00Z"}
    with pytest.raises(EntryError) as info:
        validate_entry(sign_entry(fields(install_window=window), ALICE))
    assert info.value.code == "invalid_entry"
    assert str(info.value).startswith("install_window.not_before: '2026-01-01T00:00:00z' is "
                                      "not an RFC 3339 UTC time")


def test_an_impossible_date_in_a_window_is_refused_with_the_member_named() -> None:
    window = {"not_before": "2026-02-30T00:00:00Z", "not_after": "2026-03-01T00:00:00Z"}
    with pytest.raises(EntryError) as info:
        validate_entry(sign_entry(fields(install_window=window), ALICE))
    assert (info.value.code, str(info.value)) == (
        "invalid_entry", "install_window.not_before: '2026-02-30T00:00:00Z' is not a valid time")
