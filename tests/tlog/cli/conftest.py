"""Fixtures of the tlog command tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def searchable_dir() -> Iterator[Path]:
    """A directory the postgres user can reach when the suite runs as root."""
    d = Path(tempfile.mkdtemp(prefix="tlog-dev-test-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
