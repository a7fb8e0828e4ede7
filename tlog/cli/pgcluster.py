"""A local PostgreSQL cluster that tlog starts and stops itself.

Used by `tlog dev` (the embedded default) and by the test suite. It runs the
Debian/Ubuntu PostgreSQL server binaries; as root they refuse to run, so every
server command goes through `runuser -u postgres --` on a directory owned by
`postgres`. The server listens only on a Unix socket inside the cluster home, so
several clusters never fight over a TCP port.

The cluster is private to the account that runs its server: a superuser of it can run
programs as that account (a copy to a program), so no other local user may get in. The
home and the socket directory are 0700 (root, which runs the server as `postgres`, passes
anyway), and every connection needs the superuser's random password (scram-sha-256),
kept in home/password (0600); `url()` carries it.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from tlog.store.migrate import set_password_sql

SERVER_USER = "postgres"
PORT = 5432  # only names the socket file; no TCP listener is opened
AUTH = "scram-sha-256"


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
    """A cluster under `home`: data in home/data, socket in home/run, log in
    home/server.log, the superuser's password in home/password."""

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

    @property
    def password_file(self) -> Path:
        return self.home / "password"

    def password(self) -> str:
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClusterError(f"couldn't read the cluster's password: {exc}") from exc

    def url(self, database: str = "postgres") -> str:
        """A libpq/asyncpg URL for a database of this cluster over its Unix socket, with
        the superuser's password (keep it as secret as the password file)."""
        password = urllib.parse.quote(self.password(), safe="")
        return (f"postgresql://{SERVER_USER}:{password}@/{database}"
                f"?host={urllib.parse.quote(str(self.socket_dir))}&port={PORT}")

    def is_initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def is_running(self) -> bool:
        return (self.socket_dir / f".s.PGSQL.{PORT}").exists() and self._ctl_status() == 0

    def init(self) -> None:
        """Create the cluster: password authentication only, superuser password random."""
        self._prepare_dirs()
        self._write_password()
        self._run_as_server(
            [str(find_bindir() / "initdb"), "-D", str(self.data_dir), "-U", SERVER_USER,
             f"--auth={AUTH}", f"--pwfile={self.password_file}", "-E", "UTF8",
             "--locale=C.UTF-8", "--no-instructions"],
            "initdb",
        )

    def start(self, fsync: bool = True) -> None:
        """Start the server and wait until it accepts connections."""
        self._prepare_dirs()
        if not self.password_file.is_file():
            self._secure_trust_cluster()
        # No TCP listener, and a socket only its owner may open (its directory is 0700 too).
        # pg_ctl hands -o to a shell: quote the directory (a home may hold a space).
        opts = (f"-p {PORT} -k {shlex.quote(str(self.socket_dir))} -c listen_addresses='' "
                "-c unix_socket_permissions=0700 "
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

    def _write_password(self) -> None:
        """A fresh random superuser password in a 0600 file the server's user owns."""
        self.password_file.unlink(missing_ok=True)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        if os.geteuid() == 0:
            ent = _server_user()
            os.chown(self.password_file, ent.pw_uid, ent.pw_gid)

    def _secure_trust_cluster(self) -> None:
        """A cluster made by an older tlog trusted every local user: give its superuser a
        password and demand it, before the server starts again (single-user mode)."""
        self._write_password()
        sql = set_password_sql(SERVER_USER, self.password())
        proc = subprocess.run(
            self._as_server([str(find_bindir() / "postgres"), "--single", "-D",
                             str(self.data_dir), "postgres"]),
            input=sql, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            self.password_file.unlink(missing_ok=True)
            raise ClusterError(f"couldn't set a password on the cluster in {self.home} "
                               f"(is it running?): {proc.stderr.strip()}")
        hba = self.data_dir / "pg_hba.conf"
        lines = [ln for ln in hba.read_text().splitlines() if not ln.lstrip().startswith(
            ("local", "host"))]
        # Written by root in a directory postgres owns: keep the file the server's.
        hba.write_text("\n".join([*lines, f"local all all {AUTH}",
                                   f"host all all 127.0.0.1/32 {AUTH}"]) + "\n")

    def _ctl_status(self) -> int:
        cmd = [str(find_bindir() / "pg_ctl"), "-D", str(self.data_dir), "status"]
        return subprocess.run(self._as_server(cmd), capture_output=True, check=False).returncode

    def _prepare_dirs(self) -> None:
        for d in (self.home, self.data_dir, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
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


def _server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError as exc:
        raise ClusterError(
            f"running as root needs the '{SERVER_USER}' user (install the postgresql package)"
        ) from exc


def unreachable_parent(path: Path) -> Path | None:
    """The first existing directory above `path` the server's OS user cannot enter, or
    None. Only root runs the server as another user; otherwise the answer is always None."""
    if os.geteuid() != 0:
        return None
    ent = _server_user()
    groups = set(os.getgrouplist(SERVER_USER, ent.pw_gid))
    for parent in reversed(path.absolute().parents):
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            return None  # made by root below here, with modes this module sets
        if st.st_uid == ent.pw_uid:
            bit = 0o100
        elif st.st_gid in groups:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return parent
    return None


def _give_to_server_user(home: Path) -> None:
    """As root: make `home` owned by postgres and check its parents are searchable."""
    ent = _server_user()
    # Only the directories tlog creates; everything inside data/ is created by postgres itself.
    for path in (home, home / "data", home / "run"):
        if path.exists() and os.stat(path).st_uid != ent.pw_uid:
            os.chown(path, ent.pw_uid, ent.pw_gid)
    parent = unreachable_parent(home.resolve())
    if parent is not None:
        raise ClusterError(
            f"{parent} is not searchable by the '{SERVER_USER}' user, so PostgreSQL "
            f"cannot reach {home}; choose another --home or run: chmod o+x {parent}"
        )
