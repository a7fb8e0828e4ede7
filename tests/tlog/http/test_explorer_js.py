"""The explorer's in-browser check (static/protocol.js, statemap.js) against the Python
protocol code.

A real log (PostgreSQL, the aiohttp app) answers a checkpoint, an entry, inclusion proofs
and a package state; two witness keys cosign the checkpoint here, with the Python
cosignature code. Node runs the JavaScript check on those answers (tests/js/check_vectors.mjs)
and on tampered copies, each of which must fail: what a misbehaving log or a man in the
middle could serve. The same vectors pass the Python verifier, so the two agree on both.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from tests.support import make_release
from tests.tlog.http.test_lifecycle import post, statement
from verifier.protocol.cosignature import COSIGNATURE_V1, generate_witness_key
from verifier.protocol.entries.lifecycle import ROLLOUT_KIND
from verifier.protocol.merkle import leaf_hash, verify_inclusion
from verifier.protocol.note import ED25519, Signer, generate_key, key_id, parse_vkey
from verifier.protocol.package_state import check_map_root_leaf, state_hash, verify_state
from verifier.protocol.policy import PolicyTrust, parse_policy
from verifier.protocol.statemap import SparseMap

REPO = Path(__file__).resolve().parents[3]
STATIC = REPO / "tlog" / "http" / "explorer" / "static"
HARNESS = REPO / "tests" / "js" / "check_vectors.mjs"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed (Debian nodejs)")
W1, W2 = generate_witness_key("witness.example/one"), generate_witness_key("witness.example/two")


def run_node(tmp_path: Path, cases: list[dict[str, Any]]) -> dict[str, Any]:
    assert NODE is not None
    for name in ("protocol.js", "statemap.js"):
        shutil.copy(STATIC / name, tmp_path / name)
    # Node loads them as ES modules, as browsers do
    (tmp_path / "package.json").write_text('{"type": "module"}')
    vectors = tmp_path / "vectors.json"
    vectors.write_text(json.dumps(cases))
    done = subprocess.run([NODE, str(HARNESS), str(tmp_path), str(vectors)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


async def answers(client: Any, publisher: Signer) -> dict[str, Any]:
    """What the explorer's check fetches for a rollout statement and for a release."""
    await post(client, make_release(publisher, "com.acme.app", "1.0", counter=1), 201)
    await post(client, make_release(publisher, "com.acme.app", "1.1", counter=2), 201)
    await post(client, statement(publisher, ROLLOUT_KIND, "com.acme.app", "1.1"), 201)
    await post(client, make_release(publisher, "org.other", "2.0"), 201)
    note = await (await client.get("/checkpoint")).text()
    body = note[:note.index("\n\n") + 1]
    stamp = 1_760_000_000
    cosigned = note + "".join(w.cosign(body, stamp + n).line() for n, w in enumerate((W1, W2)))
    size = int(body.split("\n")[1])
    vkey = (await (await client.get("/v1/log")).json())["vkey"]
    policy = (f"log {vkey}\nwitness one {W1.verifier().text()}\n"
              f"witness two {W2.verifier().text()}\ngroup both all one two\nquorum both\n")
    base = {"type": "check", "vkey": vkey, "policy": policy, "checkpoint": cosigned,
            "package": "com.acme.app"}
    map_entry = await entry_json(client, size - 1)
    base["map_entry"] = map_entry
    base["map_proof"] = await proof(client, map_entry, size)
    state = await (await client.get(f"/v1/package-state?package=com.acme.app&size={size}")
                   ).json()
    base["state"], base["state_proof"] = state["state"], state["proof"]
    out = {}
    for name, index in (("release", 2), ("rollout", 4)):
        entry = await entry_json(client, index)
        out[name] = {**base, "name": name, "index": index, "entry": entry,
                     "proof": await proof(client, entry, size)}
    return out


async def entry_json(client: Any, index: int) -> Any:
    return (await (await client.get(f"/v1/entries/{index}")).json())["entry"]


async def proof(client: Any, entry: Any, size: int) -> list[str]:
    h = leaf_hash(bytes(rfc8785.dumps(entry))).hex()
    body = await (await client.get(f"/v1/proof/inclusion?leaf_hash={h}&tree_size={size}")
                  ).json()
    hashes: list[str] = body["hashes"]
    return hashes


def python_check(c: dict[str, Any]) -> None:
    """The same check with verifier/protocol: the vector is right if this passes."""
    trust = PolicyTrust.for_log(parse_policy(c["policy"]), parse_vkey(c["vkey"]))
    cp = trust.open(c["checkpoint"])
    leaf = bytes(rfc8785.dumps(c["entry"]))
    verify_inclusion(c["index"], cp.size, leaf_hash(leaf), [bytes.fromhex(h) for h in c["proof"]],
                     cp.root)
    map_leaf = bytes(rfc8785.dumps(c["map_entry"]))
    verify_inclusion(cp.size - 1, cp.size, leaf_hash(map_leaf),
                     [bytes.fromhex(h) for h in c["map_proof"]], cp.root)
    root = check_map_root_leaf(cp.size, map_leaf)
    verify_state(root, c["package"], c["state"], base64.b64decode(c["state_proof"]))


def flip_b64(text: str, at: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def tampered(good: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Copies of a good vector, each with one answer changed as a lying log would."""
    out: dict[str, dict[str, Any]] = {}

    def variant(name: str) -> dict[str, Any]:
        out[name] = copy.deepcopy(good)
        out[name]["name"] = name
        return out[name]

    lines = good["checkpoint"].split("\n")
    root_line = 2
    v = variant("checkpoint root changed")
    v["checkpoint"] = "\n".join([*lines[:root_line], base64.b64encode(b"\x00" * 32).decode(),
                                 *lines[root_line + 1:]])
    v = variant("checkpoint size changed")
    v["checkpoint"] = "\n".join([lines[0], str(int(lines[1]) + 1), *lines[2:]])
    sig_lines = [n for n, line in enumerate(lines) if line.startswith("— ")]
    for name, n in (("log signature flipped", sig_lines[0]),
                    ("cosignature flipped", sig_lines[1])):
        v = variant(name)
        who, sig = lines[n].rsplit(" ", 1)
        v["checkpoint"] = "\n".join([*lines[:n], f"{who} {flip_b64(sig, 30)}", *lines[n + 1:]])
    v = variant("cosignature missing: short of quorum")
    v["checkpoint"] = "\n".join(lines[:sig_lines[2]] + lines[sig_lines[2] + 1:])
    v = variant("another log key of the same name")
    v["vkey"] = generate_key(parse_vkey(good["vkey"]).name).verifier().text()
    v["policy"] = good["policy"].replace(good["vkey"], v["vkey"])
    v = variant("inclusion proof hash flipped")
    v["proof"][0] = ("0" if v["proof"][0][0] != "0" else "1") + v["proof"][0][1:]
    v = variant("inclusion proof too short")
    v["proof"] = v["proof"][:-1]
    v = variant("entry altered")
    v["entry"]["version"] = v["entry"]["version"] + ".1"
    v = variant("map proof of the root leaf flipped")
    v["map_proof"][-1] = ("0" if v["map_proof"][-1][0] != "0" else "1") + v["map_proof"][-1][1:]
    v = variant("map root entry altered")
    v["map_entry"]["root"] = "00" * 32
    v = variant("state altered")
    v["state"]["counter"] = 99
    v = variant("state lifecycle dropped")
    v["state"]["lifecycle"] = {}
    v = variant("state proof flipped")
    v["state_proof"] = flip_b64(good["state_proof"], len(base64.b64decode(
        good["state_proof"])) - 1)
    v = variant("state of another package")
    v["package"] = "org.other"
    return out


@needs_node
async def test_the_browser_check_passes_what_python_passes_and_fails_each_lie(
        client: Any, publisher: Signer, tmp_path: Path) -> None:
    good = await answers(client, publisher)
    cases = list(good.values())
    lies: dict[str, dict[str, Any]] = {}
    for name, vector in good.items():
        python_check(vector)  # the vectors are right
        for lie, bad in tampered(vector).items():
            bad["name"] = f"{name}: {lie}"
            lies[bad["name"]] = bad
    cases += lies.values()
    results = run_node(tmp_path, cases)
    for name in good:
        assert results[name]["ok"], (name, results[name])
    assert "latest statement about 1.1" in results["rollout"]["value"]["where"]
    assert results["release"]["value"]["times"] == {"one": 1_760_000_000, "two": 1_760_000_001}
    passed = [name for name in lies if results[name]["ok"]]
    assert passed == []
    for name, bad in lies.items():  # Python refuses each too (or the state misses the entry)
        if "short of quorum" in name or "another package" in name:
            continue
        with pytest.raises(ValueError):
            python_check(bad)


JCS_VALUES = [
    {"b": 1, "a": [True, False, None], "\u00e9": "é", "\U0001f600": "x", "\ufb01": 0},
    {"n": [0, -0.0, 1e21, 1e-7, 0.1, 123.456, -5, 9007199254740991, 1.5e300, 4.0]},
    {"s": "\u0000\u001f\"\\/\u2028\u2029\ud7ff\ue000 <script>", "": {}},
    {"z": {"y": {"x": []}}, "A": "a", "aa": "b", "a": "c", "\u0080": 1, "\u007f": 2},
]


@needs_node
def test_jcs_keys_and_state_hashes_agree_with_python(tmp_path: Path) -> None:
    cases: list[dict[str, Any]] = []
    for n, value in enumerate(JCS_VALUES):
        cases.append({"type": "jcs", "name": f"jcs {n}", "json": json.dumps(value),
                      "want": bytes(rfc8785.dumps(value)).decode("utf-8")})
    state = {"package": "p", "releases": [{"version": "1.0", "index": 0, "leaf_hash": "00" * 32,
                                           "counter": None}], "lifecycle": {}, "counter": None}
    cases.append({"type": "state_hash", "name": "state hash", "json": json.dumps(state),
                  "want": state_hash(state).hex()})
    for key_type, name in ((ED25519, "example.com/log"), (COSIGNATURE_V1, "wit\u00e9ness")):
        pub = generate_key("x").verifier().public_key
        cases.append({"type": "key_id", "name": f"key id {key_type}", "key_type": key_type,
                      "key_name": name, "public_key": pub.hex(),
                      "want": key_id(name, pub, key_type).hex()})
    results = run_node(tmp_path, cases)
    for c in cases:
        got = results[c["name"]]
        assert got["ok"] and got["value"] == c["want"], (c["name"], got, c["want"])


@needs_node
def test_map_proofs_of_present_and_absent_keys_agree_with_python(tmp_path: Path) -> None:
    m = SparseMap()
    keys = [bytes([i]) * 32 for i in (1, 2, 3, 0x81, 0xC0)]
    m.apply(m.update((k, bytes([7]) * 32) for k in keys))
    root = m.root()
    probes = {"present": keys[2], "absent (empty)": bytes([0x40]) * 32,
              "absent (other leaf)": bytes([0xC1]) * 32}
    cases = [{"type": "map", "name": name, "root": root.hex(), "key": key.hex(),
              "proof": m.prove(key).hex()} for name, key in probes.items()]
    bad = dict(cases[0], name="present, proof flipped")
    raw = bytearray(m.prove(keys[2]))
    raw[-1] ^= 1
    bad["proof"] = raw.hex()
    wrong_key = dict(cases[0], name="proof of another key", key=keys[0].hex())
    results = run_node(tmp_path, [*cases, bad, wrong_key])
    assert results["present"] == {"ok": True, "value": "07" * 32}
    assert results["absent (empty)"] == {"ok": True, "value": None}
    assert results["absent (other leaf)"] == {"ok": True, "value": None}
    assert not results["present, proof flipped"]["ok"]
    assert not results["proof of another key"]["ok"]


@needs_node
def test_a_policy_naming_one_witness_key_twice_is_refused_so_one_cosignature_counts_once(
        tmp_path: Path) -> None:
    """One key under two witness names would let one cosignature meet "2 of 2": Python's
    parse_policy refuses such a policy (and the other shapes here), so must the browser."""
    log = generate_key("example.com/log").verifier().text()
    w1, w2 = W1.verifier().text(), W2.verifier().text()
    policies = {
        "same witness key twice": f"witness a {w1}\nwitness b {w1}\ngroup g all a b\nquorum g\n",
        "same log key twice": f"log {log}\nlog {log}\nwitness a {w1}\nquorum a\n",
        "control character": f"witness a {w1}\r\nquorum a\n",
        "delete character": f"witness a {w1}\nquorum a\x7f\n",
        # The bounds of policy.py: a page could hand the browser any policy to parse.
        "over 1 MiB": f"witness a {w1}\nquorum a\n" + "#" * (1 << 20) + "\n",
        "257 witnesses": "".join(
            f"witness w{n} {generate_witness_key(f'w{n}.example').verifier().text()}\n"
            for n in range(257)) + "quorum w0\n",
    }
    cases = [{"type": "policy", "name": name, "policy": text} for name, text in policies.items()]
    cases.append({"type": "policy", "name": "good", "policy":
                  f"log {log}\nwitness a {w1}\nwitness b {w2}\ngroup g all a b\nquorum g\n"})
    for case in cases[:-1]:
        with pytest.raises(ValueError):
            parse_policy(case["policy"])
    parse_policy(cases[-1]["policy"])
    results = run_node(tmp_path, cases)
    assert results["good"] == {"ok": True, "value": {"witnesses": ["a", "b"], "quorum": "g"}}
    accepted = [name for name in policies if results[name]["ok"]]
    assert accepted == []



@needs_node
def test_a_cosignature_dated_beyond_the_clock_skew_does_not_count_toward_the_quorum(
        tmp_path: Path) -> None:
    """As PolicyTrust with `now`: a witness whose clock runs ahead (or that backdates the
    future) must not make a frozen checkpoint look freshly cosigned."""
    signer = generate_key("example.com/log")
    from verifier.protocol.checkpoint import Checkpoint, sign_checkpoint
    from verifier.protocol.policy import MAX_CLOCK_SKEW, QuorumError
    note = sign_checkpoint(Checkpoint("example.com/log", 1, b"\x01" * 32), signer)
    body = note[:note.index("\n\n") + 1]
    now = 1_760_000_000
    cosigned = note + W1.cosign(body, now + MAX_CLOCK_SKEW + 1).line() + \
        W2.cosign(body, now).line()
    policy = (f"witness one {W1.verifier().text()}\nwitness two {W2.verifier().text()}\n"
              "group both all one two\nquorum both\n")
    trust = PolicyTrust.for_log(parse_policy(policy), signer.verifier(), now=now)
    with pytest.raises(QuorumError):
        trust.witnessed(cosigned)
    base = {"type": "open", "vkey": signer.verifier().text(), "policy": policy,
            "checkpoint": cosigned}
    results = run_node(tmp_path, [dict(base, name="future", now=now),
                                  dict(base, name="in time", now=now + 2)])
    assert results["future"] == {"ok": True, "value": {"quorum": False, "times": {"two": now}}}
    assert results["in time"]["ok"] and results["in time"]["value"]["quorum"] is True


@needs_node
@pytest.mark.parametrize("control", ["\x7f", "\x85", "\x9f"])
def test_a_signed_checkpoint_with_a_control_character_in_an_extension_is_refused(
        tmp_path: Path, control: str) -> None:
    """As verifier.protocol.checkpoint: an extension line with DEL or a C1 control (which
    the signed-note text rules let through) is malformed even under a good signature, so
    the browser never shows as verified what tlog-verify refuses."""
    from verifier.protocol.checkpoint import CheckpointError
    from verifier.protocol.note import sign_note
    signer = generate_key("example.com/log")
    root = base64.b64encode(b"\x01" * 32).decode()
    body = f"example.com/log\n1\n{root}\next{control}line\n"
    note = sign_note(body, [signer])
    now = 1_760_000_000
    cosigned = note + W1.cosign(body, now).line() + W2.cosign(body, now).line()
    policy = (f"witness one {W1.verifier().text()}\nwitness two {W2.verifier().text()}\n"
              "group both all one two\nquorum both\n")
    with pytest.raises(CheckpointError):
        PolicyTrust.for_log(parse_policy(policy), signer.verifier(), now=now).witnessed(cosigned)
    results = run_node(tmp_path, [{"type": "open", "name": "bad", "vkey":
                                   signer.verifier().text(), "policy": policy,
                                   "checkpoint": cosigned, "now": now}])
    assert results["bad"]["ok"] is False
    assert "control characters" in results["bad"]["error"]
