"""bench/http_compare.py: the two revisions, their `tlog serve` processes and the database.

A revision is a `git archive` copy in the run's temporary directory with a virtualenv of its
own (`python -m venv`, `pip install -q -e .`); the working tree runs on the interpreter that
runs this script, with the tree first on PYTHONPATH. Every child process is recorded so that
`stop_children` can end it, whatever way the run ends.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

_children: list[subprocess.Popen[bytes]] = []


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def git(repo: Path, *args: str) -> str:
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout.strip()


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLOG_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


@dataclass
class Checkout:
    """One side of the comparison: OLD or NEW."""

    label: str
    src: Path
    commit: str | None  # None: the working tree
    python: str

    @property
    def tlog(self) -> list[str]:
        if self.commit is None:
            return [self.python, "-m", "tlog"]
        return [str(Path(self.python).parent / "tlog")]

    @property
    def what(self) -> str:
        return f"commit {self.commit[:12]}" if self.commit else f"the working tree {self.src}"

    def env(self) -> dict[str, str]:
        env = clean_env()
        if self.commit is None:
            env["PYTHONPATH"] = str(self.src)
        return env


def spawn(argv: list[str], out: Path, cwd: Path, env: dict[str, str] | None = None
          ) -> subprocess.Popen[bytes]:
    with out.open("wb") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=cwd,
                                env=env or clean_env(), stdin=subprocess.DEVNULL)
    _children.append(proc)
    return proc


def _wait_all(procs: list[tuple[subprocess.Popen[bytes], Path, str]]) -> None:
    failed = []
    for proc, out, what in procs:
        proc.wait()
        _children.remove(proc)
        if proc.returncode != 0:
            failed.append(f"{what} failed ({proc.returncode}):\n"
                          + out.read_text(errors="replace")[-3000:])
    if failed:
        raise RuntimeError("\n".join(failed))


def checkout(repo: Path, label: str, rev: str | None, tmp: Path) -> Checkout:
    """A `git archive` copy of `rev` under tmp (not yet installed); the working tree if None."""
    if rev is None:
        return Checkout(label, repo, None, sys.executable)
    commit = git(repo, "rev-parse", "--verify", rev + "^{commit}")
    dest = tmp / label.lower()
    dest.mkdir()
    archive = subprocess.Popen(["git", "-C", str(repo), "archive", commit],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed")
    return Checkout(label, dest, commit, str(dest / ".venv" / "bin" / "python"))


def _venv_argv(c: Checkout) -> list[str]:
    return [sys.executable, "-m", "venv", str(c.src / ".venv")]


def _pip_argv(c: Checkout) -> list[str]:
    return [c.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", "."]


def install(checkouts: list[Checkout], tmp: Path) -> None:
    """A virtualenv in each copy (both at once), the copy installed in it in editable mode."""
    copies = [c for c in checkouts if c.commit is not None]
    for step, argv_of in (("venv", _venv_argv), ("pip", _pip_argv)):
        procs = []
        for c in copies:
            out, argv = tmp / f"install-{c.label}-{step}.log", argv_of(c)
            procs.append((spawn(argv, out, c.src), out, f"{c.label}: {' '.join(argv)}"))
        _wait_all(procs)


def check_imports(c: Checkout, workdir: Path) -> str:
    """Where the checkout's interpreter imports tlog and verifier from: inside its copy."""
    p = subprocess.run([c.python, "-c", "import tlog, verifier; print(tlog.__file__); "
                        "print(verifier.__file__)"], capture_output=True, text=True,
                       env=c.env(), cwd=workdir)
    paths = p.stdout.split()
    if p.returncode != 0 or len(paths) != 2:
        raise RuntimeError(f"{c.label} does not import tlog and verifier: {p.stderr}")
    for path in paths:
        if not Path(path).resolve().is_relative_to(c.src.resolve()):
            raise RuntimeError(f"{c.label} imports {path}, outside {c.src}")
    return " ".join(paths)


def run_tool(c: Checkout, args: list[str], cwd: Path) -> str:
    """`tlog <args>` of a checkout, its output; an error if it fails."""
    p = subprocess.run([*c.tlog, *args], capture_output=True, text=True, env=c.env(), cwd=cwd)
    if p.returncode != 0:
        raise RuntimeError(f"{c.label} tlog {' '.join(args)} failed ({p.returncode}):\n"
                           f"{p.stdout}{p.stderr}")
    return p.stdout + p.stderr


def stop_children() -> None:
    """End the processes this run started and that still run."""
    for proc in list(_children):
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in _children:
        _children.remove(proc)


# ------------------------------------------------------------------------------------------
# tlog serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    base: str
    logpath: Path

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass(frozen=True)
class Phase:
    name: str
    policy: str
    extra: tuple[str, ...] = ()


def serve_argv(c: Checkout, db_url: str, keys: dict[str, Path], port: int, cache: Path,
               phase: Phase) -> list[str]:
    return [*c.tlog, "serve", "--database-url", db_url, "--key", str(keys["log"]),
            "--listen", f"127.0.0.1:{port}", "--policy", phase.policy,
            "--admin-key", str(keys["admin_vkey"]), "--token-key", str(keys["token"]),
            "--admin-token-file", str(keys["admin_secret"]), "--tile-cache", str(cache),
            *phase.extra]


def wait_ready(serve: Serve, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and serve.proc.poll() is None:
        try:
            with urllib.request.urlopen(serve.base + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def start_serve(c: Checkout, db_url: str, keys: dict[str, Path], workdir: Path,
                phase: Phase) -> Serve:
    """`tlog serve` of a checkout on a free port, with an empty tile cache; once ready."""
    for attempt in range(3):
        port = free_port()
        logpath = workdir / f"serve-{c.label}-{phase.name}-{port}.log"
        cache = workdir / f"tilecache-{c.label}-{phase.name}-{port}"
        argv = serve_argv(c, db_url, keys, port, cache, phase)
        serve = Serve(spawn(argv, logpath, workdir, c.env()), f"http://127.0.0.1:{port}",
                      logpath)
        if wait_ready(serve):
            log(f"{c.label} tlog serve --policy {phase.policy} {' '.join(phase.extra)} ready "
                f"on {serve.base} (pid {serve.proc.pid})")
            return serve
        serve.stop()
        text = logpath.read_text(errors="replace")
        if "address already in use" in text.lower() and attempt < 2:
            continue
        raise RuntimeError(f"{c.label} tlog serve did not become ready:\n{text[-3000:]}")
    raise RuntimeError("unreachable")


def check_server_log(path: Path, label: str, phase: str) -> None:
    """Warn about ERROR records in a server's log, except aiohttp's own traceback for the
    request bodies with a Content-Encoding that does not decode (sent on purpose)."""
    records: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line) or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    errors = [r for r in records if " ERROR " in r.split("\n", 1)[0] or "Traceback" in r]
    expected = [r for r in errors if "content-encoding" in r.lower()]
    unexpected = [r for r in errors if r not in expected]
    if unexpected:
        log(f"warning: {label} {phase} server log has {len(unexpected)} unexpected error "
            f"records; the first:\n{unexpected[0][-2000:]}")
    elif expected:
        log(f"{label} {phase}: server logged {len(expected)} aiohttp tracebacks for the bad "
            "Content-Encoding bodies (expected)")


# ------------------------------------------------------------------------------------------
# the database


async def create_database(cluster_url: str, name: str) -> None:
    conn = await asyncpg.connect(cluster_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def db_facts(url: str) -> dict[str, Any]:
    """The log's entries (index, leaf hash, kind, package, version) and published sizes."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT idx, leaf_hash, kind, package, version FROM entries "
                                "ORDER BY idx")
        sizes = [r[0] for r in await conn.fetch("SELECT tree_size FROM checkpoints ORDER BY 1")]
    finally:
        await conn.close()
    return {"entries": [dict(r) for r in rows], "sizes": sizes}


async def tree_size(base: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(base + "/v1/log") as r:
        return int((await r.json())["tree_size"])
