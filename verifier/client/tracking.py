"""Following a log: fetch its checkpoint and prove it extends the one trusted before."""

from __future__ import annotations

from verifier.client.log import LogClient
from verifier.client.statedir import StateDir
from verifier.errors import LogMisbehaviour
from verifier.protocol.state import Trusted, check_update, needs_proof
from verifier.protocol.trust import LogTrust


def _check_extends(client: LogClient, old: Trusted, new: Trusted) -> None:
    """check_update with the log's proof, once more with fresh tiles if cached ones fail."""
    proof = client.consistency_proof(old.size, new.size) if needs_proof(old, new) else []
    try:
        check_update(old, new, proof)
    except LogMisbehaviour:
        if not (proof and client.drop_cache()):
            raise
        check_update(old, new, client.consistency_proof(old.size, new.size))
    client.keep_verified()  # the tiles of a proof that verified: now they may be cached


def prove_extends(client: LogClient, old: Trusted, new: Trusted,
                  state: StateDir | None = None) -> None:
    """Check `new` extends `old` with a consistency proof from the log's tiles.

    On misbehaviour, the evidence (both signed checkpoints, the proof) is saved under
    state/evidence/ when there is a state, and LogMisbehaviour is raised.
    """
    try:
        _check_extends(client, old, new)
    except LogMisbehaviour as exc:
        if state is None:
            raise
        where = state.save_evidence(str(exc), exc.evidence)
        raise LogMisbehaviour(f"{exc}; evidence saved in {where}", exc.evidence) from exc


def advance(client: LogClient, trust: LogTrust, state: StateDir | None) -> Trusted:
    """Fetch and verify the current checkpoint; with state, prove it extends the stored one.

    On misbehaviour the evidence is saved under state/evidence/ before raising.
    """
    cp, note = client.checkpoint(trust)
    new = Trusted(cp, note)
    if state is None:
        return new
    old = state.load_trusted(trust)
    if old is not None:
        prove_extends(client, old, new, state)
    state.save_trusted(new)
    return new
