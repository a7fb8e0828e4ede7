"""A small witnessed log for the explorer's browser tests and the README screenshots.

A real `tlog serve` on a real database, with two real witnesses (`tlog-verify witness
serve`, the same as `tlog dev`'s demo witness) and a policy that needs both, filled with
releases of a few packages, their lifecycle statements (rollout stages, a halt, a yank with
rollback) and one release whose strings are hostile HTML and JavaScript.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import release_fields, start_server, write_key
from tlog.cli.devwitness import running_witness
from verifier.protocol.cosignature import generate_witness_key
from verifier.protocol.entries.signing import sign_entry
from verifier.protocol.note import Signer, generate_key

ORIGIN = "log.example.org/explorer-demo"
WITNESSES = ("witness-one.example", "witness-two.example")
HOSTILE_PACKAGE = "hostile"
# Strings an attacker controls in a release: each would run script or change the page if
# the explorer put it into HTML unescaped. The version and the publisher's key name are
# shown in tables; metadata and artifact names in the entry's JSON.
HOSTILE_VERSION = "<script>alert(1)</script>"
HOSTILE_PUBLISHER = "<img/src=x/onerror=alert(2)>"
HOSTILE_METADATA = {
    "description": "<script>alert(1)</script>",
    "homepage": "javascript:alert(3)",
    "attribute": "\"'><img src=x onerror=alert(4)>",
    "closing": "</pre><style>body{display:none}</style><pre>",
    "svg": "<svg onload=alert(5)></svg>",
    "bidi": "\u202egnp.exe",
}
HOSTILE_ARTIFACT = "\"><iframe src=javascript:alert(6)>.tar.gz"


@dataclass
class DemoLog:
    url: str
    signer: Signer
    policy: str
    # What the fill logged: name -> index, e.g. "hostile", "acme-lib 2.0", "yank acme-lib 1.1"
    indices: dict[str, int] = field(default_factory=dict)

    @property
    def vkey(self) -> str:
        return self.signer.verifier().text()


def _post(url: str, entry: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url + "/v1/entries", data=json.dumps(entry).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body: dict[str, Any] = json.load(resp)
            return body
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"the log refused {entry['kind']} {entry['package']} "
                             f"{entry['version']}: {exc.code} {exc.read()!r}") from None


def _statement(signer: Signer, kind: str, package: str, version: str,
               **fields: Any) -> dict[str, Any]:
    return sign_entry({"kind": f"{kind}/v1", "package": package, "version": version,
                       **fields}, signer)


def fill(log: DemoLog, hostile: bool = True) -> None:
    """Releases of three packages over time, lifecycle statements, and (`hostile`) a
    release whose strings are HTML and script."""
    acme, tools = generate_key("acme-release-bot"), generate_key("example.org/tools-ci")

    def release(signer: Signer, package: str, version: str, counter: int,
                **extra: Any) -> None:
        fields = {**release_fields(package, version, counter=counter), **extra}
        log.indices[f"{package} {version}"] = _post(log.url, sign_entry(fields, signer))["index"]

    def statement(signer: Signer, kind: str, package: str, version: str, **kw: Any) -> None:
        entry = _statement(signer, kind, package, version, **kw)
        log.indices[f"{kind} {package} {version}"] = _post(log.url, entry)["index"]

    for n, version in enumerate(("1.0", "1.1", "1.2"), 1):
        release(acme, "acme-lib", version, n * 10,
                metadata={"source": "https://git.example.org/acme/lib", "commit": f"{n:040x}"})
        if version == "1.1":
            statement(acme, "rollout", "acme-lib", "1.1", stage="canary", percent=10)
            statement(acme, "rollout", "acme-lib", "1.1", stage="wider", percent=50)
            statement(acme, "halt", "acme-lib", "1.1", reason="crash reports from the canary")
            statement(acme, "yank", "acme-lib", "1.1", reason="data loss on upgrade",
                      rollback_version="1.0")
    for n, version in enumerate(("0.9.0", "1.0.0", "1.0.1", "1.1.0"), 1):
        release(tools, "example.org/tools", version, n)
    statement(tools, "rollout", "example.org/tools", "1.1.0", stage="canary", percent=5)
    if hostile:
        release(generate_key(HOSTILE_PUBLISHER), HOSTILE_PACKAGE, HOSTILE_VERSION, 1,
                metadata=HOSTILE_METADATA,
                artifacts=[{"name": HOSTILE_ARTIFACT, "sha256": "ab" * 32, "size": 666}])
        log.indices["hostile"] = log.indices[f"{HOSTILE_PACKAGE} {HOSTILE_VERSION}"]
    release(acme, "acme-lib", "2.0", 40)


def wait_cosigned(url: str, min_size: int, timeout: float = 30) -> str:
    """The /checkpoint note once it covers `min_size` entries (both witnesses cosigned)."""
    deadline = time.monotonic() + timeout
    note = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/checkpoint", timeout=5) as resp:
                note = resp.read().decode()
            if int(note.split("\n")[1]) >= min_size:
                return note
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                raise
        time.sleep(0.1)
    raise AssertionError(f"no cosigned checkpoint of size {min_size} within {timeout} s: "
                         f"{note!r}")


@contextmanager
def running_demo_log(database_url: str, workdir: Path,
                     hostile: bool = True) -> Iterator[DemoLog]:
    """Two witnesses, `tlog serve` with a policy needing both, filled (fill) and
    cosigned."""
    signer = generate_key(ORIGIN)
    key = write_key(workdir / "log.key", signer)
    (workdir / "log.vkey").write_text(signer.verifier().text() + "\n")
    with ExitStack() as stack:
        lines = [f"log {signer.verifier().text()}"]
        for name in WITNESSES:
            home = workdir / name
            home.mkdir()
            witness = generate_witness_key(name)
            wkey = home / "witness.key"
            wkey.write_text(witness.text() + "\n")
            wkey.chmod(0o600)
            wvkey = witness.verifier().text()
            wurl = stack.enter_context(running_witness(home, wkey, workdir / "log.vkey",
                                                       "127.0.0.1", 0))
            lines.append(f"witness {name} {wvkey} {wurl}")
        policy = "\n".join([*lines, "group both all " + " ".join(WITNESSES), "quorum both"])
        (workdir / "policy").write_text(policy + "\n")
        server = start_server(database_url, key, workdir, extra=(
            "--policy", "open", "--witness-policy", str(workdir / "policy"),
            "--witness-interval", "0.2"))
        stack.callback(server.stop)
        log = DemoLog(server.url, signer, policy + "\n")
        fill(log, hostile)
        wait_cosigned(log.url, max(log.indices.values()) + 1)
        yield log
