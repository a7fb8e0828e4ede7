"""A real nginx serving a directory (a `tlog mirror` copy), for the mirror tests and bench.

Only the Debian `nginx` binary is used (deploy/ensure-nginx.sh installs it): each run has its
own config, pid file, logs and temp paths in a private prefix directory and listens on a free
port on 127.0.0.1, so it runs as root or as a normal user, beside any system nginx.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

# Full tiles and bundles never change (C2SP tlog-tiles): cacheable forever; partial tiles are
# replaced by their full tile and the checkpoint moves: both must be revalidated.
CONFIG = """\
{user}worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    default_type application/octet-stream;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = /checkpoint {{
            default_type "text/plain; charset=utf-8";
            add_header Cache-Control "no-cache";
        }}
        location ~ "\\.p/" {{ add_header Cache-Control "no-cache"; }}
        location /tile/ {{ add_header Cache-Control "public, max-age=31536000, immutable"; }}
    }}
}}
"""


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    url: str
    prefix: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def errors(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_nginx(root: Path, prefix: Path, workers: int = 1, timeout: float = 10) -> Nginx:
    """nginx serving `root` on a free port until stop(); RuntimeError if it does not start."""
    if NGINX is None:
        raise RuntimeError("nginx is not installed (make nginx)")
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    # As root the workers would run as nobody, who cannot enter pytest's 0700 directories.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(CONFIG.format(user=user, workers=workers, prefix=prefix, port=port,
                                  root=root.resolve()))
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(prefix), "-e",
                             str(prefix / "error.log"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Nginx(proc, f"http://127.0.0.1:{port}", prefix)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited {proc.returncode}:\n{server.errors()}")
        try:
            with urllib.request.urlopen(server.url + "/", timeout=1):
                return server
        except urllib.error.HTTPError:
            return server  # answering (403/404 for the directory itself): it is up
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"nginx did not start:\n{server.errors()}")
