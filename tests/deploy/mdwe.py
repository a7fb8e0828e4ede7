"""Run a command under the kernel's memory-deny-write-execute: `python -m tests.deploy.mdwe
PROGRAM ARGS...`. prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN) (Linux 6.3+) refuses memory
that is writable and executable, or made executable later, for this process and what it
executes: the policy systemd's MemoryDenyWriteExecute= enforces (deploy/systemd). Exits
125 where the kernel lacks it."""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
UNSUPPORTED = 125


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print(f"prctl(PR_SET_MDWE): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return UNSUPPORTED
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
