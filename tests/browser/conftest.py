"""One headless Chromium and one witnessed, filled log (with its misbehaving proxies) per
module: starting them is most of the browser tests' time."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.chromium import chromium, console_problems, missing
from tests.browser.demolog import DemoLog, running_demo_log
from tests.browser.proxy import MODES, MisbehavingLog
from tests.conftest import _create_database
from tlog.cli.pgcluster import Cluster

WHY_NOT = missing()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if WHY_NOT is not None:
        pytest.skip(WHY_NOT)
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def demo(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[DemoLog]:
    if WHY_NOT is not None:
        pytest.skip(WHY_NOT)
    name = f"browser{os.getpid()}_{request.module.__name__.rsplit('.', 1)[-1]}"
    url = asyncio.run(_create_database(pg_cluster, name))
    with running_demo_log(url, tmp_path_factory.mktemp("explorer")) as log:
        yield log


@pytest.fixture(scope="module")
def misbehaving(demo: DemoLog) -> Iterator[MisbehavingLog]:
    """One proxy per mode, plus "pinning" (honest at first), whose mode the pinning test
    changes."""
    proxies = MisbehavingLog(demo.url, demo.signer, (*MODES, "pinning")).start()
    try:
        yield proxies
    finally:
        proxies.stop()


@pytest.fixture(autouse=True)
def no_console_problems(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every page a test loads obeys the explorer's Content-Security-Policy (Chromium logs
    each script, style, image or connection it refused) and its script throws no error."""
    if "browser" not in request.fixturenames:
        yield
        return
    driver = request.getfixturevalue("browser")
    console_problems(driver)  # drop what an earlier test left
    yield
    assert console_problems(driver) == []
