"""Declared job types on the real job service: DeclareJobTypes, its version policy, and CreateJob's schema checks.

One job service per module (tests/integration/conftest.py), a second one on the
same database for the replica test, and a whole system (a worker that comes and
goes) for the test of a type whose workers are gone.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from tests.integration.jobservice import JobService, expect
from tests.support import declared_jobs
from tests.support.clients import bearer, error_info, mint_token, worker_metadata
from tests.support.processes import start_service
from tests.support.system import System

Code = grpc.StatusCode


def job_type(name: str, schema: Any = None, **fields: Any) -> jobs_pb2.JobType:
    fields = {"summary": f"{name}, for a test", "version": 1, **fields}
    message = jobs_pb2.JobType(name=name, **fields)
    message.payload_schema.SetInParent()  # present even when empty: {} is the schema that accepts anything
    message.payload_schema.update(declared_jobs.SCHEMA if schema is None else schema)
    return message


def declare(jobs: JobService, secrets_dir: Path, *types: jobs_pb2.JobType) -> list[jobs_pb2.JobType]:
    request = jobs_pb2.DeclareJobTypesRequest(job_types=types)
    return list(jobs.stub.DeclareJobTypes(request, metadata=worker_metadata(secrets_dir), timeout=10).job_types)


def value(payload: Any) -> struct_pb2.Value:
    return json_format.ParseDict(payload, struct_pb2.Value())


def create(stub: jobs_pb2_grpc.JobServiceStub, token: str, name: str, payload: Any, **fields: Any) -> jobs_pb2.Job:
    request = jobs_pb2.CreateJobRequest(type=name, payload=value(payload), **fields)
    return stub.CreateJob(request, metadata=bearer(token), timeout=10).job


@pytest.fixture(scope="module")
def user(secrets_dir: Path) -> str:
    return mint_token(secrets_dir)


def test_only_workers_may_declare_job_types(jobs: JobService, secrets_dir: Path, user: str) -> None:
    request = jobs_pb2.DeclareJobTypesRequest(job_types=[job_type("only_workers")])
    expect(lambda: jobs.stub.DeclareJobTypes(request, metadata=bearer(user)), Code.PERMISSION_DENIED, "WORKERS_ONLY")
    operator = mint_token(secrets_dir, roles=["operator"])
    expect(lambda: jobs.stub.DeclareJobTypes(request, metadata=bearer(operator)), Code.PERMISSION_DENIED)
    expect(lambda: jobs.stub.DeclareJobTypes(request), Code.UNAUTHENTICATED)
    [stored] = declare(jobs, secrets_dir, *request.job_types)
    assert stored.HasField("declared_at")
    assert (stored.name, stored.version) == ("only_workers", 1)


@pytest.mark.parametrize(
    ("types", "fields"),
    [
        ([job_type("bad_schema", {"type": "strin"})], ["job_types[0].payload_schema"]),
        ([job_type("ok_one"), job_type("Bad-Name")], ["job_types[1].name"]),
        ([job_type(f"many_{i}") for i in range(101)], ["job_types"]),
        ([job_type("twice"), job_type("twice")], ["job_types[1].name"]),
        ([job_type("no_schema", {}), jobs_pb2.JobType(name="no_schema_2", version=1)], ["job_types[1].payload_schema"]),
        ([job_type("zero_version", version=0)], ["job_types[0].version"]),
        ([job_type("bad_defaults", default_max_attempts=11, default_timeout_seconds=-1)], None),
    ],
    ids=["schema", "name", "too-many", "duplicate", "missing-schema", "version", "defaults"],
)
def test_a_bad_declaration_is_refused_naming_its_fields(
    jobs: JobService, secrets_dir: Path, types: list[jobs_pb2.JobType], fields: list[str] | None
) -> None:
    request = jobs_pb2.DeclareJobTypesRequest(job_types=types)

    def call() -> object:
        return jobs.stub.DeclareJobTypes(request, metadata=worker_metadata(secrets_dir))

    expect(call, Code.INVALID_ARGUMENT, fields=fields)
    if fields is None:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert error_info(refused.value)[2] == [
            "job_types[0].default_max_attempts",
            "job_types[0].default_timeout_seconds",
        ]
    listed = jobs.stub.ListJobTypes(jobs_pb2.ListJobTypesRequest(), metadata=bearer(mint_token(secrets_dir)))
    assert not {t.name for t in listed.job_types} & {t.name for t in types}, "nothing of a refused call is stored"


def test_the_version_policy(jobs: JobService, secrets_dir: Path, user: str) -> None:
    first = job_type("versioned", {"type": "string"})
    [v1] = declare(jobs, secrets_dir, first)
    time.sleep(0.01)
    # The same declaration again: only declared_at moves.
    [again] = declare(jobs, secrets_dir, first)
    assert again.version == 1
    assert again.declared_at.ToDatetime() > v1.declared_at.ToDatetime()
    # The same version, declared differently: refused, whatever else the call holds, and nothing changes.
    different = job_type("versioned", {"type": "integer"})

    def call() -> object:
        return declare(jobs, secrets_dir, job_type("innocent_bystander"), different)

    expect(call, Code.FAILED_PRECONDITION, "JOB_TYPE_CONFLICT")
    with pytest.raises(grpc.RpcError) as refused:
        call()
    assert "'versioned' version 1" in (refused.value.details() or "")
    assert create(jobs.stub, user, "versioned", "text").type == "versioned"
    expect(lambda: create(jobs.stub, user, "innocent_bystander", {"items": []}), Code.INVALID_ARGUMENT, fields=["type"])
    # A higher version replaces it.
    [v2] = declare(jobs, secrets_dir, job_type("versioned", {"type": "integer"}, version=2, summary="now a number"))
    assert (v2.version, v2.summary) == (2, "now a number")
    expect(lambda: create(jobs.stub, user, "versioned", "text"), Code.INVALID_ARGUMENT, fields=["payload"])
    assert create(jobs.stub, user, "versioned", 7).payload.number_value == 7
    # A lower version changes nothing and is answered with the stored type.
    [stored] = declare(jobs, secrets_dir, first)
    assert (stored.version, stored.summary, stored.payload_schema["type"]) == (2, "now a number", "integer")
    # Whole numbers in a schema compare equal whatever their form on the wire (a Struct has only doubles).
    [same] = declare(jobs, secrets_dir, job_type("versioned", {"type": "integer"}, version=2, summary="now a number"))
    assert same.version == 2


def test_concurrent_declarations_of_a_new_type_all_succeed_alike(jobs: JobService, secrets_dir: Path) -> None:
    declaration = jobs_pb2.DeclareJobTypesRequest(job_types=[job_type("raced"), job_type("raced_too")])
    answers: list[list[jobs_pb2.JobType] | grpc.RpcError] = []
    start = threading.Barrier(8)

    def declarer() -> None:
        with grpc.insecure_channel(jobs.address) as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            start.wait()
            try:
                reply = stub.DeclareJobTypes(declaration, metadata=worker_metadata(secrets_dir), timeout=10)
                answers.append(list(reply.job_types))
            except grpc.RpcError as error:
                answers.append(error)

    threads = [threading.Thread(target=declarer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = [answer for answer in answers if isinstance(answer, list)]
    assert len(stored) == len(threads), answers
    # Whoever inserted each type, every declarer was answered with the same stored types, in its order.
    assert {tuple((t.name, t.version, t.payload_schema == declaration.job_types[0].payload_schema) for t in a)
            for a in stored} == {(("raced", 1, True), ("raced_too", 1, True))}  # fmt: skip


def test_payloads_are_checked_against_the_schema_with_paths(jobs: JobService, secrets_dir: Path, user: str) -> None:
    declare(jobs, secrets_dir, job_type("nested"))
    good = {"items": [{"name": "a", "count": 1}, {"name": "b", "count": 2}]}
    assert create(jobs.stub, user, "nested", good).status == jobs_pb2.JOB_STATUS_QUEUED
    bad = {"items": [{"name": "a", "count": 1}, {"name": "b" * 21, "count": -1}, {"count": 2}]}
    with pytest.raises(grpc.RpcError) as refused:
        create(jobs.stub, user, "nested", bad)
    code, _, fields = error_info(refused.value)
    assert code == Code.INVALID_ARGUMENT
    assert sorted(fields) == ["payload.items[1].count", "payload.items[1].name", "payload.items[2]"]
    details = refused.value.details() or ""
    assert "-1 is less than the minimum of 0" in details
    assert "'name' is a required property" in details
    batch = jobs_pb2.BatchCreateJobsRequest(
        requests=[
            jobs_pb2.CreateJobRequest(type="nested", payload=value(good)),
            jobs_pb2.CreateJobRequest(type="nested", payload=value({"items": [{"name": "c", "count": "3"}]})),
        ]
    )
    expect(
        lambda: jobs.stub.BatchCreateJobs(batch, metadata=bearer(user)),
        Code.INVALID_ARGUMENT,
        fields=["requests[1].payload.items[0].count"],
    )
    # A long value is cut in the message: errors travel in trailers.
    with pytest.raises(grpc.RpcError) as long:
        create(jobs.stub, user, "nested", {"items": "x" * 100_000})
    assert len(long.value.details() or "") < 500
    # The generic rules hold for every type: NUL anywhere, 1 MiB.
    expect(
        lambda: create(jobs.stub, user, "nested", {"items": [{"name": "a\x00", "count": 1}]}),
        Code.INVALID_ARGUMENT,
        fields=["payload.items[0].name"],
    )


def test_a_types_defaults_apply_when_a_job_asks_for_none(jobs: JobService, secrets_dir: Path, user: str) -> None:
    declare(jobs, secrets_dir, job_type("defaulted", default_max_attempts=5, default_timeout_seconds=120))
    payload: dict[str, Any] = {"items": []}
    job = create(jobs.stub, user, "defaulted", payload)
    assert (job.max_attempts, job.timeout_seconds) == (5, 120)
    job = create(jobs.stub, user, "defaulted", payload, max_attempts=2, timeout_seconds=30)
    assert (job.max_attempts, job.timeout_seconds) == (2, 30)
    builtin = create(jobs.stub, user, "reverse_string", "abc")
    assert (builtin.max_attempts, builtin.timeout_seconds) == (3, 60)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port that records whether anything connected to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    yield server
    server.close()


def test_a_reference_to_another_document_is_refused_and_never_fetched(
    jobs: JobService, secrets_dir: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    remote = job_type("remote_ref", {"$ref": f"http://127.0.0.1:{port}/schema.json"})
    expect(lambda: declare(jobs, secrets_dir, remote), Code.INVALID_ARGUMENT, fields=["job_types[0].payload_schema"])
    nested = job_type("remote_nested", {"properties": {"a": {"$ref": f"http://127.0.0.1:{port}/a.json#/x"}}})
    expect(lambda: declare(jobs, secrets_dir, nested), Code.INVALID_ARGUMENT, fields=["job_types[0].payload_schema"])
    with pytest.raises(TimeoutError):
        listener.accept()
    # A reference inside the schema is fine.
    local = {"$defs": {"count": {"type": "integer", "minimum": 0}}, "$ref": "#/$defs/count"}
    declare(jobs, secrets_dir, job_type("local_ref", local))


def test_list_job_types_returns_every_field_ordered_by_name(jobs: JobService, secrets_dir: Path, user: str) -> None:
    declare(jobs, secrets_dir, job_type("listed", default_max_attempts=4, default_timeout_seconds=90))
    listed = jobs.stub.ListJobTypes(jobs_pb2.ListJobTypesRequest(), metadata=bearer(user)).job_types
    names = [t.name for t in listed]
    assert names == sorted(names)
    by_name = {t.name: t for t in listed}
    mine = by_name["listed"]
    assert (mine.version, mine.default_max_attempts, mine.default_timeout_seconds) == (1, 4, 90)
    assert mine.HasField("declared_at")
    assert json_format.MessageToDict(mine.payload_schema)["required"] == ["items"]
    builtin = by_name["reverse_string"]
    assert not builtin.HasField("declared_at"), "no worker declared the built-in types here"
    assert json_format.MessageToDict(builtin.payload_schema) == {"type": "string", "maxLength": 65536.0}


def test_a_declaration_through_one_replica_is_accepted_by_another(
    jobs: JobService, secrets_dir: Path, user: str, tmp_path: Path
) -> None:
    env = {name: setting for name, setting in jobs.process_env.items() if name != "JOB_PORT"}
    other = start_service("job_svc", env, tmp_path / "job_svc-2.log")
    try:
        with grpc.insecure_channel(other.address) as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            # The other replica read its types at start: this one is new to it.
            expect(lambda: create(stub, user, "replicated", {"items": []}), Code.INVALID_ARGUMENT, fields=["type"])
            time.sleep(1.1)  # an unknown name reads the table again at most once a second
            declare(jobs, secrets_dir, job_type("replicated"))
            assert create(stub, user, "replicated", {"items": []}).type == "replicated"
            expect(
                lambda: create(stub, user, "replicated", {"items": [{"name": "a", "count": 1.5}]}),
                Code.INVALID_ARGUMENT,
                fields=["payload.items[0].count"],
            )
    finally:
        assert other.stop() == 0, other.output()


def test_jobs_of_a_type_whose_workers_are_gone_wait_queued_until_one_comes_back(
    system: System, secrets_dir: Path
) -> None:
    worker = system.start_worker(WORKER_APP="tests.support.declared_jobs:worker")
    assert worker.stop() == 0
    token = mint_token(secrets_dir)
    with grpc.insecure_channel(system.job_address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        listed = {
            t.name: t for t in stub.ListJobTypes(jobs_pb2.ListJobTypesRequest(), metadata=bearer(token)).job_types
        }
        assert listed["tally"].HasField("declared_at"), "the type stays declared after its worker left"
        assert listed["reverse_string"].HasField("declared_at"), "every worker declares the built-in types too"
        job = create(stub, token, "tally", {"items": [{"name": "a", "count": 2}, {"name": "b", "count": 3}]})
        assert (job.max_attempts, job.timeout_seconds) == (
            declared_jobs.DEFAULT_MAX_ATTEMPTS,
            declared_jobs.DEFAULT_TIMEOUT_SECONDS,
        )
        time.sleep(2)
        get = jobs_pb2.GetJobRequest(id=job.id)
        assert stub.GetJob(get, metadata=bearer(token)).job.status == jobs_pb2.JOB_STATUS_QUEUED
        system.start_worker(WORKER_APP="tests.support.declared_jobs:worker")
        deadline = time.monotonic() + 30
        while (done := stub.GetJob(get, metadata=bearer(token)).job).status != jobs_pb2.JOB_STATUS_COMPLETED:
            assert time.monotonic() < deadline, done
            time.sleep(0.1)
        assert done.result == "5"
