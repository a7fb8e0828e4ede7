"""Look-alike publisher names (verifier/protocol/lookalike.py)."""

from __future__ import annotations

import pytest

from verifier.protocol.lookalike import confusable_with, mixes_scripts, skeleton


@pytest.mark.parametrize("fake", ["acrne-bot", "Acme-bot", "acme-b0t", "acmé-bot", "аcme-bot",
                                  "ac\u0301me-bot", "ACME-BOT", "acme-bot".replace("c", "с")])
def test_lookalike_of_a_publisher_name_has_its_skeleton(fake: str) -> None:
    assert skeleton(fake) == skeleton("acme-bot")
    assert confusable_with(fake, ["acme-bot", "other"]) == ["acme-bot"]


@pytest.mark.parametrize("name", ["acme-bots", "acne-bot", "acme-bat", "emca-bot"])
def test_different_names_are_not_confusable(name: str) -> None:
    assert confusable_with(name, ["acme-bot"]) == []


def test_a_name_is_not_confusable_with_itself() -> None:
    assert confusable_with("acme-bot", ["acme-bot"]) == []


@pytest.mark.parametrize(("name", "mixed"), [("аcme", True), ("acmε", True), ("acme-1", False),
                                             ("ацме", False), ("", False), ("a-b_c.d", False)])
def test_mixed_scripts_are_detected(name: str, mixed: bool) -> None:
    assert mixes_scripts(name) is mixed
