"""What the pages and the live streams show of a job and of a refusal: plain values, no protobuf past here."""

from __future__ import annotations

import datetime
import json
from typing import Any

import grpc

from jobqueue.client import Job, JobQueueError, JobStatus, is_final

#: Longest payload or result shown in a list row; the job's own page shows all of it.
SHORT = 80


def when(moment: datetime.datetime | None) -> str:
    """A time as the pages print it (UTC, to the second); empty for none."""
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def as_json(value: Any) -> str:
    """A payload or result as JSON text."""
    return json.dumps(value, ensure_ascii=False)


def short(text: str) -> str:
    """``text`` cut to a list row's width."""
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…"


def job_row(job: Job) -> dict[str, Any]:
    """A job as a list row, and as a live update sends it to the browser."""
    return {
        "id": job.id,
        "type": job.type,
        "owner_id": job.owner_id,
        "status": job.status.name,
        "final": is_final(job.status),
        "priority": job.priority.name,
        "attempts": f"{job.attempts}/{job.max_attempts}",
        "payload": short(as_json(job.payload)),
        "outcome": short(job.result if job.result is not None else job.error or ""),
        "created": when(job.created_at),
        "updated": when(job.updated_at),
        "updated_at": job.updated_at.timestamp(),
        "cancellable": job.status in (JobStatus.QUEUED, JobStatus.RUNNING),
        "rerunnable": job.status == JobStatus.FAILED,
    }


def job_detail(job: Job) -> dict[str, Any]:
    """A job with everything its own page shows, attempts included."""
    progress = job.progress
    return {
        **job_row(job),
        "payload": as_json(job.payload),
        "result": as_json(job.result_value) if job.result is not None else "",
        "error": job.error or "",
        "timeout_seconds": job.timeout_seconds,
        "started": when(job.started_at),
        "finished": when(job.finished_at),
        "next_attempt": when(job.next_attempt_at),
        "progress": f"{progress.fraction:.0%} {progress.message}".rstrip() if progress else "",
        "attempt_history": [
            {
                "number": attempt.number,
                "worker_id": attempt.worker_id,
                "started": when(attempt.started_at),
                "ended": when(attempt.ended_at),
                "outcome": attempt.outcome.name,
                "error": attempt.error,
            }
            for attempt in job.attempt_history
        ],
    }


#: What a refusal means to a person, by gRPC code (the service's message follows).
_SAYS = {
    grpc.StatusCode.PERMISSION_DENIED: "Operators only: your account does not have the operator role.",
    grpc.StatusCode.NOT_FOUND: "No such job (or it is not yours).",
    grpc.StatusCode.UNAVAILABLE: "The job service cannot be reached right now; try again shortly.",
    grpc.StatusCode.UNIMPLEMENTED: "The job service does not offer this yet.",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "A limit was reached; try again shortly.",
    grpc.StatusCode.DEADLINE_EXCEEDED: "The job service took too long to answer; try again.",
}


def refusal(error: JobQueueError) -> str:
    """One line for a person: what a refusal means, then what the service said."""
    detail = error.message
    if error.field_violations:
        detail = "; ".join(f"{v.field}: {v.description}" for v in error.field_violations)
    lead = _SAYS.get(error.code)
    return f"{lead} ({detail})" if lead and detail else lead or detail or error.code.name
