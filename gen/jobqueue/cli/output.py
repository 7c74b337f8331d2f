"""How ``jobq`` shows jobs: an aligned table for a person, JSON lines for a program.

The table is for reading: ids in full (to copy), ages instead of timestamps, and the result or
error cut to one line that fits the terminal (``jobq get`` shows them whole). ``--json`` prints one
JSON object per line with the field names of the API's JSON mapping (``google.protobuf.json_format``:
``maxAttempts``, ``createdAt``, enums by their proto names), the names a script can rely on,
since they are the contract's.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from google.protobuf import json_format

from jobqueue.client import Attempt, Job, JobType

#: A table never gets narrower than this, however narrow the terminal says it is.
MIN_WIDTH = 80
JOB_COLUMNS = ("ID", "TYPE", "STATUS", "ATTEMPTS", "AGE", "UPDATED", "RESULT/ERROR")


def job_json(job: Job) -> str:
    """The job as one line of JSON, in the API's JSON mapping, with whole numbers in its values as integers."""
    data = json_format.MessageToDict(job.proto)
    # json_format gives every number of a google.protobuf.Value as a float (a payload of 10 as 10.0);
    # Job has them as the JSON a person wrote, which is what a script compares with.
    data["payload"] = job.payload
    if "resultValue" in data:
        data["resultValue"] = job.result_value
    return json.dumps(data, ensure_ascii=False)


def job_type_json(job_type: JobType) -> str:
    """A job type as one line of JSON, with the field names of ``jobqueue.jobs.v1.JobType``'s JSON mapping."""
    data: dict[str, Any] = {
        "name": job_type.name,
        "summary": job_type.summary,
        "payloadSchema": job_type.payload_schema,
        "version": job_type.version,
        "defaultMaxAttempts": job_type.default_max_attempts,
        "defaultTimeoutSeconds": job_type.default_timeout_seconds,
    }
    if job_type.declared_at is not None:
        data["declaredAt"] = job_type.declared_at.isoformat().replace("+00:00", "Z")
    return json.dumps(data, ensure_ascii=False)


def age(moment: datetime.datetime, now: datetime.datetime) -> str:
    """How long ago ``moment`` was, in its largest unit: ``12s``, ``5m``, ``3h``, ``2d``."""
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def outcome(job: Job) -> str:
    """The result, or the error, or the progress: what a row says the job came to, on one line."""
    if job.result is not None:
        text = job.result
    elif job.error is not None:
        text = f"error: {job.error}"
    elif job.progress is not None:
        text = f"{job.progress.fraction:.0%} {job.progress.message}".rstrip()
    else:
        text = ""
    return " ".join(text.split())


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def job_row(job: Job, now: datetime.datetime) -> list[str]:
    """The cells of a job's row, in JOB_COLUMNS order."""
    return [
        job.id,
        job.type,
        job.status.name,
        f"{job.attempts}/{job.max_attempts}",
        age(job.created_at, now),
        age(job.updated_at, now),
        outcome(job),
    ]


def table(header: Sequence[str], rows: Iterable[Sequence[str]], width: int) -> list[str]:
    """The lines of an aligned table; the last column is cut so that each line fits ``width``."""
    rows = [list(row) for row in rows]
    widths = [max(len(row[i]) for row in [list(header), *rows]) for i in range(len(header) - 1)]
    room = max(width, MIN_WIDTH) - sum(widths) - 2 * len(widths)
    lines = []
    for row in [list(header), *rows]:
        cells = [cell.ljust(size) for cell, size in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, truncate(row[-1], max(room, 10))]).rstrip())
    return lines


def job_table(jobs: Iterable[Job], width: int, now: datetime.datetime) -> list[str]:
    """The table of ``jobs`` (just its header when there are none)."""
    return table(JOB_COLUMNS, [job_row(job, now) for job in jobs], width)


def attempt_table(attempts: Sequence[Attempt], width: int) -> list[str]:
    """The table of a job's attempts (``jobq get --history``)."""
    rows = [
        [
            str(attempt.number),
            attempt.outcome.name,
            attempt.worker_id or "-",
            _clock(attempt.started_at),
            f"{(attempt.ended_at - attempt.started_at).total_seconds():.1f}s" if attempt.ended_at else "-",
            " ".join(attempt.error.split()),
        ]
        for attempt in attempts
    ]
    return table(("#", "OUTCOME", "WORKER", "STARTED", "TOOK", "ERROR"), rows, width)


def job_details(job: Job) -> list[str]:
    """``jobq get``: the job's summary (``str(job)``, the result or error in full), then its other fields."""
    lines = str(job).split("\n")
    lines.append(f"payload: {json.dumps(job.payload, ensure_ascii=False)}")
    lines.append(f"priority: {job.priority.name}, timeout {job.timeout_seconds} s")
    for label, moment in (
        ("created", job.created_at),
        ("updated", job.updated_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
    ):
        if moment is not None:
            lines.append(f"{label}: {_clock(moment)}")
    return lines


def state_line(job: Job, width: int) -> str:
    """One state of a watched job: when it changed, its status and attempts, and what it came to."""
    line = f"{_clock(job.updated_at)}  {job.status.name:<9}  attempt {job.attempts}/{job.max_attempts}"
    text = outcome(job)
    return f"{line}  {truncate(text, max(width, MIN_WIDTH) - len(line) - 2)}" if text else line


def change_line(job: Job, width: int) -> str:
    """One change seen by ``jobq watch`` without an id: the job, then its state."""
    line = f"{_clock(job.updated_at)}  {job.id}  {job.type}  {job.status.name:<9}  {job.attempts}/{job.max_attempts}"
    text = outcome(job)
    return f"{line}  {truncate(text, max(width, MIN_WIDTH) - len(line) - 2)}" if text else line


def type_table(job_types: Iterable[JobType], width: int) -> list[str]:
    """The table of ``jobq types``."""
    rows = [
        [
            job_type.name,
            str(job_type.version),
            str(job_type.default_max_attempts or "-"),
            f"{job_type.default_timeout_seconds}s" if job_type.default_timeout_seconds else "-",
            job_type.summary,
        ]
        for job_type in job_types
    ]
    return table(("TYPE", "VERSION", "ATTEMPTS", "TIMEOUT", "SUMMARY"), rows, width)


def write_lines(stream: TextIO, lines: Iterable[str]) -> None:
    """Print ``lines``, flushed, so that a reader of a pipe sees each as soon as it is written."""
    for line in lines:
        stream.write(line + "\n")
    stream.flush()


def _clock(moment: datetime.datetime) -> str:
    """A time in the local time zone, to the second: what a person compares with their own clock."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
