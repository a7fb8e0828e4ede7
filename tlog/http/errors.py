"""Every error answer of the HTTP API: one exception type, one table of statuses.

An error answer is {"error": {"code": CODE, "message": TEXT, ...}} with the HTTP status
STATUS[CODE]; schema/openapi.yaml documents every code under that status
(tests/tlog/http/test_openapi.py reads this table to check it). Raise ApiError (or
AccessError, TokenError: the same with a name saying what refused) with a code from the
table; the app's middleware answers it.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from verifier.protocol.entries.errors import EntryError

STATUS: dict[str, int] = {
    # The request is malformed.
    "bad_request": 400,
    "missing_parameter": 400,
    "unknown_parameter": 400,
    "repeated_parameter": 400,
    "bad_number": 400,
    "bad_hash": 400,
    "bad_package": 400,
    "bad_version": 400,
    "bad_range": 400,
    "beyond_tree": 400,
    "bad_token_id": 400,
    "invalid_batch": 400,  # POST /v1/entries/batch: not {"entries": [1..1000 entries]}
    # What was asked for is not there.
    "not_found": 404,
    "not_in_tree": 404,
    "no_checkpoint": 404,
    "no_witness_policy": 404,
    "no_package_state": 404,
    # HTTP itself (aiohttp raises these too: HTTP_EXCEPTION_CODES).
    "method_not_allowed": 405,
    "body_timeout": 408,
    "body_too_large": 413,
    "too_many_entries": 413,  # POST /v1/entries/batch: more than 1000
    "unsupported_media_type": 415,
    # Entries: the codes of verifier's EntryError (an entry code not listed here: 422).
    "invalid_json": 400,
    "entry_too_large": 413,
    "invalid_entry": 422,
    "bad_key": 422,
    "bad_signature": 422,
    # The admin API's requests.
    "not_registry_entry": 422,
    "invalid_request": 422,
    # The log: another entry holds this (package, version).
    "conflict": 409,
    # Who is calling (tlog.http.access).
    "client_certificate_required": 401,
    "admin_auth_required": 401,
    "admin_forbidden": 403,
    "admin_only": 403,
    # Submission tokens (tlog.http.tokens; token_unknown and token_revoked: the sequencer).
    "token_missing": 401,
    "token_malformed": 401,
    "token_expired": 401,
    "token_not_yet_valid": 401,
    "token_bad_signature": 401,
    "token_unknown": 401,
    "token_revoked": 401,
    "token_mismatch": 401,
    "token_wrong_publisher": 403,
    "token_out_of_scope": 403,
    # Pushback and trouble.
    "rate_limited": 429,
    "overloaded": 503,
    "unavailable": 503,
    "not_ready": 503,
    "database_unavailable": 503,
    "internal": 500,
    # The registry replay's refusals (verifier.protocol.registry.Refusal.code): 403 for who
    # may sign what, 409 for a conflict with the log's state, 422 for what the entry lacks.
    # (Its unknown_kind has none: every entry is checked into a kind of the KINDS table before
    # the replay sees it, and the replay has a step for each, so it would be a bug: a 500.)
    "publisher_not_registered": 403,
    "publisher_revoked": 403,
    "package_not_owned": 403,
    "key_not_valid": 403,
    "not_authorized": 403,
    "key_revoked": 409,
    "unknown_key": 409,
    "counter_not_increasing": 409,
    "counter_required": 422,
    # Lifecycle statements (rollout/v1, halt/v1, yank/v1, resume/v1) about a release.
    "wrong_publisher": 403,
    "halt_key_only": 403,
    "release_not_logged": 409,
    "version_yanked": 409,
    "rollback_not_logged": 409,
    "rollback_yanked": 409,
    "key_role_conflict": 409,
}

# aiohttp's own HTTP errors (no such route, wrong method, body too large...) by status. Any
# other status aiohttp raises is answered as HTTP_ERROR, with aiohttp's status.
HTTP_EXCEPTION_CODES: dict[int, str] = {STATUS[code]: code for code in (
    "bad_request", "not_found", "method_not_allowed", "body_too_large", "unsupported_media_type")}
HTTP_ERROR = "http_error"
ENTRY_ERROR_STATUS = 422  # an entry error whose code the table does not know

ERROR_CODE: web.ResponseKey[str] = web.ResponseKey("error_code", str)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


class ApiError(Exception):
    """A refusal with a stable error code, its HTTP status, and a message for people.

    The status is STATUS[code]. `status` is only for what the table cannot fix: HTTP_ERROR
    (aiohttp's status) and an entry error of a code the table does not know.
    `retry_after` seconds become a Retry-After header (a 503 always has one, at least 1 s);
    `close` says the connection cannot be reused after this answer; `extra` members join
    the error object (e.g. the index of a conflicting entry).
    """

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None, close: bool = False, **extra: Any) -> None:
        super().__init__(message)
        self.status = STATUS[code] if status is None else status
        self.code, self.message, self.extra = code, message, extra
        self.retry_after, self.close = retry_after, close

    def response(self) -> web.Response:
        """The JSON answer, tagged with its code for the refusal metric."""
        resp = web.json_response(error_body(self.code, self.message, **self.extra),
                                 status=self.status)
        resp[ERROR_CODE] = self.code  # for the refusal metric, without parsing the body back
        if self.retry_after is not None or self.status == 503:
            resp.headers["Retry-After"] = str(max(1, math.ceil(self.retry_after or 1)))
        if self.close:
            resp.force_close()
        return resp


def entry_error(exc: EntryError) -> ApiError:
    """The answer to an entry that does not parse or validate (verifier's EntryError)."""
    return ApiError(exc.code, str(exc), status=STATUS.get(exc.code, ENTRY_ERROR_STATUS))
