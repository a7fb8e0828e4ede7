"""`tlog-verify monitor --version-scheme`: a rollback is caught under the ecosystem's order.

Where no counter orders a package's releases, its versions do. The default rule knows only
numbers and dev/a/b/rc labels: it cannot place "1.0.post1", "1:1.0-1" or "1.0~rc1", so a
rollback among such versions went unseen; under the package's own scheme it is alerted.
The order vectors themselves are tested in tests/verifier/protocol/test_versions.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import make_release
from tests.verifier.client.test_monitor import (  # noqa: F401 (fixtures)
    NOW,
    StaticLog,
    leaf,
    run,
    static_log,
    vkey,
)
from verifier.cli import main as cli
from verifier.client.monitor.summary import Seen, summarize
from verifier.client.monitor.watch import PackageState, Watcher
from verifier.protocol.leaves import Checked
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import Signer
from verifier.protocol.versions import SchemeMap

SCHEMES = SchemeMap.parse(["com.acme.*=semver", "pypi/*=pep440", "deb/*=debian"])


def _seen(index: int, package: str, version: str, counter: int | None = None) -> Seen:
    """The Seen of an (unsigned) release entry: the Watcher trusts what the workers checked."""
    entry: dict[str, Any] = {"kind": "release/v1", "package": package, "version": version,
                             "key": "acme+1+k1", "artifacts": [{"name": "a.tgz",
                                                                "sha256": "a" * 64, "size": 7}]}
    if counter is not None:
        entry["counter"] = counter
    return summarize(Checked(index, leaf_hash(json.dumps(entry).encode()), entry, None))


def _growth_alerts(package: str, *versions: str | tuple[str, int],
                   schemes: SchemeMap = SCHEMES) -> list[dict[str, Any]]:
    """Feed the versions (or (version, counter)) in order; the version_not_growing alerts."""
    w = Watcher(schemes=schemes)
    found = []
    for i, v in enumerate(versions):
        version, counter = v if isinstance(v, tuple) else (v, None)
        found += [e for e in w.feed(_seen(i, package, version, counter), NOW)
                  if e.get("alert") == "version_not_growing"]
    return found


@pytest.mark.parametrize(("package", "earlier", "later", "alerted"), [
    ("com.acme.app", "1.9.0", "1.10.0", False),
    ("com.acme.app", "1.0.0-rc.1", "1.0.0", False),
    ("com.acme.app", "1.0.0", "1.0.0-rc.1", True),        # a pre-release replayed after its release
    ("com.acme.app", "1.0.0-beta.11", "1.0.0-beta.2", True),
    ("com.acme.app", "1.0.0+build.1", "1.0.0+build.2", True),  # build metadata: not above
    ("deb/openssl", "2.0", "1:1.0", False),               # a new epoch restarts the numbering
    ("deb/openssl", "1:1.0", "2.0", True),                # an epoch dropped: a rollback
    ("deb/openssl", "1.0", "1.0~rc1", True),
    ("deb/openssl", "1.0-1", "1.0-1.1", False),
    ("pypi/requests", "1.0.post1", "1.0", True),          # the default rule cannot compare these
    ("pypi/requests", "1.0", "1.0.post1", False),
    ("pypi/requests", "1.0rc1", "1.0", False),
    ("pypi/requests", "1!0.1", "2.0", True),
    ("pypi/requests", "1.0", "1.0.0", True),              # equal under PEP 440: not above
])
def test_a_version_not_above_the_highest_under_the_scheme_is_alerted(
        package: str, earlier: str, later: str, alerted: bool) -> None:
    found = _growth_alerts(package, earlier, later)
    assert bool(found) is alerted
    if alerted:
        (alert,) = found
        assert (alert["index"], alert["previous_version"], alert["previous_index"],
                alert["scheme"]) == (1, earlier, 0, SCHEMES.scheme_for(package))


def test_the_highest_version_is_the_bar_not_the_previous_one() -> None:
    found = _growth_alerts("com.acme.app", "2.0.0", "1.0.0", "1.5.0", "2.0.1")
    assert [(a["index"], a["previous_version"]) for a in found] == [(1, "2.0.0"), (2, "2.0.0")]


def test_a_version_invalid_under_its_scheme_is_alerted_rather_than_let_through() -> None:
    """An attacker cannot dodge the order by logging a version the scheme cannot place."""
    (alert,) = _growth_alerts("com.acme.app", "2.0.0", "1.0")
    assert "cannot be shown to grow past version 2.0.0" in alert["message"]
    assert "not a valid semver version" in alert["message"]
    assert _growth_alerts("deb/x", "0:foo") != []  # even as the first release


def test_releases_with_a_counter_are_ordered_by_the_counter() -> None:
    """A backport with a higher counter is not a rollback; a repeat still is."""
    assert _growth_alerts("com.acme.app", ("2.0.0", 1), ("1.9.1", 2)) == []
    assert _growth_alerts("com.acme.app", ("2.0.0", 1), ("not-semver", 2)) == []
    # the counterless release that follows is held to the highest version of all
    found = _growth_alerts("com.acme.app", ("2.0.0", 1), ("1.9.1", 2), "1.9.2")
    assert [(a["index"], a["previous_version"]) for a in found] == [(2, "2.0.0")]
    (repeat,) = _growth_alerts("com.acme.app", ("2.0.0", 1), ("2.0.0", 2))
    assert "repeats the version of entry 0" in repeat["message"]


def test_packages_no_pattern_matches_keep_the_default_rule() -> None:
    # Default rule: "1.0.post1" is not comparable (no alert), "1.0-rc.2" after "1.0" is.
    assert _growth_alerts("org.other", "1.0.post1", "1.0") == []
    assert len(_growth_alerts("org.other", "1.0", "1.0-rc.2")) == 1
    assert "scheme" not in _growth_alerts("org.other", "2.0", "1.0")[0]
    assert _growth_alerts("com.acme.app", "1.0.post1", "1.0", schemes=SchemeMap()) == []


def test_the_scheme_knowledge_survives_a_restart_and_a_scheme_change_starts_afresh() -> None:
    w = Watcher(schemes=SCHEMES)
    w.feed(_seen(0, "com.acme.app", "1.0.0"), NOW)
    stored = {n: PackageState.from_json(json.loads(json.dumps(p.to_json())))
              for n, p in w.packages.items()}
    assert (stored["com.acme.app"].scheme, stored["com.acme.app"].scheme_version) == (
        "semver", "1.0.0")
    again = Watcher(next_index=1, packages=stored, schemes=SCHEMES)
    assert [e["alert"] for e in again.feed(_seen(1, "com.acme.app", "1.0.0-rc.1"), NOW)
            if e["type"] == "alert"] == ["version_not_growing"]
    # Under another scheme the stored semver highest means nothing: no alert, a new bar.
    other = Watcher(next_index=2, packages=stored, schemes=SchemeMap.parse(["com.*=debian"]))
    assert [e for e in other.feed(_seen(2, "com.acme.app", "0.9"), NOW)
            if e["type"] == "alert"] == []
    assert stored["com.acme.app"].scheme_version == "0.9"
    # A state saved before --version-scheme existed loads without one.
    old = {k: v for k, v in PackageState().to_json().items() if k != "scheme"}
    assert PackageState.from_json(old).scheme is None


def test_monitor_command_alerts_a_replayed_prerelease_across_runs(
        static_log: StaticLog, vkey: Path, tmp_path: Path, publisher: Signer,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    entries = [make_release(publisher, "com.acme.app", "1.9.0"),
               make_release(publisher, "com.acme.app", "1.10.0"),
               make_release(publisher, "deb/tool", "2.0-1"),
               make_release(publisher, "deb/tool", "1:1.0-1"),     # a new epoch: grows
               make_release(publisher, "pypi/lib", "1.0.post1"),
               make_release(publisher, "pypi/lib", "1.0")]         # [5] back before the post
    static_log.publish([leaf(e) for e in entries])
    state = tmp_path / "state"
    opts = ("--version-scheme", "com.acme.*=semver", "--version-scheme", "deb/*=debian",
            "--version-scheme", "pypi/*=pep440")
    code, events = run(capsys, static_log.url, vkey, state, *opts)
    assert code == 0
    assert [(e["index"], e["alert"]) for e in events if e["type"] == "alert"] == [
        (5, "version_not_growing")]
    # The default rule cannot compare "1.0.post1" and lets the rollback through.
    _, plain = run(capsys, static_log.url, vkey, tmp_path / "plain")
    assert [e for e in plain if e["type"] == "alert"] == []

    entries.append(make_release(publisher, "com.acme.app", "1.10.0-rc.1"))
    static_log.publish([leaf(e) for e in entries])
    code, events = run(capsys, static_log.url, vkey, state, *opts)
    (alert,) = [e for e in events if e["type"] == "alert"]
    assert (alert["alert"], alert["index"], alert["previous_version"], alert["scheme"]) == (
        "version_not_growing", 7, "1.10.0", "semver")  # after the first batch's map root


@pytest.mark.parametrize("bad", ["com.acme.*", "com.*=rpm", "=semver"])
def test_a_malformed_version_scheme_is_a_usage_error(
        bad: str, vkey: Path, tmp_path: Path,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["monitor", "--log", "http://127.0.0.1:9", "--key", str(vkey), "--state",
                     str(tmp_path / "s"), "--version-scheme", bad])
    assert code == 2
    assert "--version-scheme: " in capsys.readouterr().err
