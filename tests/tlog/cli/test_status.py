"""`tlog status` against real `tlog serve` processes (and a real witness): what a person at a
terminal sees, --json, and the exit status: 0 healthy, 1 a checkpoint that does not verify,
3 no log there, 4 a log in trouble (database down, witness quorum missed)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from tests.support import Server, free_port, make_release, serve_app, start_server, write_key
from tests.test_witness_quorum import process
from tests.tlog.sizes import leaves
from tests.tlog.test_outage import new_database, own_cluster
from tlog.cli.pgcluster import Cluster
from tlog.cli.status import _status_shape
from tlog.http.status import SHARED_FOR
from verifier.protocol.cosignature import generate_witness_key
from verifier.protocol.note import Signer, generate_key

__all__ = ["own_cluster"]  # the fixture: a PostgreSQL cluster this module may stop
COMMAND = [sys.executable, "-m", "tlog.cli", "status"]


def status(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, check=False)


def on_terminal(*args: str, env: dict[str, str]) -> str:
    """What `tlog status` prints when its stdout is a terminal."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*COMMAND, *args], stdout=follower, stderr=subprocess.DEVNULL,
                            env={**os.environ, **env})
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def post(url: str, entry: dict[str, Any]) -> int:
    req = urllib.request.Request(url + "/v1/entries", data=json.dumps(entry).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status)


def refuse(url: str, path: str) -> None:
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url + path, timeout=10)


@pytest.fixture
def log_files(tmp_path: Path, log_signer: Signer) -> tuple[Path, Path]:
    vkey = tmp_path / "log.vkey"
    vkey.write_text(log_signer.verifier().text() + "\n")
    return write_key(tmp_path / "log.key", log_signer), vkey


@pytest.fixture
def server(database_url: str, log_files: tuple[Path, Path], tmp_path: Path) -> Iterator[Server]:
    running = start_server(database_url, log_files[0], tmp_path)
    yield running
    running.stop()


def test_a_healthy_log_shows_its_size_checkpoint_database_and_recent_refusals(
        server: Server, log_files: tuple[Path, Path], publisher: Signer) -> None:
    vkey = str(log_files[1])
    assert post(server.url, make_release(publisher, "com.acme.app", "1.0")) == 201
    for _ in range(3):
        refuse(server.url, "/v1/entries?package=%20")
    refuse(server.url, "/v1/entries/99")
    done = status("--log", server.url, "--key", vkey)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "\x1b[" not in out  # not a terminal: no colour
    assert f"tree size    {leaves(1)}\n" in out
    assert f"size {leaves(1)} verified with log.example.org/test+" in out
    assert f"from --key {vkey}" in out and "not pinned" not in out
    assert "submissions  0 waiting; appends running\n" in out
    assert "database     reachable, writable\n" in out
    assert "refusals     bad_package 3, not_found 1 (last 300 s)\n" in out
    assert out.endswith("status       healthy\n"), out

    doc = json.loads(status("--log", server.url, "--key", vkey, "--json").stdout)
    assert doc["verdict"] == "healthy" and doc["exit_code"] == 0 and doc["problems"] == []
    assert doc["tree_size"] == doc["checkpoint"]["size"] == leaves(1)
    assert doc["checkpoint"]["verified"] is True and doc["key"]["pinned"] is True
    assert 0 <= doc["checkpoint_age_seconds"] < 60
    assert doc["database"]["reachable"] is True and doc["witnesses"] is None
    assert doc["refusals"] == {"window_seconds": 300,
                               "by_code": {"bad_package": 3, "not_found": 1}}

    other = Path(vkey).with_name("other.vkey")
    other.write_text(generate_key("log.example.org/other").verifier().text() + "\n")
    wrong = status("--log", server.url, "--key", str(other))
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "but the log key given is 'log.example.org/other': not the same log" in wrong.stderr

    unpinned = status("--log", server.url)
    assert unpinned.returncode == 0, unpinned.stdout + unpinned.stderr
    assert "from GET /v1/log  (key not pinned: give --key or --policy)" in unpinned.stdout


def test_colour_only_on_a_terminal_and_never_with_no_color(server: Server) -> None:
    coloured = on_terminal("--log", server.url, env={"TERM": "xterm"})
    assert "\x1b[32mhealthy\x1b[0m" in coloured
    plain = on_terminal("--log", server.url, env={"TERM": "xterm", "NO_COLOR": "1"})
    assert "healthy" in plain and "\x1b[" not in plain


def test_no_log_at_the_url_is_a_transport_failure() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = status("--log", url)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "couldn't reach the log" in done.stderr
    doc = json.loads(status("--log", url, "--json").stdout)
    assert doc["verdict"] == "unreachable" and doc["exit_code"] == 3
    assert status("--log", "ftp://example.org").returncode == 2


def wait_published(url: str, timeout: float = 30) -> dict[str, Any]:
    """/v1/status once the witness quorum has published the latest tree."""
    deadline = time.monotonic() + timeout
    while True:
        doc: dict[str, Any] = get_json(url + "/v1/status")
        witnesses = doc["witnesses"] or {}
        if doc["tree_size"] and witnesses.get("published_size") == doc["tree_size"]:
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.2)


def test_a_witness_that_never_cosigned_is_behind_and_a_missed_quorum_is_unhealthy(
        database_url: str, log_files: tuple[Path, Path], tmp_path: Path,
        publisher: Signer) -> None:
    key, vkey = log_files
    ours, ghost = generate_witness_key("w1.example/witness"), generate_witness_key("ghost.example")
    ours_key = write_key(tmp_path / "w1.key", ours)  # type: ignore[arg-type]
    port, nobody = free_port(), free_port()  # the ghost's URL: no one listens there
    lines = (f"log {vkey.read_text().strip()}\n"
             f"witness ours {ours.verifier().text()} http://127.0.0.1:{port}\n"
             f"witness ghost {ghost.verifier().text()} http://127.0.0.1:{nobody}\n")
    served = tmp_path / "policy"
    served.write_text(lines + "quorum ours\n")
    strict = tmp_path / "strict-policy"
    strict.write_text(lines + "group both all ours ghost\nquorum both\n")
    with process("verifier.cli", "witness", "serve", "--key", str(ours_key), "--log-key",
                 str(vkey), "--state", str(tmp_path / "w1"), "--listen", f"127.0.0.1:{port}",
                 port=port):
        server = start_server(database_url, key, tmp_path, extra=(
            "--policy", "open", "--witness-policy", str(served), "--witness-interval", "0.3"))
        try:
            assert post(server.url, make_release(publisher, "com.acme.app", "1.0")) == 201
            size = wait_published(server.url)["tree_size"]
            done = status("--log", server.url, "--policy", str(served))
            missed = status("--log", server.url, "--policy", str(strict))
            doc = json.loads(status("--log", server.url, "--policy", str(strict),
                                    "--json").stdout)
        finally:
            server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"from the policy's log line ({served})" in done.stdout
    assert "quorum       met: witness ours" in done.stdout
    assert f"  ours       current: cosigned {size} of {size} (verified)\n" in done.stdout
    assert ("  ghost      behind: never cosigned (as the log reports); last error: "
            in done.stdout)
    assert missed.returncode == 4, missed.stdout + missed.stderr
    assert "quorum       MISSED: 2 of 2 in group both (witness ours, witness ghost)" \
        in missed.stdout
    assert "status       UNHEALTHY: witness quorum missed: the policy requires" in missed.stdout
    assert doc["verdict"] == "unhealthy" and doc["exit_code"] == 4
    rows = {row["name"]: row for row in doc["witnesses"]["list"]}
    assert rows["ours"]["verified"] and not rows["ours"]["behind"]
    assert rows["ghost"]["behind"] and rows["ghost"]["size"] is None
    assert rows["ghost"]["last_error"]
    assert [c["witness"] for c in doc["checkpoint"]["cosignatures"]] == ["ours"]


def tampered(note: bytes, origin: str) -> bytes:
    """The note with one base64 digit of the log's signature changed."""
    lines = note.decode().split("\n")
    i = next(n for n, line in enumerate(lines) if line.startswith(f"— {origin} "))
    digit = lines[i][-5]
    lines[i] = lines[i][:-5] + ("A" if digit != "A" else "B") + lines[i][-4:]
    return "\n".join(lines).encode()


Rewrite = Callable[[str, int, bytes], tuple[int, bytes]]


@asynccontextmanager
async def misbehaving(upstream: str, rewrite: Rewrite) -> AsyncIterator[str]:
    """A proxy before the log at `upstream` whose answers pass `rewrite(path, code, body)`:
    a man in the middle, or a log lying about itself. Yields its URL."""
    async def forward(request: web.Request) -> web.Response:
        async with ClientSession() as session, session.get(upstream + request.path_qs) as r:
            body, code = await r.read(), r.status
            kind = r.headers.get("Content-Type", "application/octet-stream")
        code, body = rewrite(request.path, code, body)
        return web.Response(body=body, status=code, headers={"Content-Type": kind})

    app = web.Application()
    app.router.add_get("/{tail:.*}", forward)
    async with serve_app(app) as url:
        yield url


async def run_status(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*COMMAND, *args, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_tampered_checkpoint_signature_fails_with_the_reason(
        server: Server, log_files: tuple[Path, Path], log_signer: Signer) -> None:
    """A man in the middle (or a log) serving a checkpoint its key did not sign: exit 1."""
    def rewrite(path: str, code: int, body: bytes) -> tuple[int, bytes]:
        return code, tampered(body, log_signer.name) if path == "/checkpoint" else body

    outs = []
    async with misbehaving(server.url, rewrite) as url:
        for extra in ((), ("--json",)):
            code, out, err = await run_status("--log", url, "--key", str(log_files[1]), *extra)
            assert code == 1, out + err
            outs.append((out, err))
    (text, err), (js, _) = outs
    reason = "the checkpoint of GET /checkpoint does not verify with the log key"
    assert f"status       FAILED: {reason} {log_signer.name}+" in text, err
    assert "invalid signature by log.example.org/test+" in text
    assert reason in err
    doc = json.loads(js)
    assert doc["verdict"] == "failed" and reason in doc["problems"][0]


async def test_a_checkpoint_no_key_verified_is_never_reported_healthy(
        server: Server, log_signer: Signer) -> None:
    """Without --key or --policy the log's own key (GET /v1/log) is used; a log or proxy
    that withholds it leaves the checkpoint unverified, and a forged one must not pass as
    "healthy" (exit 0) for want of a key to check it with."""
    def rewrite(path: str, code: int, body: bytes) -> tuple[int, bytes]:
        if path == "/v1/log":
            return 404, b'{"error": {"code": "not_found", "message": "no"}}'
        return code, tampered(body, log_signer.name) if path == "/checkpoint" else body

    async with misbehaving(server.url, rewrite) as url:
        code, out, err = await run_status("--log", url)
    assert code == 4, out + err
    assert "UNHEALTHY: checkpoint not verified: no log key: GET /v1/log answered 404" in out


def test_database_down_is_reported_unhealthy_without_a_crash(
        own_cluster: Cluster, log_files: tuple[Path, Path], tmp_path: Path,
        publisher: Signer) -> None:
    url = asyncio.run(new_database(own_cluster))
    server = start_server(url, log_files[0], tmp_path)
    try:
        assert post(server.url, make_release(publisher, "com.acme.app", "1.0")) == 201
        # (this also has the server serve /checkpoint once: it keeps that note for outages)
        assert status("--log", server.url, "--key", str(log_files[1])).returncode == 0
        own_cluster.stop()
        time.sleep(SHARED_FOR)  # the server's last probe, from before, is shared this long
        try:
            done = status("--log", server.url, "--key", str(log_files[1]))
            unpinned = status("--log", server.url)
            report = get_json(server.url + "/v1/status")
        finally:
            own_cluster.start(fsync=False)
    finally:
        server.stop()
    assert done.returncode == 4, done.stdout + done.stderr
    assert "database     unreachable (" in done.stdout
    assert "status       UNHEALTHY: database unreachable" in done.stdout
    # what the server still stands behind: the last size it read, the checkpoint it served
    assert f"tree size    {leaves(1)}\n" in done.stdout
    assert f"size {leaves(1)} verified with" in done.stdout
    assert unpinned.returncode == 4, unpinned.stdout + unpinned.stderr
    assert "not verified: no log key: GET /v1/log answered 503: database_unavailable" \
        in unpinned.stdout
    assert report["database"] == {"reachable": False} and report["database_error"]
    # never a 500 nor an error of ours (asyncpg's pool logs its own reconnect failures)
    answers = [json.loads(line.split("tlog.access: ")[1]) for line in server.output().splitlines()
               if "tlog.access: " in line]
    assert {a["status"] for a in answers if a["route"] == "/v1/status"} == {200}
    assert " ERROR tlog" not in server.output()


def test_a_status_answer_of_the_wrong_shape_is_refused_not_trusted() -> None:
    """What the command reads is checked before use: a hostile or broken server's numbers
    (a time of Infinity, a negative size, a non-number count) are a transport failure."""
    good = {"origin": "log", "time": 1.0, "tree_size": 0, "checkpoint_time": None,
            "submissions_waiting": 0, "appends": "running", "database": {"reachable": True},
            "witnesses": None, "refusals": {"by_code": {"not_found": 1}}}
    assert _status_shape(good)
    for bad in ({"time": float("inf")}, {"time": float("nan")}, {"checkpoint_time": 1e300},
                {"tree_size": -1}, {"tree_size": True}, {"appends": "maybe"},
                {"database": {}}, {"refusals": {"by_code": {"x": "many"}}}, {"origin": 1}):
        assert not _status_shape({**good, **bad}), bad


@pytest.mark.parametrize("size", ["\u00b2", "9" * 5000])
async def test_an_unverified_checkpoint_with_a_size_int_refuses_is_no_crash(
        server: Server, size: str) -> None:
    """"²" is a digit to str.isdigit but not to int(), nor are 5000 digits: the stated size
    of a checkpoint no key checks is shown only when it is a canonical decimal."""
    def rewrite(path: str, code: int, body: bytes) -> tuple[int, bytes]:
        if path == "/v1/log":
            return 404, b'{"error": {"code": "not_found", "message": "no"}}'
        if path == "/checkpoint":
            lines = body.decode().split("\n")
            return code, "\n".join([lines[0], size, *lines[2:]]).encode()
        return code, body

    async with misbehaving(server.url, rewrite) as url:
        code, out, err = await run_status("--log", url, "--json")
    assert code == 4, out + err
    assert json.loads(out)["checkpoint"]["size"] is None


async def test_a_cosignature_dated_far_ahead_does_not_meet_the_quorum(
        server: Server, log_files: tuple[Path, Path], publisher: Signer,
        tmp_path: Path) -> None:
    """A witness whose clock runs an hour ahead: clients (PolicyTrust with now) do not count
    its cosignature, so the status must not call the quorum met on it."""
    witness = generate_witness_key("witness.example/ahead")
    policy = tmp_path / "ahead.policy"
    policy.write_text(f"log {log_files[1].read_text().strip()}\n"
                      f"witness ahead {witness.verifier().text()}\nquorum ahead\n")
    assert post(server.url, make_release(publisher, "com.acme.app", "1.0")) == 201

    def rewrite(path: str, code: int, body: bytes) -> tuple[int, bytes]:
        if path != "/checkpoint":
            return code, body
        note = body.decode()
        line = witness.cosign(note[:note.index("\n\n") + 1], int(time.time()) + 3600).line()
        return code, (note + line).encode()

    async with misbehaving(server.url, rewrite) as url:
        code, out, err = await run_status("--log", url, "--policy", str(policy), "--json")
    assert code == 4, out + err
    doc = json.loads(out)
    assert doc["checkpoint"]["quorum_met"] is False and doc["checkpoint"]["cosignatures"] == []


async def test_control_characters_from_the_log_never_reach_the_terminal(
        server: Server, log_files: tuple[Path, Path]) -> None:
    """Every string the report shows comes from the log: a hostile one must not move the
    cursor, rewrite the verdict line or set the terminal's title (escape sequences)."""
    forged = "\r\x1b[2Kstatus       healthy\x1b]0;owned\x07\u202e"

    def rewrite(path: str, code: int, body: bytes) -> tuple[int, bytes]:
        if path != "/v1/status":
            return code, body
        doc = json.loads(body)
        doc.update(appends="stopped", appends_stopped=forged)
        doc["refusals"]["by_code"][forged] = 1
        return code, json.dumps(doc).encode()

    async with misbehaving(server.url, rewrite) as url:
        code, out, err = await run_status("--log", url, "--key", str(log_files[1]))
    assert code == 4, out + err
    assert not [c for c in out + err if c in "\r\x1b\x07\u202e"], repr(out + err)
    assert "appends STOPPED: \\r\\x1b[2Kstatus" in out
