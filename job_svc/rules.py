"""What a valid JobService request is: limits, defaults, ids, attempts, listings, page tokens, results, error sizes.

Pure functions of request values: each returns the checked value or raises
InvalidArgument naming the offending field. No I/O, so they are unit-tested
directly (tests/unit/test_job_rules.py).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Container, Sequence
from datetime import UTC, datetime
from typing import Any

from job_svc.model import Job
from jobqueue.runtime.errors import FieldViolation, InvalidArgument
from jobqueue.runtime.limits import DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: How many dead jobs RerunDeadJobs re-queues per transaction.
RERUN_BATCH = 500
#: Most jobs in one BatchCreateJobs call, and most reports in one UpdateJobs call.
MAX_BATCH = 1000
#: Largest result a worker may report (F(100000) has 20,899 digits; strings are at most 64 KiB); a
#: result of another JSON type counts the characters of its compact JSON text.
MAX_RESULT_CHARS = 1 << 20
#: Longest note a progress report may carry.
MAX_PROGRESS_MESSAGE_CHARS = 200
#: Largest error message a worker may report.
MAX_ERROR_CHARS = 8192
#: Most bytes of jobs one listing page holds, about: gRPC clients refuse a reply past 4 MiB by default,
#: and 500 jobs with results of F(100000)'s size (each sent twice: result and result_value) come to twice
#: that. A page stops short of its page_size rather than be refused whole.
MAX_PAGE_BYTES = 3 << 20
#: What a listed job takes besides its texts: ids, times, enums, field tags (a generous round figure).
_JOB_BYTES = 512
#: Longest page token accepted; those the service issues are a few hundred characters.
MAX_PAGE_TOKEN_CHARS = 1024
#: Most characters of a caller's own value that an error repeats back. Errors travel in trailers, which
#: gRPC clients refuse past 8 KiB (at random up to 16 KiB, always beyond): a caller who sent a long value
#: must still get INVALID_ARGUMENT naming the field, not RESOURCE_EXHAUSTED from their own client.
MAX_ECHOED_CHARS = 64
#: Longest worker id a report may carry (UpdateJobRequest.worker_id; the job_attempts CHECK agrees).
MAX_WORKER_ID_CHARS = 200
#: GetQueueStats' history: at most a day of minutes, an hour when the caller gives none.
MAX_STATS_MINUTES = 1440
DEFAULT_STATS_MINUTES = 60
#: Most field violations one INVALID_ARGUMENT lists, for the same reason: a batch of many bad requests
#: names the first ones and counts the rest.
MAX_VIOLATIONS = 10


def echoed(value: str) -> str:
    """``value`` quoted as an error message repeats it: cut to MAX_ECHOED_CHARS characters."""
    if len(value) <= MAX_ECHOED_CHARS:
        return repr(value)
    return f"{value[:MAX_ECHOED_CHARS]!r}... ({len(value)} characters)"


def first_violations(violations: Sequence[FieldViolation], rest_field: str) -> list[FieldViolation]:
    """The first MAX_VIOLATIONS of ``violations``, and one on ``rest_field`` counting any others."""
    if len(violations) <= MAX_VIOLATIONS:
        return list(violations)
    unlisted = len(violations) - MAX_VIOLATIONS
    return [*violations[:MAX_VIOLATIONS], FieldViolation(rest_field, f"{unlisted} more violations are not listed")]


#: A NUL escape in JSON text: ``\u0000`` preceded by an even number of backslashes (after an odd
#: number, its backslash is the second half of an escaped backslash, and "u0000" is plain letters).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def compact_json(value: Any) -> str:
    """``value`` as JSON text without spaces, non-ASCII characters as they are: the form results are measured in."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encode_json_result(value: Any) -> str:
    """A non-string result as the compact JSON text to store; INVALID_ARGUMENT on ``result_value`` if it holds NUL.

    jsonb cannot store NUL (U+0000) in a string or a key. json.dumps writes every
    NUL as an escape, so one regular expression over the text finds them all,
    without walking the value in Python. The size is checked with the string
    results' (job_svc/reports.py).
    """
    text = compact_json(value)
    if _NUL_ESCAPE.search(text):
        raise InvalidArgument([FieldViolation("result_value", "must not contain NUL characters in any string or key")])
    return text


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    """A UUID from a request field, or INVALID_ARGUMENT naming the field."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument([FieldViolation(field, "must be a UUID")]) from None


def encode_page_token(at: datetime, job_id: uuid.UUID, filters: list[str | None]) -> str:
    """An opaque token for the page after the job at (``at``, ``job_id``), bound to the list's filters."""
    data = [at.isoformat(), str(job_id), *filters]
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def decode_page_token(token: str, filters: list[str | None]) -> tuple[datetime, uuid.UUID]:
    """The cursor in ``token``; INVALID_ARGUMENT if it is garbage or was issued for other filters.

    The token comes back from the caller, who may send anything: every way it
    can fail to decode (bad base64, JSON of any shape or depth, times outside
    what the database stores) is this one INVALID_ARGUMENT, never an exception
    of the decoder's own that would reach the caller as INTERNAL.
    """
    bad = InvalidArgument([FieldViolation("page_token", "is not a token this service issued for these filters")])
    # Bounding the length first keeps the work small and the JSON shallow; RecursionError is still
    # caught below, because the recursion limit also counts the frames of whoever called this.
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(token))
    except (ValueError, RecursionError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise bad from None
    if not isinstance(data, list) or len(data) < 2 or not all(isinstance(part, str) for part in data[:2]):
        raise bad
    at_text, id_text, *token_filters = data
    if token_filters != filters:
        raise bad
    try:
        at = datetime.fromisoformat(at_text)
        job_id = uuid.UUID(id_text)
        # The database compares in UTC, and a time this close to datetime's ends has no UTC form.
        at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise bad from None
    if at.tzinfo is None:
        raise bad
    return at, job_id


def page_length(jobs: Sequence[Job], size: int) -> int:
    """How many of ``jobs``, from the first and at most ``size``, fit in one page of MAX_PAGE_BYTES (at least one)."""
    total = 0
    for count, job in enumerate(jobs[:size]):
        total += _listed_bytes(job)
        if total > MAX_PAGE_BYTES:
            return max(count, 1)
    return min(len(jobs), size)


def _listed_bytes(job: Job) -> int:
    """About how many bytes ``job`` takes in a listing reply.

    A string result is sent twice (result and result_value). A JSON result is
    counted six times its text: once as text, and up to five as a Value, whose
    numbers take 9 bytes and more where their text may take 1.
    """
    payload = job.payload if isinstance(job.payload, str) else compact_json(job.payload)
    result = _utf8_bytes(job.result) * 2 if job.result_json is None else _utf8_bytes(job.result_json) * 6
    progress = _utf8_bytes(job.progress.message) if job.progress is not None else 0
    return _JOB_BYTES + _utf8_bytes(payload) + result + _utf8_bytes(job.error) + progress


def _utf8_bytes(text: str | None) -> int:
    if text is None:
        return 0
    return len(text) if text.isascii() else len(text.encode())


def check_attempts(value: int, default: int = DEFAULT_MAX_ATTEMPTS) -> int:
    """A requested number of attempts (0 meaning ``default``), or INVALID_ARGUMENT."""
    if not 0 <= value <= MAX_ATTEMPTS:
        raise InvalidArgument(
            [FieldViolation("max_attempts", f"must be between 1 and {MAX_ATTEMPTS} (0 means {default})")]
        )
    return value or default


def check_batch(size: int, items: str) -> None:
    """INVALID_ARGUMENT unless a batch call (BatchCreateJobs, UpdateJobs) holds 1 to MAX_BATCH ``items``."""
    if not 1 <= size <= MAX_BATCH:
        raise InvalidArgument([FieldViolation("requests", f"must hold 1 to {MAX_BATCH} {items}")])


def check_listing(page_size: int, job_type: str | None, known_types: Container[str]) -> int:
    """The page size to fetch for a listing request, or INVALID_ARGUMENT for its bad fields."""
    violations = []
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        violations.append(FieldViolation("page_size", f"must be between 0 and {MAX_PAGE_SIZE}"))
    if job_type is not None and job_type not in known_types:
        violations.append(FieldViolation("type", f"unknown job type {echoed(job_type)}"))
    if violations:
        raise InvalidArgument(violations)
    return page_size or DEFAULT_PAGE_SIZE


def worker_id_violation(worker_id: str) -> FieldViolation | None:
    """Why a report's ``worker_id`` is refused, or None: at most MAX_WORKER_ID_CHARS printable characters.

    Printable only: it is shown on dashboards and in logs, where a control character could forge a line.
    """
    if len(worker_id) > MAX_WORKER_ID_CHARS:
        return FieldViolation("worker_id", f"must be at most {MAX_WORKER_ID_CHARS} characters")
    if not worker_id.isprintable():
        return FieldViolation("worker_id", "must hold only printable characters")
    return None


def check_stats_minutes(minutes: int) -> int:
    """GetQueueStats' ``minutes``: 1 to MAX_STATS_MINUTES, 0 meaning DEFAULT_STATS_MINUTES; else INVALID_ARGUMENT."""
    if minutes == 0:
        return DEFAULT_STATS_MINUTES
    if not 1 <= minutes <= MAX_STATS_MINUTES:
        raise InvalidArgument(
            [FieldViolation("minutes", f"must be between 1 and {MAX_STATS_MINUTES} (0 means {DEFAULT_STATS_MINUTES})")]
        )
    return minutes
