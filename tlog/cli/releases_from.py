"""`tlog releases-from debian PACKAGES...`: the JSON Lines `tlog publish --batch` takes, made
from a Debian package index (a `Packages` file: RFC 822 stanzas, one per binary package).

Each stanza becomes an artifact: the .deb's file name (the basename of `Filename`), `SHA256`
and `Size`. A release is one package at one version (`Package`, `Version`); its metadata
holds the architectures and the source package. The same package and version appearing
again (an `Architecture: all` package is listed in every architecture's index; a package
built for amd64 and arm64 has one stanza in each) is MERGED into one release: a second
release with the same version would be refused by the log as a conflict. Its artifacts are
added (Debian file names carry the architecture, so they differ); a stanza repeating an
artifact the release already has (same name, hash and size) adds nothing; one giving the
same file name another hash is skipped as a conflict.

A stanza that cannot become a valid release/v1 (a field missing, a package name or version
the schema refuses, a hash that is not 64 hex digits, ...) is skipped: the summary on stderr
counts the skipped stanzas by reason and names the first ones. No counter is set (the index
does not say which versions came before), so a registered log must not require one.

Compressed indexes are read by content (gzip, xz, bzip2: the Python standard library); apt's
own lists are lz4, which is not in it: decompress them first (`lz4cat FILE` or
`/usr/lib/apt/apt-helper cat-file FILE`) and give `-` to read standard input.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from debian.deb822 import Deb822

from verifier.client.files import atomic_write
from verifier.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from verifier.protocol.entries.release import PACKAGE_NAME, VERSION_TEXT
from verifier.protocol.entries.strict_json import MAX_SAFE_INTEGER

__all__ = ["Conversion", "add_releases_from_command", "convert", "open_index"]

FIELDS = ["Package", "Version", "Architecture", "Filename", "Size", "SHA256", "Source"]
MAX_ARTIFACTS = 64  # release/v1's artifacts maxItems
MAX_NAME = 256  # an artifact name's maxLength
MAX_LISTED = 20  # skipped stanzas named on stderr; the counts cover the rest
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
SIZE_TEXT = re.compile(r"[0-9]{1,16}")
SOURCE = re.compile(r"([^ (]+)(?: \(([^ )]+)\))?")  # "glibc" or "glibc (2.36-9)"
# Magic numbers of the compressions an index comes in.
GZIP, XZ, BZIP2 = b"\x1f\x8b", b"\xfd7zXZ\x00", b"BZh"
LZ4, ZSTD = b"\x04\x22\x4d\x18", b"\x28\xb5\x2f\xfd"
DECOMPRESS_HINT = ("decompress it first and give '-' to read standard input: "
                   "`lz4cat {0} | tlog releases-from debian -` (or, for apt's lists, "
                   "`/usr/lib/apt/apt-helper cat-file {0} | tlog releases-from debian -`)")


class Skip(Exception):
    """A stanza that cannot become (part of) a release; the message is the reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class IndexUnreadable(Exception):
    """An index that cannot be read at all (missing, unsupported compression)."""


@dataclass
class Conversion:
    """Releases by (package, version) in the order first seen, and what was skipped."""

    releases: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    stanzas: int = 0
    merged: int = 0  # stanzas that added an artifact to a release seen before
    repeated: int = 0  # stanzas whose artifact the release already had
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def skip(self, where: str, exc: Skip) -> None:
        self.skipped[exc.reason] += 1
        if len(self.examples) < MAX_LISTED:
            self.examples.append(f"{where}: {exc}")


def _field(stanza: Deb822, name: str) -> str:
    value = stanza.get(name)
    if not value or not value.strip():
        raise Skip(f"no {name}", f"the stanza has no {name} field")
    return str(value).strip()


def _matching(stanza: Deb822, name: str, pattern: re.Pattern[str], what: str) -> str:
    value = _field(stanza, name)
    if not pattern.fullmatch(value):
        raise Skip(f"bad {name}", f"{value[:120]!r} is not {what}")
    return value


def _artifact(stanza: Deb822) -> dict[str, Any]:
    name = _field(stanza, "Filename").rsplit("/", 1)[-1]
    if not 1 <= len(name) <= MAX_NAME:
        raise Skip("bad Filename", f"the file name must be 1-{MAX_NAME} characters")
    sha256 = _matching(stanza, "SHA256", SHA256_HEX, "64 lowercase hex digits")
    size = int(_matching(stanza, "Size", SIZE_TEXT, "a size in bytes"))
    if size > MAX_SAFE_INTEGER:
        raise Skip("bad Size", f"{size} is 2**53 or more")
    return {"name": name, "sha256": sha256, "size": size}


def _source(stanza: Deb822, package: str, version: str) -> tuple[str, str]:
    """The source package and its version: `Source: name (version)`, defaulting to the
    binary package's own name and version (Debian policy 5.6.1)."""
    text = str(stanza.get("Source") or "").strip()
    if not text:
        return package, version
    match = SOURCE.fullmatch(text)
    if not match:
        raise Skip("bad Source", f"{text[:120]!r} is not 'name' or 'name (version)'")
    return match[1], match[2] or version


def _release(stanza: Deb822) -> tuple[tuple[str, str], dict[str, Any], str | None]:
    package = _matching(stanza, "Package", PACKAGE_NAME, "a package name release/v1 allows")
    version = _matching(stanza, "Version", VERSION_TEXT,
                        "a version release/v1 allows (1-100 printable ASCII, no spaces)")
    artifact = _artifact(stanza)
    source, source_version = _source(stanza, package, version)
    arch = str(stanza.get("Architecture") or "").strip() or None
    release = {"package": package, "version": version, "artifacts": [artifact],
               "metadata": {"architectures": [arch] if arch else [], "source": source,
                            "source_version": source_version}}
    return (package, version), release, arch


def _merge(into: dict[str, Any], artifact: dict[str, Any], arch: str | None) -> bool:
    """Add a stanza's artifact and architecture to a release seen before; False when the
    release already had that very artifact (the same file listed in another index)."""
    artifacts: list[dict[str, Any]] = into["artifacts"]
    same_name = [a for a in artifacts if a["name"] == artifact["name"]]
    if same_name and same_name[0] != artifact:
        raise Skip("conflicting duplicate",
                   f"{artifact['name']} appears before with another SHA256 or Size")
    if same_name:
        return False
    if len(artifacts) >= MAX_ARTIFACTS:
        raise Skip("too many artifacts", f"a release holds at most {MAX_ARTIFACTS}")
    artifacts.append(artifact)
    archs: list[str] = into["metadata"]["architectures"]
    if arch and arch not in archs:
        archs.append(arch)
        archs.sort()
    return True


def convert(indexes: Iterable[tuple[str, Iterable[bytes]]]) -> Conversion:
    """Every release of the indexes (name, lines), merged by package and version."""
    result = Conversion()
    for name, stream in indexes:
        for number, stanza in enumerate(_stanzas(stream), start=1):
            result.stanzas += 1
            try:
                key, release, arch = _release(stanza)
                seen = result.releases.get(key)
                if seen is None:
                    result.releases[key] = release
                elif _merge(seen, release["artifacts"][0], arch):
                    result.merged += 1
                else:
                    result.repeated += 1
            except Skip as exc:
                result.skip(f"{name}: stanza {number}", exc)
    return result


def _stanzas(stream: Iterable[bytes]) -> Iterator[Deb822]:
    """Each paragraph (lines between blank lines) parsed by python-debian. The paragraphs
    are split here, not by Deb822.iter_paragraphs: it stops at the first paragraph without
    a field it keeps, silently dropping the rest of the index. Here such a paragraph is an
    empty stanza, counted as skipped like any other."""
    lines: list[bytes] = []
    for line in stream:
        if line.strip():
            lines.append(line)
        elif lines:
            yield Deb822(lines, fields=FIELDS)
            lines = []
    if lines:
        yield Deb822(lines, fields=FIELDS)


def open_index(path: str) -> Iterable[bytes]:
    """The index at `path` ('-': standard input), decompressed by its magic number."""
    try:
        raw: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise IndexUnreadable(f"cannot read {path}: {exc.strerror or exc}") from exc
    head = raw.peek(8)[:8] if hasattr(raw, "peek") else b""
    if head.startswith(GZIP):
        return gzip.open(raw)
    if head.startswith(XZ):
        return lzma.open(raw)
    if head.startswith(BZIP2):
        return bz2.open(raw)
    if head.startswith((LZ4, ZSTD)):
        kind = "lz4" if head.startswith(LZ4) else "zstd"
        raw.close()
        raise IndexUnreadable(f"{path} is {kind}-compressed, which Python's standard library "
                              f"does not read: " + DECOMPRESS_HINT.format(path))
    return raw


def jsonl(releases: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                    for r in releases)


def _summary(result: Conversion, written: int) -> None:
    for example in result.examples:
        print(f"tlog releases-from: skipped {example}", file=sys.stderr)
    skipped = sum(result.skipped.values())
    reasons = ", ".join(f"{n} {reason}" for reason, n in result.skipped.most_common())
    print(f"tlog releases-from: {result.stanzas} stanzas -> {len(result.releases)} releases "
          f"({result.merged} stanzas merged into a release of the same version, "
          f"{result.repeated} repeating an artifact); {skipped} skipped"
          f"{f' ({reasons})' if reasons else ''}; {written} written", file=sys.stderr)


def cmd_debian(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        print("tlog releases-from: --limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.index.count("-") > 1:
        print("tlog releases-from: standard input ('-') can be read once", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = convert((path, open_index(path)) for path in args.index)
    except IndexUnreadable as exc:
        print(f"tlog releases-from: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError) as exc:
        print(f"tlog releases-from: cannot read the index: {exc}", file=sys.stderr)
        return EXIT_USAGE
    releases = list(result.releases.values())[:args.limit]
    if not releases:
        _summary(result, 0)
        print("tlog releases-from: no release in the index; nothing written", file=sys.stderr)
        return EXIT_FAILED
    data = jsonl(releases)
    try:
        if args.output:
            atomic_write(Path(args.output), data, durable=True, mode=0o644)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    except OSError as exc:
        print(f"tlog releases-from: cannot write the releases: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _summary(result, len(releases))
    return EXIT_OK


def add_releases_from_command(sub: Any) -> None:
    r = sub.add_parser(
        "releases-from",
        help="make the JSON Lines of releases `tlog publish --batch` takes from a package "
             "index",
        description="Convert a package index into JSON Lines of releases (package, version, "
                    "artifacts with name, sha256, size; metadata) for `tlog publish --batch`.")
    kinds = r.add_subparsers(dest="index_kind", required=True, metavar="KIND")
    d = kinds.add_parser(
        "debian", help="a Debian Packages file",
        description="One release per package and version of a Debian Packages index, its "
                    "artifacts the .deb files (basename of Filename, SHA256, Size), metadata "
                    "the architectures and the source package. Stanzas of the same package "
                    "and version (other architectures, the same Architecture: all file in "
                    "several indexes) are merged into one release. Stanzas that cannot be a "
                    "valid release are skipped and counted on stderr. gzip, xz and bzip2 "
                    "indexes are read as they are; decompress lz4 (apt's lists) first, "
                    "e.g. `lz4cat Packages.lz4 | tlog releases-from debian -`.")
    d.add_argument("index", nargs="+", metavar="PACKAGES_FILE",
                   help="a Packages file, plain or .gz/.xz/.bz2 ('-': standard input); "
                        "several are merged (e.g. one per architecture)")
    d.add_argument("--limit", type=int, metavar="N",
                   help="write only the first N releases (in index order)")
    d.add_argument("--output", "-o", metavar="FILE",
                   help="write the JSON Lines to FILE (replaced atomically) instead of stdout")
    d.set_defaults(func=cmd_debian)
