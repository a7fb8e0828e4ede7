"""deploy/compose.yaml, checked without a Docker engine: Compose itself validates it
(`docker-compose config`), every file it mounts is in the repository or made by
deploy/compose-secrets.sh, every option and TLOG_* variable it gives tlog is one tlog has,
and every long-running service has a health check."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import DEPLOY, REPO, command_options, options_of, tool

COMPOSE = DEPLOY / "compose.yaml"
SERVICES = {"postgres", "migrate", "tlog-a", "tlog-b", "witness", "monitor", "prometheus",
            "grafana"}
ONE_SHOT_OR_UNPROBED = {"migrate", "monitor"}  # a job; a process without a port of its own


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def test_compose_itself_accepts_the_file() -> None:
    """`config` parses, merges the anchors and validates against the Compose schema; it
    needs no engine (nor the secret files)."""
    found = shutil.which("docker-compose")
    if found is not None:
        argv = [found, "-f", str(COMPOSE), "config", "--quiet"]
    elif shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        argv = ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"]
    else:
        tool("docker-compose", "ensure-compose.sh")  # skips, saying how to get it
        return
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr


def test_the_services_and_their_health_checks() -> None:
    found = services()
    assert set(found) == SERVICES
    for name, service in found.items():
        check = service.get("healthcheck", {})
        if name in ONE_SHOT_OR_UNPROBED:
            assert check.get("disable") is True, name  # not the image's probe of :8080
        else:
            assert check["test"][0] == "CMD" and not check.get("disable"), name


def test_both_logs_share_one_database_and_keep_their_own_state() -> None:
    a, b = services()["tlog-a"], services()["tlog-b"]
    assert a["environment"]["TLOG_DATABASE_URL"] == b["environment"]["TLOG_DATABASE_URL"]
    assert a["volumes"] != b["volumes"]
    for service in (a, b):
        assert "migrate" in service["depends_on"] and "witness" in service["depends_on"]


def test_every_mounted_file_is_in_the_repository() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}"


def run_secrets_script(out: Path) -> subprocess.CompletedProcess[str]:
    python = f"{sys.executable} -m"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TLOG": f"{python} tlog.cli",
           "TLOG_VERIFY": f"{python} verifier.cli"}
    return subprocess.run(["sh", str(DEPLOY / "compose-secrets.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_secrets_script_makes_every_secret_and_keeps_keys_private(
        tmp_path: Path) -> None:
    made = run_secrets_script(tmp_path / "secrets")
    assert made.returncode == 0, made.stderr
    for name, secret in compose()["secrets"].items():
        path = tmp_path / "secrets" / Path(secret["file"]).name
        assert path.is_file(), name
        mode = stat.S_IMODE(path.stat().st_mode)
        if name.endswith(("key", "password", "pgpass")) and not name.endswith("vkey"):
            assert mode & 0o077 == 0, f"{name} is readable by others: {oct(mode)}"
    policy = (tmp_path / "secrets" / "witness.policy").read_text()
    assert "http://witness:7380" in policy  # the witness service's address
    assert "secrets/" in (DEPLOY / ".gitignore").read_text()
    again = run_secrets_script(tmp_path / "secrets")  # idempotent: the keys stay
    assert again.returncode == 0 and again.stdout == made.stdout


def tlog_argv(service: dict[str, Any]) -> tuple[str, list[str]]:
    entry = service.get("entrypoint", ["tlog"])
    return entry[0], [*entry[1:], *service.get("command", ["serve"])]


@pytest.mark.parametrize("name", ["migrate", "tlog-a", "tlog-b", "witness", "monitor"])
def test_every_option_given_to_tlog_exists(name: str) -> None:
    program, argv = tlog_argv(services()[name])
    words, given = command_options(argv)
    assert given <= options_of(program, *words), f"{name}: {program} {' '.join(argv)}"


def test_every_tlog_variable_given_is_one_tlog_reads() -> None:
    read = set(re.findall(r'environ\.get\("(TLOG_[A-Z_]+)"',
                          "".join(p.read_text() for p in (REPO / "tlog").rglob("*.py"))))
    read |= {"TLOG_HEALTH_URL"}  # deploy/healthcheck.py
    for name, service in services().items():
        env = service.get("environment", {})
        assert {k for k in env if k.startswith("TLOG_")} <= read, name
