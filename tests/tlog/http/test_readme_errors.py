"""The README's "Operating securely" table names error codes with their HTTP status; each
pair must be the one the log answers (tlog.http.errors.STATUS), or operators read the wrong
status for a refusal (the table once gave 409 `key_revoked` for a release by a revoked key,
which the log answers with 403 `key_not_valid`)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.verifier.protocol.test_registry import (
    ACME,
    ACME2,
    ADMIN,
    registration,
    release,
    revocation,
    rotation,
)
from tlog.http.errors import STATUS
from verifier.protocol.registry import Refusal, Registry

README = Path(__file__).resolve().parents[3] / "README.md"
# "403 `key_not_valid`, `not_authorized`": a status, then the codes it covers.
STATUS_AND_CODES = re.compile(r"\b([45]\d\d) ((?:`[a-z_]+`(?:[^,`)]*)(?:, )?)+)")


def security_table() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Operating securely", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def documented_statuses(table: str) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for status, codes in STATUS_AND_CODES.findall(table):
        for code in re.findall(r"`([a-z_]+)`", codes):
            found.setdefault(code, set()).add(int(status))
    return found


def test_readme_table_gives_each_error_code_the_status_the_log_answers() -> None:
    documented = documented_statuses(security_table())
    assert {"key_not_valid", "key_revoked", "not_authorized", "token_revoked",
            "client_certificate_required", "rate_limited"} <= set(documented)
    wrong = {code: statuses for code, statuses in documented.items()
             if statuses != {STATUS.get(code)}}
    assert wrong == {}


def test_the_table_parser_catches_a_wrong_status() -> None:
    assert documented_statuses("| x | y | stolen key (409 `key_not_valid`: text, `a_b`) |") == {
        "key_not_valid": {409}, "a_b": {409}}


def test_the_readme_quotes_the_message_a_release_by_a_revoked_key_gets() -> None:
    """The table quotes the refusal's words; they must be the replay's own."""
    registry = Registry([ADMIN.verifier()])
    registry.apply(0, registration(ACME, ["com.acme.*"], [ACME]))
    registry.apply(1, rotation("acme", [ACME2], [], ACME))
    registry.apply(2, revocation("acme", [ACME], ACME2))
    try:
        registry.apply(3, release(ACME, "com.acme.app", "1.0"))
    except Refusal as exc:
        assert (exc.code, str(exc)) == ("key_not_valid",
                                        "the signing key of publisher 'acme' was revoked")
        assert f'"{exc}"' in security_table()
    else:
        raise AssertionError("a release signed by a revoked key was accepted")
