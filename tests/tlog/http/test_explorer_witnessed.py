"""The explorer of a log run with a witness policy (real witnesses on real ports, as in
tests/tlog/log/test_witness.py): the home page shows the cosigned checkpoint's cosigners,
and the entry page gives the browser's check the policy the log runs under."""

from __future__ import annotations

import html
import re

from tests.tlog.http.test_explorer import html as page_text
from tests.tlog.log.test_witness import Client, Setup, append, log, setup, wait_published
from verifier.protocol.note import Signer
from verifier.protocol.policy import parse_policy

__all__ = ["log", "setup"]  # the fixtures, used by name


async def test_home_shows_the_cosigners_of_the_published_checkpoint(
        log: Client, setup: Setup, publisher: Signer) -> None:
    size = await append(log, publisher, "1.0")
    await wait_published(log, size)
    text = await page_text(log, "/")
    assert f'<dd id="tree-size">{size}</dd>' in text
    cosigners = re.findall(r'<li class="cosigner"><span class="witness-name">([^<]+)</span>',
                           text)
    assert cosigners == ["w1 (witness1.example)", "w2 (witness2.example)"]
    assert "cosigned 0 s ago" in text or "cosigned 1 s ago" in text
    assert "2 of 2 in group g (witness w1, witness w2)" in text


async def test_the_entry_page_carries_the_policy_the_log_runs_under(
        log: Client, setup: Setup, publisher: Signer) -> None:
    size = await append(log, publisher, "1.0")
    await wait_published(log, size)
    text = await page_text(log, "/entry/0")
    found = re.search(r'data-policy="([^"]*)"', text)
    assert found
    policy = parse_policy(html.unescape(found.group(1)))
    assert policy.quorum == setup.policy.quorum
    assert policy.groups == setup.policy.groups
    assert {n: w.key for n, w in policy.witnesses.items()} == {
        n: w.key for n, w in setup.policy.witnesses.items()}
    assert [log.key for log in policy.logs] == [setup.log_signer.verifier()]
    assert text.count('<li class="witness-key">') == 2
