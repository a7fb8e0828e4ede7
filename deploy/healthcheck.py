"""The container health check: GET /healthz of the process in this container; exit 0 if it
answers 200, else 1. Standard library only, so the image needs no curl.

The URL is TLOG_HEALTH_URL, or http://127.0.0.1:PORT/healthz with the port of TLOG_LISTEN
(default 8080): `tlog serve` and `tlog-verify witness serve` both answer /healthz.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def health_url() -> str:
    given = os.environ.get("TLOG_HEALTH_URL")
    if given:
        return given
    port = os.environ.get("TLOG_LISTEN", "0.0.0.0:8080").rpartition(":")[2] or "8080"
    return f"http://127.0.0.1:{port}/healthz"


def main() -> int:
    try:
        with urllib.request.urlopen(health_url(), timeout=3) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:  # refused, reset, timed out, or an HTTP error status
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
