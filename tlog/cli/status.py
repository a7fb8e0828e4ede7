"""`tlog status --log URL [--policy FILE] [--key FILE] [--json]`: how a running log is doing,
for a person at a terminal (or, with --json, for a machine).

It reads GET /v1/status (what the log reports of itself: tree size, checkpoint time,
submissions waiting, database health, witnesses, recent refusals) and verifies what it can
itself: /checkpoint is opened with the log's key (--key, else the policy's log line, else
the key GET /v1/log announces, which only shows that the log agrees with itself), and with
--policy each cosignature of a policy witness is verified against the policy's key, on
/checkpoint and on the checkpoint of the latest tree size (/v1/checkpoints/N), so "which
witnesses are behind" rests on signatures, not on the log's word, wherever one exists.

Exit status (EXIT_HELP says the same in --help):
  0  healthy: everything checked verifies and the log reports no trouble
  1  verification failed: a signature that does not verify, a log that is not the pinned one
  2  usage: bad arguments or files
  3  transport: the log could not be reached or answered outside the API
  4  unhealthy but honest: what verifies does, yet the log is in trouble (database
     unreachable or not writable, appends stopped, no checkpoint served, the witness quorum
     missed, a fork alarm reported by the log's witness task, a checkpoint no key verified)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from tlog.cli.remote import RemoteError, add_connection_options, tls_files
from tlog.cli.status_text import colours, plain, printable, render, tree_size
from verifier.client.http import HttpFetcher
from verifier.client.keys import read_policy, read_vkey
from verifier.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    TransportError,
    UsageError,
    VerificationFailed,
)
from verifier.protocol.checkpoint import CheckpointError, open_checkpoint, parse_checkpoint
from verifier.protocol.cosignature import COSIGNATURE_SIZE, TIMESTAMP_SIZE
from verifier.protocol.note import MAX_NOTE_SIZE, NoteError, Verifier, parse_note, parse_vkey
from verifier.protocol.policy import MAX_CLOCK_SKEW, Policy, cosignature_times

EXIT_UNHEALTHY = 4
TIMEOUT = 10  # connecting, and silence from the log
DEADLINE = 30  # one whole answer
MAX_JSON = 1 << 20
EXIT_HELP = """exit status:
  0  healthy: every check passed and the log reports no trouble
  1  verification failed: the checkpoint's signature (or a policy witness's cosignature)
     does not verify, or the log is not the one whose key was given
  2  usage: bad arguments or files
  3  transport: the log could not be reached, or answered outside its API
  4  unhealthy but honest: what verifies does, but the log is in trouble (database
     unreachable or not writable, appends stopped, no checkpoint served, --policy quorum
     missed, a witness fork alarm, a checkpoint no log key verified)"""


def add_status_command(sub: Any) -> None:
    s = sub.add_parser(
        "status", help="how a running log is doing: tree size, checkpoint age, witnesses, "
                       "submissions waiting, database, recent refusals",
        description="Ask a running log how it is doing and verify its checkpoint.",
        epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--log", required=True, help="the log's base URL")
    s.add_argument("--policy", metavar="FILE",
                   help="witness policy (c2sp.org/tlog-policy): its witnesses' cosignatures "
                        "are verified, the quorum checked; its log line is the log key "
                        "unless --key is given")
    s.add_argument("--key", metavar="FILE",
                   help="the log's vkey file (default: the policy's log line, else the key "
                        "GET /v1/log announces, which is not pinned)")
    s.add_argument("--json", action="store_true",
                   help="one JSON object on stdout instead of the text report")
    add_connection_options(s)
    s.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    try:
        policy = read_policy(args.policy) if args.policy else None
        pinned = read_vkey(args.key, "log key") if args.key else None
        log = HttpFetcher(args.log, timeout=TIMEOUT, deadline=DEADLINE, tls=tls_files(args))
    except (UsageError, RemoteError) as exc:
        return _usage(str(exc))
    report: dict[str, Any] = {"log": args.log}
    try:
        gather(log, policy, pinned, args, report)
    except TransportError as exc:
        report["problems"] = [str(exc)]
        return _finish(args, report, "unreachable", EXIT_TRANSPORT)
    except VerificationFailed as exc:
        report["problems"] = [str(exc)]
        return _finish(args, report, "failed", EXIT_FAILED)
    problems = troubles(report)
    report["problems"] = problems
    if problems:
        return _finish(args, report, "unhealthy", EXIT_UNHEALTHY)
    return _finish(args, report, "healthy", EXIT_OK)


def _usage(message: str) -> int:
    print(f"tlog status: {message}", file=sys.stderr)
    return EXIT_USAGE


def _finish(args: argparse.Namespace, report: dict[str, Any], verdict: str, code: int) -> int:
    report["verdict"], report["exit_code"] = verdict, code
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        paint = colours() if sys.stdout.isatty() else plain
        report = printable(report)  # every string in it comes from the log
        print(render(report, paint), end="")
        if code in (EXIT_TRANSPORT, EXIT_FAILED) and not sys.stdout.isatty():
            # the reason where scripts look for it too (a terminal shows it above)
            print(f"tlog status: {report['problems'][0]}", file=sys.stderr)
    return code


# -- reading and verifying ------------------------------------------------------------------


def gather(log: HttpFetcher, policy: Policy | None, pinned: Verifier | None,
           args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Fill `report` from the log's answers, verifying as it goes (VerificationFailed on a
    bad signature; TransportError when the log cannot be read)."""
    status = fetch_status(log)
    report["origin"] = status["origin"]
    report["tree_size"] = status["tree_size"]
    report["server_time"] = status["time"]
    report["checkpoint_time"] = status["checkpoint_time"]
    report["checkpoint_age_seconds"] = (None if status["checkpoint_time"] is None else
                                        round(status["time"] - status["checkpoint_time"], 1))
    for name in ("submissions_waiting", "appends", "appends_stopped", "database",
                 "database_error", "refusals"):
        report[name] = status[name]
    key, source = choose_key(log, policy, pinned, args, status["origin"])
    report["key"] = None if key is None else {"vkey": key.text(), "source": source,
                                              "pinned": source != LOG_ANNOUNCED}
    report["key_problem"] = None if key is not None else source
    if key is not None and key.name != status["origin"]:
        raise VerificationFailed(f"the log says its origin is {status['origin']!r}, but the "
                                 f"log key given is {key.name!r}: not the same log")
    report["checkpoint"], times = check_checkpoint(log, key, policy)
    report["witnesses"] = witness_report(log, key, policy, status, report, times)


def fetch_status(log: HttpFetcher) -> dict[str, Any]:
    code, raw = log.request("GET", "/v1/status", limit=MAX_JSON)
    where = log.where("v1/status")
    if code != 200:
        raise TransportError(f"{where} answered {code}{_error_text(raw)}")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise TransportError(f"{where} answered 200 with non-JSON") from exc
    if not _status_shape(doc):
        raise TransportError(f"{where} answered a JSON object that is not a tlog status")
    return doc  # type: ignore[no-any-return]


def _status_shape(doc: Any) -> bool:
    """The members this command reads, with their types (the rest is shown as given)."""
    def number(v: Any) -> bool:  # a time: finite, and within what a date can show
        return (isinstance(v, int | float) and not isinstance(v, bool)
                and 0 <= v < 253402300800)  # (NaN compares false: refused too)

    def size(v: Any) -> bool:
        return v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)

    return (isinstance(doc, dict) and isinstance(doc.get("origin"), str)
            and number(doc.get("time")) and size(doc.get("tree_size"))
            and (doc.get("checkpoint_time") is None or number(doc.get("checkpoint_time")))
            and size(doc.get("submissions_waiting")) and doc.get("appends") in ("running",
                                                                                "stopped")
            and isinstance(doc.get("database"), dict)
            and isinstance(doc["database"].get("reachable"), bool)
            and (doc.get("witnesses") is None or isinstance(doc.get("witnesses"), dict))
            and isinstance(doc.get("refusals"), dict)
            and isinstance(doc["refusals"].get("by_code"), dict)
            and all(size(n) for n in doc["refusals"]["by_code"].values()))


def _error_text(raw: bytes) -> str:
    """`: CODE: message` of a tlog error body, if it is one."""
    try:
        err = json.loads(raw)["error"]
        return f": {err['code']}: {str(err['message'])[:200]}"
    except (ValueError, KeyError, TypeError):
        return ""


LOG_ANNOUNCED = "GET /v1/log (not pinned: it only shows that the log agrees with itself)"


def choose_key(log: HttpFetcher, policy: Policy | None, pinned: Verifier | None,
               args: argparse.Namespace, origin: str) -> tuple[Verifier | None, str]:
    """The log key and where it came from; (None, why) when the log's own could not be had."""
    if pinned is not None:
        return pinned, f"--key {args.key}"
    if policy is not None and policy.logs:
        named = [line.key for line in policy.logs if line.key.name == origin]
        if len(policy.logs) > 1 and not named:
            raise VerificationFailed(f"none of the logs of {args.policy} is {origin!r}, the "
                                     "origin the log says it has")
        return (named or [policy.logs[0].key])[0], f"the policy's log line ({args.policy})"
    code, raw = log.request("GET", "/v1/log", limit=MAX_JSON)
    if code != 200:
        return None, f"no log key: GET /v1/log answered {code}{_error_text(raw)}"
    try:
        return parse_vkey(str(json.loads(raw)["vkey"])), LOG_ANNOUNCED
    except (ValueError, KeyError, TypeError) as exc:
        raise TransportError(f"GET /v1/log answered no usable key: {exc}") from exc


def fetch_note(log: HttpFetcher, path: str) -> tuple[str | None, str | None]:
    """(note, None), or (None, why the log serves none now) for a 503/404 of the API."""
    code, raw = log.request("GET", path, limit=MAX_NOTE_SIZE)
    if code == 200:
        try:
            return raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            raise VerificationFailed(f"GET {path} is not UTF-8: not a signed note") from exc
    if code in (404, 503):
        return None, f"GET {path} answered {code}{_error_text(raw)}"
    raise TransportError(f"{log.where(path.lstrip('/'))} answered {code}{_error_text(raw)}")


def opened_checkpoint(note: str, key: Verifier, path: str) -> tuple[int, str]:
    """(size, body) of `note` signed by `key`; VerificationFailed with the reason if not."""
    try:
        checkpoint = open_checkpoint(note, key)
    except (NoteError, CheckpointError) as exc:
        raise VerificationFailed(f"the checkpoint of GET {path} does not verify with the log "
                                 f"key {key.name}+{key.key_id.hex()}: {exc}") from exc
    return checkpoint.size, parse_note(note).text


def cosigned_by(policy: Policy, note: str, body: str, path: str) -> dict[str, int]:
    """Policy witness name -> time of its cosignature on `note`, every one verified: a line
    claiming a policy witness's key that does not verify fails the whole check. As clients
    do (PolicyTrust with now), one dated over MAX_CLOCK_SKEW ahead does not count."""
    try:
        times = cosignature_times(policy, note, body)
    except NoteError as exc:
        raise VerificationFailed(f"GET {path}: a policy witness's cosignature does not "
                                 f"verify: {exc}") from exc
    return {w: t for w, t in times.items() if t <= time.time() + MAX_CLOCK_SKEW}


def unverified_cosignatures(note: str, key: Verifier | None) -> list[dict[str, Any]]:
    """The note's other signature lines, by name, with the time a cosignature/v1 line
    states (not verified: no --policy gives the witnesses' keys)."""
    out = []
    for sig in parse_note(note).signatures:
        if key is not None and (sig.name, sig.key_id) == (key.name, key.key_id):
            continue
        stated = (int.from_bytes(sig.signature[:TIMESTAMP_SIZE], "big")
                  if len(sig.signature) == COSIGNATURE_SIZE else None)
        out.append({"name": sig.name, "key_id": sig.key_id.hex(), "time": stated,
                    "verified": False})
    return out


def check_checkpoint(log: HttpFetcher, key: Verifier | None, policy: Policy | None
                     ) -> tuple[dict[str, Any], dict[str, int]]:
    """What /checkpoint shows, verified with `key` and `policy` where given; and the policy
    witnesses whose cosignature on it verified, with their times."""
    note, why = fetch_note(log, "/checkpoint")
    if note is None:
        return {"served": False, "problem": why}, {}
    out: dict[str, Any] = {"served": True, "verified": False}
    if key is None:
        try:
            out.update(size=_stated_size(note), cosignatures=unverified_cosignatures(note, None))
        except NoteError as exc:
            raise VerificationFailed(f"GET /checkpoint is not a signed note: {exc}") from exc
        return out, {}
    size, body = opened_checkpoint(note, key, "/checkpoint")
    out.update(size=size, verified=True)
    if policy is None:
        out["cosignatures"] = unverified_cosignatures(note, key)
        return out, {}
    times = cosigned_by(policy, note, body, "/checkpoint")
    fresh = policy.fresh_time(times)
    out["cosignatures"] = [{"name": policy.witnesses[w].key.name, "witness": w, "time": t,
                            "verified": True} for w, t in sorted(times.items())]
    out["quorum"] = policy.describe_quorum()
    out["quorum_met"] = policy.satisfied(times)
    out["witnessed_age_seconds"] = None if fresh is None else round(time.time() - fresh, 1)
    return out, times


def _stated_size(note: str) -> int | None:
    """The size an unverified checkpoint states (None if it is no checkpoint); NoteError
    if it is no signed note."""
    try:
        return parse_checkpoint(parse_note(note).text).size
    except CheckpointError:
        return None


def witness_report(log: HttpFetcher, key: Verifier | None, policy: Policy | None,
                   status: dict[str, Any], report: dict[str, Any], times: dict[str, int]
                   ) -> dict[str, Any] | None:
    """Each witness: the size it cosigned (verified where a signature shows it, else as the
    log reports it) against the tree size, and whether it is behind."""
    told = status["witnesses"] or {}
    listed = told.get("witnesses")
    reported: dict[str, Any] = listed if isinstance(listed, dict) else {}
    if policy is None and not told:
        return None
    tree = tree_size(report)
    verified: dict[str, int] = {}
    if policy is not None and key is not None:
        checkpoint = report["checkpoint"]
        for name in times:
            verified[name] = checkpoint["size"]
        if tree is not None and tree != checkpoint.get("size"):
            path = f"/v1/checkpoints/{tree}"
            note, _ = fetch_note(log, path)
            if note is not None:
                _, body = opened_checkpoint(note, key, path)
                for name in cosigned_by(policy, note, body, path):
                    verified[name] = tree
    names = list(policy.witnesses) if policy is not None else sorted(reported)
    rows = [_witness_row(name, verified.get(name), reported.get(name), tree) for name in names]
    return {"quorum": (policy.describe_quorum() if policy is not None else told.get("quorum")),
            "published_size": told.get("published_size"), "list": rows}


def _witness_row(name: str, verified: int | None, told: Any, tree: int | None
                 ) -> dict[str, Any]:
    told = told if isinstance(told, dict) else {}
    said = told.get("cosigned_size")
    size = verified if verified is not None else (said if isinstance(said, int) else None)
    return {"name": name, "size": size, "verified": verified is not None,
            "reported": bool(told),  # the log lists it: its witness task asks it
            "behind": tree is not None and (size is None or size < tree),
            "last_error": told.get("last_error"),
            "seconds_since_success": told.get("seconds_since_success"),
            "fork_alarm": told.get("fork_alarm")}


def troubles(report: dict[str, Any]) -> list[str]:
    """Why the log is unhealthy (what verified did verify): empty when it is healthy."""
    out = []
    db = report["database"]
    if not db.get("reachable"):
        out.append(f"database unreachable ({report.get('database_error') or 'no answer'})")
    elif db.get("read_only") or db.get("in_recovery"):
        out.append("database does not take writes (" + ("in recovery" if db.get("in_recovery")
                                                         else "read-only") + ")")
    if report["appends"] != "running":
        out.append(f"appends stopped: {report.get('appends_stopped')}")
    checkpoint = report["checkpoint"]
    if not checkpoint["served"]:
        out.append(f"no checkpoint served: {checkpoint['problem']}")
    elif not checkpoint["verified"]:
        # No key to check it with (the log withheld its own): a forged note would read as
        # healthy, so an unverified checkpoint is never a clean bill of health.
        out.append(f"checkpoint not verified: {report.get('key_problem')}")
    elif checkpoint.get("quorum_met") is False:
        out.append(f"witness quorum missed: the policy requires {checkpoint['quorum']}")
    for row in (report["witnesses"] or {}).get("list", []):
        if row["fork_alarm"]:
            out.append(f"fork alarm from witness {row['name']}: {row['fork_alarm']}")
    return out
