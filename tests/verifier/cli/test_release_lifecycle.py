"""End to end on a real log: `tlog rollout/halt/yank/resume` sign and log statements, and
`tlog-verify release --device-id` refuses what they say to refuse (exit 1, with the reason)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import start_server, write_key
from tlog.cli.main import main as tlog
from verifier.cli import main as cli
from verifier.client.log import LogClient
from verifier.client.release import prove_release, write_receipt
from verifier.protocol.cohort import in_rollout
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.trust import KeyTrust

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

    def offline(receipt: Path, *extra: str) -> tuple[int, str]:
        code = cli.main(["bundle", str(receipt), "--key", str(log_vkey), "--no-artifact",
                         *extra])
        out, err = capsys.readouterr()
        return code, out + err

    def receipt_now(version: str) -> Path:
        """A receipt with the package state as of now, whatever it says (as a mirror that
        hands receipts to offline devices would write them): --write-bundle writes one only
        for a release it allows."""
        path = tmp_path / f"state-{version}-{len(list(tmp_path.glob('state-*')))}.json"
        proven = prove_release(LogClient(server.url), KeyTrust(log_signer.verifier()), PKG,
                               version)
        write_receipt(path, proven)
        return path

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

        code, text = verify("1.1", "--device-id", inside, "--write-bundle", "canary.json")
        assert code == 0 and "wrote canary.json" in text, text
        for _ in range(3):  # a device outside the cohort stays outside across retries
            code, text = verify("1.1", "--device-id", outside)
            assert code == 1 and "outside rollout" in text, text
            code, text = offline(tmp_path / "canary.json", "--device-id", outside)
            assert code == 1 and "outside rollout" in text, text
        code, text = offline(tmp_path / "canary.json", "--device-id", inside)
        assert code == 0 and "is in rollout" in text and "as of the receipt" in text, text
        code, text = offline(tmp_path / "canary.json")
        assert code == 1 and "--device-id" in text, text

        # A receipt without the package state (the publisher's) says nothing of rollouts:
        # asked for a decision, it fails closed; not asked, it says what it did not check.
        published = tmp_path / "app-1.1.tar.gz.tlog-receipt.json"
        code, text = offline(published, "--device-id", inside)
        assert code == 1 and "carries no package state" in text, text
        code, text = offline(published)
        assert code == 0 and "no package state" in text, text

        # A receipt whose state was edited (the rollout left out) no longer verifies.
        edited = json.loads((tmp_path / "canary.json").read_text())
        edited["package_state"]["state"]["lifecycle"] = {}
        edited["package_state"]["statements"] = {}
        (tmp_path / "edited.json").write_text(json.dumps(edited))
        code, text = offline(tmp_path / "edited.json", "--device-id", outside)
        assert code == 1 and "does not verify" in text and "not proven" in text, text
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
        # Offline: a receipt proving the state with the halt is refused the same way.
        code, text = offline(receipt_now("1.1"), "--device-id", inside)
        assert code == 1 and "halted" in text and "crash loop on start" in text, text
        assert not (tmp_path / "halted.json").exists()
        code, _ = verify("1.1", "--device-id", inside, "--write-bundle", "halted.json")
        assert code == 1 and not (tmp_path / "halted.json").exists()  # no bundle when refused

        assert run_tlog("resume", *common, "--version", "1.1")[0] == 0
        assert verify("1.1", "--device-id", inside)[0] == 0

        code, _, err = run_tlog("yank", *common, "--version", "1.1", "--reason", "data loss",
                                "--rollback-version", "1.0", "--out", "yank.json")
        assert code == 0 and (tmp_path / "yank.json").is_file(), err
        code, text = verify("1.1", "--device-id", inside)
        assert code == 1 and "yanked" in text and "roll back to 1.0" in text, text
        code, text = offline(receipt_now("1.1"), "--device-id", inside)
        assert code == 1 and "yanked" in text and "roll back to 1.0" in text, text
        assert "1.0 is entry 0, neither halted nor yanked" in text, text
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
        early = receipt_now("1.2")
        code, text = offline(early)
        assert code == 1 and "starts at 2099-01-01T00:00:00Z" in text, text
        assert offline(early, "--now", "2099-01-02T00:00:00Z")[0] == 0

        # A package never released, and a version its proven state does not list.
        code, text = verify("1.0", "--package", "com.acme.never")
        assert code == 1 and "com.acme.never was never released" in text, text
        code, text = verify("7.0")
        assert code == 1 and f"{PKG} 7.0 is not released" in text, text
    finally:
        server.stop()


def test_a_device_id_over_256_bytes_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["release", "--log", "http://127.0.0.1:1", "--key", "/nonexistent",
                     "--package", PKG, "--version", "1", "--no-artifact",
                     "--device-id", "x" * 257])
    assert code == 2
