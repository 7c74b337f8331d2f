"""The job types the system accepts, and the rule each one's payload must follow.

This table is the one list of job types: the job service validates CreateJob
against it and the worker has one handler per entry (worker_svc/handlers.py;
a test checks the two agree). A payload is a JSON value (google.protobuf.Value
on the wire); a rule turns it into the handler's typed input or says why not.

More types can come from the modules named in JOB_TYPE_MODULES (both the job
service and the workers read it; give them the same list). The contract of
such a module: it is importable by its dotted name, has no side effects worth
fearing when imported (it is imported by the job service, each worker and each
worker's handler processes), and exposes ``JOB_TYPES``, a list of JobType
values each carrying its own ``handler``. ``load_modules`` adds them at start,
before any job is taken, and refuses (SettingsError) a module it cannot import,
one without a proper ``JOB_TYPES``, and a name that is malformed or taken.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common.settings import SettingsError

#: Largest string payload, in bytes once UTF-8 encoded.
MAX_TEXT_BYTES = 65_536
#: Largest n for fibonacci_calc: F(100000) has 20,899 digits and takes milliseconds.
MAX_FIBONACCI_N = 100_000


class PayloadError(ValueError):
    """Raised by a payload rule when the payload does not fit the job type."""


def text(payload: Any) -> str:
    """A string of at most MAX_TEXT_BYTES bytes, without NUL characters."""
    if not isinstance(payload, str):
        raise PayloadError("must be a string")
    if len(payload.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise PayloadError(f"must be at most {MAX_TEXT_BYTES} bytes")
    if "\x00" in payload:
        # PostgreSQL text and jsonb cannot hold NUL; refuse it here rather than fail on store.
        raise PayloadError("must not contain NUL characters")
    return payload


def fibonacci_n(payload: Any) -> int:
    """A whole number 0 <= n <= MAX_FIBONACCI_N (JSON numbers arrive as floats)."""
    if isinstance(payload, bool) or not isinstance(payload, int | float):
        raise PayloadError("must be a whole number")
    if isinstance(payload, float) and (not math.isfinite(payload) or not payload.is_integer()):
        raise PayloadError("must be a whole number")
    n = int(payload)
    if not 0 <= n <= MAX_FIBONACCI_N:
        raise PayloadError(f"must be between 0 and {MAX_FIBONACCI_N}")
    return n


#: The shape of a type name; the jobs table checks the same (migrations/0002_jobs.sql).
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,62}")
#: The environment variable naming the modules of extra job types.
MODULES_VARIABLE = "JOB_TYPE_MODULES"
#: A dotted Python module name, as JOB_TYPE_MODULES lists them.
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class JobType:
    """A job type: its name, the rule that checks and converts its payload, and (if added by a module) its handler.

    ``parse`` takes the JSON payload and returns the handler's input (picklable:
    it may cross into a handler process) or raises PayloadError, which is a
    permanent failure: CreateJob answers INVALID_ARGUMENT, and a worker fails
    the job without retrying. ``handler`` takes that input and returns the
    result text; any exception it raises fails the attempt as *retryable*, so
    the job is retried until it has had its max_attempts, then it is FAILED and
    its message goes to ``<queue>.dead``. ``cpu_bound`` handlers run in the
    worker's process pool, the others on its event loop (they must be quick).

    The built-in types leave ``handler`` unset: theirs are in worker_svc/handlers.py.
    A type from JOB_TYPE_MODULES must set it.
    """

    name: str
    parse: Callable[[Any], Any]
    summary: str
    handler: Callable[[Any], str] | None = None
    cpu_bound: bool = False


JOB_TYPES: dict[str, JobType] = {
    t.name: t
    for t in (
        JobType("reverse_string", text, "a string; the result is the string reversed"),
        JobType("uppercase_text", text, "a string; the result is the string upper-cased"),
        JobType(
            "fibonacci_calc",
            fibonacci_n,
            f"a whole number 0..{MAX_FIBONACCI_N}; the result is F(n)",
        ),
    )
}


def parse_payload(job_type: str, payload: Any) -> Any:
    """The typed input for ``job_type``; raises KeyError for an unknown type, PayloadError for a bad payload."""
    return JOB_TYPES[job_type].parse(payload)


def module_names(value: str) -> tuple[str, ...]:
    """The module names in a JOB_TYPE_MODULES value (comma-separated, blanks ignored); SettingsError if malformed."""
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    for name in names:
        if not _MODULE_NAME.fullmatch(name):
            raise SettingsError(f"{MODULES_VARIABLE}: {name!r} is not a module name (dotted, like my_company.jobs)")
    if len(set(names)) != len(names):
        raise SettingsError(f"{MODULES_VARIABLE}: a module is listed twice in {value!r}")
    return names


def _types_of(module_name: str) -> list[JobType]:
    """The job types a module declares, checked against the module contract (see the module doc)."""
    where = f"{MODULES_VARIABLE}: module {module_name!r}"
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        # Any exception, not just ImportError: a module that fails while importing
        # must stop the service now, with its name, rather than at the first job.
        raise SettingsError(f"{where} cannot be imported ({type(error).__name__}: {error})") from error
    declared = getattr(module, "JOB_TYPES", None)
    if not isinstance(declared, list | tuple) or not all(isinstance(t, JobType) for t in declared):
        raise SettingsError(f"{where} must define JOB_TYPES, a list of common.job_types.JobType")
    for job_type in declared:
        if not isinstance(job_type.name, str) or not NAME_PATTERN.fullmatch(job_type.name):
            raise SettingsError(
                f"{where}: job type name {job_type.name!r} must be lowercase letters, digits and _ "
                "(at most 63, starting with a letter)"
            )
        if not callable(job_type.parse):
            raise SettingsError(f"{where}: job type {job_type.name!r} has no callable parse rule")
        if job_type.handler is None or not callable(job_type.handler):
            raise SettingsError(f"{where}: job type {job_type.name!r} has no handler")
    return list(declared)


def load_modules(names: Sequence[str], registry: dict[str, JobType] | None = None) -> list[JobType]:
    """Import the JOB_TYPE_MODULES ``names`` and add their job types to ``registry`` (default: JOB_TYPES).

    All or nothing: every module is imported and checked before any type is
    added, so a refusal leaves ``registry`` as it was. Returns the added types.
    Raises SettingsError, naming the module, for anything the contract refuses,
    including a type name that is already taken (built-in or from another module).
    """
    target = JOB_TYPES if registry is None else registry
    added: dict[str, tuple[str, JobType]] = {}
    for module_name in names:
        for job_type in _types_of(module_name):
            where = f"{MODULES_VARIABLE}: module {module_name!r} declares job type {job_type.name!r}"
            if job_type.name in target:
                raise SettingsError(f"{where}, which already exists")
            if job_type.name in added:
                raise SettingsError(f"{where}, which module {added[job_type.name][0]!r} declares too")
            added[job_type.name] = (module_name, job_type)
    target.update((name, job_type) for name, (_, job_type) in added.items())
    return [job_type for _, job_type in added.values()]
