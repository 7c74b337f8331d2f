"""Worker: the job types one worker runs, each a decorated handler, and how to run them.

Defining the types does no I/O and imports none of the runtime (AMQP, gRPC
servers), since a user's module is imported by every handler process too; the
runtime is imported by ``run`` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

from jobqueue.worker.job_types import JobType, define

Handler = TypeVar("Handler", bound=Callable[..., Any])


class Worker:
    """The job types a worker runs; ``@worker.job_type(...)`` adds one, ``worker.run()`` runs them.

    ``python -m jobqueue.worker myapp:worker`` runs the Worker named ``worker``
    in module ``myapp``, as ``worker.run()`` would.
    """

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}

    @property
    def types(self) -> Mapping[str, JobType]:
        """The job types, by name (read-only)."""
        return MappingProxyType(self._types)

    def job_type(
        self,
        name: str,
        *,
        schema: Any,
        summary: str = "",
        version: int = 1,
        timeout_seconds: int | None = None,
        max_attempts: int | None = None,
        inline_if: Callable[[Any], bool] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Make the decorated function the handler of job type ``name``; it is returned unchanged.

        - The handler takes ``(payload)`` or ``(payload, job)``, ``job`` being a
          JobContext (the attempt number; ``await job.progress(...)``). It returns
          the job's result, any JSON value; a string is stored exactly as it is.
          Raising PermanentError fails the job; any other exception fails this
          attempt, and the job is retried while it has attempts left.
        - ``async def``: it runs on the worker's event loop, for I/O; it must not
          block. A plain ``def`` is CPU-bound: it runs in one of the worker's
          handler processes (HANDLER_PROCESSES), so it must be defined at the top
          level of a module that process can import. A cancelled or timed-out job
          stops either way (a handler process is killed and replaced).
        - ``schema``: the payload's JSON Schema (a dict), or a model class with
          ``model_json_schema`` and ``model_validate`` (a pydantic model): its
          schema is declared and the handler gets the validated model. The job
          service refuses a payload that breaks it (CreateJob); the worker checks
          it again and fails the job for good if it does not fit. Whole JSON
          numbers reach the handler as ints.
        - ``summary``: what the payload is and what the result is, for a person
          (ListJobTypes shows it); ``version``: raise it whenever the schema,
          summary or defaults change. ``timeout_seconds`` and ``max_attempts``:
          what a job gets when its CreateJob leaves them at 0 (None: the job
          service's defaults, 60 s and 3).
        - ``inline_if``: for a plain handler, a predicate on the parsed payload
          that is true for inputs so small that running them on the event loop
          costs less than a handler process's round trip.

        ValueError or TypeError at once for anything malformed, or a name taken.
        """

        def register(handler: Handler) -> Handler:
            if name in self._types:
                raise ValueError(f"job type {name!r} is defined twice")
            self._types[name] = define(
                name,
                handler,
                schema=schema,
                summary=summary,
                version=version,
                timeout_seconds=timeout_seconds,
                max_attempts=max_attempts,
                inline_if=inline_if,
            )
            return handler

        return register

    def include(self, other: Worker) -> None:
        """Run ``other``'s job types too (ValueError for a name both define)."""
        if taken := sorted(self._types.keys() & other._types.keys()):
            raise ValueError(f"job types defined twice: {taken}")
        self._types.update(other._types)

    def run(self, argv: Sequence[str] | None = None, *, name: str = "jobqueue.worker", prog: str | None = None) -> int:
        """Run the worker until SIGTERM or SIGINT; returns the exit code (jobqueue.runtime.service).

        Its settings come from the environment (``python -m jobqueue.worker
        --help`` lists them); ``argv`` takes nothing but ``--help``. ``name``
        names the worker in its logs.
        """
        # Here, not at the top: see the module doc.
        from jobqueue.runtime import service  # noqa: PLC0415
        from jobqueue.worker.serve import DESCRIPTION, serve  # noqa: PLC0415
        from jobqueue.worker.settings import Settings  # noqa: PLC0415

        types = dict(self._types)

        async def run_types(settings: Settings, supervisor: service.Supervisor) -> None:
            await serve(types, settings, supervisor)

        return service.run(name, Settings, run_types, description=DESCRIPTION, argv=argv, prog=prog)
