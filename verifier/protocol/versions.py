"""Version order per ecosystem: semantic versions, PEP 440 and Debian versions.

Monitors and rules that need to know whether a version went backwards choose a scheme per
package pattern (`SchemeMap`) and compare under it (`compare`, `sort_key`):

- "semver": SemVer 2.0.0 precedence (semver.org §11): MAJOR.MINOR.PATCH numerically, a
  pre-release below its release, pre-release identifiers compared left to right (numeric ones
  as integers and below alphanumeric ones, which compare in ASCII order; a longer set wins a
  tie), build metadata ignored ("1.0.0+a" equals "1.0.0+b"). Strict: no "v" prefix, no
  leading zeros, exactly three numbers.
- "pep440": PEP 440 (epochs "1!", pre/post/dev releases, local versions "+abc"), with the
  PEP's normalisation ("1.0-1" is "1.0.post1", "v1.0" is "1.0", "1.0" equals "1.0.0").
- "debian": Debian Policy §5.6.12 as dpkg implements it: [epoch:]upstream[-revision], epoch
  first, then upstream and revision compared by dpkg's algorithm (digit runs as numbers,
  letters before other characters, "~" before everything, even the end: "1.0~rc1" < "1.0").
  Valid as Dpkg::Version is_valid says: the upstream part starts with a digit, no empty part.

The orders come from the field's own libraries rather than code of ours: packaging (the
reference PEP 440 implementation, pip's), python-semver, and python-debian's NativeVersion (the
pure-Python dpkg comparison; never its apt_pkg binding, so the order is the same on every
machine). What they accept too loosely is refused here first (a trailing newline in a semantic
version, the Debian versions dpkg refuses).

A version the scheme does not accept raises VersionError (a ValueError). Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import packaging.version
import semver
from debian.debian_support import NativeVersion

SEMVER = "semver"
PEP440 = "pep440"
DEBIAN = "debian"
SCHEMES = (SEMVER, PEP440, DEBIAN)

# python-semver's pattern ends in "$", which lets a trailing newline through: the characters
# of SemVer's grammar (§9, §10) are checked here first.
_SEMVER_CHARS = re.compile(r"[0-9A-Za-z.+-]+")
# Dpkg::Version is_valid / dpkg's parseversion: an optional numeric epoch, an upstream part
# starting with a digit ("-" only when a revision follows, ":" only after an epoch), and a
# revision after the last "-". Epochs above INT_MAX are refused by dpkg too.
_DEBIAN = re.compile(r"(?:(?P<epoch>[0-9]+):)?(?P<upstream>[0-9][A-Za-z0-9.+~:-]*?)"
                     r"(?:-(?P<revision>[A-Za-z0-9.+~]+))?")
_DEBIAN_MAX_EPOCH = 2**31 - 1


class VersionError(ValueError):
    """A version the scheme does not accept, or a scheme or pattern that does not exist."""


class Key(Protocol):
    """A version's place in its scheme's order: compare keys of one scheme only."""

    def __lt__(self, other: Any, /) -> bool: ...
    def __le__(self, other: Any, /) -> bool: ...
    def __gt__(self, other: Any, /) -> bool: ...
    def __ge__(self, other: Any, /) -> bool: ...


def _semver(version: str) -> Key:
    if _SEMVER_CHARS.fullmatch(version) is None:
        raise ValueError("characters outside [0-9A-Za-z.+-]")
    return semver.Version.parse(version)


def _pep440(version: str) -> Key:
    return packaging.version.Version(version)


def _debian(version: str) -> Key:
    m = _DEBIAN.fullmatch(version)
    if m is None:
        raise ValueError("not [epoch:]upstream[-revision] with an upstream part starting "
                         "with a digit")
    if m["epoch"] is None and ":" in m["upstream"]:
        raise ValueError("a colon in the upstream part needs an epoch")
    if m["revision"] is None and "-" in m["upstream"]:
        raise ValueError("empty revision after the last hyphen")
    if m["epoch"] is not None and int(m["epoch"]) > _DEBIAN_MAX_EPOCH:
        raise ValueError("epoch too large")
    return NativeVersion(version)


_PARSERS = {SEMVER: _semver, PEP440: _pep440, DEBIAN: _debian}


def _check_scheme(scheme: str) -> None:
    if scheme not in _PARSERS:
        raise VersionError(f"unknown version scheme {scheme!r} (known: {', '.join(SCHEMES)})")


# Cached: a monitor compares each new version with the package's highest, which repeats.
@functools.lru_cache(maxsize=4096)
def sort_key(scheme: str, version: str) -> Key:
    """The version's key in the scheme's order; VersionError if the scheme refuses it."""
    _check_scheme(scheme)
    try:
        return _PARSERS[scheme](version)
    except ValueError as exc:  # packaging's InvalidVersion and semver's errors are ValueErrors
        raise VersionError(f"{version!r} is not a valid {scheme} version: {exc}") from exc


def valid(scheme: str, version: str) -> bool:
    """Whether the scheme accepts the version (VersionError for an unknown scheme)."""
    _check_scheme(scheme)
    try:
        sort_key(scheme, version)
    except VersionError:
        return False
    return True


def compare(scheme: str, a: str, b: str) -> int:
    """-1, 0 or 1 as version `a` is below, equal to or above `b` under the scheme."""
    ka, kb = sort_key(scheme, a), sort_key(scheme, b)
    return (ka > kb) - (ka < kb)


@dataclass(frozen=True)
class SchemeMap:
    """Which scheme orders the versions of which packages: (glob, scheme) rules in order.

    Globs are the monitor's --package globs (fnmatch, case-sensitive: "com.acme.*",
    "pypi/*"); the first rule whose glob matches a package names its scheme.
    """

    rules: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, specs: Iterable[str]) -> SchemeMap:
        """Rules from "PATTERN=SCHEME" texts; VersionError for a malformed one."""
        rules: list[tuple[str, str]] = []
        for spec in specs:
            pattern, sep, scheme = spec.rpartition("=")
            if not sep or not pattern:
                raise VersionError(f"{spec!r} is not PATTERN=SCHEME (SCHEME one of "
                                   f"{', '.join(SCHEMES)})")
            _check_scheme(scheme)
            if any(p == pattern for p, _ in rules):
                raise VersionError(f"pattern {pattern!r} is given a scheme twice")
            rules.append((pattern, scheme))
        return cls(tuple(rules))

    def scheme_for(self, package: str) -> str | None:
        """The scheme of the first rule matching the package, None when none does."""
        for pattern, scheme in self.rules:
            if fnmatch.fnmatchcase(package, pattern):
                return scheme
        return None
