"""Several job-service replicas: a worker given them all shares its reports between them, round robin.

This is how replicas are run beyond one machine or under compose's --scale:
JOB_SERVICE_ADDR names every replica (a DNS name with one address per replica,
or a list), and any replica may take any report, because the database fences
reports, not the replica that took the claim.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.clients import mint_token
from tests.support.load import check_outcomes, mixed, submit, wait_all_final
from tests.support.metrics import scrape
from tests.support.processes import free_port
from tests.support.system import System

JOBS = 300


def update_calls(metrics_port: int) -> float:
    """How many UpdateJobs calls the job service behind ``metrics_port`` answered OK."""
    samples = scrape({"METRICS_PORT": str(metrics_port)})
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "grpc_server_handled_total"
        and ("grpc_method", "UpdateJobs") in labels
        and ("grpc_code", "OK") in labels
    )


def test_a_worker_shares_its_reports_between_every_job_service_replica(system: System, secrets_dir: Path) -> None:
    ports = [free_port(), free_port()]
    replicas = [system.start_another_job_service(METRICS_PORT=str(port)) for port in ports]
    system.start_worker(JOB_SERVICE_ADDR=f"ipv4:{','.join(replicas)}")
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, mixed(JOBS)))
    check_outcomes(asyncio.run(wait_all_final(system.job_address, token, set(specs), timeout=120)), specs)
    calls = [update_calls(port) for port in ports]
    # Every claim and outcome went to one of the two replicas, and each took a share.
    assert all(count > 0 for count in calls), calls
