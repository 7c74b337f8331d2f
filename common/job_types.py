"""The job types a worker runs: each one's payload JSON Schema, the rule that parses its payload, its handler.

A payload is a JSON value (google.protobuf.Value on the wire). A type's
``schema`` is what the job service checks it against: the worker declares each
type it runs, schema included, when it starts (DeclareJobTypes), and the job
service never imports this code. The type's ``parse`` rule turns a payload the
schema accepted into its handler's typed input (or refuses it, failing the job
for good). ``JobTypes`` is the one registry of types a worker knows, built
once at start (``JobTypes.load``) from the built-in types and the modules named
in JOB_TYPE_MODULES, then passed to what needs it; it never changes after that.

The built-in types' rules and schemas are here, ``BUILTIN_TYPES``; the worker
attaches their handlers (worker_svc/handlers.py). The database is installed
with the same three schemas (migrations/0010_job_types.sql), so CreateJob
accepts them before any worker has declared them.

The contract of a JOB_TYPE_MODULES module (the workers read the variable): it
is importable by its dotted name, has no side effects worth fearing when
imported (it is imported by each worker and each worker's handler processes),
and exposes ``JOB_TYPES``, a list of JobType values each carrying its own
``handler`` and ``schema``. ``JobTypes.load`` refuses (SettingsError) a module
it cannot import, one without a proper ``JOB_TYPES``, and a name that is
malformed or taken.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, overload

from common.settings import SettingsError

#: Longest string payload, in characters (the schemas' maxLength, which counts characters, not bytes).
MAX_TEXT_CHARS = 65_536
#: Largest n for fibonacci_calc: F(100000) has 20,899 digits and takes milliseconds.
MAX_FIBONACCI_N = 100_000


class PayloadError(ValueError):
    """Raised by a payload rule when the payload does not fit the job type."""


def text(payload: Any) -> str:
    """A string of at most MAX_TEXT_CHARS characters, without NUL characters."""
    if not isinstance(payload, str):
        raise PayloadError("must be a string")
    if len(payload) > MAX_TEXT_CHARS:
        raise PayloadError(f"must be at most {MAX_TEXT_CHARS} characters")
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


_Default = TypeVar("_Default")

#: The shape of a type name; the jobs table checks the same (migrations/0002_jobs.sql).
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,62}")
#: The environment variable naming the modules of extra job types.
MODULES_VARIABLE = "JOB_TYPE_MODULES"
#: A dotted Python module name, as JOB_TYPE_MODULES lists them.
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


#: A JSON Schema, as a JSON object.
Schema = dict[str, Any]


@dataclass(frozen=True)
class JobType:
    """A job type: its name, its payload's schema, the rule that converts its payload, and how its handler runs.

    ``schema`` is the JSON Schema (draft 2020-12 unless its ``$schema`` says
    otherwise) the job service checks every payload against, as the worker
    declares it; ``version`` is the declaration's, to raise whenever the
    schema, summary or defaults change (the job service refuses the same
    version declared differently). ``default_max_attempts`` and
    ``default_timeout_seconds`` are what a job of the type gets when CreateJob
    asks for none (0: the service's own defaults).

    ``parse`` takes the JSON payload and returns the handler's input (picklable:
    it may cross into a handler process) or raises PayloadError, which is a
    permanent failure: CreateJob answers INVALID_ARGUMENT, and a worker fails
    the job without retrying. ``handler`` takes that input and returns the
    result text; any exception it raises fails the attempt as *retryable*, so
    the job is retried until it has had its max_attempts, then it is FAILED and
    its message goes to ``<queue>.dead``. A handler declared ``takes_attempt``
    is called ``handler(input, attempt)``, with the number of the attempt it
    runs (1 for the first; it keeps counting across re-runs, as the job's
    ``attempts`` does). ``cpu_bound`` handlers run in the
    worker's process pool, the others on its event loop (they must be quick);
    ``small``, if set, tells which inputs of a cpu_bound handler are so small
    that a pool round trip (a few hundred microseconds) would cost more than
    computing them on the event loop.

    A type from JOB_TYPE_MODULES must set ``handler``; the built-in types get
    theirs from the worker (``with_handler``).
    """

    name: str
    parse: Callable[[Any], Any]
    summary: str
    #: ``handler(input)``, or ``handler(input, attempt)`` if ``takes_attempt``.
    handler: Callable[..., str] | None = None
    cpu_bound: bool = False
    small: Callable[[Any], bool] | None = None
    takes_attempt: bool = False
    # Keyword-only, so that every type names its schema however its other fields are given.
    schema: Schema = field(kw_only=True)
    version: int = field(default=1, kw_only=True)
    default_max_attempts: int = field(default=0, kw_only=True)
    default_timeout_seconds: int = field(default=0, kw_only=True)

    def with_handler(
        self, handler: Callable[[Any], str], *, cpu_bound: bool = False, small: Callable[[Any], bool] | None = None
    ) -> JobType:
        """This type, run by ``handler``."""
        return replace(self, handler=handler, cpu_bound=cpu_bound, small=small)


#: The schema of the built-in types that take a string.
TEXT_SCHEMA: Schema = {"type": "string", "maxLength": MAX_TEXT_CHARS}

#: The built-in types' payload rules and schemas, without handlers (see the module doc).
BUILTIN_TYPES: tuple[JobType, ...] = (
    JobType("reverse_string", text, "a string; the result is the string reversed", schema=TEXT_SCHEMA),
    JobType("uppercase_text", text, "a string; the result is the string upper-cased", schema=TEXT_SCHEMA),
    JobType(
        "fibonacci_calc",
        fibonacci_n,
        f"a whole number 0..{MAX_FIBONACCI_N}; the result is F(n)",
        schema={"type": "integer", "minimum": 0, "maximum": MAX_FIBONACCI_N},
    ),
)


class JobTypes(Mapping[str, JobType]):
    """The job types a process knows, by name; immutable once built."""

    def __init__(self, types: Iterable[JobType], modules: Sequence[str] = ()) -> None:
        by_name: dict[str, JobType] = {}
        for job_type in types:
            if job_type.name in by_name:
                raise ValueError(f"job type {job_type.name!r} is given twice")
            by_name[job_type.name] = job_type
        self._types = by_name
        self._modules = tuple(modules)

    @property
    def modules(self) -> tuple[str, ...]:
        """The JOB_TYPE_MODULES the types came from, so that another process (a handler process) can load the same."""
        return self._modules

    @classmethod
    def load(cls, module_names: Sequence[str] = (), builtins: Iterable[JobType] = BUILTIN_TYPES) -> JobTypes:
        """The ``builtins`` and the types of the JOB_TYPE_MODULES ``module_names``.

        Every module is imported and checked against the contract (see the
        module doc); SettingsError, naming the module, for anything it refuses,
        including a type name that is already taken (built-in or from another
        module).
        """
        known = {job_type.name: job_type for job_type in builtins}
        added: dict[str, tuple[str, JobType]] = {}
        for module_name in module_names:
            for job_type in _types_of(module_name):
                where = f"{MODULES_VARIABLE}: module {module_name!r} declares job type {job_type.name!r}"
                if job_type.name in known:
                    raise SettingsError(f"{where}, which already exists")
                if job_type.name in added:
                    raise SettingsError(f"{where}, which module {added[job_type.name][0]!r} declares too")
                added[job_type.name] = (module_name, job_type)
        return cls([*known.values(), *(job_type for _, job_type in added.values())], module_names)

    def __getitem__(self, name: str) -> JobType:
        return self._types[name]

    # __contains__ and get are the dict's own: Mapping's would cost a Python call and a try per job.
    def __contains__(self, name: object) -> bool:
        return name in self._types

    @overload
    def get(self, name: str, /) -> JobType | None: ...
    @overload
    def get(self, name: str, default: JobType | _Default, /) -> JobType | _Default: ...
    def get(self, name: str, default: object = None, /) -> object:
        return self._types.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def __repr__(self) -> str:
        return f"JobTypes({sorted(self._types)!r}, modules={self.modules!r})"

    def parse(self, job_type: str, payload: Any) -> Any:
        """The typed input for ``job_type``; raises KeyError for an unknown type, PayloadError for a bad payload."""
        return self._types[job_type].parse(payload)


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
        if not isinstance(job_type.schema, dict):
            raise SettingsError(f"{where}: job type {job_type.name!r} has no schema (a JSON Schema, as a dict)")
    return list(declared)
