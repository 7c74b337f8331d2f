"""The whole system as local processes, the same entry points `make run` and compose start.

RabbitMQ and PostgreSQL are reached through TcpProxies the test owns, so a test
can cut either off from every service without touching the shared servers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.processes import ServiceProcess, free_port, start_service
from tests.support.proxy import TcpProxy
from tests.support.queues import wait_for_queue


class System:
    """Auth, jobs and any number of workers, each a real `python -m <svc>` process."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        #: RabbitMQ itself, for a process the broker proxy must not cut off.
        self.direct_rabbitmq_url = env["RABBITMQ_URL"]
        broker = urlsplit(env["RABBITMQ_URL"])
        self.broker_proxy = TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672)
        proxied = broker._replace(netloc=f"{broker.username}:{broker.password}@127.0.0.1:{self.broker_proxy.start()}")
        #: PostgreSQL itself, for the test's own queries while the database proxy may be cut.
        self.direct_database_url = env["DATABASE_URL"]
        database = urlsplit(env["DATABASE_URL"])
        self.database_proxy = TcpProxy(database.hostname or "127.0.0.1", database.port or 5432)
        proxied_database = database._replace(netloc=f"{database.username}@127.0.0.1:{self.database_proxy.start()}")
        self.auth_port = free_port()
        self.job_port = free_port()
        self.env = {
            **env,
            "RABBITMQ_URL": proxied.geturl(),
            "DATABASE_URL": proxied_database.geturl(),
            "AUTH_PORT": str(self.auth_port),
            "JOB_PORT": str(self.job_port),
            "JOB_SERVICE_ADDR": f"127.0.0.1:{self.job_port}",
            "OUTBOX_POLL_SECONDS": "0.2",
            # Short timers, so retries and taken-back claims happen within a test's patience.
            "RETRY_BASE_SECONDS": "0.2",
            "LEASE_GRACE_SECONDS": "1",
        }
        self.logs = logs
        self.auth: ServiceProcess | None = None
        self.jobs: ServiceProcess | None = None
        self.workers: list[ServiceProcess] = []
        self.more_jobs: list[ServiceProcess] = []

    @property
    def auth_address(self) -> str:
        return f"127.0.0.1:{self.auth_port}"

    @property
    def job_address(self) -> str:
        return f"127.0.0.1:{self.job_port}"

    def start_auth(self, **env: str) -> ServiceProcess:
        self.auth = start_service("auth_svc", {**self.env, **env}, self.logs / "auth_svc.log")
        return self.auth

    def start_jobs(self, **env: str) -> ServiceProcess:
        self.jobs = start_service("job_svc", {**self.env, **env}, self.logs / "job_svc.log")
        if not self.broker_proxy.is_cut():
            wait_for_queue(self.direct_rabbitmq_url, f"{self.env['RABBITMQ_QUEUE']}.dead")
        return self.jobs

    def start_another_job_service(self, **env: str) -> str:
        """One more job service on the same database and queue (and a port of its own); returns its address."""
        env = {**{name: value for name, value in self.env.items() if name != "JOB_PORT"}, **env}
        process = start_service("job_svc", env, self.logs / f"job_svc-{len(self.more_jobs) + 2}.log")
        self.more_jobs.append(process)
        return process.address

    def start_worker(self, *, wait: bool = True, **env: str) -> ServiceProcess:
        """A worker: ``python -m worker_svc``, or the Worker WORKER_APP names (as scripts/run_system.py does)."""
        index = len(self.workers) + 1
        full = {**self.env, **env}
        log_path = self.logs / f"worker-{index}.log"
        app = full.get("WORKER_APP")
        argv = [sys.executable, "-m", "jobqueue.worker", app] if app else None
        worker = start_service("worker_svc", full, log_path, wait=wait, argv=argv)
        self.workers.append(worker)
        return worker

    def stop(self) -> dict[str, int]:
        """SIGTERM everything, workers first (as `make run` does); returns the exit codes of all not killed."""
        codes: dict[str, int] = {}
        for i, worker in enumerate(self.workers, 1):
            code = worker.stop()
            if not worker.killed:
                codes[f"worker-{i}"] = code
        for i, extra in enumerate(self.more_jobs, 2):
            codes[f"job_svc-{i}"] = extra.stop()
        for name, process in (("job_svc", self.jobs), ("auth_svc", self.auth)):
            if process is not None:
                code = process.stop()
                if not process.killed:
                    codes[name] = code
        self.broker_proxy.stop()
        self.database_proxy.stop()
        return codes
