"""End to end on a real log: `tlog rollout/halt/yank/resume` sign and log statements, and
`tlog-verify release --device-id` refuses what they say to refuse (exit 1, with the reason)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import start_server, write_key
from tlog.cli.main import main as tlog
from verifier.cli import main as cli
from verifier.protocol.cohort import in_rollout
from verifier.protocol.note import Signer, generate_key

PKG = "com.acme.app"


def device(version: str, percent: int, inside: bool) -> str:
    """A device inside (or outside) the cohort of `percent` % for PKG `version`."""
    for i in range(10_000):
        d = f"device-{i}"
        if in_rollout(d, PKG, version, percent) == inside:
            return d
    raise AssertionError("no such device")


def test_rollout_halt_resume_yank_and_start_time_are_enforced_by_the_client(
        database_url: str, log_signer: Signer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    acme = generate_key("acme")
    key = write_key(tmp_path / "acme.key", acme)
    log_vkey = tmp_path / "log.vkey"
    log_vkey.write_text(log_signer.verifier().text() + "\n")
    server = start_server(database_url, write_key(tmp_path / "log.key", log_signer), tmp_path)
    common = ["--log", server.url, "--key", str(key), "--log-key", str(log_vkey),
              "--package", PKG]

    def run_tlog(*argv: str) -> tuple[int, str, str]:
        code = tlog(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    def verify(version: str, *extra: str) -> tuple[int, str]:
        code = cli.main(["release", "--log", server.url, "--key", str(log_vkey), "--package",
                         PKG, "--version", version, "--no-artifact", *extra])
        out, err = capsys.readouterr()
        return code, out + err

    try:
        for version in ("1.0", "1.1", "1.2"):
            artifact = tmp_path / f"app-{version}.tar.gz"
            artifact.write_bytes(version.encode())
            code, _, err = run_tlog("publish", *common, "--version", version, str(artifact))
            assert code == 0, err
        # inside at 10 % (so at 50 % too), outside even at 50 %
        inside, outside = device("1.1", 10, True), device("1.1", 50, False)

        # A statement about a release the log does not hold is refused at submission.
        code, _, err = run_tlog("halt", *common, "--version", "9.9", "--reason", "x")
        assert code == 1 and "release_not_logged" in err

        code, out, err = run_tlog("rollout", *common, "--version", "1.1", "--stage", "canary",
                                  "--percent", "10")
        assert code == 0 and "inclusion proof verified" in out, err
        receipt = json.loads((tmp_path / f"{PKG}-1.1.rollout.tlog-receipt.json").read_text())
        assert receipt["entry"]["percent"] == 10

        assert verify("1.1", "--device-id", inside)[0] == 0
        for _ in range(3):  # a device outside the cohort stays outside across retries
            code, text = verify("1.1", "--device-id", outside)
            assert code == 1 and "outside rollout" in text, text
        code, text = verify("1.1")
        assert code == 1 and "--device-id" in text, text
        assert verify("1.0")[0] == 0  # no statement: installable, as releases always were

        assert run_tlog("rollout", *common, "--version", "1.1", "--stage", "half",
                        "--percent", "50")[0] == 0
        assert verify("1.1", "--device-id", inside)[0] == 0  # 10 % -> 50 %: still inside

        code, _, err = run_tlog("halt", *common, "--version", "1.1", "--reason",
                                "crash loop on start", "--rollback-version", "1.0")
        assert code == 0, err
        code, text = verify("1.1", "--device-id", inside)
        assert code == 1 and "halted" in text and "crash loop on start" in text, text

        assert run_tlog("resume", *common, "--version", "1.1")[0] == 0
        assert verify("1.1", "--device-id", inside)[0] == 0

        code, _, err = run_tlog("yank", *common, "--version", "1.1", "--reason", "data loss",
                                "--rollback-version", "1.0", "--out", "yank.json")
        assert code == 0 and (tmp_path / "yank.json").is_file(), err
        code, text = verify("1.1", "--device-id", inside)
        assert code == 1 and "yanked" in text and "roll back to 1.0" in text, text
        code, _, err = run_tlog("resume", *common, "--version", "1.1", "--reason", "fixed?")
        assert code == 1 and "version_yanked" in err
        # The halt logged before the resume, sent again: found, but no longer in effect.
        code, _, err = run_tlog("halt", *common, "--version", "1.1", "--reason",
                                "crash loop on start", "--rollback-version", "1.0")
        assert code == 1 and "override it" in err, err

        code, _, err = run_tlog("rollout", *common, "--version", "1.2", "--stage", "all",
                                "--percent", "100", "--start-time", "2099-01-01T00:00:00Z")
        assert code == 0, err
        code, text = verify("1.2")
        assert code == 1 and "starts at 2099-01-01T00:00:00Z" in text, text
        assert verify("1.2", "--now", "2099-01-02T00:00:00Z")[0] == 0
    finally:
        server.stop()


def test_a_device_id_over_256_bytes_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["release", "--log", "http://127.0.0.1:1", "--key", "/nonexistent",
                     "--package", PKG, "--version", "1", "--no-artifact",
                     "--device-id", "x" * 257])
    assert code == 2
