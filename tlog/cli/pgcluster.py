"""A local PostgreSQL cluster that tlog starts and stops itself.

Used by `tlog dev` (the embedded default) and by the test suite. It runs the
Debian/Ubuntu PostgreSQL server binaries; as root they refuse to run, so every
server command goes through `runuser -u postgres --` on a directory owned by
`postgres`. The server listens only on a Unix socket inside the cluster home, so
several clusters never fight over a TCP port.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = "postgres"
PORT = 5432  # only names the socket file; no TCP listener is opened


class ClusterError(RuntimeError):
    """PostgreSQL could not be found, initialised, started or stopped."""


def find_bindir() -> Path:
    """Return the directory of the newest installed PostgreSQL server binaries."""
    env = os.environ.get("TLOG_PG_BINDIR")
    candidates = [env] if env else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    for cand in candidates:
        if cand and (Path(cand) / "pg_ctl").is_file() and (Path(cand) / "initdb").is_file():
            return Path(cand)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise ClusterError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH); "
        "install them with: sudo apt-get install postgresql"
    )


@dataclass(frozen=True)
class Cluster:
    """A cluster under `home`: data in home/data, socket in home/run, log in home/server.log."""

    home: Path

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    def url(self, database: str = "postgres") -> str:
        """A libpq/asyncpg URL for a database of this cluster over its Unix socket."""
        return f"postgresql://{SERVER_USER}@/{database}?host={self.socket_dir}&port={PORT}"

    def is_initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def is_running(self) -> bool:
        return (self.socket_dir / f".s.PGSQL.{PORT}").exists() and self._ctl_status() == 0

    def init(self) -> None:
        """Create the cluster (trust auth on the private socket only)."""
        self._prepare_dirs()
        self._run_as_server(
            [str(find_bindir() / "initdb"), "-D", str(self.data_dir), "-U", SERVER_USER,
             "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"],
            "initdb",
        )

    def start(self, fsync: bool = True) -> None:
        """Start the server and wait until it accepts connections."""
        self._prepare_dirs()
        opts = (f"-p {PORT} -k {self.socket_dir} -c listen_addresses='' "
                f"-c max_connections=200 -c fsync={'on' if fsync else 'off'}")
        self._run_as_server(
            [str(find_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
             "-o", opts, "-w", "-t", "60", "start"],
            "pg_ctl start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" ends sessions and checkpoints the data (the clean way);
        "immediate" skips the checkpoint, for throwaway clusters about to be deleted."""
        if not self.is_initialised() or self._ctl_status() != 0:
            return
        self._run_as_server(
            [str(find_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w",
             "-t", "60", "stop"],
            "pg_ctl stop",
        )

    def ensure_running(self, fsync: bool = True) -> None:
        if not self.is_initialised():
            self.init()
        if not self.is_running():
            self.start(fsync=fsync)

    def _ctl_status(self) -> int:
        cmd = [str(find_bindir() / "pg_ctl"), "-D", str(self.data_dir), "status"]
        return subprocess.run(self._as_server(cmd), capture_output=True, check=False).returncode

    def _prepare_dirs(self) -> None:
        for d in (self.home, self.data_dir, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if os.geteuid() == 0:
            _give_to_server_user(self.home)

    def _as_server(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", SERVER_USER, "--", *cmd] if os.geteuid() == 0 else cmd

    def _run_as_server(self, cmd: list[str], what: str) -> None:
        proc = subprocess.run(self._as_server(cmd), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = ""
            if self.log_file.exists():
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise ClusterError(f"couldn't {what} (exit {proc.returncode}): "
                               f"{proc.stderr.strip() or proc.stdout.strip()}\n{tail}".strip())


def _give_to_server_user(home: Path) -> None:
    """As root: make `home` owned by postgres and check its parents are searchable."""
    try:
        ent = pwd.getpwnam(SERVER_USER)
    except KeyError as exc:
        raise ClusterError(
            f"running as root needs the '{SERVER_USER}' user (install the postgresql package)"
        ) from exc
    # Only the directories tlog creates; everything inside data/ is created by postgres itself.
    for path in (home, home / "data", home / "run"):
        if path.exists() and os.stat(path).st_uid != ent.pw_uid:
            os.chown(path, ent.pw_uid, ent.pw_gid)
    for parent in home.resolve().parents:
        if not os.stat(parent).st_mode & 0o001:
            raise ClusterError(
                f"{parent} is not searchable by the '{SERVER_USER}' user, so PostgreSQL "
                f"cannot reach {home}; choose another --home or run: chmod o+x {parent}"
            )
