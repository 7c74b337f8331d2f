"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.job_types import JOB_TYPES
from worker_svc.handlers import HANDLERS


@pytest.fixture
def global_tables() -> Iterator[None]:
    """Let a test install into the process-wide JOB_TYPES and HANDLERS, and put them back afterwards."""
    types, handlers = dict(JOB_TYPES), dict(HANDLERS)
    yield
    JOB_TYPES.clear()
    JOB_TYPES.update(types)
    HANDLERS.clear()
    HANDLERS.update(handlers)
