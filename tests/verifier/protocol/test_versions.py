"""Version order per ecosystem, on the published test vectors of each scheme.

Sources of the vectors:
- SemVer 2.0.0, §11 (precedence) and §9/§10 (pre-release, build metadata):
  https://semver.org/spec/v2.0.0.html#spec-item-11
- PEP 440, "Summary of permitted suffixes and relative ordering" (the example list, verbatim):
  https://peps.python.org/pep-0440/#summary-of-permitted-suffixes-and-relative-ordering
- Debian Policy §5.6.12 (the "~~ < ~~a < ~ < (empty) < a" example):
  https://www.debian.org/doc/debian-policy/ch-controlfields.html#version
- dpkg's own test data: the comparison table at the end of scripts/t/Dpkg_Version.t and the
  invalid versions of lib/dpkg/t/t-version.c (test_version_parse) and Dpkg_Version.t:
  https://git.dpkg.org/cgit/dpkg/dpkg.git/tree/scripts/t/Dpkg_Version.t
  https://git.dpkg.org/cgit/dpkg/dpkg.git/tree/lib/dpkg/t/t-version.c
Where dpkg is installed, generated Debian versions are also compared with
`dpkg --compare-versions` itself.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.protocol import versions
from verifier.protocol.versions import (
    DEBIAN,
    PEP440,
    SCHEMES,
    SEMVER,
    SchemeMap,
    VersionError,
    compare,
    sort_key,
)

# semver.org 2.0.0 §11.4: "Example: 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-alpha.beta <
# 1.0.0-beta < 1.0.0-beta.2 < 1.0.0-beta.11 < 1.0.0-rc.1 < 1.0.0."
SEMVER_11_4 = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]
# §11.2: "Example: 1.0.0 < 2.0.0 < 2.1.0 < 2.1.1."; §11.3: "1.0.0-alpha < 1.0.0".
SEMVER_11_2 = ["1.0.0", "2.0.0", "2.1.0", "2.1.1"]

# PEP 440, "Summary of permitted suffixes and relative ordering", in the PEP's order.
PEP440_SUMMARY = ["1.dev0", "1.0.dev456", "1.0a1", "1.0a2.dev456", "1.0a12.dev456", "1.0a12",
                  "1.0b1.dev456", "1.0b2", "1.0b2.post345.dev456", "1.0b2.post345",
                  "1.0rc1.dev456", "1.0rc1", "1.0", "1.0+abc.5", "1.0+abc.7", "1.0+5",
                  "1.0.post456.dev34", "1.0.post456", "1.0.15", "1.1.dev1"]

# Debian Policy §5.6.12: "~~, ~~a, ~, the empty part, a" sort in that order (as suffixes here).
DEBIAN_POLICY = ["1.0~~", "1.0~~a", "1.0~", "1.0", "1.0a"]

# dpkg, scripts/t/Dpkg_Version.t, the table after __DATA__: "a b expected".
DPKG_TABLE = """\
1.0-1 2.0-2 -1
2.2~rc-4 2.2-1 -1
2.2-1 2.2~rc-4 1
1.0000-1 1.0-1 0
1 0:1 0
0 0:0-0 0
2:2.5 1:7.5 1
1:0foo 0foo 1
0:0foo 0foo 0
0foo 0foo 0
0foo-0 0foo 0
0foo 0foo-0 0
0foo 0fo 1
0foo-0 0foo+ -1
0foo~1 0foo -1
0foo~foo+Bar 0foo~foo+bar -1
0foo~~ 0foo~ -1
1~ 1 -1
12345+that-really-is-some-ver-0 12345+that-really-is-some-ver-10 -1
0foo-0 0foo-01 -1
0foo.bar 0foobar 1
0foo.bar 0foo1bar 1
0foo.bar 0foo0bar 1
0foo1bar-1 0foobar-1 -1
0foo2.0 0foo2 1
0foo2.0.0 0foo2.10.0 -1
0foo2.0 0foo2.0.0 -1
0foo2.0 0foo2.10 -1
0foo2.1 0foo2.10 -1
1.09 1.9 0
1.0.8+nmu1 1.0.8 1
3.11 3.10+nmu1 1
0.9j-20080306-4 0.9i-20070324-2 1
1.2.0~b7-1 1.2.0~b6-1 1
1.011-1 1.06-2 1
0.0.9+dfsg1-1 0.0.8+dfsg1-3 1
4.6.99+svn6582-1 4.6.99+svn6496-1 1
53 52 1
0.9.9~pre122-1 0.9.9~pre111-1 1
2:2.3.2-2+lenny2 2:2.3.2-2 1
1:3.8.1-1 3.8.GA-1 1
1.0.1+gpl-1 1.0.1-2 1
1a 1000a -1
"""
# Versions dpkg refuses: t-version.c test_version_parse and Dpkg_Version.t's is_valid checks
# (empty, empty upstream/epoch/revision, spaces, negative or huge or non-numeric epoch, an
# upstream not starting with a digit, characters outside the allowed ones).
DPKG_INVALID = ["", "  ", "0:", ":1.0", "1.0-", "0:0 0-1", "-1:0-1",
                "999999999999999999999999:0-1", "a:0-0", "A:0-0", "-0", "0:-0", "0:abc3-0",
                "0:0!-0", "0:0_-0", "0:0-0:0", "0:0-0_", "10a:5.2", "5.2@3-2", "foo5.2",
                "0:foo5.2"]


def ascending(scheme: str, ordered: list[str]) -> None:
    """Every pair of the list compares as its positions do, both ways."""
    for i, a in enumerate(ordered):
        for j, b in enumerate(ordered):
            assert compare(scheme, a, b) == (i > j) - (i < j), (a, b)


def test_semver_precedence_follows_the_spec_examples_of_section_11() -> None:
    ascending(SEMVER, SEMVER_11_4)
    ascending(SEMVER, SEMVER_11_2)
    assert compare(SEMVER, "1.0.0-alpha", "1.0.0") == -1
    assert compare(SEMVER, "1.9.0", "1.10.0") == -1  # numbers compare numerically (§11.2)


def test_semver_ignores_build_metadata_and_compares_identifiers_in_ascii_order() -> None:
    assert compare(SEMVER, "1.0.0+20130313144700", "1.0.0+exp.sha.5114f85") == 0  # §10
    assert compare(SEMVER, "1.0.0-beta+exp.sha.5114f85", "1.0.0-beta") == 0
    assert compare(SEMVER, "1.0.0-Beta", "1.0.0-alpha") == -1  # ASCII: upper case first
    assert compare(SEMVER, "1.0.0-1", "1.0.0-alpha") == -1  # numeric below alphanumeric
    assert compare(SEMVER, "1.0.0-2", "1.0.0-10") == -1


@pytest.mark.parametrize("bad", ["1.0", "v1.0.0", "01.0.0", "1.0.0-01", "1.0.0-", "1.0.0+",
                                 "1.0.0-a..b", "1.0.0\n", " 1.0.0", "1.0.0-rc_1"])
def test_semver_refuses_what_the_grammar_does_not_allow(bad: str) -> None:
    with pytest.raises(VersionError, match="not a valid semver version"):
        sort_key(SEMVER, bad)


def test_pep440_order_follows_the_summary_of_permitted_suffixes() -> None:
    ascending(PEP440, PEP440_SUMMARY)


def test_pep440_epochs_and_normalised_spellings() -> None:
    assert compare(PEP440, "1!0.1", "2.0") == 1
    assert compare(PEP440, "1.0", "1.0.0") == 0
    assert compare(PEP440, "1.0-1", "1.0.post1") == 0
    assert compare(PEP440, "v1.0c1", "1.0rc1") == 0
    with pytest.raises(VersionError, match="not a valid pep440 version"):
        sort_key(PEP440, "1.0.0-SNAPSHOT")


def test_debian_order_follows_policy_and_dpkg_test_data() -> None:
    ascending(DEBIAN, DEBIAN_POLICY)
    for line in DPKG_TABLE.splitlines():
        a, b, expected = line.split()
        assert compare(DEBIAN, a, b) == int(expected), line
        assert compare(DEBIAN, b, a) == -int(expected), line


def test_debian_epochs_tildes_and_revisions() -> None:
    assert compare(DEBIAN, "1.0~rc1", "1.0") == -1
    assert compare(DEBIAN, "1:0.9", "2.0") == 1
    assert compare(DEBIAN, "1.0-1", "1.0-1.1") == -1
    assert compare(DEBIAN, "2.30~", "2.30") == -1
    assert compare(DEBIAN, "1.0-0", "1.0") == 0  # an absent revision is "0"


@pytest.mark.parametrize("bad", DPKG_INVALID)
def test_debian_refuses_what_dpkg_refuses(bad: str) -> None:
    with pytest.raises(VersionError, match="not a valid debian version"):
        sort_key(DEBIAN, bad)
    assert not versions.valid(DEBIAN, bad)


def test_an_unknown_scheme_is_an_error_not_a_crash() -> None:
    with pytest.raises(VersionError, match="unknown version scheme 'rpm'"):
        compare("rpm", "1", "2")
    assert issubclass(VersionError, ValueError)


# -- properties, on generated versions ------------------------------------------------------

_num = st.integers(0, 30)
_ident = st.one_of(st.integers(0, 12).map(str),
                   st.text("abAB-", min_size=1, max_size=3).filter(lambda s: not s.isdigit()))
_semver = st.builds(
    lambda m, n, p, pre, build: f"{m}.{n}.{p}" + (f"-{'.'.join(pre)}" if pre else "")
    + (f"+{build}" if build else ""),
    _num, _num, _num, st.lists(_ident, max_size=3), st.sampled_from(["", "b1", "x.7"]))
_pep440 = st.builds(
    lambda epoch, rel, pre, post, dev, local: f"{epoch}{'.'.join(map(str, rel))}{pre}{post}"
    f"{dev}{local}",
    st.sampled_from(["", "1!"]), st.lists(st.integers(0, 3), min_size=1, max_size=3),
    st.sampled_from(["", "a1", "b2", "rc1", "c3"]), st.sampled_from(["", ".post1", "-2"]),
    st.sampled_from(["", ".dev0", ".dev5"]), st.sampled_from(["", "+abc.5", "+5", "+abc.7"]))
_debian = st.builds(
    lambda epoch, first, rest, rev: f"{epoch}{first}{rest}{rev}",
    st.sampled_from(["", "1:", "0:"]), st.sampled_from("0129"), st.text("019az.+~", max_size=5),
    st.sampled_from(["", "-1", "-0", "-1~bpo1", "-a.2"]))
GENERATED = {SEMVER: _semver, PEP440: _pep440, DEBIAN: _debian}


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_order_is_antisymmetric_and_transitive(scheme: str, data: st.DataObject) -> None:
    a, b, c = (data.draw(GENERATED[scheme]) for _ in range(3))
    assert compare(scheme, a, b) == -compare(scheme, b, a)
    assert compare(scheme, a, a) == 0
    ab, bc = compare(scheme, a, b), compare(scheme, b, c)
    if ab <= 0 and bc <= 0:
        assert compare(scheme, a, c) <= 0
        if ab < 0 or bc < 0:
            assert compare(scheme, a, c) < 0


def _dpkg_compare(a: str, b: str) -> int:
    def holds(op: str) -> bool:
        return subprocess.run(["dpkg", "--compare-versions", "--", a, op, b],
                              check=False).returncode == 0
    return -1 if holds("lt") else 1 if holds("gt") else 0


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg is not installed")
@settings(max_examples=60, deadline=None)
@given(a=_debian, b=_debian)
def test_debian_order_agrees_with_dpkg_itself(a: str, b: str) -> None:
    assert compare(DEBIAN, a, b) == _dpkg_compare(a, b)


# -- choosing the scheme per package -----------------------------------------------------------


def test_scheme_map_takes_the_first_matching_glob() -> None:
    schemes = SchemeMap.parse(["com.acme.*=semver", "pypi/*=pep440", "deb/*=debian",
                               "com.*=pep440"])
    assert schemes.scheme_for("com.acme.app") == SEMVER
    assert schemes.scheme_for("com.other") == PEP440
    assert schemes.scheme_for("pypi/requests") == PEP440
    assert schemes.scheme_for("deb/openssl") == DEBIAN
    assert schemes.scheme_for("Com.acme.app") is None  # case-sensitive, as --package is
    assert schemes.scheme_for("npm/left-pad") is None
    assert SchemeMap.parse([]).scheme_for("anything") is None


@pytest.mark.parametrize(("spec", "message"), [
    ("com.acme.*", "is not PATTERN=SCHEME"),
    ("=semver", "is not PATTERN=SCHEME"),
    ("com.*=rpm", "unknown version scheme 'rpm'"),
    ("com.*=", "unknown version scheme ''"),
])
def test_scheme_map_refuses_malformed_rules(spec: str, message: str) -> None:
    with pytest.raises(VersionError, match=message):
        SchemeMap.parse([spec])


def test_scheme_map_refuses_one_pattern_given_two_schemes() -> None:
    with pytest.raises(VersionError, match="given a scheme twice"):
        SchemeMap.parse(["com.*=semver", "com.*=pep440"])
