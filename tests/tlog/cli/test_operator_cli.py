"""`tlog publish`, `tlog registry` and `tlog token`: secrets, redirects, and the log's word.

Stub logs are aiohttp apps on 127.0.0.1 in a thread of this process; the commands run in
this process too (tlog.cli.main.main), so each stub records exactly what reached it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from tests.support import start_server, write_key
from tests.tlog.sizes import alone, leaves
from tlog.cli.main import main as tlog_main
from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.entries.kinds import validate_registry_entry
from verifier.protocol.note import Signer, generate_key

LOG = generate_key("log.example.org/test")
FORGER = generate_key("log.example.org/test")  # the log's name, not the log's key
ADMIN = generate_key("log-admin")
ACME = generate_key("acme")
SECRET = "tok-3f9a1c0e55d24b7e8a61"


@dataclass
class Stub:
    url: str
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)


Answer = Callable[[web.Request, bytes], web.Response]


@contextmanager
def stub_log(answer: Answer) -> Iterator[Stub]:
    """An HTTP server on 127.0.0.1 that records every request and answers with `answer`."""
    loop = asyncio.new_event_loop()
    stub = Stub("")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        stub.seen.append((request.method, request.path, dict(request.headers)))
        return answer(request, body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    stub.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@dataclass
class Files:
    log_vkey: Path
    admin_key: Path
    acme_key: Path
    acme_vkey: Path
    token: Path
    admin_token: Path
    artifact: Path


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Files:
    monkeypatch.delenv("TLOG_TOKEN", raising=False)
    monkeypatch.delenv("TLOG_ADMIN_TOKEN", raising=False)
    log_vkey, acme_vkey = tmp_path / "log.vkey", tmp_path / "acme.vkey"
    log_vkey.write_text(LOG.verifier().text() + "\n")
    acme_vkey.write_text(ACME.verifier().text() + "\n")
    token, admin_token = tmp_path / "ci-token", tmp_path / "admin-token"
    for path in (token, admin_token):
        path.write_text(SECRET + "\n")
        path.chmod(0o600)
    artifact = tmp_path / "app-2.4.1.apk"
    artifact.write_bytes(b"apk bytes")
    return Files(log_vkey, write_key(tmp_path / "admin.key", ADMIN),
                 write_key(tmp_path / "acme.key", ACME), acme_vkey, token, admin_token,
                 artifact)


def publish_args(log: str, f: Files) -> list[str]:
    return ["publish", "--log", log, "--log-key", str(f.log_vkey), "--key", str(f.acme_key),
            "--package", "com.acme.app", "--version", "2.4.1", str(f.artifact)]


def register_args(log: str, f: Files, *extra: str) -> list[str]:
    return ["registry", "register", "--log", log, "--signer", str(f.admin_key),
            "--publisher", "acme", "--package", "com.acme.*", "--publisher-key",
            str(f.acme_vkey), *extra]


def rotate_args(log: str, f: Files) -> list[str]:
    return ["registry", "rotate", "--log", log, "--log-key", str(f.log_vkey), "--signer",
            str(f.acme_key), "--publisher", "acme", "--add", str(f.acme_vkey)]


def revoke_args(log: str, f: Files) -> list[str]:
    return ["registry", "revoke", "--log", log, "--log-key", str(f.log_vkey), "--signer",
            str(f.acme_key), "--publisher", "acme", "--key", str(f.acme_vkey),
            "--reason", "retired"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = tlog_main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- 12: no secret on the command line ---------------------------------------------------------


def test_token_on_the_command_line_is_refused_with_where_to_put_it(
        files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    with stub_log(lambda _r, _b: web.json_response({})) as log:
        commands = [publish_args(log.url, files), register_args(log.url, files),
                    rotate_args(log.url, files), revoke_args(log.url, files)]
        for argv in commands:
            for form in (["--token", SECRET], [f"--token={SECRET}"]):
                code, out, err = run([*argv, *form], capsys)
                assert code == 2, (argv[:2], err)
                assert "--token-file" in err and "TLOG_TOKEN" in err and "(ps)" in err
                assert SECRET not in out + err
        assert log.seen == []  # refused before anything was sent


# -- 13a: a redirect never carries a credential elsewhere -----------------------------------


def redirect_to(target: Callable[[], str], status: int) -> Answer:
    def answer(request: web.Request, _body: bytes) -> web.Response:
        return web.json_response({"moved": True}, status=status,
                                 headers={"Location": target() + request.path})
    return answer


@pytest.mark.parametrize(("status", "scheme"), [(307, "http"), (308, "https")])
def test_a_log_redirecting_to_another_host_never_gets_the_token_there(
        files: Files, capsys: pytest.CaptureFixture[str], status: int, scheme: str) -> None:
    with stub_log(lambda _r, _b: web.json_response({})) as elsewhere:
        other = elsewhere.url.replace("http:", f"{scheme}:")
        with stub_log(redirect_to(lambda: other, status)) as log:
            commands = {
                "publish": [*publish_args(log.url, files), "--token-file", str(files.token)],
                "register": register_args(log.url, files, "--log-key", str(files.log_vkey),
                                          "--token-file", str(files.token)),
                "token issue": ["token", "issue", "--log", log.url, "--publisher", "acme",
                                "--scope", "com.acme.*", "--admin-token-file",
                                str(files.admin_token)]}
            for name, argv in commands.items():
                code, out, err = run(argv, capsys)
                assert code == 3, (name, err)
                assert f"answered {status}, a redirect" in err and "--log" in err, err
                assert out == ""
            # The log named by --log got the credential once per command; nothing else did.
            assert [h.get("Authorization") for _, _, h in log.seen] == [f"Bearer {SECRET}"] * 3
    assert elsewhere.seen == []


# -- registry commands verify the log's answer ------------------------------------------------


def forged_answer(signer: Signer, leaf: Callable[[bytes], bytes]) -> Answer:
    """A 201 for the submitted entry whose checkpoint (size 1, root `leaf(real leaf hash)`)
    is signed by `signer`."""
    def answer(_request: web.Request, body: bytes) -> web.Response:
        leaf_hash = validate_registry_entry(json.loads(body)).leaf_hash
        cp = Checkpoint(LOG.name, 1, leaf(leaf_hash))
        return web.json_response({"index": 0, "leaf_hash": leaf_hash.hex(), "tree_size": 1,
                                  "inclusion_proof": [],
                                  "checkpoint": sign_checkpoint(cp, signer)}, status=201)
    return answer


@pytest.mark.parametrize(("signer", "leaf", "why"), [
    (FORGER, lambda h: h, "does not prove our entry logged"),
    (LOG, lambda h: bytes(32), "does not prove our entry logged"),
])
def test_registry_commands_refuse_an_answer_that_does_not_prove_the_entry(
        files: Files, capsys: pytest.CaptureFixture[str], signer: Signer,
        leaf: Callable[[bytes], bytes], why: str) -> None:
    with stub_log(forged_answer(signer, leaf)) as log:
        for argv in (register_args(log.url, files, "--log-key", str(files.log_vkey),
                                   "--admin-token-file", str(files.admin_token)),
                     [*rotate_args(log.url, files), "--token-file", str(files.token)],
                     [*revoke_args(log.url, files), "--token-file", str(files.token)]):
            code, out, err = run(argv, capsys)
            assert code == 1, err
            assert why in err and "logged" not in out


def test_registry_commands_without_a_log_key_warn_that_the_log_vouches_for_itself(
        files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    honest = forged_answer(LOG, lambda h: h)

    def answer(request: web.Request, body: bytes) -> web.Response:
        if request.method == "GET" and request.path == "/v1/log":
            return web.json_response({"origin": LOG.name, "vkey": LOG.verifier().text(),
                                      "tree_size": 0})
        return honest(request, body)

    with stub_log(answer) as log:
        code, out, err = run(register_args(log.url, files, "--admin-token-file",
                                           str(files.admin_token)), capsys)
    assert code == 0, err
    assert "warning: no --log-key given" in err
    assert "logged publisher/v1 for acme at index 0 (tree size 1); inclusion proof verified" \
        in out


def test_registry_and_token_commands_on_a_real_log(
        files: Files, tmp_path: Path, database_url: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Each registry change is proven against the pinned log key; revoking a token twice is
    no error."""
    admin_vkey = tmp_path / "admin.vkey"
    admin_vkey.write_text(ADMIN.verifier().text() + "\n")
    server = start_server(database_url, write_key(tmp_path / "log.key", LOG), tmp_path, extra=[
        "--policy", "registered", "--admin-key", str(admin_vkey),
        "--token-key", str(write_key(tmp_path / "token.key", generate_key("tlog-tokens"))),
        "--admin-token-file", str(files.admin_token)])
    try:
        admin = ["--admin-token-file", str(files.admin_token)]
        code, out, err = run(register_args(server.url, files, "--log-key",
                                           str(files.log_vkey), *admin), capsys)
        assert code == 0, err
        assert f"at index 0 (tree size {leaves(1)}); inclusion proof verified" in out
        code, token, err = run(["token", "issue", "--log", server.url, "--publisher", "acme",
                                "--scope", "com.acme.*", *admin], capsys)
        assert code == 0, err
        files.token.write_text(token)
        jti = err.split()[1]
        code, out, err = run([*publish_args(server.url, files), "--token-file",
                              str(files.token)], capsys)
        assert code == 0 and f"logged com.acme.app 2.4.1 at index {alone(1)}" in out, err
        new_key = generate_key("acme")
        files.acme_vkey.write_text(new_key.verifier().text() + "\n")
        code, out, err = run([*rotate_args(server.url, files), "--token-file",
                              str(files.token)], capsys)
        assert code == 0 and f"logged keys/v1 for acme at index {alone(2)}" in out, err
        revoke = ["token", "revoke", "--log", server.url, *admin, jti]
        assert run(revoke, capsys)[:2] == (0, f"revoked token {jti}\n")
        assert run(revoke, capsys)[:2] == (0, f"token {jti} was already revoked\n")
        code, _, err = run(["token", "revoke", "--log", server.url, *admin, "never-issued"],
                           capsys)
        assert code == 1 and "(404 not_found)" in err
    finally:
        server.stop()
