"""deploy/prometheus: the alert rules load (`promtool check rules`), each alert fires when
it should and not otherwise (`promtool test rules alerts_test.yml`), the compose config
loads (`promtool check config`), and every alert tells the operator what it means and where
the runbook is."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.deploy.support import DEPLOY, tool

PROMETHEUS = DEPLOY / "prometheus"
# The sections of docs/RUNBOOK.md the alerts point to ("alerts": the list of alerts and
# first steps for those that are no incident of their own).
RUNBOOK_ANCHORS = {"log-key-compromise", "publisher-key-compromise",
                   "fork-alarm-from-a-witness-or-monitor", "bad-release-in-rollout",
                   "database-restore", "alerts"}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def promtool(*args: str) -> str:
    run = subprocess.run([tool("promtool", "ensure-prometheus.sh"), *args], cwd=PROMETHEUS,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr


def test_the_rules_load() -> None:
    out = promtool("check", "rules", "alerts.yml")
    assert f"SUCCESS: {len(rules())} rules found" in out


def test_every_alert_fires_when_it_should_and_not_otherwise() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_the_compose_prometheus_config_loads() -> None:
    assert "is valid prometheus config file syntax" in promtool("check", "config",
                                                                "prometheus.yml")


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired, quiet = set(), set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - fired == set()
    assert names - quiet == set()


def test_every_alert_says_what_it_means_and_links_a_runbook_section() -> None:
    for rule in rules():
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/RUNBOOK.md" and anchor in RUNBOOK_ANCHORS, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
