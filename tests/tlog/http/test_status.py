"""GET /v1/status (tlog.http.status): the log's report of itself, true to schema/openapi.yaml,
and the recent refusals it counts in bounded memory whatever the traffic."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support import make_release
from tests.tlog.http.test_openapi import Spec, load_spec
from tests.tlog.sizes import leaves
from tlog.config import Config, Quotas
from tlog.http.app import create_app
from tlog.http.handlers import SEQUENCER
from tlog.http.status import MAX_CODES, OTHER, PROBE, REFUSALS, RecentRefusals
from verifier.protocol.note import Signer

Client = TestClient[web.Request, web.Application]


async def status_of(client: Client) -> dict[str, Any]:
    resp = await client.get("/v1/status")
    await Spec(load_spec()).check(resp, "/v1/status")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-cache"
    body: dict[str, Any] = await resp.json()
    return body


async def test_status_reports_size_time_health_and_refusals_as_documented(
        client: Client, publisher: Signer, log_signer: Signer) -> None:
    empty = await status_of(client)
    client.app[PROBE].shared_for = 0  # type: ignore[index]  # no second-old answer here
    assert empty["tree_size"] == 0 and empty["refusals"]["by_code"] == {}
    assert empty["origin"] == log_signer.name
    resp = await client.post("/v1/entries", json=make_release(publisher, "com.acme.app", "1.0"))
    assert resp.status == 201
    for _ in range(3):  # a few refusals of two kinds
        assert (await client.get("/v1/entries?package=%20")).status == 400
    assert (await client.get("/v1/entries/99")).status == 404
    client.app[SEQUENCER].failed = "test: a self-check failed"  # type: ignore[index]
    try:
        status = await status_of(client)
    finally:
        client.app[SEQUENCER].failed = None  # type: ignore[index]
    assert status["tree_size"] == leaves(1)
    assert 0 <= status["time"] - status["checkpoint_time"] < 60
    assert status["submissions_waiting"] == 0
    assert status["appends"] == "stopped"
    assert status["appends_stopped"] == "test: a self-check failed"
    assert status["database"] == {"reachable": True, "read_only": False, "in_recovery": False}
    assert status["database_error"] is None and status["witnesses"] is None
    assert status["refusals"] == {"window_seconds": 300,
                                  "by_code": {"bad_package": 3, "not_found": 1}}


async def test_status_takes_no_parameters_and_its_refusal_is_counted(client: Client) -> None:
    resp = await client.get("/v1/status?verbose=1")
    await Spec(load_spec()).check(resp, "/v1/status")
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "unknown_parameter"
    resp = await client.post("/v1/status")
    await Spec(load_spec()).check(resp, "/v1/status")  # its 405 is under get
    assert resp.status == 405
    # the probe is shared for a second; the refusal counts are read live
    assert (await status_of(client))["refusals"]["by_code"] == {
        "method_not_allowed": 1, "unknown_parameter": 1}


async def test_status_spends_the_read_quota_and_reports_its_own_refusal(
        aiohttp_client: Any, database_url: str, log_signer: Signer) -> None:
    """A client polling /v1/status in a loop is held to its read quota like any reader."""
    app = create_app(Config(database_url=database_url, signer=log_signer, policy="open",
                            host="127.0.0.1", port=0,
                            quotas=Quotas(read_rate=0.001, read_burst=3)))
    client: Client = await aiohttp_client(app)
    for _ in range(3):
        assert (await client.get("/v1/status")).status == 200
    resp = await client.get("/v1/status")
    await Spec(load_spec()).check(resp, "/v1/status")
    assert resp.status == 429 and (await resp.json())["error"]["code"] == "rate_limited"
    assert app[REFUSALS].totals() == {"rate_limited": 1}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusals_leave_the_window_after_five_minutes() -> None:
    clock = Clock()
    recent = RecentRefusals(clock=clock)
    recent.count("rate_limited")
    clock.now += 150
    recent.count("rate_limited")
    recent.count("not_found")
    assert recent.totals() == {"not_found": 1, "rate_limited": 2}
    clock.now += 160  # the first one is 310 s old
    assert recent.totals() == {"not_found": 1, "rate_limited": 1}
    clock.now += 300
    assert recent.totals() == {}


def test_a_flood_of_refusals_with_made_up_codes_stays_in_bounded_memory() -> None:
    """Memory is buckets x MAX_CODES however many refusals, and whatever their codes."""
    clock = Clock()
    recent = RecentRefusals(clock=clock)
    for i in range(100_000):
        clock.now += 0.01  # 1000 s of refusals, 100 a second
        recent.count(f"code{i % 1000}")
    assert len(recent._buckets) <= 300 // 10
    assert all(len(counts) <= MAX_CODES + 1 for _, counts in recent._buckets)
    totals = recent.totals()
    assert sum(totals.values()) in range(29_000, 30_001)  # the last 290-300 s
    assert totals[OTHER] > 0 and len(totals) <= 1000 + 1
