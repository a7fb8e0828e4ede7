"""Errors by blame, each with the exit code `tlog-verify` uses for it.

- UsageError (2): the caller's own input is wrong: arguments, files, pinned keys.
- VerificationFailed (1): something does not verify; LogMisbehaviour (1) when the log itself
  has been caught, with the evidence (signed checkpoints, proofs) that shows it.
- TransportError (3): the log could not be reached or answered wrongly at the transport level
  (timeouts, HTTP errors, oversized or endless responses).
Anything but 0 means "do not trust": a client that could not check must not install.
"""

from __future__ import annotations

from collections.abc import Mapping

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TRANSPORT = 3


class VerifyError(Exception):
    exit_code = EXIT_FAILED


class UsageError(VerifyError):
    """The caller's input (arguments, files, pinned keys) is malformed."""

    exit_code = EXIT_USAGE


class VerificationFailed(VerifyError):
    """A check failed: do not trust what was checked."""

    exit_code = EXIT_FAILED


class LogMisbehaviour(VerificationFailed):
    """The log served something it must not: evidence maps file names to their contents."""

    def __init__(self, message: str, evidence: Mapping[str, str | bytes] | None = None) -> None:
        super().__init__(message)
        self.evidence: dict[str, str | bytes] = dict(evidence or {})


class TransportError(VerifyError):
    """The log could not be reached, or its answer broke the transport rules or limits."""

    exit_code = EXIT_TRANSPORT
