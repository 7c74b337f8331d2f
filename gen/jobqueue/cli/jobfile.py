"""How ``jobq submit`` reads a payload from the command line, and jobs from a file of JSON lines.

A payload argument is JSON (``'"hello"'``, ``10``, ``'{"a": 1}'``). A word that is not JSON
(``hello``, ``hello world``) is sent as that string, since that is what a person typing it means;
an argument that starts like JSON (``{``, ``[``, ``"``) but does not parse is refused rather than
sent as a string, because that is a typo, not a string. To send a string that is also JSON
(``10``, ``true``), quote it: ``'"10"'``.

A file has one job per line, ``{"type": ..., "payload": ..., "priority": ..., "max_attempts": ...,
"timeout_seconds": ..., "request_id": ...}`` (the last four optional; blank lines are skipped). The
whole file is checked before anything is sent, and the first bad line is reported with its number,
so a file is never half submitted because of a typo on line 2,000.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any, cast

from jobqueue.client import JobPriority, Payload, to_value
from jobqueue.jobs.v1 import jobs_pb2

#: The keys a line may have; any other is refused, so a misspelt option is not silently dropped.
KEYS = frozenset({"type", "payload", "priority", "max_attempts", "timeout_seconds", "request_id"})
_LOOKS_LIKE_JSON = ("{", "[", '"')
_PRIORITIES = {priority.name: priority for priority in JobPriority if priority != JobPriority.UNSPECIFIED}


class BadJob(ValueError):
    """Raised for a payload argument or a line of a file of jobs that cannot become a job."""


def parse_payload(text: str) -> Payload:
    """The payload an argument stands for (see the module's docstring); BadJob if it cannot be one."""
    try:
        value = json.loads(text)
    except ValueError as error:
        if text.lstrip().startswith(_LOOKS_LIKE_JSON):
            raise BadJob(f"payload {text!r} is not valid JSON: {error}") from None
        return text
    return _checked_payload(value)


def parse_priority(text: str | int) -> JobPriority:
    """A priority given as a name (``high``, ``HIGH``) or its proto number (1 to 3)."""
    if isinstance(text, int) and not isinstance(text, bool):
        try:
            priority = JobPriority(text)
        except ValueError:
            priority = JobPriority.UNSPECIFIED
        if priority.name in _PRIORITIES:
            return priority
    elif isinstance(text, str) and text.upper() in _PRIORITIES:
        return _PRIORITIES[text.upper()]
    raise BadJob(f"priority must be one of {', '.join(n.lower() for n in _PRIORITIES)}, not {text!r}")


def parse_request_id(text: object) -> str:
    """A request id as the API takes it: a UUID (``uuidgen`` makes one); BadJob otherwise."""
    if isinstance(text, str):
        try:
            uuid.UUID(text)
        except ValueError:
            pass
        else:
            return text
    raise BadJob(f"request_id must be a UUID, not {text!r}")


def parse_line(text: str) -> jobs_pb2.CreateJobRequest:
    """The CreateJob request a line of a file of jobs stands for; BadJob says what is wrong with it."""
    try:
        line = json.loads(text)
    except ValueError as error:
        raise BadJob(f"not valid JSON: {error}") from None
    if not isinstance(line, dict):
        raise BadJob('a line must be a JSON object such as {"type": "reverse_string", "payload": "abc"}')
    unknown = sorted(set(line) - KEYS)
    if unknown:
        raise BadJob(f"unknown key {unknown[0]!r} (a line may have {', '.join(sorted(KEYS))})")
    job_type = line.get("type")
    if not isinstance(job_type, str) or not job_type:
        raise BadJob('"type" must be a non-empty string')
    if "payload" not in line:
        raise BadJob('"payload" is missing')
    request_id = line.get("request_id", "")
    if request_id != "":
        request_id = parse_request_id(request_id)
    return jobs_pb2.CreateJobRequest(
        type=job_type,
        payload=to_value(_checked_payload(line["payload"])),
        priority=jobs_pb2.JobPriority.ValueType(
            int(parse_priority(line["priority"])) if "priority" in line else JobPriority.UNSPECIFIED
        ),
        max_attempts=_count(line, "max_attempts"),
        timeout_seconds=_count(line, "timeout_seconds"),
        request_id=request_id,
    )


def parse_lines(lines: Iterable[str]) -> list[jobs_pb2.CreateJobRequest]:
    """Every job of a file, in order; BadJob names the first bad line by its number (from 1)."""
    requests = []
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            requests.append(parse_line(text))
        except BadJob as error:
            raise BadJob(f"line {number}: {error}") from None
    return requests


def _count(line: dict[str, Any], key: str) -> int:
    value = line.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadJob(f'"{key}" must be a whole number, 0 or more')
    return value


def _checked_payload(value: Any) -> Payload:
    """``value`` once to_value accepts it (it refuses a bool or null on its own, huge ints, ...)."""
    try:
        to_value(value)
    except (TypeError, ValueError) as error:
        raise BadJob(f"bad payload: {error}") from None
    return cast(Payload, value)
