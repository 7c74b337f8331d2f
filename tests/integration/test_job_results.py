"""Results of any JSON type, and progress, through the real job service (`python -m job_svc`) and PostgreSQL.

A worker (the worker token) claims and reports; the job's owner reads the job
back with GetJob and ListJobs, as a client would.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from jobqueue.jobs.v1 import jobs_pb2
from tests.integration.jobservice import JobService, create_job, expect, text
from tests.support.clients import bearer, mint_token, worker_metadata

RUNNING = jobs_pb2.JOB_STATUS_RUNNING
COMPLETED = jobs_pb2.JOB_STATUS_COMPLETED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
STALE = grpc.StatusCode.FAILED_PRECONDITION


class Worker:
    """Reports on one user's jobs as the worker does; reads them back as their owner."""

    def __init__(self, jobs: JobService, secrets_dir: Path) -> None:
        self.jobs = jobs
        self.token = mint_token(secrets_dir)
        self.owner = bearer(self.token)
        self.worker = worker_metadata(secrets_dir)

    def new_job(self) -> jobs_pb2.Job:
        return create_job(self.jobs, self.token, "reverse_string", text("abc"))

    def update(self, **fields: Any) -> jobs_pb2.Job:
        return self.jobs.stub.UpdateJob(jobs_pb2.UpdateJobRequest(**fields), metadata=self.worker).job

    def claim(self, job_id: str, claim_id: str | None = None) -> str:
        claim_id = claim_id or str(uuid.uuid4())
        self.update(id=job_id, status=RUNNING, claim_id=claim_id)
        return claim_id

    def note(self, job_id: str, claim_id: str, fraction: float, message: str = "") -> jobs_pb2.Job:
        progress = jobs_pb2.JobProgress(fraction=fraction, message=message)
        return self.update(id=job_id, status=RUNNING, claim_id=claim_id, progress=progress)

    def get(self, job_id: str) -> jobs_pb2.Job:
        return self.jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job_id), metadata=self.owner).job

    def listed(self) -> dict[str, jobs_pb2.Job]:
        page = self.jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=500), metadata=self.owner)
        return {job.id: job for job in page.jobs}


def value(python: Any) -> struct_pb2.Value:
    return json_format.ParseDict(python, struct_pb2.Value())


def as_python(message: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(message)


def test_results_of_every_json_type_come_back_as_value_and_as_text(jobs: JobService, secrets_dir: Path) -> None:
    worker = Worker(jobs, secrets_dir)
    digits = "".join(str(i % 10) for i in range(1, 20_900))  # as long as F(100000), far past any JSON number
    an_object = {"words": 2, "top": ["a", "b"], "ratio": 0.5, "ok": True, "none": None}
    answers: list[tuple[dict[str, Any], Any, str | None]] = [
        # (the report's result field, the value GetJob shows, its exact text where the order of keys is known)
        ({"result_value": value(an_object)}, an_object, None),
        ({"result_value": value(42)}, 42, "42"),
        ({"result_value": value([1, "two", 3.5, [False]])}, [1, "two", 3.5, [False]], '[1,"two",3.5,[false]]'),
        ({"result_value": value("olleh")}, "olleh", "olleh"),
        ({"result_value": value(1e300)}, 1e300, "1e+300"),
        ({"result_value": struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)}, None, "null"),
        ({"result": digits}, digits, digits),
        ({"result_value": value(digits)}, digits, digits),
    ]
    finished = {}
    for fields, _, _ in answers:
        job = worker.new_job()
        worker.claim(job.id)
        finished[job.id] = worker.update(id=job.id, status=COMPLETED, attempt=1, **fields)
    listed = worker.listed()
    for (_, expected, expected_text), (job_id, reply) in zip(answers, finished.items(), strict=True):
        for job in (reply, worker.get(job_id), listed[job_id]):
            assert job.status == COMPLETED
            assert job.HasField("result_value")
            assert as_python(job.result_value) == expected
            if isinstance(expected, str):
                assert job.result_value.WhichOneof("kind") == "string_value"
                assert job.result == expected  # a string result is its own text
            else:
                assert json.loads(job.result) == expected  # any other, its compact JSON
                assert " " not in job.result
            if expected_text is not None:
                assert job.result == expected_text


def test_bad_results_are_invalid_argument_on_result_value(jobs: JobService, secrets_dir: Path) -> None:
    worker = Worker(jobs, secrets_dir)
    job = worker.new_job()
    worker.claim(job.id)
    nan_in_a_list = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[struct_pb2.Value(number_value=math.nan)]))
    # Far below the 1 MiB request limit as protobuf (11 bytes a number), past 1 MiB as JSON (20 characters).
    too_long = struct_pb2.Value(
        list_value=struct_pb2.ListValue(values=[struct_pb2.Value(number_value=0.12345678901234568)] * 60_000)
    )
    bad: list[dict[str, Any]] = [
        {"result": "cba", "result_value": value("cba")},
        {"result_value": struct_pb2.Value(number_value=math.inf)},
        {"result_value": nan_in_a_list},
        {"result_value": too_long},
        {"result_value": value({"key\x00": 1})},
        {"result_value": value(["a\x00b"])},
        {"result_value": value("a\x00b")},
    ]
    for fields in bad:
        request = jobs_pb2.UpdateJobRequest(id=job.id, status=COMPLETED, attempt=1, **fields)
        expect(
            lambda r=request: jobs.stub.UpdateJob(r, metadata=worker.worker),
            INVALID,
            "INVALID_ARGUMENT",
            ["result_value"],
        )
    assert worker.get(job.id).status == RUNNING  # nothing was stored
    # In a batch, each bad report is answered alone and the good one applies.
    good = jobs_pb2.UpdateJobRequest(id=job.id, status=COMPLETED, attempt=1, result_value=value({"n": 1}))
    batch = [jobs_pb2.UpdateJobRequest(id=job.id, status=COMPLETED, attempt=1, **fields) for fields in bad[:2]]
    answer = jobs.stub.UpdateJobs(jobs_pb2.UpdateJobsRequest(requests=[*batch, good]), metadata=worker.worker)
    assert [r.code for r in answer.results] == [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 2 + [0]
    assert all(len(r.message) < 300 for r in answer.results)
    assert (worker.get(job.id).status, worker.get(job.id).result) == (COMPLETED, '{"n":1}')


def test_progress_is_visible_while_running_and_fenced_by_the_claim(jobs: JobService, secrets_dir: Path) -> None:
    worker = Worker(jobs, secrets_dir)
    job = worker.new_job()
    first = worker.claim(job.id)
    assert not worker.get(job.id).HasField("progress")  # never reported
    noted = worker.note(job.id, first, 0.25, "page 3 of 12")
    assert noted.attempts == 1
    seen = worker.get(job.id)
    assert (seen.status, seen.attempts) == (RUNNING, 1)
    assert (seen.progress.fraction, seen.progress.message) == (0.25, "page 3 of 12")
    assert seen.progress.updated_at.ToDatetime() >= seen.started_at.ToDatetime()
    assert worker.listed()[job.id].progress == seen.progress
    again = worker.note(job.id, first, 0.5)  # a repeated RUNNING report with progress: no new attempt
    assert (again.attempts, again.progress.fraction, again.progress.message) == (1, 0.5, "")
    assert again.progress.updated_at.ToDatetime() > seen.progress.updated_at.ToDatetime()
    assert again.started_at == seen.started_at

    second = worker.claim(job.id)  # the job is taken over: a new attempt, without the old one's progress
    taken = worker.get(job.id)
    assert taken.attempts == 2
    assert not taken.HasField("progress")
    expect(lambda: worker.note(job.id, first, 0.9, "stale"), STALE, "STALE_ATTEMPT")
    assert worker.get(job.id) == taken  # the stale report changed nothing

    for fraction, message, field in (
        (1.5, "", "progress.fraction"),
        (-0.01, "", "progress.fraction"),
        (math.nan, "", "progress.fraction"),
        (0.5, "x" * 201, "progress.message"),
        (0.5, "a\x00b", "progress.message"),
    ):
        expect(lambda f=fraction, m=message: worker.note(job.id, second, f, m), INVALID, "INVALID_ARGUMENT", [field])
    assert worker.get(job.id) == taken

    worker.note(job.id, second, 0.9, "nearly")
    done = worker.update(id=job.id, status=COMPLETED, attempt=2, result="cba")
    assert (done.progress.fraction, done.progress.message) == (0.9, "nearly")  # kept as it was left
    expect(lambda: worker.note(job.id, second, 1.0), STALE, "JOB_FINISHED")
    assert worker.get(job.id).progress == done.progress


def test_progress_rides_in_a_batch_with_other_reports(jobs: JobService, secrets_dir: Path) -> None:
    worker = Worker(jobs, secrets_dir)
    a, b, c = worker.new_job(), worker.new_job(), worker.new_job()
    claim_a, claim_b = worker.claim(a.id), worker.claim(b.id)
    progress = jobs_pb2.JobProgress(fraction=0.5, message="half")
    requests = [
        jobs_pb2.UpdateJobRequest(id=a.id, status=RUNNING, claim_id=claim_a, progress=progress),
        jobs_pb2.UpdateJobRequest(id=b.id, status=COMPLETED, attempt=1, result_value=value([1, 2])),
        jobs_pb2.UpdateJobRequest(id=c.id, status=RUNNING, claim_id=str(uuid.uuid4())),
        jobs_pb2.UpdateJobRequest(id=b.id, status=RUNNING, claim_id=claim_b, progress=progress),  # after b finished
        jobs_pb2.UpdateJobRequest(id=a.id, status=COMPLETED, attempt=1, result="done"),
    ]
    answer = jobs.stub.UpdateJobs(jobs_pb2.UpdateJobsRequest(requests=requests), metadata=worker.worker)
    assert [(r.code, r.job_status, r.attempts) for r in answer.results] == [
        (0, RUNNING, 1),
        (0, COMPLETED, 1),
        (0, RUNNING, 1),
        (grpc.StatusCode.FAILED_PRECONDITION.value[0], jobs_pb2.JOB_STATUS_UNSPECIFIED, 0),
        (0, COMPLETED, 1),
    ]
    finished = worker.get(a.id)
    assert (finished.result, finished.progress.message) == ("done", "half")
    assert not worker.get(b.id).HasField("progress")


def test_a_listing_of_large_results_comes_in_pages_a_client_accepts(jobs: JobService, secrets_dir: Path) -> None:
    """Each string result is sent twice (result, result_value): 500 large ones would pass gRPC's 4 MiB reply limit."""
    worker = Worker(jobs, secrets_dir)
    large = "9" * 600_000  # 1.2 MB a job as listed: five would pass 4 MiB together
    ids = set()
    for _ in range(5):
        job = worker.new_job()
        worker.claim(job.id)
        worker.update(id=job.id, status=COMPLETED, attempt=1, result=large)
        ids.add(job.id)
    sizes, seen, token = [], set(), ""
    while True:  # the stub's channel keeps gRPC's default limit on what it receives
        request = jobs_pb2.ListJobsRequest(page_size=500, page_token=token, status=COMPLETED)
        page = jobs.stub.ListJobs(request, metadata=worker.owner)
        sizes.append(len(page.jobs))
        seen |= {job.id for job in page.jobs if job.result == large and job.result_value.string_value == large}
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    assert sizes == [2, 2, 1]
