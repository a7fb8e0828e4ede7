"""`tlog-verify monitor --halt-key KEY --halt-on RULE`: a monitor that stops a rollout.

On a real log (PostgreSQL and `tlog serve`): the monitor signs and logs a halt/v1 for the
version an alert is about, once (across runs and restarts, and after a crash between
submitting and recording the answer), and `tlog-verify release` then refuses that version.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support import Server, start_server, write_key
from tlog.cli.main import main as tlog
from verifier.cli import main as cli
from verifier.client.monitor import halts
from verifier.client.monitor.halts import intents
from verifier.client.monitor.summary import Seen
from verifier.errors import TransportError
from verifier.protocol.note import Signer, generate_key

PKG = "com.acme.app"


class Log:
    """A real log with the acme publisher's key, and helpers to act on it."""

    def __init__(self, server: Server, tmp: Path, log_vkey: Path,
                 capsys: pytest.CaptureFixture[str]) -> None:
        self.server, self.tmp, self.log_vkey, self.capsys = server, tmp, log_vkey, capsys
        self.acme = write_key(tmp / "acme.key", generate_key("acme"))

    def publish(self, version: str, counter: int) -> None:
        artifact = self.tmp / f"app-{version}.tar.gz"
        artifact.write_bytes(version.encode())
        code = tlog(["publish", "--log", self.server.url, "--key", str(self.acme), "--log-key",
                     str(self.log_vkey), "--package", PKG, "--version", version,
                     "--counter", str(counter), str(artifact)])
        assert code == 0, self.capsys.readouterr().err
        self.capsys.readouterr()

    def monitor(self, state: Path, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
        code = cli.main(["monitor", "--log", self.server.url, "--key", str(self.log_vkey),
                         "--state", str(state), "--workers", "0", "--retries", "0", *extra])
        out, err = self.capsys.readouterr()
        return code, [json.loads(line) for line in out.splitlines()], err

    def halts(self, version: str) -> list[dict[str, Any]]:
        """The halt/v1 entries the log lists for PKG `version`."""
        query = urllib.parse.urlencode({"package": PKG, "version": version})
        with urllib.request.urlopen(f"{self.server.url}/v1/entries?{query}") as resp:
            page = json.load(resp)
        return [e for e in page["entries"] if e["entry"]["kind"] == "halt/v1"]

    def verify(self, version: str) -> tuple[int, str]:
        code = cli.main(["release", "--log", self.server.url, "--key", str(self.log_vkey),
                         "--package", PKG, "--version", version, "--no-artifact"])
        out, err = self.capsys.readouterr()
        return code, out + err


@pytest.fixture
def log(database_url: str, log_signer: Signer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TLOG_TOKEN", raising=False)
    log_vkey = tmp_path / "log.vkey"
    log_vkey.write_text(log_signer.verifier().text() + "\n")
    server = start_server(database_url, write_key(tmp_path / "log.key", log_signer), tmp_path)
    try:
        yield Log(server, tmp_path, log_vkey, capsys)
    finally:
        server.stop()


def halt_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "halt"]


def test_the_monitor_halts_a_rollout_on_a_rollback_attempt_once(log: Log, tmp_path: Path) -> None:
    log.publish("1.0", 2)
    log.publish("1.1", 3)
    log.publish("1.2", 1)  # a rollback attempt: the counter goes back (an open log takes it)
    state = tmp_path / "state"
    halt = ["--halt-key", str(log.acme), "--halt-on", "counter_not_growing"]

    code, events, err = log.monitor(state, *halt)
    assert code == 0, err
    alert = next(e for e in events if e.get("alert") == "counter_not_growing")
    [event] = halt_events(events)
    assert event["package"] == PKG and event["version"] == "1.2"
    assert event["status"] == "logged" and event["seq"] > alert["seq"]
    assert "counter_not_growing" in event["reason"] and f"index={alert['index']}" in event["reason"]
    [logged] = log.halts("1.2")
    assert logged["index"] == event["index"]
    code, text = log.verify("1.2")
    assert code == 1 and "halted" in text and "counter_not_growing" in text, text
    assert log.verify("1.1")[0] == 0  # only the rollback is halted

    # A second run, after more entries, and a restart: nothing more is submitted.
    log.publish("1.3", 4)
    for _ in range(2):
        code, events, err = log.monitor(state, *halt)
        assert code == 0 and halt_events(events) == [], (events, err)
    assert len(log.halts("1.2")) == 1

    # A crash after submitting, before the answer was recorded: the next run submits the same
    # signed halt again, and the log answers with the one it holds.
    with sqlite3.connect(state / "monitor.db") as db:
        db.execute("UPDATE halts SET result = NULL")
    code, events, err = log.monitor(state, *halt)
    assert code == 0, err
    assert [(e["status"], e["index"]) for e in halt_events(events)] == [("logged",
                                                                         logged["index"])]
    assert len(log.halts("1.2")) == 1


def test_without_halt_on_the_monitor_submits_nothing(log: Log, tmp_path: Path) -> None:
    log.publish("1.0", 2)
    log.publish("1.2", 1)
    code, events, err = log.monitor(tmp_path / "state", "--halt-key", str(log.acme))
    assert code == 0, err
    assert any(e.get("alert") == "counter_not_growing" for e in events)
    assert halt_events(events) == [] and log.halts("1.2") == []


def test_an_external_signal_halts_the_named_version_once(log: Log, tmp_path: Path) -> None:
    log.publish("1.0", 1)
    log.publish("1.1", 2)
    signal = tmp_path / "signal.txt"
    signal.write_text(f"# from the crash reporter\n{PKG} 1.1 crash rate 12% on start\n"
                      f"{PKG} 9.9 not logged: waits for its release\n")
    state = tmp_path / "state"
    halt = ["--halt-key", str(log.acme), "--halt-on", f"external:{signal}"]
    code, events, err = log.monitor(state, *halt)
    assert code == 0, err
    [event] = halt_events(events)
    assert (event["version"], event["status"]) == ("1.1", "logged")
    assert event["reason"] == "external signal: crash rate 12% on start"
    code, events, err = log.monitor(state, *halt)
    assert code == 0 and halt_events(events) == []
    assert len(log.halts("1.1")) == 1 and log.halts("1.0") == []
    code, text = log.verify("1.1")
    assert code == 1 and "crash rate 12%" in text, text


def test_a_refused_halt_is_reported_and_not_retried(log: Log, tmp_path: Path) -> None:
    log.publish("1.0", 1)
    log.publish("1.1", 2)
    code = tlog(["yank", "--log", log.server.url, "--key", str(log.acme), "--log-key",
                 str(log.log_vkey), "--package", PKG, "--version", "1.1", "--reason", "bad"])
    assert code == 0
    log.capsys.readouterr()
    signal = tmp_path / "signal.txt"
    signal.write_text(f"{PKG} 1.1 too late\n")
    state = tmp_path / "state"
    halt = ["--halt-key", str(log.acme), "--halt-on", f"external:{signal}"]
    code, events, err = log.monitor(state, *halt)
    assert code == 0, err
    [event] = halt_events(events)
    assert event["status"] == "refused" and event["refusal"]["status"] == 409
    assert event["refusal"]["code"] == "version_yanked"
    code, events, err = log.monitor(state, *halt)
    assert code == 0 and halt_events(events) == []


def test_a_halt_key_of_another_publisher_is_a_usage_error(log: Log, tmp_path: Path) -> None:
    log.publish("1.0", 2)
    log.publish("1.2", 1)
    other = write_key(tmp_path / "mallory.key", generate_key("mallory"))
    code, events, err = log.monitor(tmp_path / "state", "--halt-key", str(other),
                                    "--halt-on", "counter_not_growing")
    assert code == 2 and "published by 'acme'" in err, err
    assert halt_events(events) == []
    assert log.halts("1.2") == []


def test_halt_options_are_checked(log: Log, tmp_path: Path) -> None:
    code, _, err = log.monitor(tmp_path / "s1", "--halt-on", "counter_not_growing")
    assert code == 2 and "--halt-key" in err
    code, _, err = log.monitor(tmp_path / "s2", "--halt-key", str(log.acme),
                               "--halt-on", "whatever")
    assert code == 2 and "whatever" in err


def seen(index: int, kind: str, package: str, version: str, error: str | None = None,
         leaf: bytes | None = None) -> Seen:
    return Seen(index, b"\0" * 32, error, leaf, kind, package, version, None, None, "", "", None)


def test_only_releases_and_readable_invalid_entries_are_halted() -> None:
    rules = frozenset({"invalid_entry", "new_publisher_key"})
    entries = [seen(0, "release/v1", PKG, "1.0"), seen(1, "halt/v1", PKG, "1.0"),
               seen(2, "", "", "", "bad signature", b'{"package": "p", "version": "2"}'),
               seen(3, "", "", "", "not JSON", b"\xff{")]
    events: list[str | dict[str, Any]] = [
        {"type": "alert", "seq": i, "index": i, "alert": code, "message": "m" * 2000}
        for i, code in [(0, "new_publisher_key"), (1, "new_publisher_key"),
                        (2, "invalid_entry"), (3, "invalid_entry"), (0, "install_window_closed")]]
    found = intents(events, entries, rules)
    assert [(i.package, i.version) for i in found] == [(PKG, "1.0"), ("p", "2")]
    assert all(len(i.reason) == 1000 and i.reason.endswith("...") for i in found)


def test_a_halt_only_key_halts_in_a_registered_log_with_the_token(
        database_url: str, log_signer: Signer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A monitoring bot that holds only a halt-only key (it cannot release) stops a version."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TLOG_TOKEN", raising=False)
    admin, acme, bot = generate_key("admin"), generate_key("acme"), generate_key("acme")
    paths = {}
    for name, key in (("admin", admin), ("acme", acme), ("bot", bot), ("log", log_signer)):
        (tmp_path / f"r-{name}.vkey").write_text(key.verifier().text() + "\n")
        paths[name] = write_key(tmp_path / f"r-{name}.key", key)
    admin_token = tmp_path / "admin-token"
    admin_token.write_text("admin-secret-0123456789abcdef\n")
    admin_token.chmod(0o600)
    server = start_server(database_url, paths["log"], tmp_path, extra=[
        "--policy", "registered", "--admin-key", str(tmp_path / "r-admin.vkey"),
        "--token-key", str(write_key(tmp_path / "token.key", generate_key("tlog-tokens"))),
        "--admin-token-file", str(admin_token)])
    log_key = ["--log", server.url, "--log-key", str(tmp_path / "r-log.vkey")]
    log = Log(server, tmp_path, tmp_path / "r-log.vkey", capsys)
    log.acme = paths["acme"]

    def run_tlog(*argv: str) -> str:
        code = tlog(list(argv))
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    try:
        run_tlog("registry", "register", *log_key, "--signer", str(paths["admin"]),
                 "--publisher", "acme", "--package", "com.acme.*", "--publisher-key",
                 str(tmp_path / "r-acme.vkey"), "--admin-token-file", str(admin_token))
        token = tmp_path / "token"
        token.write_text(run_tlog("token", "issue", "--log", server.url, "--publisher", "acme",
                                  "--scope", "com.acme.*", "--admin-token-file",
                                  str(admin_token)))
        token.chmod(0o600)
        monkeypatch.setenv("TLOG_TOKEN", token.read_text().strip())
        log.publish("1.0", 1)
        run_tlog("registry", "rotate", *log_key, "--signer", str(paths["acme"]), "--publisher",
                 "acme", "--halt-only", "--add", str(tmp_path / "r-bot.vkey"), "--token-file",
                 str(token))
        monkeypatch.delenv("TLOG_TOKEN")
        signal = tmp_path / "signal.txt"
        signal.write_text(f"{PKG} 1.0 tampered artifact reported\n")
        halt = ["--halt-key", str(paths["bot"]), "--halt-on", f"external:{signal}",
                "--halt-token-file", str(token)]
        code, events, err = log.monitor(tmp_path / "state", *halt)
        assert code == 0, err
        [event] = halt_events(events)
        assert event["status"] == "logged", event
        [logged] = log.halts("1.0")
        assert logged["entry"]["key"] == bot.verifier().text()
        code, text = log.verify("1.0")
        assert code == 1 and "tampered artifact" in text, text
    finally:
        server.stop()


def test_a_halt_the_log_could_not_take_stays_pending_and_is_submitted_next_run(
        log: Log, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log that drops the monitor's halt submission (here: the connection fails) does not
    make the monitor forget it: exit 3, and the next run submits it."""
    log.publish("1.0", 2)
    log.publish("1.2", 1)
    state = tmp_path / "state"
    halt = ["--halt-key", str(log.acme), "--halt-on", "counter_not_growing"]

    def unreachable(*args: Any) -> Any:
        raise TransportError("couldn't reach the log: connection reset")

    with monkeypatch.context() as m:
        m.setattr(halts, "submit_entry", unreachable)
        code, events, err = log.monitor(state, *halt)
    assert code == 3 and "still pending" in err, err
    assert halt_events(events) == [] and log.halts("1.2") == []
    code, events, err = log.monitor(state, *halt)
    assert code == 0, err
    assert [e["version"] for e in halt_events(events)] == ["1.2"]
    assert len(log.halts("1.2")) == 1
