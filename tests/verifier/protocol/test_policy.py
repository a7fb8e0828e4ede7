"""Witness policies (c2sp.org/tlog-policy) and PolicyTrust: parsing, quorums, witnessed time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.protocol.checkpoint import Checkpoint, CheckpointError, sign_checkpoint
from verifier.protocol.cosignature import CosignatureSigner, generate_witness_key
from verifier.protocol.merkle import EMPTY_ROOT
from verifier.protocol.note import (
    NoteError,
    Signature,
    Signer,
    generate_key,
    key_id,
    sign_note,
)
from verifier.protocol.policy import (
    AgeError,
    Policy,
    PolicyError,
    PolicyTrust,
    QuorumError,
    _Parser,
    check_max_age,
    check_min_age,
    parse_policy,
)

LOG = generate_key("example.com/log")
OTHER_LOG = generate_key("example.com/other")
W = {name: generate_witness_key(f"{name.lower()}.example") for name in
     ("X1", "X2", "X3", "Y1", "Y2", "Y3")}


def vk(name: str) -> str:
    return W[name].verifier().text()


EXAMPLE = f"""\
log {LOG.verifier().text()}

witness X1 {vk("X1")}
witness X2 {vk("X2")}
witness X3 {vk("X3")}
group X-witnesses 2 X1 X2 X3

witness Y1 {vk("Y1")}
witness Y2 {vk("Y2")}
witness Y3 {vk("Y3")}
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


def cosigned(note: str, cosigners: Mapping[str, int],
             signers: Mapping[str, CosignatureSigner] = W) -> str:
    """`note` with a cosignature by each named witness at its time."""
    body = note[:note.index("\n\n") + 1]
    return note + "".join(signers[n].cosign(body, t).line() for n, t in cosigners.items())


NOTE = sign_checkpoint(Checkpoint(LOG.name, 7, EMPTY_ROOT), LOG)


# -- the example policy of the spec -----------------------------------------------------------


def test_the_c2sp_example_policy_parses_as_two_levels_of_groups() -> None:
    p = parse_policy(EXAMPLE)
    assert [log.key for log in p.logs] == [LOG.verifier()]
    assert sorted(p.witnesses) == sorted(W)
    assert p.groups["X-witnesses"].threshold == 2
    assert p.groups["Y-witnesses"].threshold == 1
    assert p.groups["X-and-Y"].threshold == 2
    assert p.groups["X-and-Y"].members == ("X-witnesses", "Y-witnesses")
    assert p.quorum == "X-and-Y"
    assert p.describe_quorum().startswith("2 of 2 in group X-and-Y (2 of 3 in group X-witnesses")


@pytest.mark.parametrize(("cosigners", "satisfied"), [
    ({"X1", "X2", "Y1"}, True),
    ({"X1", "X3", "Y3"}, True),
    ({"X1", "X2", "X3", "Y1", "Y2", "Y3"}, True),
    ({"X1", "X2"}, False),             # no Y
    ({"X1", "Y1", "Y2", "Y3"}, False),  # one X
    (set(), False),
])
def test_the_example_quorum_needs_two_xs_and_a_y(cosigners: set[str], satisfied: bool) -> None:
    assert parse_policy(EXAMPLE).satisfied(cosigners) is satisfied


def test_quorum_none_needs_no_cosignature() -> None:
    p = parse_policy(f"log {LOG.verifier().text()}\nquorum none\n")
    assert p.satisfied([]) and p.describe_quorum() == "no cosignatures required"
    assert p.quorum_time({}) is None and p.fresh_time({}) is None


def test_comments_blank_lines_tabs_and_urls_are_allowed() -> None:
    p = parse_policy(f"# a comment\n  \t\n  # indented comment\n"
                     f"log\t{LOG.verifier().text()}  https://log.example/\n"
                     f"\twitness X1 {vk('X1')} https://x1.example/  \nquorum X1")
    assert p.logs[0].url == "https://log.example/"
    assert p.witnesses["X1"].url == "https://x1.example/"


def test_a_policy_without_logs_is_valid_and_the_key_names_the_log() -> None:
    p = parse_policy(f"witness X1 {vk('X1')}\nquorum X1\n")
    assert p.logs == ()
    trust = PolicyTrust.for_log(p, LOG.verifier())
    assert trust.open(cosigned(NOTE, {"X1": 5})).size == 7
    with pytest.raises(PolicyError, match="0 logs"):
        PolicyTrust.for_log(p)


# -- parse errors -----------------------------------------------------------------------------


def _bad(text: str, match: str) -> None:
    with pytest.raises(PolicyError, match=match):
        parse_policy(text)


LOGLINE = f"log {LOG.verifier().text()}\n"
X1 = f"witness X1 {vk('X1')}\n"
X2 = f"witness X2 {vk('X2')}\n"


@pytest.mark.parametrize(("text", "match"), [
    (LOGLINE + "cosigner X1 abc\nquorum none\n", "line 2: unknown keyword 'cosigner'"),
    (LOGLINE + "quorum X1\n", "line 2: quorum 'X1' is not defined"),
    (LOGLINE + "group g any X1\n" + X1 + "quorum g\n", "line 2: group member 'X1' is not defined"),
    (LOGLINE + X1 + X1.replace("X1 ", "X1 ", 1) + "quorum X1\n", "line 3: name 'X1' is defined"),
    (LOGLINE + X1 + "group X1 any X1\nquorum X1\n", "line 3: name 'X1' is defined twice"),
    (LOGLINE + "witness none " + vk("X1") + "\nquorum none\n", "'none' is predefined"),
    (LOGLINE + X1 + "group none any X1\nquorum none\n", "'none' is predefined"),
    (LOGLINE + X1 + "group g any X1 none\nquorum g\n", "'none' cannot be a group member"),
    (LOGLINE + X1 + "group g 1 X1 X1\nquorum g\n", "'X1' is already a member of a group"),
    (LOGLINE + X1 + X2 + "group g any X1\ngroup h all X1 X2\nquorum h\n",
     "line 5: 'X1' is already a member"),
    (LOGLINE + X1 + "group g 0 X1\nquorum g\n", r"threshold 0 is not in 1\.\.1"),
    (LOGLINE + X1 + X2 + "group g 3 X1 X2\nquorum g\n", r"threshold 3 is not in 1\.\.2"),
    (LOGLINE + X1 + X2 + "group g 01 X1 X2\nquorum g\n", "threshold '01'"),
    (LOGLINE + X1 + X2 + "group g +1 X1 X2\nquorum g\n", "threshold '\\+1'"),
    (LOGLINE + X1 + X2 + "group g ²\tX1 X2\nquorum g\n", "threshold '²'"),
    (LOGLINE + X1 + "group g any\nquorum g\n", "want: group"),
    (LOGLINE + LOGLINE + "quorum none\n", "line 2: duplicate log key"),
    (LOGLINE + X1 + f"witness X2 {vk('X1')}\nquorum X1\n", "line 3: duplicate witness key"),
    (LOGLINE + X1 + "quorum X1\x0d\n", r"line 3: control character 0x0d"),
    (LOGLINE + "\x00quorum none\n", r"line 2: control character 0x00"),
    (LOGLINE + "quorum none\x7f\n", r"control character 0x7f"),
    (LOGLINE + X1, "no quorum line"),
    (LOGLINE + "quorum none\nquorum none\n", "line 3: a policy has exactly one quorum line"),
    (LOGLINE + "quorum\n", "want: quorum <name>"),
    (LOGLINE + "quorum a b\n", "want: quorum <name>"),
    (f"log {vk('X1')}\nquorum none\n", "line 1: log vkey: .*witness key .type 0x04., not an "
                                       "Ed25519 note key"),
    (f"witness X1 {LOG.verifier().text()}\nquorum X1\n",
     "line 1: witness vkey: .*Ed25519 note key .type 0x01., not a cosignature/v1 witness key"),
    ("log\nquorum none\n", "want: log <vkey>"),
    ("witness X1\nquorum none\n", "want: witness <name> <vkey>"),
    (f"log {LOG.verifier().text()} url extra\nquorum none\n", "want: log <vkey>"),
])
def test_malformed_policies_are_refused_naming_the_line(text: str, match: str) -> None:
    _bad(text, match)


def test_a_log_and_a_witness_sharing_a_public_key_are_duplicates() -> None:
    seed = W["X1"].seed
    public = bytes(nacl.signing.SigningKey(seed).verify_key)
    as_log = Signer("x1.example", key_id("x1.example", public), seed)
    _bad(f"log {as_log.verifier().text()}\n{X1}quorum X1\n", "line 2: duplicate witness key")


def test_names_are_octets_not_unicode() -> None:
    """"K" and the Kelvin sign are two names (tlog-policy, "Character set")."""
    text = f"witness K {vk('X1')}\nwitness \u212a {vk('X2')}\ngroup g all K \u212a\nquorum g\n"
    p = parse_policy(text.encode("utf-8"))
    assert sorted(p.witnesses) == sorted(["K", "\u212a"])
    assert not p.satisfied(["K"])


def test_an_oversized_policy_is_refused() -> None:
    _bad(LOGLINE + "#" * (1 << 20) + "\nquorum none\n", "larger than")


# -- witnessed time ---------------------------------------------------------------------------


def test_quorum_time_is_when_the_quorum_was_first_met_and_fresh_time_when_last() -> None:
    p = parse_policy(EXAMPLE)
    times = {"X1": 10, "X2": 20, "X3": 30, "Y1": 5, "Y2": 40}
    assert p.quorum_time(times) == 20  # X1, X2 and Y1 by 20
    assert p.fresh_time(times) == 20   # X2, X3 and Y2 from 20 on
    assert p.quorum_time({"X1": 1}) is None and p.fresh_time({"X1": 1}) is None


def test_quorum_time_is_not_always_before_fresh_time() -> None:
    """'all of X1, X2' cosigned at 1 and 5: the quorum held from 5, and the freshest set of
    cosignatures that meets it goes back to 1. Neither bound is the other."""
    p = parse_policy(f"{X1}{X2}group g all X1 X2\nquorum g\n")
    assert (p.quorum_time({"X1": 1, "X2": 5}), p.fresh_time({"X1": 1, "X2": 5})) == (5, 1)
    q = parse_policy(f"{X1}{X2}group g any X1 X2\nquorum g\n")
    assert (q.quorum_time({"X1": 1, "X2": 5}), q.fresh_time({"X1": 1, "X2": 5})) == (1, 5)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """Random quorums over witnesses w0..wn: nested groups, each name a member at most once."""
    n = draw(st.integers(1, 5))
    lines = [f"witness w{i} {generate_witness_key(f'w{i}.example').verifier().text()}"
             for i in range(n)]
    free = [f"w{i}" for i in range(n)]
    for g in range(draw(st.integers(0, 3))):
        if not free:
            break
        members = draw(st.lists(st.sampled_from(free), min_size=1, max_size=len(free),
                                unique=True))
        k = draw(st.sampled_from(["all", "any", *map(str, range(1, len(members) + 1))]))
        lines.append(f"group g{g} {k} {' '.join(members)}")
        free = [f for f in free if f not in members] + [f"g{g}"]
    lines.append(f"quorum {draw(st.sampled_from(free))}")
    return parse_policy("\n".join(lines))


def _holds(p: Policy, name: str, signed: set[str]) -> bool:
    """The spec's rule, independently: a group holds when k of its n members hold."""
    if name in p.groups:
        g = p.groups[name]
        return sum(_holds(p, m, signed) for m in g.members) >= g.threshold
    return name in signed


@settings(max_examples=300, deadline=None)
@given(p=policies(), raw=st.lists(st.integers(0, 12), min_size=5, max_size=5),
       present=st.lists(st.booleans(), min_size=5, max_size=5))
def test_witnessed_times_match_their_definitions_by_brute_force(
        p: Policy, raw: Sequence[int], present: Sequence[bool]) -> None:
    times = {w: raw[i] for i, w in enumerate(sorted(p.witnesses)) if present[i]}
    ok = [t for t in range(13) if _holds(p, p.quorum, {w for w, s in times.items() if s <= t})]
    fresh = [t for t in range(13)
             if _holds(p, p.quorum, {w for w, s in times.items() if s >= t})]
    assert p.satisfied(times) is _holds(p, p.quorum, set(times))
    assert p.quorum_time(times) == (min(ok) if ok else None)
    assert p.fresh_time(times) == (max(fresh) if fresh else None)


# -- PolicyTrust ------------------------------------------------------------------------------


def trust(now: int | None = None, max_age: int | None = None) -> PolicyTrust:
    return PolicyTrust.for_log(parse_policy(EXAMPLE), now=now, max_age=max_age)


def test_a_checkpoint_with_the_quorum_opens_with_its_times() -> None:
    w = trust().witnessed(cosigned(NOTE, {"X1": 100, "X3": 200, "Y2": 150}))
    assert w.checkpoint.size == 7
    assert dict(w.times) == {"X1": 100, "X3": 200, "Y2": 150}
    assert (w.quorum_time, w.fresh_time) == (200, 100)


def test_a_checkpoint_one_cosignature_short_of_quorum_is_refused() -> None:
    with pytest.raises(QuorumError, match="short of quorum: checkpoint of size 7 is cosigned "
                                          "by X1, Y1"):
        trust().open(cosigned(NOTE, {"X1": 100, "Y1": 100}))
    with pytest.raises(QuorumError, match="by no policy witness"):
        trust().open(NOTE)


def test_cosignatures_by_unknown_keys_are_ignored_and_do_not_count() -> None:
    strangers = {"X2": generate_witness_key(W["X2"].name),  # the name, not the key
                 "Z": generate_witness_key("z.example")}
    note = cosigned(cosigned(NOTE, {"X1": 100, "Y1": 100}), {"X2": 100, "Z": 100}, strangers)
    with pytest.raises(QuorumError, match="cosigned by X1, Y1;"):
        trust().open(note)
    assert trust().open(cosigned(note, {"X3": 100})).size == 7


def test_an_invalid_cosignature_claiming_a_policy_witness_key_refuses_the_note() -> None:
    good = cosigned(NOTE, {"X1": 100, "X2": 100, "Y1": 100})
    body = NOTE[:NOTE.index("\n\n") + 1]
    sig = W["X3"].cosign(body, 100)
    forged = Signature(sig.name, sig.key_id, sig.signature[:8] + bytes(64))
    with pytest.raises(NoteError, match=r"invalid cosignature by x3\.example"):
        trust().open(good + forged.line())


def test_a_cosignature_of_another_checkpoint_does_not_count() -> None:
    other = Checkpoint(LOG.name, 8, EMPTY_ROOT).body()
    moved = NOTE + W["Y1"].cosign(other, 100).line()
    with pytest.raises(NoteError, match=r"invalid cosignature by y1\.example"):
        trust().open(cosigned(moved, {"X1": 100, "X2": 100}))


def test_the_log_signature_and_origin_are_still_required() -> None:
    impostor = generate_key(LOG.name)
    forged = sign_checkpoint(Checkpoint(LOG.name, 7, EMPTY_ROOT), impostor)
    with pytest.raises(NoteError, match="no signature by a known key"):
        trust().open(cosigned(forged, {"X1": 1, "X2": 1, "Y1": 1}))
    p = parse_policy(f"log {OTHER_LOG.verifier().text()}\n" + EXAMPLE)
    other = sign_checkpoint(Checkpoint(OTHER_LOG.name, 1, EMPTY_ROOT), OTHER_LOG)
    with pytest.raises(NoteError):
        PolicyTrust.for_log(p, LOG.verifier()).open(cosigned(other, {"X1": 1, "X2": 1,
                                                                      "Y1": 1}))


def test_for_log_picks_the_one_log_or_the_named_one() -> None:
    two = parse_policy(f"log {OTHER_LOG.verifier().text()}\n" + EXAMPLE)
    with pytest.raises(PolicyError, match="lists 2 logs"):
        PolicyTrust.for_log(two)
    assert PolicyTrust.for_log(two, LOG.verifier()).origin == LOG.name
    with pytest.raises(PolicyError, match="not one of the policy's logs"):
        PolicyTrust.for_log(parse_policy(EXAMPLE), OTHER_LOG.verifier())


def test_latest_refuses_a_stale_checkpoint_and_open_does_not() -> None:
    note = cosigned(NOTE, {"X1": 1000, "X2": 1000, "Y1": 1000})
    assert trust(now=1000 + 3600, max_age=3600).latest(note).size == 7
    with pytest.raises(AgeError, match="stale: the quorum cosigned checkpoint of size 7 3601 s"):
        trust(now=1000 + 3601, max_age=3600).latest(note)
    assert trust(now=10 ** 9, max_age=3600).open(note).size == 7  # a stored one: old by design
    with pytest.raises(PolicyError, match="needs the current time"):
        trust(max_age=3600).latest(note)


def test_one_fresh_cosignature_does_not_make_a_stale_quorum_fresh() -> None:
    note = cosigned(NOTE, {"X1": 1000, "X2": 1000, "Y1": 1000, "X3": 9000})
    with pytest.raises(AgeError, match="stale"):
        trust(now=9000, max_age=3600).latest(note)


def test_min_age_refuses_a_checkpoint_the_quorum_cosigned_too_recently() -> None:
    w = trust().witnessed(cosigned(NOTE, {"X1": 1000, "X2": 5000, "Y1": 1000}))
    check_min_age(w, 5000 + 86400, 86400)
    with pytest.raises(AgeError, match="too new: the quorum cosigned checkpoint of size 7 only "
                                       "86399 s ago"):
        check_min_age(w, 5000 + 86399, 86400)
    with pytest.raises(AgeError, match="too new"):  # cosigned "in the future"
        check_min_age(w, 0, 0)


def test_ages_need_witnessed_time() -> None:
    p = PolicyTrust.for_log(parse_policy(f"{LOGLINE}quorum none\n"))
    w = p.witnessed(NOTE)
    with pytest.raises(AgeError, match=r"stale: .*no witnessed time"):
        check_max_age(w, 0, 10)
    with pytest.raises(AgeError, match=r"too new: .*no witnessed time"):
        check_min_age(w, 0, 10)


def test_a_checkpoint_of_another_origin_signed_with_the_log_key_is_refused() -> None:
    renamed = generate_key("example.com/renamed")
    p = parse_policy(f"log {renamed.verifier().text()}\nquorum none\n")
    note = sign_note(Checkpoint("example.com/log", 1, EMPTY_ROOT).body(), [renamed])
    with pytest.raises(CheckpointError, match="origin"):
        PolicyTrust.for_log(p).open(note)


def test_two_witness_keys_answering_to_one_signature_line_are_refused() -> None:
    """A witness operator who grinds a key ID to collide with another witness's (same key
    name, same 4-byte ID, another key: about 2**32 tries) could void that witness's
    cosignatures. The parser refuses a second key for one (name, key ID); the collision is
    too costly to make here, so the check is called with it directly."""
    a, b = generate_witness_key("w.example"), generate_witness_key("w.example")
    parser = _Parser()
    parser.witness(["a", a.verifier().text()])
    with pytest.raises(PolicyError, match="ambiguous witness key"):
        parser._unique_key(b.verifier().public_key, ("w.example", a.key_id), "witness")


def test_a_threshold_of_thousands_of_digits_is_a_policy_error() -> None:
    w = generate_witness_key("w.example")
    text = f"witness a {w.verifier().text()}\ngroup g {'9' * 5000} a\nquorum g\n"
    with pytest.raises(PolicyError, match=r"is not in 1\.\.1"):
        parse_policy(text)


def test_ages_are_measured_by_the_clock_at_each_check() -> None:
    log, w = generate_key("example.com/log"), generate_witness_key("w.example")
    policy = parse_policy(f"log {log.verifier().text()}\nwitness a {w.verifier().text()}\n"
                          "quorum a\n")
    body = Checkpoint("example.com/log", 1, b"\x01" * 32).body()
    note = sign_note(body, [log]) + w.cosign(body, 1000).line()
    clock = [1500.0]
    trust = PolicyTrust.for_log(policy, now=lambda: clock[0], max_age=600)
    assert trust.latest(note).size == 1
    clock[0] = 1700.0
    with pytest.raises(AgeError, match="stale"):
        trust.latest(note)


def test_a_policy_written_as_text_reads_back_as_the_same_policy() -> None:
    text = (f"log {LOG.verifier().text()} https://log.example\n"
            f"witness a {vk('X1')} https://a.example/\n"
            f"witness b {vk('X2')}\n"
            f"witness c {vk('X3')}\n"
            "group ab 1 a b\ngroup all 2 ab c\nquorum all\n")
    policy = parse_policy(text)
    assert policy.text() == text
    again = parse_policy(policy.text(urls=False))
    assert "https://" not in policy.text(urls=False)
    assert again.logs[0].url is None and again.witnesses["a"].url is None
    assert again.text() == policy.text(urls=False)
    assert again.groups == policy.groups and again.quorum == "all"
    assert again.satisfied({"a", "c"}) and not again.satisfied({"a", "b"})
