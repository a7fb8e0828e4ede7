"""`tlog publish --batch FILE`: many releases from a JSON Lines file, receipts to another.

Each line of FILE is one release with pre-computed artifacts (tlog.client.publish.prepare).
Every line is read and signed before anything is sent: a file with a bad line is refused
whole (exit 2, each bad line named), so a publisher never half-publishes a file it must fix.

Receipts are appended to --receipts (default FILE.receipts.jsonl), one tlog-receipt/v1 per
line, flushed and fsynced after each chunk the log answered. That makes a run resumable: a
rerun reads the receipts already written (each verified again with the log key), skips the
lines they cover (same package, version and leaf hash) and submits only the rest. A run
killed while appending leaves at most a partial last line, which the rerun cuts off (the
entry is logged; the rerun submits it again and the log answers 200 with its receipt).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tlog.cli import proof
from tlog.cli.remote import RemoteError, read_secret, tls_files
from tlog.client.publish import Outcome, Prepared, Publisher, prepare
from verifier.client.keys import read_private_key
from verifier.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    TransportError,
    UsageError,
    VerificationFailed,
)
from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.strict_json import canonical, parse_json
from verifier.protocol.note import NoteError, Verifier
from verifier.protocol.receipt import verify_receipt
from verifier.protocol.trust import KeyTrust, OpenedOnce

MAX_LINE = 256 * 1024  # an entry's leaf is at most 64 KiB
MAX_LINES = 1_000_000
MAX_LISTED = 20  # bad lines or refusals printed; the count says how many more
RESUME = "the receipts so far are in {}: run the same command again to resume"
Key = tuple[str, str, str]  # package, version, leaf hash (hex)

SINGLE_OPTIONS = {"package": "--package", "version": "--version", "counter": "--counter",
                  "out": "--out", "artifact_specs": "--artifact", "artifacts": "ARTIFACT",
                  "wait_cosigned": "--wait-cosigned", "policy": "--policy"}


class BadLines(Exception):
    """Lines of the batch file that cannot be published: (line number, reason)."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        super().__init__(f"{len(problems)} bad lines")
        self.problems = problems


def read_batch(path: Path, key: Any) -> list[tuple[int, Prepared]]:
    """Every release of the file, signed, with its line number; BadLines lists the lines
    that are not JSON objects, not valid releases, or repeat a package and version."""
    releases: list[tuple[int, Prepared]] = []
    problems: list[tuple[int, str]] = []
    seen: dict[tuple[str, str], int] = {}
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if number > MAX_LINES:
                problems.append((number, f"more than {MAX_LINES} lines; split the file"))
                break
            if not line.strip():
                continue
            try:
                if len(line) > MAX_LINE:
                    raise EntryError("invalid_entry", f"longer than {MAX_LINE} bytes")
                prepared = prepare(parse_json(line), key)
            except EntryError as exc:
                problems.append((number, str(exc)))
                continue
            name = (prepared.package, prepared.version)
            if name in seen:
                problems.append((number, f"{name[0]} {name[1]} is also on line {seen[name]}"))
                continue
            seen[name] = number
            releases.append((number, prepared))
    if problems:
        raise BadLines(problems)
    return releases


def load_receipts(path: Path, log_key: Verifier) -> set[Key]:
    """The (package, version, leaf hash) of every receipt in the file, each verified; a
    partial last line (a run killed while writing) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    whole = data[:data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with path.open("r+b") as f:
            f.truncate(len(whole))
            os.fsync(f.fileno())
    done: set[Key] = set()
    trust = OpenedOnce(KeyTrust(log_key))  # a few dozen checkpoints for thousands of lines
    for number, line in enumerate(whole.splitlines(), start=1):
        try:
            verified = verify_receipt(parse_json(line), trust)
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: not a receipt of this log: {exc}") from exc
        release = verified.release
        done.add((release.package, release.version, release.leaf_hash.hex()))
    return done


def _key(p: Prepared) -> Key:
    return p.package, p.version, p.leaf_hash.hex()


class Progress:
    """count/total and entries/s on a terminal (stderr), nothing otherwise."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.done, self.out = total, 0, out
        self.started = time.monotonic()
        self.live = out.isatty()

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def add(self, n: int) -> None:
        self.done += n
        if self.live:
            self.out.write(f"\r{self.done}/{self.total} releases, {self.rate():.0f} entries/s")
            self.out.flush()

    def end(self) -> None:
        if self.live:
            self.out.write("\n")


def append_receipts(f: Any, outcomes: list[Outcome]) -> None:
    """Append the chunk's receipts and make them durable before the next chunk is sent."""
    for o in outcomes:
        if o.receipt is not None:
            f.write(canonical(o.receipt) + b"\n")
    f.flush()
    os.fsync(f.fileno())


async def _publish(publisher: Publisher, todo: list[Prepared],
                   receipts: Path) -> tuple[list[Outcome], Progress]:
    progress = Progress(len(todo), sys.stderr)
    outcomes: list[Outcome] = []
    new_file = not receipts.exists()
    with receipts.open("ab") as f:
        if new_file:
            _fsync_dir(receipts.parent)  # the file's name survives a crash, not only its data
        async with publisher:
            async for chunk in publisher.submit(todo):
                append_receipts(f, chunk)
                outcomes.extend(chunk)
                progress.add(len(chunk))
    progress.end()
    return outcomes, progress


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_options(args: argparse.Namespace) -> None:
    given = [flag for name, flag in SINGLE_OPTIONS.items() if getattr(args, name, None)]
    if given:
        raise UsageError(f"--batch takes its releases from the file: drop {', '.join(given)}")
    args.chunk_size = 500 if args.chunk_size is None else args.chunk_size
    if not 1 <= args.chunk_size <= 1000:
        raise UsageError(f"--chunk-size must be 1..1000, not {args.chunk_size}")


def _notice(message: str) -> None:
    print(f"tlog publish: notice: {message}", file=sys.stderr)


def publish_batch(args: argparse.Namespace) -> int:
    batch = Path(args.batch)
    receipts = Path(args.receipts) if args.receipts else batch.with_name(
        batch.name + ".receipts.jsonl")
    try:
        _check_options(args)
        key = read_private_key(args.key, owner_only=False)
        log_key = proof.log_key(args, "tlog publish")
        token = read_secret(args.token_file, "TLOG_TOKEN", "token file")
        lines = read_batch(batch, key)
        done = load_receipts(receipts, log_key)
        todo = [p for _, p in lines if _key(p) not in done]
        line_of = {_key(p): n for n, p in lines}
        publisher = Publisher(args.log, key, log_key, token, tls=tls_files(args),
                              chunk_size=args.chunk_size, notice=_notice)
        outcomes, progress = asyncio.run(_publish(publisher, todo, receipts))
    except BadLines as exc:
        for number, reason in exc.problems[:MAX_LISTED]:
            print(f"tlog publish: {batch}:{number}: {reason}", file=sys.stderr)
        more = len(exc.problems) - MAX_LISTED
        print(f"tlog publish: {len(exc.problems)} bad lines{f' ({more} more)' if more > 0 else ''}"
              f"; nothing was submitted", file=sys.stderr)
        return EXIT_USAGE
    except RemoteError as exc:
        print(f"tlog publish: {exc}", file=sys.stderr)
        return exc.code
    except TransportError as exc:
        print(f"tlog publish: {exc}\ntlog publish: {RESUME.format(receipts)}", file=sys.stderr)
        return exc.exit_code
    except (VerificationFailed, UsageError) as exc:
        print(f"tlog publish: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"tlog publish: interrupted; {RESUME.format(receipts)}", file=sys.stderr)
        return 130
    except (OSError, NoteError, EntryError) as exc:
        print(f"tlog publish: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _report(outcomes, progress, len(lines) - len(todo), receipts, line_of, batch)


def _report(outcomes: list[Outcome], progress: Progress, skipped: int, receipts: Path,
            line_of: dict[Key, int], batch: Path) -> int:
    new = sum(1 for o in outcomes if o.created)
    old = sum(1 for o in outcomes if o.ok and not o.created)
    refused = [o for o in outcomes if not o.ok]
    print(f"logged {new} new, {old} already logged, {skipped} skipped (receipt on file), "
          f"{len(refused)} refused; {progress.rate():.0f} entries/s; receipts verified and "
          f"in {receipts}")
    for o in refused[:MAX_LISTED]:
        print(f"tlog publish: {batch}:{line_of[_key(o.prepared)]}: {o.prepared.package} "
              f"{o.prepared.version} refused: {o.error}", file=sys.stderr)
    if len(refused) > MAX_LISTED:
        print(f"tlog publish: ... and {len(refused) - MAX_LISTED} more refused",
              file=sys.stderr)
    return EXIT_FAILED if refused else EXIT_OK
