"""`tlog-verify release --admin-key`: the signing key must have been valid at the entry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support import make_release, start_server, submit_all, write_key
from verifier.cli import main as cli
from verifier.protocol.entries.registry_kinds import PUBLISHER_KIND, REVOKE_KIND
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer, generate_key


def test_release_signed_by_a_key_the_registry_never_granted_fails_the_client_check(
        database_url: str, log_signer: Signer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An open log accepts any signed release; a client pinning the admin key still refuses
    a release whose key was not (or no longer) valid for the package at its index."""
    admin, acme, stray = generate_key("admin"), generate_key("acme"), generate_key("acme")
    admin_vkey, log_vkey = tmp_path / "admin.vkey", tmp_path / "log.vkey"
    admin_vkey.write_text(admin.verifier().text() + "\n")
    log_vkey.write_text(log_signer.verifier().text() + "\n")
    key = write_key(tmp_path / "log.key", log_signer)
    server = start_server(database_url, key, tmp_path,
                          extra=("--policy", "open", "--admin-key", str(admin_vkey)))
    entries = [
        sign_entry({"kind": PUBLISHER_KIND, "publisher": "acme",
                    "packages": ["com.acme.*"], "keys": [acme.verifier().text()]}, admin),
        make_release(acme, "com.acme.app", "1.0"),
        make_release(stray, "com.acme.app", "1.1"),
        sign_entry({"kind": REVOKE_KIND, "publisher": "acme",
                    "keys": [acme.verifier().text()], "reason": "leaked"}, admin),
        make_release(acme, "com.acme.app", "1.2"),
    ]
    try:
        for entry in entries:  # one at a time: the order is the point
            assert asyncio.run(submit_all([server.url], [entry]))[0].status == 201

        def release(version: str) -> int:
            return cli.main(["release", "--log", server.url, "--key", str(log_vkey),
                             "--package", "com.acme.app", "--version", version,
                             "--admin-key", str(admin_vkey), "--no-artifact"])

        assert release("1.0") == 0
        assert release("1.1") == 1
        assert "not a current key" in capsys.readouterr().err
        assert release("1.2") == 1
        assert "the signing key of publisher 'acme' was revoked" in capsys.readouterr().err
    finally:
        server.stop()
