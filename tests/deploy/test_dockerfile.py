"""deploy/Dockerfile, checked without a Docker engine: hadolint finds nothing, every file
it copies exists (and what the copied symbolic links point to is copied too), and the
runtime stage runs tlog as a non-root user with a health check."""

from __future__ import annotations

import re
import subprocess

from tests.deploy.support import DEPLOY, REPO, tool

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_finds_nothing() -> None:
    run = subprocess.run([tool("hadolint", "ensure-hadolint.sh"), str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0 and run.stdout == "", run.stdout + run.stderr


def test_every_copied_file_exists_and_so_do_the_targets_of_its_links() -> None:
    copied = []
    for word, rest in instructions():
        if word == "COPY" and "--from=" not in rest:
            *sources, _dest = rest.split()
            for source in sources:
                assert (REPO / source).exists(), source
                copied.append((REPO / source).resolve())
    for source in list(copied):
        for link in (p for p in source.rglob("*") if p.is_symlink()) if source.is_dir() else ():
            target = link.resolve()
            assert any(target.is_relative_to(c) for c in copied), \
                f"{link.relative_to(REPO)} points outside what is copied"


def test_the_runtime_stage_is_non_root_with_a_health_check() -> None:
    steps = instructions()
    last_stage = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    runtime = dict(steps[last_stage:])
    assert runtime["USER"].split(":")[0] not in {"0", "root"}
    assert "/healthz" in (DEPLOY / "healthcheck.py").read_text()
    assert "healthcheck.py" in runtime["HEALTHCHECK"]
    assert runtime["ENTRYPOINT"] == '["tlog"]' and runtime["CMD"] == '["serve"]'
    assert runtime["EXPOSE"] == "8080"
    assert len([w for w, _ in steps if w == "FROM"]) == 2  # builder, runtime
