"""TEST-ONLY fault injection at the sequencer's durability points. Never enable in production.

The reliability tests (tests/reliability) and bench/soak.py make `tlog serve` fail at each
step of an append, to show that what was acknowledged survives and that retries get their
index back. Two environment variables, read once when the log opens, must both be set:

    TLOG_FAULTS="point:mode:probability[,point:mode:probability...]"
    TLOG_FAULTS_I_KNOW=1

TLOG_FAULTS without TLOG_FAULTS_I_KNOW=1 refuses to start (FaultConfigError): a stray
variable must not quietly make a production log drop batches. When enabled, a warning is
printed to stderr and logged at startup.

Points, in the order an append reaches them (tlog.log.sequencer): "map" (the map-root entry
and its map nodes), "entries", "tiles", "checkpoint" (the writes inside the append
transaction), "commit" (COMMIT), "reply" (the receipts sent back after COMMIT).
Modes: "fail" raises before the step (nothing of the batch persists; for "reply", the batch
did persist: it is after COMMIT); "fail-after" raises once the step is done (for "commit"
and "reply": the batch is durable, the submitters get a 503 instead of their receipt; for
the steps inside the transaction: the write happened, then the transaction rolls back).
"""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger("tlog.faults")

POINTS = ("map", "entries", "tiles", "checkpoint", "commit", "reply")
MODES = ("fail", "fail-after")
ENV = "TLOG_FAULTS"
ENV_CONSENT = "TLOG_FAULTS_I_KNOW"


class FaultConfigError(ValueError):
    """TLOG_FAULTS is malformed, or set without TLOG_FAULTS_I_KNOW=1."""


class InjectedFault(Exception):
    """A fault the tests asked for (never raised unless TLOG_FAULTS is enabled)."""


@dataclass(frozen=True)
class Fault:
    point: str
    mode: str
    probability: float


class Faults:
    """The faults to inject; `Faults(())` injects none and costs a dict lookup per step."""

    def __init__(self, faults: Sequence[Fault], rng: random.Random | None = None) -> None:
        self._odds = {(f.point, f.mode): f.probability for f in faults}
        self._rng = rng or random.Random()

    @property
    def enabled(self) -> bool:
        return bool(self._odds)

    def before(self, point: str) -> None:
        self._maybe(point, "fail")

    def after(self, point: str) -> None:
        self._maybe(point, "fail-after")

    def _maybe(self, point: str, mode: str) -> None:
        odds = self._odds.get((point, mode))
        if odds is not None and self._rng.random() < odds:
            log.warning("injected fault %s:%s", point, mode)
            raise InjectedFault(f"injected fault {point}:{mode}")


NO_FAULTS = Faults(())


def parse(spec: str) -> list[Fault]:
    faults = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        if len(parts) != 3 or parts[0] not in POINTS or parts[1] not in MODES:
            raise FaultConfigError(f"{ENV}: {item!r} is not point:mode:probability with a point "
                                   f"of {', '.join(POINTS)} and a mode of {', '.join(MODES)}")
        try:
            probability = float(parts[2])
        except ValueError:
            probability = -1.0
        if not 0.0 <= probability <= 1.0:
            raise FaultConfigError(f"{ENV}: the probability in {item!r} must be 0..1")
        faults.append(Fault(parts[0], parts[1], probability))
    return faults


def from_env(environ: Mapping[str, str] = os.environ) -> Faults:
    """The faults TLOG_FAULTS asks for; none when it is unset or empty."""
    spec = environ.get(ENV, "")
    if not spec.strip():
        return NO_FAULTS
    if environ.get(ENV_CONSENT) != "1":
        raise FaultConfigError(f"{ENV} is set but {ENV_CONSENT}=1 is not: fault injection is "
                               "for tests only; unset it to run this log")
    faults = parse(spec)
    warning = (f"WARNING: TEST-ONLY FAULT INJECTION IS ON ({ENV}={spec}): "
               "this log fails appends on purpose")
    print(warning, file=sys.stderr, flush=True)
    log.warning(warning)
    return Faults(faults)
