"""The job service that the integration tests of each module share: a real `python -m job_svc` process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.jobservice import JobService
from tests.support.databases import module_database  # noqa: F401 - the fixture `database_url`
from tests.support.processes import start_service
from tests.support.proxy import TcpProxy
from tests.support.queues import delete_queues, wait_for_queue


@pytest.fixture(scope="module")
def jobs(  # noqa: PLR0917 - fixtures
    request: pytest.FixtureRequest,
    database_url: str,
    rabbitmq_url: str,
    secrets_dir: Path,
    run_id: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[JobService]:
    broker = urlsplit(rabbitmq_url)
    proxy = TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672)
    proxy_port = proxy.start()
    queue = f"jobs_it_{run_id}_{request.module.__name__.rsplit('.', 1)[-1]}"
    env = {
        "APP_ENV": "development",
        "DATABASE_URL": database_url,
        "RABBITMQ_URL": broker._replace(netloc=f"guest:guest@127.0.0.1:{proxy_port}").geturl(),
        "RABBITMQ_QUEUE": queue,
        "DEV_SECRETS_DIR": str(secrets_dir),
        "OUTBOX_POLL_SECONDS": "0.2",
        "RETRY_BASE_SECONDS": "0.2",
        "LEASE_GRACE_SECONDS": "0.5",
    }
    process = start_service("job_svc", env, tmp_path_factory.mktemp("logs") / "job_svc.log")
    wait_for_queue(rabbitmq_url, f"{queue}.dead")
    service = JobService(process, process.address, proxy, queue, process.env)
    yield service
    service.channel.close()
    code = process.stop()
    proxy.stop()
    asyncio.run(delete_queues(rabbitmq_url, queue, database_url))
    assert code == 0, process.output()
