"""Witness policies (c2sp.org/tlog-policy) and the trust they define. No I/O.

A policy names logs (``log <vkey> [<url>]``), witnesses (``witness <name> <vkey> [<url>]``),
groups (``group <name> all|any|<k> <member>...``) and exactly one ``quorum <name>`` (or
``quorum none``). A checkpoint is valid under the policy when one of its logs signed it and
the witnesses that validly cosigned it satisfy the quorum.

Cosignatures carry each witness's time, which gives a checkpoint two witnessed times:

- ``quorum_time``: the earliest time T at which the cosignatures made at or before T already
  satisfy the quorum. The checkpoint, and every entry in it, existed by then; a cooldown
  (``--min-age``) asks that it be long enough ago.
- ``fresh_time``: the latest time T such that the cosignatures made at or after T satisfy
  the quorum. A client kept on an old checkpoint (a freeze) sees it fall behind; a freshness
  limit (``--max-age``) asks that it be recent.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from verifier.protocol.checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from verifier.protocol.cosignature import (
    CosignatureVerifier,
    parse_witness_vkey,
    verify_cosignature,
)
from verifier.protocol.note import NoteError, Verifier, open_note, parse_note, parse_vkey

__all__ = [
    "MAX_POLICY_SIZE",
    "AgeError",
    "Group",
    "Policy",
    "PolicyError",
    "PolicyLog",
    "PolicyTrust",
    "PolicyWitness",
    "QuorumError",
    "Witnessed",
    "check_max_age",
    "check_min_age",
    "parse_policy",
]

MAX_POLICY_SIZE = 1 << 20
MAX_LOGS = MAX_WITNESSES = MAX_GROUPS = 256
"""Limits on a policy's size; the spec asks implementations to support at least 32 each."""
NONE = "none"
MAX_CLOCK_SKEW = 600
"""Seconds a cosignature may be dated ahead of the client's clock and still count."""
T = TypeVar("T")


class PolicyError(ValueError):
    """A policy file is malformed (the line number and why are in the message)."""


class QuorumError(NoteError):
    """A checkpoint is validly signed by the log but short of the policy's quorum."""


class AgeError(NoteError):
    """A checkpoint's witnessed time is outside what the client accepts (stale or too new)."""


@dataclass(frozen=True)
class PolicyLog:
    key: Verifier
    url: str | None = None


@dataclass(frozen=True)
class PolicyWitness:
    name: str
    key: CosignatureVerifier
    url: str | None = None


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    logs: tuple[PolicyLog, ...]
    witnesses: Mapping[str, PolicyWitness]
    groups: Mapping[str, Group]
    quorum: str
    """A witness's or group's name, or "none"."""

    def satisfied(self, cosigners: Collection[str]) -> bool:
        """Whether witnesses `cosigners` (policy names) together satisfy the quorum."""
        return self.quorum == NONE or self._holds(self.quorum, set(cosigners))

    def _holds(self, name: str, cosigners: set[str]) -> bool:
        group = self.groups.get(name)
        if group is None:
            return name in cosigners
        met = sum(1 for m in group.members if self._holds(m, cosigners))
        return met >= group.threshold

    def quorum_time(self, times: Mapping[str, int]) -> int | None:
        """The earliest T such that cosignatures made at or before T satisfy the quorum;
        None when they never do, or when the quorum is "none" (there is no witnessed time)."""
        if self.quorum == NONE:
            return None
        for t in sorted(set(times.values())):
            if self.satisfied([w for w, ts in times.items() if ts <= t]):
                return t
        return None

    def fresh_time(self, times: Mapping[str, int]) -> int | None:
        """The latest T such that cosignatures made at or after T satisfy the quorum; None as
        for quorum_time."""
        if self.quorum == NONE:
            return None
        for t in sorted(set(times.values()), reverse=True):
            if self.satisfied([w for w, ts in times.items() if ts >= t]):
                return t
        return None

    def text(self, urls: bool = True) -> str:
        """The policy as tlog-policy text, which parse_policy reads back as this policy
        (groups in their order: a member is defined on an earlier line). `urls=False`
        leaves out where the logs and witnesses are reached."""
        def at(url: str | None) -> str:
            return f" {url}" if urls and url else ""
        lines = [f"log {log.key.text()}{at(log.url)}" for log in self.logs]
        lines += [f"witness {w.name} {w.key.text()}{at(w.url)}"
                  for w in self.witnesses.values()]
        lines += [f"group {g.name} {g.threshold} {' '.join(g.members)}"
                  for g in self.groups.values()]
        lines.append(f"quorum {self.quorum}")
        return "\n".join(lines) + "\n"

    def describe_quorum(self) -> str:
        """The quorum rule in words: "none", "witness w1", "2 of group g (a, b, c)"."""
        if self.quorum == NONE:
            return "no cosignatures required"
        return self._describe(self.quorum)

    def _describe(self, name: str) -> str:
        group = self.groups.get(name)
        if group is None:
            return f"witness {name}"
        members = ", ".join(self._describe(m) for m in group.members)
        return f"{group.threshold} of {len(group.members)} in group {name} ({members})"

    def log_keys(self) -> list[Verifier]:
        return [log.key for log in self.logs]


@dataclass
class _Parser:
    logs: list[PolicyLog] = field(default_factory=list)
    witnesses: dict[str, PolicyWitness] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    quorum: str | None = None
    keys: set[bytes] = field(default_factory=set)
    idents: set[tuple[str, bytes]] = field(default_factory=set)
    used_as_member: set[str] = field(default_factory=set)

    def line(self, words: list[str]) -> None:
        keyword, args = words[0], words[1:]
        handler = {"log": self.log, "witness": self.witness, "group": self.group,
                   "quorum": self.set_quorum}.get(keyword)
        if handler is None:
            raise PolicyError(f"unknown keyword {keyword[:40]!r} (want log, witness, group "
                              "or quorum)")
        handler(args)

    def _unique_key(self, public_key: bytes, ident: tuple[str, bytes], what: str) -> None:
        """Each public key once, and each (key name, key ID) once: two keys answering to
        one signature line would make a note's meaning depend on which is tried (a witness
        could grind a key ID to collide with another's and void its cosignatures)."""
        if public_key in self.keys:
            raise PolicyError(f"duplicate {what} key: the same public key is listed twice")
        if ident in self.idents:
            raise PolicyError(f"ambiguous {what} key: another key has the name {ident[0]!r} "
                              f"and key ID {ident[1].hex()}")
        self.keys.add(public_key)
        self.idents.add(ident)

    def log(self, args: list[str]) -> None:
        if len(args) not in (1, 2):
            raise PolicyError("want: log <vkey> [<url>]")
        if len(self.logs) >= MAX_LOGS:
            raise PolicyError(f"more than {MAX_LOGS} logs")
        key = _parse(parse_vkey, args[0], "log vkey")
        self._unique_key(key.public_key, (key.name, key.key_id), "log")
        self.logs.append(PolicyLog(key, args[1] if len(args) == 2 else None))

    def witness(self, args: list[str]) -> None:
        if len(args) not in (2, 3):
            raise PolicyError("want: witness <name> <vkey> [<url>]")
        if len(self.witnesses) >= MAX_WITNESSES:
            raise PolicyError(f"more than {MAX_WITNESSES} witnesses")
        name = self._new_name(args[0])
        key = _parse(parse_witness_vkey, args[1], "witness vkey")
        self._unique_key(key.public_key, (key.name, key.key_id), "witness")
        self.witnesses[name] = PolicyWitness(name, key, args[2] if len(args) == 3 else None)

    def group(self, args: list[str]) -> None:
        if len(args) < 3:
            raise PolicyError("want: group <name> all|any|<k> <member>...")
        if len(self.groups) >= MAX_GROUPS:
            raise PolicyError(f"more than {MAX_GROUPS} groups")
        name, k, members = self._new_name(args[0]), args[1], args[2:]
        for member in members:
            self._member(member)
        threshold = {"all": len(members), "any": 1}.get(k)
        if threshold is None:
            if not k.isdigit() or not k.isascii() or (len(k) > 1 and k[0] == "0"):
                raise PolicyError(f"group threshold {k[:20]!r}: want all, any or a decimal")
            # No group has more members than names exist: a longer number is out of range
            # (and int() of thousands of digits would raise, not say so).
            threshold = int(k) if len(k) <= 6 else 0
            if not 1 <= threshold <= len(members):
                raise PolicyError(f"group threshold {k[:20]} is not in 1..{len(members)}")
        self.groups[name] = Group(name, threshold, tuple(members))

    def _member(self, member: str) -> None:
        if member == NONE:
            raise PolicyError("'none' cannot be a group member")
        if member not in self.witnesses and member not in self.groups:
            raise PolicyError(f"group member {member[:60]!r} is not defined on an earlier line")
        if member in self.used_as_member:
            raise PolicyError(f"{member[:60]!r} is already a member of a group")
        self.used_as_member.add(member)

    def set_quorum(self, args: list[str]) -> None:
        if len(args) != 1:
            raise PolicyError("want: quorum <name>")
        if self.quorum is not None:
            raise PolicyError("a policy has exactly one quorum line")
        name = args[0]
        if name != NONE and name not in self.witnesses and name not in self.groups:
            raise PolicyError(f"quorum {name[:60]!r} is not defined on an earlier line")
        self.quorum = name

    def _new_name(self, name: str) -> str:
        if name == NONE:
            raise PolicyError("'none' is predefined and cannot be redefined")
        if name in self.witnesses or name in self.groups:
            raise PolicyError(f"name {name[:60]!r} is defined twice")
        return name


def _parse(parse: Callable[[str], T], text: str, what: str) -> T:
    try:
        return parse(text)
    except NoteError as exc:
        raise PolicyError(f"{what}: {exc}") from exc


def parse_policy(data: bytes | str) -> Policy:
    """Parse a policy file strictly (c2sp.org/tlog-policy); PolicyError names the line.

    Bytes are taken as octets: non-ASCII is opaque (decoded with surrogateescape so that
    names compare byte for byte). Only tab and newline are allowed of the controls.
    """
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_POLICY_SIZE:
        raise PolicyError(f"policy larger than {MAX_POLICY_SIZE} bytes")
    bad = next((i for i, b in enumerate(raw) if (b < 0x20 and b not in (9, 10)) or b == 0x7F),
               None)
    if bad is not None:
        where = raw[:bad].count(b"\n") + 1
        raise PolicyError(f"line {where}: control character 0x{raw[bad]:02x}")
    parser = _Parser()
    for number, text in enumerate(raw.decode("utf-8", "surrogateescape").split("\n"), 1):
        words = text.replace("\t", " ").split(" ")
        words = [w for w in words if w]
        if not words or words[0].startswith("#"):
            continue
        try:
            parser.line(words)
        except PolicyError as exc:
            raise PolicyError(f"line {number}: {exc}") from None
    if parser.quorum is None:
        raise PolicyError("the policy has no quorum line (write 'quorum none' to require no "
                          "cosignatures)")
    return Policy(tuple(parser.logs), dict(parser.witnesses), dict(parser.groups),
                  parser.quorum)


@dataclass(frozen=True)
class Witnessed:
    """A checkpoint opened under a policy: which witnesses cosigned it and when."""

    checkpoint: Checkpoint
    times: Mapping[str, int]
    """Policy witness name -> UNIX time of its valid cosignature."""
    quorum_time: int | None
    fresh_time: int | None


def cosignature_times(policy: Policy, note: bytes | str, body: str) -> dict[str, int]:
    """Times of the valid cosignatures by policy witnesses; signatures of keys the policy
    does not name are ignored, and one that claims a policy witness's key but does not
    verify refuses the note, as an invalid signature by a known key does (signed-note)."""
    times: dict[str, int] = {}
    for sig in parse_note(note).signatures:
        for witness in policy.witnesses.values():
            if witness.key.matches(sig) and witness.name not in times:
                times[witness.name] = verify_cosignature(witness.key, body, sig)
    return times


@dataclass(frozen=True)
class PolicyTrust:
    """Trust in a log under a policy: its key signed the checkpoint and the quorum cosigned.

    `max_age` (seconds), with `now`, makes :meth:`latest` refuse a checkpoint whose quorum of
    cosignatures is older than that: a freeze attack keeps a client on an old checkpoint, and
    only witnessed time shows it. `now` is a UNIX time, or a clock to read at each check (a
    monitor that follows the log for days must not measure ages from its start). With `now`,
    a cosignature dated more than MAX_CLOCK_SKEW ahead of it does not count: a witness whose
    clock runs ahead would otherwise make a frozen view look fresh.
    """

    policy: Policy
    log: Verifier
    now: int | Callable[[], float] | None = None
    max_age: int | None = None

    @classmethod
    def for_log(cls, policy: Policy, key: Verifier | None = None,
                now: int | Callable[[], float] | None = None,
                max_age: int | None = None) -> PolicyTrust:
        """The trust of the policy's only log, or of `key` when it is one of its logs (or
        the policy lists none: tlog-policy lets the log be known from other context)."""
        if key is not None:
            if policy.logs and all(log.key != key for log in policy.logs):
                raise PolicyError(f"the log key {key.name} is not one of the policy's logs")
            return cls(policy, key, now, max_age)
        if len(policy.logs) != 1:
            raise PolicyError(f"the policy lists {len(policy.logs)} logs; name the one to "
                              "use by its key")
        return cls(policy, policy.logs[0].key, now, max_age)

    @property
    def origin(self) -> str:
        return self.log.name

    def describe(self) -> str:
        return f"the log key {self.log.name} with {self.policy.describe_quorum()}"

    def witnessed(self, note: bytes | str) -> Witnessed:
        """Open `note`: the log's signature, the origin, and the quorum of cosignatures."""
        body = open_note(note, [self.log]).text
        cp = parse_checkpoint(body)
        if cp.origin != self.log.name:
            raise CheckpointError(f"checkpoint origin {cp.origin!r} is not the log "
                                  f"{self.log.name!r}")
        times = cosignature_times(self.policy, note, body)
        future = self._from_the_future(times)
        if not self.policy.satisfied(times):
            got = ", ".join(sorted(times)) or "no policy witness"
            ignored = (f" ({', '.join(future)} ignored: dated more than {MAX_CLOCK_SKEW} s "
                       "ahead of now)" if future else "")
            raise QuorumError(f"short of quorum: checkpoint of size {cp.size} is cosigned by "
                              f"{got}{ignored}; the policy requires "
                              f"{self.policy.describe_quorum()}")
        return Witnessed(cp, times, self.policy.quorum_time(times),
                         self.policy.fresh_time(times))

    def open(self, note: bytes | str) -> Checkpoint:
        return self.witnessed(note).checkpoint

    def latest(self, note: bytes | str) -> Checkpoint:
        """Open `note` as the log's current view: also refuses it when stale (max_age)."""
        w = self.witnessed(note)
        if self.max_age is not None:
            check_max_age(w, self._now(), self.max_age)
        return w.checkpoint

    def _from_the_future(self, times: dict[str, int]) -> list[str]:
        """Drop from `times` the cosignatures dated beyond now + MAX_CLOCK_SKEW; their
        witnesses, sorted."""
        if self.now is None:
            return []
        limit = self._now() + MAX_CLOCK_SKEW
        future = sorted(w for w, t in times.items() if t > limit)
        for w in future:
            del times[w]
        return future

    def _now(self) -> int:
        if self.now is None:
            raise PolicyError("a freshness limit needs the current time")
        return self.now if isinstance(self.now, int) else int(self.now())


def check_max_age(w: Witnessed, now: int, max_age: int) -> None:
    """Refuse (AgeError, "stale") a checkpoint whose quorum cosigned more than `max_age`
    seconds before `now`."""
    size = w.checkpoint.size
    if w.fresh_time is None:
        raise AgeError(f"stale: checkpoint of size {size} has no witnessed time (the policy "
                       "requires no cosignatures), so its age cannot be known")
    age = now - w.fresh_time
    if age > max_age:
        raise AgeError(f"stale: the quorum cosigned checkpoint of size {size} {age} s ago, "
                       f"more than the limit of {max_age} s (a frozen or lagging view)")


def check_min_age(w: Witnessed, now: int, min_age: int) -> None:
    """Refuse (AgeError, "too new") unless the quorum cosigned at least `min_age` seconds
    before `now`: the witnessed cooldown."""
    size = w.checkpoint.size
    if w.quorum_time is None:
        raise AgeError(f"too new: checkpoint of size {size} has no witnessed time (the "
                       "policy requires no cosignatures), so its age cannot be known")
    age = now - w.quorum_time
    if age < min_age:
        raise AgeError(f"too new: the quorum cosigned checkpoint of size {size} only {age} s "
                       f"ago, less than the cooldown of {min_age} s")
