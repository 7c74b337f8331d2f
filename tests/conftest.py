"""Session-wide fixtures: a fresh database and queue name per test session, dev secrets, env for services.

Tests talk to the real PostgreSQL and RabbitMQ on this machine (started by
`make services`). If one cannot be reached the tests fail: they never skip.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest

from jobqueue.runtime.secrets import ensure_dev_secrets
from tests.support.databases import fresh_database
from tests.support.queues import delete_queues
from tests.support.system import System

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
def run_id() -> str:
    """A short id that keeps this session's database and queues apart from any other's."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def database_url(run_id: str) -> Iterator[str]:
    """A migrated database of this session's own, dropped at the end."""
    with fresh_database(f"jobqueue_test_{run_id}") as url:
        yield url


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The shared broker; fails (never skips) if it cannot be reached."""

    async def probe() -> None:
        connection = await aio_pika.connect(RABBITMQ_URL, timeout=5)
        await connection.close()

    asyncio.run(probe())
    return RABBITMQ_URL


@pytest.fixture(scope="session")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Development secrets (JWT key pair, worker token) for this session's services."""
    return ensure_dev_secrets(tmp_path_factory.mktemp("secrets"))


@pytest.fixture
def queue_name(run_id: str) -> str:
    """A queue of this test's own, so backlogs never leak between tests."""
    return f"jobs_test_{run_id}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def purge_queues(rabbitmq_url: str, queue_name: str, database_url: str) -> AsyncIterator[None]:
    """Delete this test's queues afterwards."""
    yield
    await delete_queues(rabbitmq_url, queue_name, database_url)


#: The auth service's rate and queue limits, lifted for the tests that are not about them.
UNLIMITED_ATTEMPTS = (
    "REGISTERS_PER_MINUTE_PER_ADDRESS",
    "LOGINS_PER_MINUTE_PER_ADDRESS",
    "LOGINS_PER_MINUTE_PER_EMAIL",
    "BCRYPT_WAITING",
)


#: The job service's per-user limits, lifted (the checks still run) for the tests that are not about them.
UNLIMITED_JOBS = (
    "JOBS_PER_SECOND_PER_USER",
    "JOB_BURST_PER_USER",
    "HIGH_PRIORITY_JOBS_PER_SECOND_PER_USER",
    "HIGH_PRIORITY_BURST_PER_USER",
    "MAX_UNFINISHED_JOBS_PER_USER",
)


@pytest.fixture
def service_env(database_url: str, rabbitmq_url: str, secrets_dir: Path, queue_name: str) -> dict[str, str]:
    """Environment for the services under test (ports are added by each test)."""
    return {
        "APP_ENV": "development",
        "DATABASE_URL": database_url,
        "RABBITMQ_URL": rabbitmq_url,
        "RABBITMQ_QUEUE": queue_name,
        "DEV_SECRETS_DIR": str(secrets_dir),
        "LOG_LEVEL": "INFO",
        # Cheap hashing keeps tests fast; production uses the default cost.
        "BCRYPT_ROUNDS": "4",
        # Tests register and log in hundreds of accounts from 127.0.0.1 within seconds; the limits
        # themselves are tested with their defaults (tests/e2e/test_auth_flood.py).
        **dict.fromkeys(UNLIMITED_ATTEMPTS, "1000000"),
        # One user submits backlogs of 20,000 jobs as fast as it can; the job limits are tested with their
        # defaults, or values of their own (tests/e2e/test_job_flood.py).
        **dict.fromkeys(UNLIMITED_JOBS, "1000000"),
    }


@pytest.fixture
def system(service_env: dict[str, str], tmp_path: Path, purge_queues: None) -> Iterator[System]:
    """Auth and jobs running behind proxies to PostgreSQL and RabbitMQ; each test starts the workers it needs."""
    running = System(service_env, tmp_path)
    running.start_auth()
    running.start_jobs()
    yield running
    codes = running.stop()
    assert all(code == 0 for code in codes.values()), f"not every service stopped cleanly: {codes}"
