"""Fixtures for whole-system tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.system import System


@pytest.fixture
def system(service_env: dict[str, str], tmp_path: Path, purge_queues: None) -> Iterator[System]:
    """Auth and jobs running; each test starts the workers it needs."""
    running = System(service_env, tmp_path)
    running.start_auth()
    running.start_jobs()
    yield running
    codes = running.stop()
    assert all(code == 0 for code in codes.values()), f"not every service stopped cleanly: {codes}"
