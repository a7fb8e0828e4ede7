"""Asking the policy's witnesses what they saw of the log, and comparing it with what the
log shows the monitor.

A log that forks shows one history to the monitor and another to someone else. Witnesses
cosign only checkpoints consistent with what they cosigned before, so the witness a victim's
checkpoint went through holds the other branch: each witness with a URL in the policy is
asked for its latest cosigned checkpoint of the log (c2sp.org/tlog-witness read endpoint,
``GET <url>/<hex SHA-256 of the origin>/checkpoint``). The view must carry the log's
signature and that witness's valid cosignature; the log's own tiles must then prove it and
the monitor's checkpoint consistent (the smaller a prefix of the larger). Two log-signed
checkpoints that are not consistent are proof of a fork.

An unreachable witness, or one serving nothing usable, is a warning: a witness is not the
log, and its outage says nothing about the log's honesty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from verifier.client.fetch import Fetcher
from verifier.client.http import HttpFetcher
from verifier.client.log import LogClient
from verifier.client.tracking import prove_extends
from verifier.errors import LogMisbehaviour, TransportError, UsageError
from verifier.protocol.checkpoint import Checkpoint, open_checkpoint
from verifier.protocol.cosignature import verify_cosignature
from verifier.protocol.note import MAX_NOTE_SIZE, NoteError, parse_note
from verifier.protocol.policy import PolicyTrust, PolicyWitness
from verifier.protocol.state import Trusted
from verifier.protocol.witness import origin_hash

__all__ = ["Disagreement", "WitnessChecker", "witness_view_path"]

WITNESS_VIEW = "witness-view"  # evidence: the witness's cosigned checkpoint, as it served it
WITNESS = "witness.txt"  # evidence: the witness's policy name, key and URL


def witness_view_path(origin: str) -> str:
    """The witness's read path for a log, relative to its submission prefix URL."""
    return origin_hash(origin) + "/checkpoint"


@dataclass(frozen=True)
class Disagreement:
    """A witness's cosigned view of the log that the log's own checkpoint does not extend
    (nor is extended by): the message and the evidence files (both notes, the proof)."""

    witness: str
    message: str
    evidence: dict[str, str | bytes]


class WitnessChecker:
    """The witnesses of a policy that have a URL, each with its fetcher."""

    def __init__(self, trust: PolicyTrust,
                 fetcher_for: Callable[[str], Fetcher] | None = None) -> None:
        self.trust = trust
        make = fetcher_for or (lambda url: HttpFetcher(url))
        self.witnesses: list[tuple[PolicyWitness, Fetcher]] = []
        for w in trust.policy.witnesses.values():
            if w.url is None:
                continue
            try:
                self.witnesses.append((w, make(w.url)))
            except UsageError as exc:
                raise UsageError(f"the policy's URL of witness {w.name}: {exc}") from exc

    def check(self, client: LogClient, ours: Trusted,
              warn: Callable[[str], None]) -> list[Disagreement]:
        """Compare `ours` (the log's checkpoint, verified) with every witness's view."""
        found = []
        for witness, fetcher in self.witnesses:
            view: Trusted | None = None
            try:
                view = self.view(witness, fetcher)
                older, newer = sorted((view, ours), key=lambda t: t.size)
                prove_extends(client, older, newer)
            except TransportError as exc:
                warn(f"witness {witness.name}: {exc}")
            except LogMisbehaviour as exc:
                assert view is not None  # only a view is proven against
                files = dict(exc.evidence)
                files[WITNESS_VIEW] = view.note
                files[WITNESS] = f"{witness.name} {witness.key.text()} {witness.url}\n"
                found.append(Disagreement(witness.name, f"witness {witness.name}'s cosigned "
                                          f"view of the log disagrees with the log: {exc}",
                                          files))
        return found

    def view(self, witness: PolicyWitness, fetcher: Fetcher) -> Trusted:
        """The witness's latest cosigned checkpoint of the log, checked (the log's signature,
        the witness's cosignature). TransportError (a warning) when there is none to use:
        unreachable, 404, or not a view this witness cosigned."""
        path = witness_view_path(self.trust.origin)
        data = fetcher.fetch(path, MAX_NOTE_SIZE)
        try:
            text = data.decode("utf-8")
            checkpoint = _open_view(self.trust, witness, text)
        except ValueError as exc:
            raise TransportError(f"{fetcher.where(path)} is not a checkpoint of the log "
                                 f"cosigned by {witness.name}: {exc}") from exc
        return Trusted(checkpoint, text)


def _open_view(trust: PolicyTrust, witness: PolicyWitness, text: str) -> Checkpoint:
    """The checkpoint of `text`: signed by the log, of its origin, and validly cosigned by
    `witness` (one witness's view is compared, not a quorum's)."""
    checkpoint = open_checkpoint(text, trust.log)
    note = parse_note(text)
    sig = next((s for s in note.signatures if witness.key.matches(s)), None)
    if sig is None:
        raise NoteError(f"no cosignature by {witness.name}")
    verify_cosignature(witness.key, note.text, sig)
    return checkpoint
