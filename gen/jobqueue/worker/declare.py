"""Declaring a worker's job types to the job service when it starts (DeclareJobTypes).

The call is repeated, with capped backoff, for as long as the job service
cannot answer (it may be starting too): a worker waits for it, reporting
NOT_SERVING, as it does for its reports. An answer that refuses the
declaration stops the worker: FAILED_PRECONDITION means another worker
declared the same version of a type differently (raise ``version``);
INVALID_ARGUMENT, that the job service finds a schema or default unusable.
No retry would change either, so the worker exits with the job service's words.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import grpc
from google.protobuf import json_format

from jobqueue.jobs.v1 import jobs_pb2
from jobqueue.runtime.backoff import Backoff
from jobqueue.runtime.settings import SettingsError
from jobqueue.worker.job_types import JobType
from jobqueue.worker.reports import Outcome, outcome_of

log = logging.getLogger(__name__)


class DeclarationRefused(SettingsError):
    """Raised when the job service refuses this worker's job types; the worker stops (exit 2)."""


def to_proto(job_type: JobType) -> jobs_pb2.JobType:
    """The declaration of ``job_type`` (the job service's defaults where it sets none)."""
    declared = jobs_pb2.JobType(
        name=job_type.name,
        summary=job_type.summary,
        version=job_type.version,
        default_max_attempts=job_type.max_attempts or 0,
        default_timeout_seconds=job_type.timeout_seconds or 0,
    )
    json_format.ParseDict(dict(job_type.schema), declared.payload_schema)
    return declared


#: How long the job service may stay unreachable at start before the worker logs a warning.
PATIENCE_SECONDS = 10.0


async def declare(
    call: Callable[[list[jobs_pb2.JobType]], Awaitable[None]],
    job_types: Iterable[JobType],
    *,
    backoff: Backoff | None = None,
) -> None:
    """Declare ``job_types`` through ``call`` (ReportClient.declare) until the job service answers (module doc)."""
    declarations = [to_proto(job_type) for job_type in job_types]
    backoff = backoff or Backoff(base=0.2, cap=5.0)
    started = time.monotonic()
    said = False
    while True:
        try:
            await call(declarations)
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
            if outcome_of(code) is not Outcome.RETRY:
                raise DeclarationRefused(
                    f"the job service refused this worker's job types: {code.name}: {details}"
                ) from None
            # Workers and the job service often start together: a short wait is normal, a long one is news.
            if not said and time.monotonic() - started >= PATIENCE_SECONDS:
                said = True
                log.warning("job service unreachable; retrying the job types' declaration", extra={"code": code.name})
            await asyncio.sleep(backoff.next_delay())
        else:
            log.info("job types declared", extra={"job_types": [d.name for d in declarations]})
            return
