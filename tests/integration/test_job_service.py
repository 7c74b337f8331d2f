"""The job service as a real process (`python -m job_svc`) against the real PostgreSQL and RabbitMQ.

Tokens are minted with the dev private key, exactly as auth_svc would sign them,
so these tests exercise the job service's own verification.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import struct_pb2

from jobqueue.jobs.v1 import delivery_pb2, jobs_pb2, jobs_pb2_grpc
from jobqueue.runtime.rabbitmq import Topology, declare
from tests.integration.jobservice import (
    NOT_SERVING,
    SERVING,
    JobService,
    create_job,
    delete_queue,
    expect,
    number,
    take_messages,
    text,
)
from tests.support.clients import bearer, error_info, mint_token, worker_metadata
from tests.support.processes import health_status, start_service
from tests.support.proxy import TcpProxy
from tests.support.queues import publish_raw, queue_exists
from tests.support.tls import Certificates, production_env, tls_certificates_fixture  # noqa: F401 - the fixture
from worker_svc import builtins


def test_create_stores_a_queued_job_and_publishes_one_protobuf_message(
    jobs: JobService, secrets_dir: Path, rabbitmq_url: str
) -> None:
    owner = uuid.uuid4()
    job = create_job(jobs, mint_token(secrets_dir, owner), "reverse_string", text("hello world"))
    assert job.status == jobs_pb2.JOB_STATUS_QUEUED
    assert job.owner_id == str(owner)
    assert job.payload.string_value == "hello world"
    assert job.attempts == 0
    assert not job.HasField("result")

    [message] = asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 1))
    assert message.content_type == "application/x-protobuf"
    assert message.priority == 2  # JOB_PRIORITY_NORMAL when none is given
    assert job.priority == jobs_pb2.JOB_PRIORITY_NORMAL
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    delivery = delivery_pb2.JobDelivery.FromString(message.body)
    assert (delivery.job_id, delivery.type, delivery.payload.string_value) == (job.id, "reverse_string", "hello world")


def test_users_see_only_their_own_jobs(jobs: JobService, secrets_dir: Path) -> None:
    alice, bob = mint_token(secrets_dir), mint_token(secrets_dir)
    job = create_job(jobs, alice, "uppercase_text", text("mine"))
    assert jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job.id), metadata=bearer(alice)).job.id == job.id
    with pytest.raises(grpc.RpcError) as caught:
        jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job.id), metadata=bearer(bob))
    assert error_info(caught.value)[:2] == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    listed = jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=bearer(bob))
    assert job.id not in [j.id for j in listed.jobs]


def test_any_signed_in_user_can_list_the_job_types_and_nobody_else(jobs: JobService, secrets_dir: Path) -> None:
    listed = jobs.stub.ListJobTypes(jobs_pb2.ListJobTypesRequest(), metadata=bearer(mint_token(secrets_dir)))
    assert [(t.name, t.summary) for t in listed.job_types] == sorted(
        (t.name, t.summary) for t in builtins.worker.types.values()
    )
    assert "F(n)" in {t.name: t.summary for t in listed.job_types}["fibonacci_calc"]
    with pytest.raises(grpc.RpcError) as caught:
        jobs.stub.ListJobTypes(jobs_pb2.ListJobTypesRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_list_pages_newest_first_and_filters(jobs: JobService, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    created = [create_job(jobs, token, "fibonacci_calc", number(n)).id for n in range(7)]
    created.append(create_job(jobs, token, "reverse_string", text("x")).id)
    seen: list[str] = []
    page_token = ""
    while True:
        page = jobs.stub.ListJobs(
            jobs_pb2.ListJobsRequest(page_size=3, page_token=page_token, type="fibonacci_calc"), metadata=bearer(token)
        )
        seen.extend(j.id for j in page.jobs)
        assert len(page.jobs) <= 3
        if not page.next_page_token:
            break
        page_token = page.next_page_token
    assert seen == list(reversed(created[:7]))
    everything = jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=500), metadata=bearer(token))
    assert [j.id for j in everything.jobs] == list(reversed(created))
    queued = jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(status=jobs_pb2.JOB_STATUS_COMPLETED), metadata=bearer(token))
    assert list(queued.jobs) == []


def test_bad_input_is_invalid_argument_naming_the_field(jobs: JobService, secrets_dir: Path) -> None:
    token = bearer(mint_token(secrets_dir))
    create = jobs.stub.CreateJob
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases: list[tuple[jobs_pb2.CreateJobRequest, str]] = [
        (jobs_pb2.CreateJobRequest(type="", payload=text("x")), "type"),
        (jobs_pb2.CreateJobRequest(type="rm_rf", payload=text("x")), "type"),
        (jobs_pb2.CreateJobRequest(type="reverse_string"), "payload"),
        (jobs_pb2.CreateJobRequest(type="reverse_string", payload=number(3)), "payload"),
        (jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("x" * 65_537)), "payload"),
        (jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("a\x00b")), "payload"),
        (jobs_pb2.CreateJobRequest(type="uppercase_text", payload=struct_pb2.Value(bool_value=True)), "payload"),
        (jobs_pb2.CreateJobRequest(type="fibonacci_calc", payload=text("10")), "payload"),
        (jobs_pb2.CreateJobRequest(type="fibonacci_calc", payload=number(-1)), "payload"),
        (jobs_pb2.CreateJobRequest(type="fibonacci_calc", payload=number(2.5)), "payload"),
        (jobs_pb2.CreateJobRequest(type="fibonacci_calc", payload=number(100_001)), "payload"),
        (jobs_pb2.CreateJobRequest(type="fibonacci_calc", payload=number(float("nan"))), "payload"),
        (jobs_pb2.CreateJobRequest(type="fibonacci_calc", payload=number(float("inf"))), "payload"),
        (
            jobs_pb2.CreateJobRequest(
                type="fibonacci_calc", payload=struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
            ),
            "payload",
        ),
    ]
    for request, field in cases:
        expect(lambda r=request: create(r, metadata=token), invalid, "INVALID_ARGUMENT", [field])
    list_cases: list[tuple[jobs_pb2.ListJobsRequest, str]] = [
        (jobs_pb2.ListJobsRequest(page_size=-1), "page_size"),
        (jobs_pb2.ListJobsRequest(page_size=501), "page_size"),
        (jobs_pb2.ListJobsRequest(type="nope"), "type"),
        (jobs_pb2.ListJobsRequest(status=99), "status"),  # type: ignore[arg-type]
        (jobs_pb2.ListJobsRequest(page_token="garbage!"), "page_token"),
    ]
    for list_request, field in list_cases:
        expect(lambda r=list_request: jobs.stub.ListJobs(r, metadata=token), invalid, "INVALID_ARGUMENT", [field])
    # A page token only fits the filters it was issued for.
    create_job(jobs, token[0][1].split()[1], "reverse_string", text("a"))
    create_job(jobs, token[0][1].split()[1], "reverse_string", text("b"))
    page = jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=1), metadata=token)
    expect(
        lambda: jobs.stub.ListJobs(
            jobs_pb2.ListJobsRequest(page_size=1, page_token=page.next_page_token, type="reverse_string"),
            metadata=token,
        ),
        invalid,
        fields=["page_token"],
    )
    expect(lambda: jobs.stub.GetJob(jobs_pb2.GetJobRequest(id="not-a-uuid"), metadata=token), invalid, fields=["id"])
    expect(
        lambda: jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=str(uuid.uuid4())), metadata=token),
        grpc.StatusCode.NOT_FOUND,
        "JOB_NOT_FOUND",
    )
    assert health_status(jobs.address) == SERVING


def _foreign_token(secrets_dir: Path) -> str:
    other = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "iat": now, "exp": now + 600, "iss": "jobqueue-auth", "aud": "jobqueue"}
    return jwt.encode(claims, other, algorithm="EdDSA")


def test_bad_credentials_are_unauthenticated(jobs: JobService, secrets_dir: Path) -> None:
    request = jobs_pb2.ListJobsRequest()
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    now = int(time.time())
    cases: list[tuple[tuple[tuple[str, str], ...], str]] = [
        ((), "MISSING_CREDENTIALS"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "MISSING_CREDENTIALS"),
        ((("authorization", "Bearer "),), "MISSING_CREDENTIALS"),
        (bearer("garbage"), "INVALID_TOKEN"),
        (bearer(_foreign_token(secrets_dir)), "INVALID_TOKEN"),
        (bearer(mint_token(secrets_dir, iat=now - 7200, exp=now - 3600)), "TOKEN_EXPIRED"),
        (bearer(mint_token(secrets_dir, aud="someone-else")), "INVALID_TOKEN"),
        (bearer(mint_token(secrets_dir, iss="mallory")), "INVALID_TOKEN"),
        (bearer(mint_token(secrets_dir, sub="not-a-uuid")), "INVALID_TOKEN"),
        (bearer(jwt.encode({"sub": str(uuid.uuid4()), "exp": now + 60}, key="", algorithm="none")), "INVALID_TOKEN"),
        (bearer(jwt.encode({"sub": str(uuid.uuid4()), "exp": now + 60}, "x" * 32, algorithm="HS256")), "INVALID_TOKEN"),
    ]
    for metadata, reason in cases:
        expect(lambda m=metadata: jobs.stub.ListJobs(request, metadata=m), unauthenticated, reason)
    assert health_status(jobs.address) == SERVING


def test_update_job_is_for_workers_only(jobs: JobService, secrets_dir: Path) -> None:
    user = bearer(mint_token(secrets_dir))
    job = create_job(jobs, user[0][1].split()[1], "reverse_string", text("x"))
    report = jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_RUNNING, claim_id=str(uuid.uuid4()))
    expect(lambda: jobs.stub.UpdateJob(report, metadata=user), grpc.StatusCode.PERMISSION_DENIED, "WORKERS_ONLY")
    expect(lambda: jobs.stub.UpdateJob(report), grpc.StatusCode.UNAUTHENTICATED)
    worker = worker_metadata(secrets_dir)
    expect(
        lambda: jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=worker),
        grpc.StatusCode.PERMISSION_DENIED,
        "USERS_ONLY",
    )
    # The user's attempt changed nothing.
    assert jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job.id), metadata=user).job.status == jobs_pb2.JOB_STATUS_QUEUED


def test_reports_are_fenced_by_claim_and_attempt(jobs: JobService, secrets_dir: Path) -> None:
    worker = worker_metadata(secrets_dir)
    owner = bearer(mint_token(secrets_dir))
    job = create_job(jobs, owner[0][1].split()[1], "reverse_string", text("abc"))
    update = jobs.stub.UpdateJob
    running = jobs_pb2.JOB_STATUS_RUNNING
    completed = jobs_pb2.JOB_STATUS_COMPLETED

    def finish(attempt: int, *, result: str | None = None, error: str | None = None) -> jobs_pb2.Job:
        status = completed if result is not None else jobs_pb2.JOB_STATUS_FAILED
        request = jobs_pb2.UpdateJobRequest(id=job.id, status=status, attempt=attempt, result=result, error=error)
        return update(request, metadata=worker).job

    expect(lambda: finish(1, result="cba"), grpc.StatusCode.FAILED_PRECONDITION, "NOT_RUNNING")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    claim = jobs_pb2.UpdateJobRequest(id=job.id, status=running, claim_id=first)
    assert update(claim, metadata=worker).job.attempts == 1
    assert update(claim, metadata=worker).job.attempts == 1  # the same claim again is not a new attempt
    takeover = jobs_pb2.UpdateJobRequest(id=job.id, status=running, claim_id=second)
    assert update(takeover, metadata=worker).job.attempts == 2
    expect(lambda: finish(1, result="stale"), grpc.StatusCode.FAILED_PRECONDITION, "STALE_ATTEMPT")
    done = finish(2, result="cba")
    assert (done.status, done.result, done.attempts) == (completed, "cba", 2)
    assert done.HasField("finished_at")
    assert finish(2, result="cba").status == completed  # a repeated final report is harmless
    expect(lambda: finish(2, error="late failure"), grpc.StatusCode.FAILED_PRECONDITION, "JOB_FINISHED")
    expect(lambda: update(claim, metadata=worker), grpc.StatusCode.FAILED_PRECONDITION, "JOB_FINISHED")
    final = jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job.id), metadata=owner).job
    assert (final.status, final.result, final.attempts) == (completed, "cba", 2)


def test_malformed_reports_are_invalid_argument(jobs: JobService, secrets_dir: Path) -> None:
    worker = worker_metadata(secrets_dir)
    job_id = create_job(jobs, mint_token(secrets_dir), "reverse_string", text("abc")).id
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases: list[tuple[jobs_pb2.UpdateJobRequest, list[str]]] = [
        (jobs_pb2.UpdateJobRequest(id="nope", status=jobs_pb2.JOB_STATUS_RUNNING, claim_id=str(uuid.uuid4())), ["id"]),
        (jobs_pb2.UpdateJobRequest(id=job_id, status=jobs_pb2.JOB_STATUS_RUNNING), ["claim_id"]),
        (jobs_pb2.UpdateJobRequest(id=job_id, status=jobs_pb2.JOB_STATUS_RUNNING, claim_id="x"), ["claim_id"]),
        (jobs_pb2.UpdateJobRequest(id=job_id, status=jobs_pb2.JOB_STATUS_QUEUED), ["status"]),
        (jobs_pb2.UpdateJobRequest(id=job_id, status=jobs_pb2.JOB_STATUS_UNSPECIFIED), ["status"]),
        (jobs_pb2.UpdateJobRequest(id=job_id, status=jobs_pb2.JOB_STATUS_COMPLETED, attempt=1), ["result"]),
        (jobs_pb2.UpdateJobRequest(id=job_id, status=jobs_pb2.JOB_STATUS_COMPLETED, result="x"), ["attempt"]),
        (
            jobs_pb2.UpdateJobRequest(id=job_id, status=jobs_pb2.JOB_STATUS_FAILED, attempt=1, error="e", result="r"),
            ["result"],
        ),
        (jobs_pb2.UpdateJobRequest(id=job_id, status=jobs_pb2.JOB_STATUS_FAILED, attempt=1, error="\x00"), ["error"]),
    ]
    for request, fields in cases:
        expect(lambda r=request: jobs.stub.UpdateJob(r, metadata=worker), invalid, "INVALID_ARGUMENT", fields)
    assert health_status(jobs.address) == SERVING


def test_jobs_are_accepted_while_the_broker_is_cut_and_published_when_it_returns(
    jobs: JobService, secrets_dir: Path, rabbitmq_url: str
) -> None:
    asyncio.run(take_messages(rabbitmq_url, jobs.queue, "uppercase_text", 10_000, timeout=0.5))  # earlier tests'
    token = mint_token(secrets_dir)
    jobs.broker_proxy.cut()
    try:
        deadline = time.monotonic() + 10
        while health_status(jobs.address, "rabbitmq") != NOT_SERVING:
            assert time.monotonic() < deadline, "rabbitmq health never turned NOT_SERVING"
            time.sleep(0.1)
        created = {create_job(jobs, token, "uppercase_text", text(f"job {i}")).id for i in range(20)}
        assert health_status(jobs.address) == SERVING  # still accepting jobs
    finally:
        jobs.broker_proxy.restore()
    messages = asyncio.run(take_messages(rabbitmq_url, jobs.queue, "uppercase_text", 20, timeout=30))
    assert {delivery_pb2.JobDelivery.FromString(m.body).job_id for m in messages} == created


def test_a_message_returned_unroutable_stays_in_the_outbox_until_the_queue_is_back(
    jobs: JobService, secrets_dir: Path, rabbitmq_url: str
) -> None:
    """Someone deletes a type's queue: the broker returns the publish, and the job must not be lost."""
    queue = Topology(jobs.queue).job_queue("reverse_string")
    asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 10_000, timeout=0.5))  # earlier tests'
    asyncio.run(delete_queue(rabbitmq_url, queue))

    job = create_job(jobs, mint_token(secrets_dir), "reverse_string", text("still here"))

    deadline = time.monotonic() + 20
    while not asyncio.run(queue_exists(rabbitmq_url, queue)):
        assert time.monotonic() < deadline, "the job service never declared the queue again"
        time.sleep(0.1)
    [message] = asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 1, timeout=20))
    assert delivery_pb2.JobDelivery.FromString(message.body).job_id == job.id


async def _bodies(url: str, queue: str) -> list[bytes]:
    """The bodies of the messages waiting in ``queue`` (taken off it)."""
    connection = await aio_pika.connect(url)
    async with connection:
        declared = await (await connection.channel()).get_queue(queue)
        bodies = []
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            bodies.append(message.body)
        return bodies


async def _legacy_queue(url: str, topology: Topology) -> None:
    """The one queue every type shared before routing, as the older version declared it."""
    connection = await aio_pika.connect(url)
    async with connection:
        await declare(await connection.channel(), topology, topology.queue)


def test_at_start_the_messages_an_older_version_left_in_the_shared_queue_move_to_their_types_queues(
    jobs: JobService, secrets_dir: Path, rabbitmq_url: str, tmp_path: Path
) -> None:
    """Upgrading: each goes byte-identical (signature and priority too); one no worker could act on is dead-lettered."""
    topology = Topology(jobs.queue)
    job_types = ("reverse_string", "fibonacci_calc")
    asyncio.run(take_messages(rabbitmq_url, jobs.queue, job_types, 10_000, timeout=0.5))  # earlier tests'
    token = mint_token(secrets_dir)
    created = [
        create_job(jobs, token, "reverse_string", text("old")),
        create_job(jobs, token, "fibonacci_calc", number(8)),
    ]
    published = asyncio.run(take_messages(rabbitmq_url, jobs.queue, job_types, 2))
    asyncio.run(_legacy_queue(rabbitmq_url, topology))
    for message in published:
        body, priority, headers = message.body, message.priority, dict(message.headers)
        asyncio.run(publish_raw(rabbitmq_url, topology.queue, [body], priority=priority, headers=[headers]))
    impossible = delivery_pb2.JobDelivery(job_id=str(uuid.uuid4()), type="No Such/Type").SerializeToString()
    asyncio.run(publish_raw(rabbitmq_url, topology.queue, [b"not a job", impossible]))

    env = {
        "DATABASE_URL": jobs.process_env["DATABASE_URL"],
        "RABBITMQ_URL": rabbitmq_url,
        "RABBITMQ_QUEUE": jobs.queue,
        "DEV_SECRETS_DIR": str(secrets_dir),
    }
    upgraded = start_service("job_svc", env, tmp_path / "job_svc-2.log")
    try:
        moved = {}
        for job_type in job_types:
            [message] = asyncio.run(take_messages(rabbitmq_url, jobs.queue, job_type, 1))
            moved[delivery_pb2.JobDelivery.FromString(message.body).type] = message
    finally:
        assert upgraded.stop() == 0, upgraded.output()
    assert "moved messages from the legacy queue" in upgraded.output()
    for before in published:
        after = moved[delivery_pb2.JobDelivery.FromString(before.body).type]
        assert (after.body, after.headers, after.priority) == (before.body, before.headers, before.priority)
    assert {delivery_pb2.JobDelivery.FromString(m.body).job_id for m in moved.values()} == {j.id for j in created}
    assert not asyncio.run(queue_exists(rabbitmq_url, topology.queue)), "the emptied legacy queue is still there"
    assert {b"not a job", impossible} <= set(asyncio.run(_bodies(rabbitmq_url, topology.dead_letter_queue)))


def test_each_job_goes_to_its_types_queue_with_its_priority(
    jobs: JobService, secrets_dir: Path, rabbitmq_url: str
) -> None:
    job_types = ("reverse_string", "uppercase_text", "fibonacci_calc")
    asyncio.run(take_messages(rabbitmq_url, jobs.queue, job_types, 10_000, timeout=0.5))  # earlier tests'
    token = bearer(mint_token(secrets_dir))
    sent = {
        jobs.stub.CreateJob(
            jobs_pb2.CreateJobRequest(type=job_type, payload=payload, priority=jobs_pb2.JOB_PRIORITY_HIGH),
            metadata=token,
        ).job.id: job_type
        for job_type, payload in zip(job_types, (text("a"), text("b"), number(7)), strict=True)
    }
    for job_type in job_types:
        [message] = asyncio.run(take_messages(rabbitmq_url, jobs.queue, job_type, 1))
        assert sent[delivery_pb2.JobDelivery.FromString(message.body).job_id] == job_type
        assert message.priority == jobs_pb2.JOB_PRIORITY_HIGH


def test_a_database_outage_answers_unavailable_and_heals_by_itself(  # noqa: PLR0917 - fixtures
    database_url: str, rabbitmq_url: str, secrets_dir: Path, queue_name: str, purge_queues: None, tmp_path: Path
) -> None:
    database = urlsplit(database_url)
    proxy = TcpProxy(database.hostname or "127.0.0.1", database.port or 5432)
    proxied = database._replace(netloc=f"{database.username}@127.0.0.1:{proxy.start()}").geturl()
    env = {
        "DATABASE_URL": proxied,
        "RABBITMQ_URL": rabbitmq_url,
        "RABBITMQ_QUEUE": queue_name,
        "DEV_SECRETS_DIR": str(secrets_dir),
    }
    process = start_service("job_svc", env, tmp_path / "job_svc.log", wait=False)
    address = process.address
    token = mint_token(secrets_dir)
    request = jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("x"))
    try:
        process.wait_healthy()
        with grpc.insecure_channel(address) as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            proxy.cut()
            deadline = time.monotonic() + 15
            while health_status(address) != NOT_SERVING:
                assert time.monotonic() < deadline, "health never turned NOT_SERVING"
                time.sleep(0.1)
            assert health_status(address, "postgres") == NOT_SERVING
            with pytest.raises(grpc.RpcError) as caught:
                stub.CreateJob(request, metadata=bearer(token), timeout=20)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            proxy.restore()
            process.wait_healthy()
            assert stub.CreateJob(request, metadata=bearer(token), timeout=10).job.status == jobs_pb2.JOB_STATUS_QUEUED
    finally:
        code = process.stop()
        proxy.stop()
    assert code == 0, process.output()


def test_production_refuses_to_start_without_configured_secrets(
    database_url: str, rabbitmq_url: str, tls_certificates: Certificates, tmp_path: Path
) -> None:
    production = production_env(tls_certificates, database_url=database_url, rabbitmq_url=rabbitmq_url)
    for module in ("job_svc", "worker_svc"):
        env = {**production, "DEV_SECRETS_DIR": str(tmp_path / "none")}
        process = start_service(module, env, tmp_path / f"{module}.log", wait=False)
        assert process.exit_code() == 2, process.output()
        assert "must be set when APP_ENV=production" in process.output()
        assert not (tmp_path / "none").exists(), "production generated development secrets"


def test_a_repeated_request_id_returns_the_original_job_and_creates_nothing(
    jobs: JobService, secrets_dir: Path, rabbitmq_url: str, tmp_path: Path
) -> None:
    asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 10_000, timeout=1))  # from an empty queue
    alice, bob = mint_token(secrets_dir), mint_token(secrets_dir)
    request_id = str(uuid.uuid4())
    request = jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("once"), request_id=request_id)

    first = jobs.stub.CreateJob(request, metadata=bearer(alice)).job
    assert jobs.stub.CreateJob(request, metadata=bearer(alice)).job.id == first.id
    with ThreadPoolExecutor(16) as pool:
        concurrent = set(pool.map(lambda _: jobs.stub.CreateJob(request, metadata=bearer(alice)).job.id, range(32)))
    assert concurrent == {first.id}
    # Keys are per user: Bob's identical key is a different job.
    assert jobs.stub.CreateJob(request, metadata=bearer(bob)).job.id != first.id

    # A job service process that never saw the first call (a restart) answers the same.
    env = {
        "DATABASE_URL": jobs.process_env["DATABASE_URL"],
        "RABBITMQ_URL": rabbitmq_url,
        "RABBITMQ_QUEUE": jobs.queue,
        "DEV_SECRETS_DIR": str(secrets_dir),
    }
    second = start_service("job_svc", env, tmp_path / "job_svc-2.log")
    try:
        with grpc.insecure_channel(second.address) as channel:
            again = jobs_pb2_grpc.JobServiceStub(channel).CreateJob(request, metadata=bearer(alice)).job
        assert again.id == first.id
    finally:
        assert second.stop() == 0, second.output()

    messages = asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 10_000, timeout=3))
    published = [delivery_pb2.JobDelivery.FromString(m.body).job_id for m in messages]
    assert published.count(first.id) == 1
    assert len(published) == 2  # Alice's job and Bob's, nothing else

    expect(
        lambda: jobs.stub.CreateJob(
            jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("x"), request_id="not-a-uuid"),
            metadata=bearer(alice),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields=["request_id"],
    )


def test_priority_is_stored_and_sent_as_the_message_priority(
    jobs: JobService, secrets_dir: Path, rabbitmq_url: str
) -> None:
    asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 10_000, timeout=1))
    token = bearer(mint_token(secrets_dir))
    created = {}
    for priority in (jobs_pb2.JOB_PRIORITY_LOW, jobs_pb2.JOB_PRIORITY_NORMAL, jobs_pb2.JOB_PRIORITY_HIGH):
        request = jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("p"), priority=priority)
        job = jobs.stub.CreateJob(request, metadata=token).job
        assert job.priority == priority
        assert jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job.id), metadata=token).job.priority == priority
        created[job.id] = int(priority)
    messages = asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 3))
    assert {delivery_pb2.JobDelivery.FromString(m.body).job_id: m.priority for m in messages} == created
    expect(
        lambda: jobs.stub.CreateJob(
            jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("p"), priority=7),  # type: ignore[arg-type]
            metadata=token,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields=["priority"],
    )


async def _listen_for_cancellations(url: str, queue: str, ready: asyncio.Event, got: list[str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"{queue}.control", aio_pika.ExchangeType.FANOUT, durable=True)
        private = await channel.declare_queue(exclusive=True, auto_delete=True)
        await private.bind(exchange)
        ready.set()
        async with private.iterator(timeout=20) as messages:
            async for message in messages:
                got.append(delivery_pb2.JobCancellation.FromString(message.body).job_id)
                await message.ack()
                return


def test_cancel_a_queued_job_and_it_never_runs(jobs: JobService, secrets_dir: Path) -> None:
    owner = bearer(mint_token(secrets_dir))
    worker = worker_metadata(secrets_dir)
    job = create_job(jobs, owner[0][1].split()[1], "reverse_string", text("never"))
    cancelled = jobs.stub.CancelJob(jobs_pb2.CancelJobRequest(id=job.id), metadata=owner).job
    assert cancelled.status == jobs_pb2.JOB_STATUS_CANCELLED
    assert cancelled.HasField("finished_at")
    assert cancelled.attempts == 0
    claim = jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_RUNNING, claim_id=str(uuid.uuid4()))
    expect(lambda: jobs.stub.UpdateJob(claim, metadata=worker), grpc.StatusCode.FAILED_PRECONDITION, "JOB_FINISHED")
    again = jobs_pb2.CancelJobRequest(id=job.id)
    expect(lambda: jobs.stub.CancelJob(again, metadata=owner), grpc.StatusCode.FAILED_PRECONDITION, "JOB_FINISHED")
    stranger = bearer(mint_token(secrets_dir))
    expect(lambda: jobs.stub.CancelJob(again, metadata=stranger), grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    expect(lambda: jobs.stub.CancelJob(again, metadata=worker), grpc.StatusCode.PERMISSION_DENIED, "USERS_ONLY")
    expect(
        lambda: jobs.stub.CancelJob(jobs_pb2.CancelJobRequest(id="x"), metadata=owner),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields=["id"],
    )
    assert jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job.id), metadata=owner).job.status == (
        jobs_pb2.JOB_STATUS_CANCELLED
    )


def test_cancel_a_running_job_tells_the_workers_and_refuses_its_report(
    jobs: JobService, secrets_dir: Path, rabbitmq_url: str
) -> None:
    owner = bearer(mint_token(secrets_dir))
    worker = worker_metadata(secrets_dir)
    job = create_job(jobs, owner[0][1].split()[1], "reverse_string", text("stop me"))
    claim = jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_RUNNING, claim_id=str(uuid.uuid4()))
    attempt = jobs.stub.UpdateJob(claim, metadata=worker).job.attempts

    async def cancel_while_listening() -> list[str]:
        ready, got = asyncio.Event(), list[str]()
        listener = asyncio.create_task(_listen_for_cancellations(rabbitmq_url, jobs.queue, ready, got))
        await ready.wait()
        await asyncio.to_thread(jobs.stub.CancelJob, jobs_pb2.CancelJobRequest(id=job.id), metadata=owner)
        await listener
        return got

    assert asyncio.run(cancel_while_listening()) == [job.id]
    late = jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_COMPLETED, attempt=attempt, result="em pots")
    expect(lambda: jobs.stub.UpdateJob(late, metadata=worker), grpc.StatusCode.FAILED_PRECONDITION, "JOB_FINISHED")
    final = jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job.id), metadata=owner).job
    assert (final.status, final.HasField("result")) == (jobs_pb2.JOB_STATUS_CANCELLED, False)


def test_a_retryable_failure_is_retried_after_a_backoff_until_attempts_run_out(
    jobs: JobService, secrets_dir: Path, rabbitmq_url: str
) -> None:
    asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 10_000, timeout=1))
    owner = bearer(mint_token(secrets_dir))
    worker = worker_metadata(secrets_dir)
    request = jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("flaky"), max_attempts=2)
    job = jobs.stub.CreateJob(request, metadata=owner).job
    assert job.max_attempts == 2
    [first] = asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 1))

    def attempt_and_fail() -> jobs_pb2.Job:
        claim = jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_RUNNING, claim_id=str(uuid.uuid4()))
        attempt = jobs.stub.UpdateJob(claim, metadata=worker).job.attempts
        failed = jobs_pb2.UpdateJobRequest(
            id=job.id, status=jobs_pb2.JOB_STATUS_FAILED, attempt=attempt, error="handler crashed", retryable=True
        )
        reply = jobs.stub.UpdateJob(failed, metadata=worker).job
        assert jobs.stub.UpdateJob(failed, metadata=worker).job.status == reply.status  # a repeat is harmless
        return reply

    waiting = attempt_and_fail()
    assert (waiting.status, waiting.attempts, waiting.error) == (jobs_pb2.JOB_STATUS_QUEUED, 1, "handler crashed")
    assert waiting.HasField("next_attempt_at")
    assert not waiting.HasField("finished_at")
    # The retry is published again once its backoff has passed.
    [again] = asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 1, timeout=15))
    assert delivery_pb2.JobDelivery.FromString(again.body) == delivery_pb2.JobDelivery.FromString(first.body)
    assert not jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job.id), metadata=owner).job.HasField("next_attempt_at")

    final = attempt_and_fail()
    assert (final.status, final.attempts, final.error) == (jobs_pb2.JOB_STATUS_FAILED, 2, "handler crashed")
    assert final.HasField("finished_at")
    assert not final.HasField("next_attempt_at")
    assert asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 1, timeout=2)) == []


def test_a_permanent_failure_is_final_at_once_and_attempt_bounds_are_checked(
    jobs: JobService, secrets_dir: Path
) -> None:
    owner = bearer(mint_token(secrets_dir))
    worker = worker_metadata(secrets_dir)
    job = jobs.stub.CreateJob(jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("x")), metadata=owner).job
    assert job.max_attempts == 3
    claim = jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_RUNNING, claim_id=str(uuid.uuid4()))
    attempt = jobs.stub.UpdateJob(claim, metadata=worker).job.attempts
    failed = jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_FAILED, attempt=attempt, error="bad")
    assert jobs.stub.UpdateJob(failed, metadata=worker).job.status == jobs_pb2.JOB_STATUS_FAILED
    for bad in (-1, 11):
        expect(
            lambda n=bad: jobs.stub.CreateJob(
                jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("x"), max_attempts=n), metadata=owner
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            fields=["max_attempts"],
        )
    completed_retryable = jobs_pb2.UpdateJobRequest(
        id=job.id, status=jobs_pb2.JOB_STATUS_COMPLETED, attempt=1, result="x", retryable=True
    )
    expect(
        lambda: jobs.stub.UpdateJob(completed_retryable, metadata=worker),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields=["retryable"],
    )


def test_a_claim_without_a_report_in_time_is_taken_back(jobs: JobService, secrets_dir: Path, rabbitmq_url: str) -> None:
    asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 10_000, timeout=1))
    owner = bearer(mint_token(secrets_dir))
    worker = worker_metadata(secrets_dir)

    def claimed(max_attempts: int) -> jobs_pb2.Job:
        request = jobs_pb2.CreateJobRequest(
            type="reverse_string", payload=text("slow"), timeout_seconds=1, max_attempts=max_attempts
        )
        job = jobs.stub.CreateJob(request, metadata=owner).job
        assert job.timeout_seconds == 1
        claim = jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_RUNNING, claim_id=str(uuid.uuid4()))
        return jobs.stub.UpdateJob(claim, metadata=worker).job

    def wait_for(job_id: str, status: jobs_pb2.JobStatus.ValueType) -> jobs_pb2.Job:
        deadline = time.monotonic() + 15
        while (job := jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job_id), metadata=owner).job).status != status:
            assert time.monotonic() < deadline, f"job stayed {jobs_pb2.JobStatus.Name(job.status)}"
            time.sleep(0.1)
        return job

    retried, last_chance = claimed(max_attempts=2), claimed(max_attempts=1)
    taken_back = wait_for(retried.id, jobs_pb2.JOB_STATUS_QUEUED)
    assert taken_back.attempts == 1
    assert "timed out" in taken_back.error
    failed = wait_for(last_chance.id, jobs_pb2.JOB_STATUS_FAILED)
    assert "timed out" in failed.error
    # The retry is published again, and the silent worker's late report is refused.
    messages = asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 3, timeout=10))
    assert retried.id in [delivery_pb2.JobDelivery.FromString(m.body).job_id for m in messages]
    late = jobs_pb2.UpdateJobRequest(id=retried.id, status=jobs_pb2.JOB_STATUS_COMPLETED, attempt=1, result="wols")
    expect(lambda: jobs.stub.UpdateJob(late, metadata=worker), grpc.StatusCode.FAILED_PRECONDITION)
    for bad in (-1, 3601):
        expect(
            lambda n=bad: jobs.stub.CreateJob(
                jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("x"), timeout_seconds=n), metadata=owner
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            fields=["timeout_seconds"],
        )
