"""Release verification as a library call (verifier.client.release), as an updater makes it:
against a real `tlog serve`, with no command line in between."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support import Server, make_release, start_server, submit_all, write_key
from verifier.client.artifacts import hash_file
from verifier.client.log import LogClient
from verifier.client.release import verify_receipt_file, verify_release
from verifier.client.statedir import StateDir
from verifier.errors import UsageError, VerificationFailed
from verifier.protocol.entries.registry_kinds import PUBLISHER_KIND
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer, generate_key
from verifier.protocol.receipt import make_receipt
from verifier.protocol.trust import KeyTrust

PACKAGE = "com.acme.app"
ADMIN, ACME, STRAY = generate_key("admin"), generate_key("acme"), generate_key("acme")


@pytest.fixture
def server(database_url: str, log_signer: Signer, tmp_path: Path) -> Server:
    """An open log whose registry grants ACME the package; STRAY is never granted."""
    admin_vkey = tmp_path / "admin.vkey"
    admin_vkey.write_text(ADMIN.verifier().text() + "\n")
    key = write_key(tmp_path / "log.key", log_signer)
    return start_server(database_url, key, tmp_path,
                        extra=("--policy", "open", "--admin-key", str(admin_vkey)))


def log_entries(server: Server) -> list[dict[str, object]]:
    """Log a registration and two releases, one at a time (the order is the point)."""
    entries = [
        sign_entry({"kind": PUBLISHER_KIND, "publisher": "acme",
                             "packages": ["com.acme.*"], "keys": [ACME.verifier().text()]}, ADMIN),
        make_release(ACME, PACKAGE, "1.0", payload=b"app 1.0"),
        make_release(STRAY, PACKAGE, "1.1"),
    ]
    replies = []
    for entry in entries:
        result = asyncio.run(submit_all([server.url], [entry]))[0]
        assert result.status == 201, result.body
        replies.append(result.body)
    return [make_receipt(entry, int(reply["index"]),
                         [bytes.fromhex(h) for h in reply["inclusion_proof"]],
                         str(reply["checkpoint"]))
            for entry, reply in zip(entries, replies, strict=True)]


def test_an_updater_verifies_a_release_online_and_offline_with_library_calls(
        server: Server, log_signer: Signer, tmp_path: Path) -> None:
    try:
        receipts = log_entries(server)
        apk = tmp_path / "com.acme.app-1.0.tar.gz"
        apk.write_bytes(b"app 1.0")
        files, key = [hash_file(apk)], KeyTrust(log_signer.verifier())
        client = LogClient(server.url)
        with StateDir(tmp_path / "state") as state:
            verified = verify_release(client, key, PACKAGE, "1.0", state=state,
                                      admins=[ADMIN.verifier()], files=files,
                                      pinned=[ACME.verifier()])
            stored = state.load_trusted(key)
        # Each entry came alone: each batch ended with a map root (registry 0, 1.0 at 2, 1.1 at 4).
        assert (verified.release.version, verified.receipt.index) == ("1.0", 2)
        assert verified.artifacts == ("com.acme.app-1.0.tar.gz",)
        assert stored is not None and stored.size == verified.receipt.checkpoint.size == 6

        # An open log took the stray key's release; only the admin keys tell it apart.
        assert verify_release(client, key, PACKAGE, "1.1").release.key == STRAY.verifier()
        with pytest.raises(VerificationFailed, match="not a current key"):
            verify_release(client, key, PACKAGE, "1.1", admins=[ADMIN.verifier()])
        with pytest.raises(VerificationFailed, match=r"com\.acme\.app 2\.0 is not released"):
            verify_release(client, key, PACKAGE, "2.0")
        with pytest.raises(VerificationFailed, match="not among the pinned publisher keys"):
            verify_release(client, key, PACKAGE, "1.1", pinned=[ACME.verifier()])
    finally:
        server.stop()

    # Offline, with the log stopped: the receipt alone proves the entry.
    receipt = tmp_path / "receipt.json"
    receipt.write_text(json.dumps(receipts[1]))
    offline = verify_receipt_file(receipt, key, files, [ACME.verifier()])
    assert (offline.receipt.index, offline.artifacts) == (2, verified.artifacts)
    with pytest.raises(UsageError, match="couldn't read receipt"):
        verify_receipt_file(tmp_path / "missing.json", key)
    with pytest.raises(VerificationFailed, match="does not verify"):
        verify_receipt_file(receipt, KeyTrust(generate_key("log.example.org/test").verifier()))
