"""tests/alt_witness.py agrees with verifier/ on the formats and follows tlog-witness.

The alternative witness is only worth having in a quorum if it is right on its own: its
keys and cosignatures must verify with verifier/, its consistency check must agree with
RFC 6962's proofs, and add-checkpoint must answer each case with the spec's status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.alt_witness import AltWitness, LogKey, Running, WitnessKey, consistent
from tests.support import free_port
from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
from verifier.protocol.cosignature import parse_witness_vkey, verify_cosignature
from verifier.protocol.merkle import leaf_hash, root_of, verify_consistency
from verifier.protocol.note import Signer, b64encode, generate_key, parse_note

LEAVES = [leaf_hash(b"leaf %d" % i) for i in range(40)]


def rfc6962_proof(m: int, leaves: list[bytes], whole: bool = True) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 6962 section 2.1.2, written out as the RFC has it."""
    n = len(leaves)
    if m == n:
        return [] if whole else [root_of(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*rfc6962_proof(m, leaves[:k], whole), root_of(leaves[k:])]
    return [*rfc6962_proof(m - k, leaves[k:], False), root_of(leaves[:k])]


def test_its_consistency_check_agrees_with_rfc6962_and_verifier() -> None:
    for n in range(2, 41):
        for m in range(1, n):
            proof = rfc6962_proof(m, LEAVES[:n])
            old, new = root_of(LEAVES[:m]), root_of(LEAVES[:n])
            verify_consistency(m, n, old, new, proof)
            assert consistent(m, n, proof, old, new), (m, n)
            assert not consistent(m, n, proof, new, old), (m, n)
            for i in range(len(proof)):
                bad = list(proof)
                bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
                assert not consistent(m, n, bad, old, new), (m, n, i)
            assert not consistent(m, n, proof[:-1], old, new), (m, n)


def test_its_keys_and_cosignatures_verify_with_verifier(log_signer: Signer) -> None:
    key = WitnessKey.generate("alt.example/w")
    vkey = parse_witness_vkey(key.vkey())
    assert WitnessKey.parse(key.private_text()) == key
    body = f"{log_signer.name}\n1\n{b64encode(LEAVES[0])}\n"
    line = key.cosign(body, 1_700_000_000)
    sig = parse_note(sign_checkpoint(Checkpoint(log_signer.name, 1, LEAVES[0]), log_signer)
                     + line).signatures[-1]
    assert verify_cosignature(vkey, body, sig) == 1_700_000_000
    bad = parse_note(f"x\n\n{key.cosign(body, 5, corrupt=True)}").signatures[0]
    with pytest.raises(ValueError):
        verify_cosignature(vkey, body, bad)


@pytest.fixture
async def witness(log_signer: Signer) -> AsyncIterator[Running]:
    log_key = LogKey.parse(log_signer.verifier().text())
    running = Running(AltWitness(WitnessKey.generate("alt.example/w"),
                                 {log_key.name: [log_key]}), free_port())
    await running.start()
    yield running
    await running.stop()


def request(old: int, proof: list[bytes], note: str) -> bytes:
    return ("".join([f"old {old}\n", *(b64encode(h) + "\n" for h in proof), "\n"])
            + note).encode()


def checkpoint(signer: Signer, size: int) -> str:
    return sign_checkpoint(Checkpoint(signer.name, size, root_of(LEAVES[:size])), signer)


async def test_add_checkpoint_answers_every_case_with_the_spec_status(
        witness: Running, log_signer: Signer) -> None:
    url = witness.url + "/add-checkpoint"
    impostor = generate_key(log_signer.name)  # the same name, another key
    async with aiohttp.ClientSession() as http:

        async def post(body: bytes) -> tuple[int, str, str]:
            async with http.post(url, data=body) as resp:
                return resp.status, resp.content_type, await resp.text()

        assert (await post(request(0, [], checkpoint(generate_key("other.log"), 3))))[0] == 404
        assert (await post(request(0, [], checkpoint(impostor, 3))))[0] == 403
        assert (await post(request(5, [], checkpoint(log_signer, 3))))[0] == 400
        assert (await post(b"old 01\n\n" + checkpoint(log_signer, 3).encode()))[0] == 400
        status, _, lines = await post(request(0, [], checkpoint(log_signer, 3)))
        assert status == 200 and lines.startswith("— alt.example/w ")
        assert await post(request(0, [], checkpoint(log_signer, 7))) == (
            409, "text/x.tlog.size", "3\n")
        wrong = rfc6962_proof(3, LEAVES[:7])[::-1]
        assert (await post(request(3, wrong, checkpoint(log_signer, 7))))[0] == 422
        good = rfc6962_proof(3, LEAVES[:7])
        assert (await post(request(3, good, checkpoint(log_signer, 7))))[0] == 200
        # The same size again: cosigned if the root is the same, 409 if not.
        assert (await post(request(7, [], checkpoint(log_signer, 7))))[0] == 200
        other = sign_checkpoint(Checkpoint(log_signer.name, 7, LEAVES[0]), log_signer)
        assert (await post(request(7, [], other)))[0] == 409
