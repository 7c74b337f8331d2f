"""Databases of the tests' own: migrated on creation, dropped afterwards."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from migrations.__main__ import migrate

ADMIN_DATABASE_URL = os.environ.get("TEST_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def fresh_database(name: str) -> Iterator[str]:
    """A migrated database called ``name``, dropped afterwards; yields its URL."""
    url = urlunsplit(urlsplit(ADMIN_DATABASE_URL)._replace(path=f"/{name}"))
    asyncio.run(migrate(url))
    yield url

    async def drop() -> None:
        connection = await asyncpg.connect(ADMIN_DATABASE_URL)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(drop())


@pytest.fixture(scope="module", name="database_url")
def module_database(request: pytest.FixtureRequest, run_id: str) -> Iterator[str]:
    """A database of the module's own, for the conftests that import it: no job another module left behind
    (a retry coming due, or all of them re-run by an operator's RerunDeadJobs) reaches this module's queues."""
    with fresh_database(f"jobqueue_test_{run_id}_{request.module.__name__.rsplit('.', 1)[-1]}") as url:
        yield url
