"""The gRPC edge of the job service: protobuf in, domain values to Jobs and Reports, protobuf out."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from job_svc.auth import Authenticator
from job_svc.jobs import Jobs
from job_svc.model import (
    Attempt,
    AttemptOutcome,
    DeclaredType,
    Job,
    NewJob,
    Priority,
    Progress,
    QueueStats,
    Report,
    Status,
)
from job_svc.reports import Reports
from job_svc.rules import (
    check_batch,
    compact_json,
    encode_json_result,
    first_violations,
    page_length,
    parse_id,
)
from job_svc.watch import WatchHub
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from jobqueue.runtime.errors import FieldViolation, InvalidArgument, ServiceError, code_number, status_code
from jobqueue.runtime.messages import exact_number, json_value
from jobqueue.runtime.tls import peer_certified

Context = grpc.aio.ServicerContext[Any, Any]

_STATUS_TO_PROTO = {
    Status.QUEUED: jobs_pb2.JOB_STATUS_QUEUED,
    Status.RUNNING: jobs_pb2.JOB_STATUS_RUNNING,
    Status.COMPLETED: jobs_pb2.JOB_STATUS_COMPLETED,
    Status.FAILED: jobs_pb2.JOB_STATUS_FAILED,
    Status.CANCELLED: jobs_pb2.JOB_STATUS_CANCELLED,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}
_FINAL = frozenset({jobs_pb2.JOB_STATUS_COMPLETED, jobs_pb2.JOB_STATUS_FAILED, jobs_pb2.JOB_STATUS_CANCELLED})
_OUTCOME_TO_PROTO = {
    AttemptOutcome.RUNNING: jobs_pb2.ATTEMPT_OUTCOME_RUNNING,
    AttemptOutcome.COMPLETED: jobs_pb2.ATTEMPT_OUTCOME_COMPLETED,
    AttemptOutcome.FAILED: jobs_pb2.ATTEMPT_OUTCOME_FAILED,
    AttemptOutcome.LOST: jobs_pb2.ATTEMPT_OUTCOME_LOST,
    AttemptOutcome.CANCELLED: jobs_pb2.ATTEMPT_OUTCOME_CANCELLED,
}
_PRIORITY_TO_PROTO = {
    Priority.LOW: jobs_pb2.JOB_PRIORITY_LOW,
    Priority.NORMAL: jobs_pb2.JOB_PRIORITY_NORMAL,
    Priority.HIGH: jobs_pb2.JOB_PRIORITY_HIGH,
}
_PRIORITY_FROM_PROTO = {
    jobs_pb2.JOB_PRIORITY_UNSPECIFIED: Priority.NORMAL,
    **{v: k for k, v in _PRIORITY_TO_PROTO.items()},
}


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def job_to_proto(job: Job) -> jobs_pb2.Job:
    """The API form of a stored job."""
    result, result_value = _result_to_proto(job)
    return jobs_pb2.Job(
        id=str(job.id),
        type=job.type,
        payload=json_format.ParseDict(job.payload, struct_pb2.Value()),
        status=_STATUS_TO_PROTO[job.status],
        result=result,
        error=job.error,
        attempts=job.attempts,
        owner_id=str(job.owner_id),
        created_at=_timestamp(job.created_at),
        updated_at=_timestamp(job.updated_at),
        started_at=_timestamp(job.started_at),
        finished_at=_timestamp(job.finished_at),
        priority=_PRIORITY_TO_PROTO[job.priority],
        max_attempts=job.max_attempts,
        next_attempt_at=_timestamp(job.run_after),
        timeout_seconds=job.timeout_seconds,
        result_value=result_value,
        progress=None if job.progress is None else _progress_to_proto(job.progress),
        attempt_history=[attempt_to_proto(attempt) for attempt in job.attempt_history],
    )


def attempt_to_proto(attempt: Attempt) -> jobs_pb2.JobAttempt:
    """The API form of one attempt."""
    return jobs_pb2.JobAttempt(
        number=attempt.number,
        worker_id=attempt.worker_id,
        started_at=_timestamp(attempt.started_at),
        ended_at=_timestamp(attempt.ended_at),
        outcome=_OUTCOME_TO_PROTO[attempt.outcome],
        error=attempt.error or "",
    )


def full_view(view: int) -> bool:
    """Whether a JobView asks for the attempt history; INVALID_ARGUMENT for a value outside the enum."""
    if view not in jobs_pb2.JobView.values():
        raise InvalidArgument([FieldViolation("view", f"{view} is not a valid JobView")])
    return view == jobs_pb2.JOB_VIEW_FULL


def stats_to_proto(stats: QueueStats) -> jobs_pb2.GetQueueStatsResponse:
    """The API form of the queue's statistics."""
    return jobs_pb2.GetQueueStatsResponse(
        job_types=[
            jobs_pb2.JobTypeCounts(type=t.type, queued=t.queued, running=t.running, failed=t.failed)
            for t in stats.job_types
        ],
        minutes=[
            jobs_pb2.MinuteCounts(
                start=_timestamp(m.start),
                created=m.created,
                completed=m.completed,
                failed=m.failed,
                cancelled=m.cancelled,
            )
            for m in stats.minutes
        ],
    )


def type_to_proto(declared: DeclaredType) -> jobs_pb2.JobType:
    """The API form of a job type."""
    schema = struct_pb2.Struct()
    schema.update(declared.payload_schema)
    return jobs_pb2.JobType(
        name=declared.name,
        summary=declared.summary,
        payload_schema=schema,
        version=declared.version,
        default_max_attempts=declared.default_max_attempts,
        default_timeout_seconds=declared.default_timeout_seconds,
        declared_at=_timestamp(declared.declared_at),
    )


def types_from_proto(types: Sequence[jobs_pb2.JobType]) -> list[DeclaredType]:
    """The domain form of declared types; INVALID_ARGUMENT for a missing schema or one holding NaN or infinity.

    The schema is made canonical (whole floats become ints: a Struct has only floats), so that the same
    schema declared twice compares equal and stores as written.
    """
    declared: list[DeclaredType] = []
    violations: list[FieldViolation] = []
    for i, item in enumerate(types):
        field = f"job_types[{i}].payload_schema"
        if not item.HasField("payload_schema"):
            violations.append(FieldViolation(field, "is required ({} accepts any JSON value)"))
            continue
        try:
            schema = json_from_proto(struct_pb2.Value(struct_value=item.payload_schema), field)
        except InvalidArgument as error:
            violations.extend(error.violations)
            continue
        declared.append(
            DeclaredType(
                name=item.name,
                summary=item.summary,
                payload_schema=schema,
                version=item.version,
                default_max_attempts=item.default_max_attempts,
                default_timeout_seconds=item.default_timeout_seconds,
            )
        )
    if violations:
        raise InvalidArgument(first_violations(violations, "job_types"))
    return declared


def _progress_to_proto(progress: Progress) -> jobs_pb2.JobProgress:
    return jobs_pb2.JobProgress(
        fraction=progress.fraction, message=progress.message, updated_at=_timestamp(progress.updated_at)
    )


def _number(number: float) -> int | float:
    """A number as it is stored: a whole one as an int; _NotFinite for NaN and infinities."""
    if not math.isfinite(number):
        raise _NotFinite
    return exact_number(number)


class _NotFinite(Exception):
    """A NaN or an infinity, for which JSON has no form."""


def json_from_proto(value: struct_pb2.Value, field: str) -> Any:
    """``value`` as a plain JSON value, whole numbers as ints at any depth; INVALID_ARGUMENT on ``field`` if not finite.

    A whole number becomes an int so that it is stored as written (10, not 10.0).
    """
    try:
        return json_value(value, _number)
    except _NotFinite:
        raise InvalidArgument([FieldViolation(field, "must hold only finite numbers")]) from None


def payload_from_proto(value: struct_pb2.Value, present: bool) -> Any:
    """A payload as a plain JSON value (see json_from_proto); None when absent or null."""
    if not present or value.WhichOneof("kind") is None:
        return None
    return json_from_proto(value, "payload")


def _result_from_proto(request: jobs_pb2.UpdateJobRequest) -> tuple[str | None, str | None]:
    """A report's answer as (string result, or JSON text of any other): from ``result`` or ``result_value``."""
    result = request.result if request.HasField("result") else None
    if not request.HasField("result_value"):
        return result, None
    if result is not None:
        raise InvalidArgument([FieldViolation("result_value", "give result or result_value, not both")])
    value = request.result_value
    if value.WhichOneof("kind") == "string_value":
        # Stored exactly as `result` would be, and checked as it is (job_svc/reports.py), but a NUL is
        # named on the field the caller set. (A string past the size limit cannot fit in a request.)
        if "\x00" in value.string_value:
            raise InvalidArgument([FieldViolation("result_value", "must not contain NUL characters")])
        return value.string_value, None
    if value.WhichOneof("kind") is None:
        raise InvalidArgument([FieldViolation("result_value", "must hold a JSON value (null_value for null)")])
    return None, encode_json_result(json_from_proto(value, "result_value"))


def _result_to_proto(job: Job) -> tuple[str | None, struct_pb2.Value | None]:
    """A job's answer as Job.result (the text) and Job.result_value (the JSON value) show it."""
    if job.result is not None:
        return job.result, struct_pb2.Value(string_value=job.result)
    if job.result_json is None:
        return None, None
    value = json.loads(job.result_json, parse_int=_stored_int)
    return compact_json(value), json_format.ParseDict(value, struct_pb2.Value())


def _stored_int(digits: str) -> int | float:
    """A JSON integer as jsonb gives it back: jsonb writes a float such as 1e300 with all its digits."""
    return int(digits) if len(digits) < 16 else _number(float(digits))


def status_from_proto(value: int, field: str, *, allow_unspecified: bool) -> Status | None:
    """The domain status for an enum value; INVALID_ARGUMENT for values outside the enum."""
    if value == jobs_pb2.JOB_STATUS_UNSPECIFIED and allow_unspecified:
        return None
    try:
        return _STATUS_FROM_PROTO[jobs_pb2.JobStatus.ValueType(value)]
    except KeyError:
        raise InvalidArgument([FieldViolation(field, f"{value} is not a valid JobStatus here")]) from None


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    """jobqueue.jobs.v1.JobService."""

    def __init__(self, jobs: Jobs, reports: Reports, authenticator: Authenticator, watches: WatchHub) -> None:
        self._jobs = jobs
        self._reports = reports
        self._auth = authenticator
        self._watches = watches

    async def CreateJob(self, request: jobs_pb2.CreateJobRequest, context: Context) -> jobs_pb2.CreateJobResponse:
        """Validate, store and queue a job for the calling user."""
        owner = self._auth.user(context.invocation_metadata()).id
        job = await self._jobs.create(await self._new_job(owner, request))
        return jobs_pb2.CreateJobResponse(job=job_to_proto(job))

    async def BatchCreateJobs(
        self, request: jobs_pb2.BatchCreateJobsRequest, context: Context
    ) -> jobs_pb2.BatchCreateJobsResponse:
        """Validate every job first, then store and queue them all in one transaction."""
        owner = self._auth.user(context.invocation_metadata()).id
        check_batch(len(request.requests), "jobs")
        new_jobs: list[NewJob] = []
        violations: list[FieldViolation] = []
        await self._jobs.look_up_types({item.type for item in request.requests})
        for i, item in enumerate(request.requests):
            try:
                new_jobs.append(await self._new_job(owner, item, looked_up=True))
            except InvalidArgument as error:
                violations.extend(FieldViolation(f"requests[{i}].{v.field}", v.description) for v in error.violations)
        if violations:
            raise InvalidArgument(first_violations(violations, "requests"))
        jobs = await self._jobs.create_batch(new_jobs)
        return jobs_pb2.BatchCreateJobsResponse(jobs=[job_to_proto(j) for j in jobs])

    async def _new_job(
        self, owner: uuid.UUID, request: jobs_pb2.CreateJobRequest, *, looked_up: bool = False
    ) -> NewJob:
        payload = payload_from_proto(request.payload, request.HasField("payload"))
        request_id = parse_id(request.request_id, "request_id") if request.request_id else None
        priority = _PRIORITY_FROM_PROTO.get(request.priority)
        if priority is None:
            raise InvalidArgument([FieldViolation("priority", f"{request.priority} is not a valid JobPriority")])
        return await self._jobs.check_new(
            owner,
            request.type,
            payload,
            priority=priority,
            max_attempts=request.max_attempts,
            timeout_seconds=request.timeout_seconds,
            request_id=request_id,
            looked_up=looked_up,
        )

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: Context) -> jobs_pb2.GetJobResponse:
        """One of the caller's jobs."""
        owner = self._auth.user(context.invocation_metadata()).id
        history = full_view(request.view)
        job = await self._jobs.get(owner, parse_id(request.id), history=history)
        return jobs_pb2.GetJobResponse(job=job_to_proto(job))

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: Context) -> jobs_pb2.ListJobsResponse:
        """A page of the caller's jobs, newest first."""
        owner = self._auth.user(context.invocation_metadata()).id
        jobs, next_token = await self._jobs.list(
            owner,
            page_size=request.page_size,
            page_token=request.page_token,
            status=status_from_proto(request.status, "status", allow_unspecified=True),
            job_type=request.type or None,
        )
        return jobs_pb2.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs], next_page_token=next_token)

    async def ListJobTypes(
        self, request: jobs_pb2.ListJobTypesRequest, context: Context
    ) -> jobs_pb2.ListJobTypesResponse:
        """Every job type CreateJob accepts; any signed-in user may ask."""
        self._auth.user(context.invocation_metadata())
        return jobs_pb2.ListJobTypesResponse(job_types=[type_to_proto(t) for t in await self._jobs.job_types()])

    async def DeclareJobTypes(
        self, request: jobs_pb2.DeclareJobTypesRequest, context: Context
    ) -> jobs_pb2.DeclareJobTypesResponse:
        """A worker's job types, stored by the version policy; each as now stored."""
        self._auth.worker(context.invocation_metadata(), certified=lambda: peer_certified(context))
        stored = await self._jobs.declare_types(types_from_proto(request.job_types))
        return jobs_pb2.DeclareJobTypesResponse(job_types=[type_to_proto(t) for t in stored])

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: Context) -> jobs_pb2.CancelJobResponse:
        """Withdraw one of the caller's jobs."""
        owner = self._auth.user(context.invocation_metadata()).id
        job = await self._jobs.cancel(owner, parse_id(request.id))
        return jobs_pb2.CancelJobResponse(job=job_to_proto(job))

    async def RerunJob(self, request: jobs_pb2.RerunJobRequest, context: Context) -> jobs_pb2.RerunJobResponse:
        """Run a FAILED job again: the caller's own, or any for an operator."""
        caller = self._auth.user(context.invocation_metadata())
        job = await self._jobs.rerun(caller, parse_id(request.id), request.max_attempts)
        return jobs_pb2.RerunJobResponse(job=job_to_proto(job))

    async def ListDeadJobs(
        self, request: jobs_pb2.ListDeadJobsRequest, context: Context
    ) -> jobs_pb2.ListDeadJobsResponse:
        """A page of every user's FAILED jobs, for an operator."""
        self._auth.operator(context.invocation_metadata())
        jobs, next_token = await self._jobs.list_dead(request.page_size, request.page_token, request.type or None)
        return jobs_pb2.ListDeadJobsResponse(jobs=[job_to_proto(j) for j in jobs], next_page_token=next_token)

    async def RerunDeadJobs(
        self, request: jobs_pb2.RerunDeadJobsRequest, context: Context
    ) -> jobs_pb2.RerunDeadJobsResponse:
        """Run every dead job (of one type, if given) again, for an operator."""
        self._auth.operator(context.invocation_metadata())
        count = await self._jobs.rerun_dead(request.type or None, request.max_attempts)
        return jobs_pb2.RerunDeadJobsResponse(rerun_count=count)

    async def WatchJob(
        self, request: jobs_pb2.WatchJobRequest, context: Context
    ) -> AsyncIterator[jobs_pb2.WatchJobResponse]:
        """One of the caller's jobs now, then at each change, until it is final."""
        owner = self._auth.user(context.invocation_metadata()).id
        job_id = parse_id(request.id)
        history = full_view(request.view)
        async with self._watches.watch_job(owner, job_id) as watch:
            # Read only now: every change committed from here on wakes the watch.
            last = job_to_proto(await self._jobs.get(owner, job_id, history=history))
            yield jobs_pb2.WatchJobResponse(job=last)
            while last.status not in _FINAL:
                await watch.changed()
                job = job_to_proto(await self._jobs.get(owner, job_id, history=history))
                if job != last:
                    last = job
                    yield jobs_pb2.WatchJobResponse(job=job)

    async def WatchJobs(
        self, request: jobs_pb2.WatchJobsRequest, context: Context
    ) -> AsyncIterator[jobs_pb2.WatchJobsResponse]:
        """The caller's jobs (everyone's, for an operator who asks) as they change."""
        metadata = context.invocation_metadata()
        caller = self._auth.operator(metadata) if request.all_users else self._auth.user(metadata)
        status = status_from_proto(request.status, "status", allow_unspecified=True)
        job_type = request.type or None
        await self._jobs.check_type_filter(job_type)
        async with self._watches.watch_jobs(
            caller.id, all_users=request.all_users, status=status, job_type=job_type
        ) as watch:
            yield jobs_pb2.WatchJobsResponse()  # begun: every change committed from here on follows
            while True:
                jobs = await watch.next_batch()
                while jobs:
                    # In messages a client accepts (4 MiB by default), as listings are paged.
                    count = page_length(jobs, len(jobs))
                    yield jobs_pb2.WatchJobsResponse(jobs=[job_to_proto(job) for job in jobs[:count]])
                    jobs = jobs[count:]

    async def GetQueueStats(
        self, request: jobs_pb2.GetQueueStatsRequest, context: Context
    ) -> jobs_pb2.GetQueueStatsResponse:
        """How the queue is doing, now and per minute of the recent past, for an operator."""
        self._auth.operator(context.invocation_metadata())
        return stats_to_proto(await self._jobs.queue_stats(request.minutes))

    async def UpdateJob(self, request: jobs_pb2.UpdateJobRequest, context: Context) -> jobs_pb2.UpdateJobResponse:
        """A worker's fenced report on a job."""
        self._auth.worker(context.invocation_metadata(), certified=lambda: peer_certified(context))
        job = await self._reports.report(report_from_proto(request))
        return jobs_pb2.UpdateJobResponse(job=job_to_proto(job))

    async def UpdateJobs(self, request: jobs_pb2.UpdateJobsRequest, context: Context) -> jobs_pb2.UpdateJobsResponse:
        """A batch of workers' reports, each fenced and answered on its own."""
        self._auth.worker(context.invocation_metadata(), certified=lambda: peer_certified(context))
        check_batch(len(request.requests), "reports")
        reports: list[Report] = []
        refused: dict[int, ServiceError] = {}
        for i, item in enumerate(request.requests):
            try:
                reports.append(report_from_proto(item))
            except InvalidArgument as error:
                refused[i] = error
        outcomes = iter(await self._reports.report_batch(reports) if reports else [])
        results = []
        for i in range(len(request.requests)):
            outcome = refused.get(i) or next(outcomes)
            if isinstance(outcome, ServiceError):
                results.append(
                    jobs_pb2.UpdateJobsResult(code=code_number(status_code(outcome)), message=outcome.message)
                )
            else:
                results.append(
                    jobs_pb2.UpdateJobsResult(job_status=_STATUS_TO_PROTO[outcome.status], attempts=outcome.attempts)
                )
        return jobs_pb2.UpdateJobsResponse(results=results)


def report_from_proto(request: jobs_pb2.UpdateJobRequest) -> Report:
    """The domain form of a worker's report; INVALID_ARGUMENT for a bad status or id."""
    status = status_from_proto(request.status, "status", allow_unspecified=False)
    assert status is not None
    result, result_json = _result_from_proto(request)
    progress = request.progress if request.HasField("progress") else None
    return Report(
        job_id=parse_id(request.id),
        status=status,
        claim_id=parse_id(request.claim_id, "claim_id") if request.claim_id else None,
        attempt=request.attempt,
        result=result,
        result_json=result_json,
        error=request.error if request.HasField("error") else None,
        retryable=request.retryable,
        progress=None if progress is None else Progress(progress.fraction, progress.message),
        worker_id=request.worker_id,
    )
