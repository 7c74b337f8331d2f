"""A job type as a worker defines it: its handler, its payload's JSON Schema, its defaults; checked when declared.

``Worker.job_type`` (jobqueue.worker.app) builds one per decorated handler and
refuses, at import of the user's module, anything the job service would refuse
later or the worker could not run: a malformed name, a schema that is not a
JSON Schema, a handler that takes neither ``(payload)`` nor ``(payload, job)``.

A payload reaches the handler checked twice: by the job service at CreateJob,
against the schema the worker declared, and here again, against this worker's
own schema, since another declaration of the type (another worker's, of
another version) may have let it in. A payload that fails here fails its job permanently
(PayloadError): running it again would fail the same way.

This module runs in the handler processes too, so it imports no I/O machinery (AMQP, gRPC).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import exceptions as schema_errors
from jsonschema import validators
from jsonschema.protocols import Validator

from jobqueue.runtime.limits import (
    MAX_ATTEMPTS,
    MAX_SCHEMA_BYTES,
    MAX_SUMMARY_CHARS,
    MAX_TIMEOUT_SECONDS,
    NAME_PATTERN,
)

#: Integers a JSON number (a double on the wire) holds exactly.
_EXACT_INTEGERS = 2**53


class PermanentError(Exception):
    """Raise it (or a subclass) from a handler to fail the job at once, without retrying.

    The job's error is its type and message (``PermanentError: no such mailbox``).

    Any other exception a handler raises fails only the attempt, and the job is
    retried while it has attempts left.
    """


class PayloadError(ValueError):
    """Raised when a payload does not fit its type's schema or model (a permanent failure)."""


@dataclass(frozen=True)
class JobType:
    """One job type a worker runs; see ``Worker.job_type`` for what each field means to a user."""

    name: str
    handler: Callable[..., Any]
    #: The payload's JSON Schema, as declared to the job service.
    schema: Mapping[str, Any]
    summary: str = ""
    version: int = 1
    #: None: the job service's default.
    timeout_seconds: int | None = None
    max_attempts: int | None = None
    #: A class with ``model_validate`` (a pydantic model, say) the payload is turned into; None: the plain JSON value.
    model: Any = None
    #: ``async def`` handlers run on the event loop; the others in a handler process.
    is_async: bool = False
    #: Whether the handler takes the JobContext as its second argument.
    takes_job: bool = False
    #: For a handler run in a handler process: the inputs so small it runs on the event loop instead.
    inline_if: Callable[[Any], bool] | None = None
    _validator: Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_validator", validators.validator_for(self.schema)(self.schema))

    def parse(self, payload: Any) -> Any:
        """The handler's input for a JSON ``payload``: checked against the schema, then the model; PayloadError."""
        value = whole_numbers(payload)
        # is_valid first: most payloads are valid, and it builds no error on the way.
        if not self._validator.is_valid(value) and (
            error := schema_errors.best_match(self._validator.iter_errors(value))
        ):
            where = "".join(f"[{part!r}]" for part in error.absolute_path)
            raise PayloadError(f"payload{where}: {error.message}")
        if self.model is None:
            return value
        try:
            return self.model.model_validate(value)
        except Exception as invalid:  # whatever the model raises, the payload does not fit it
            raise PayloadError(f"payload: {invalid}") from invalid

    def runs_inline(self, value: Any) -> bool:
        """Whether the handler runs on the event loop for this (parsed) input."""
        return self.is_async or (self.inline_if is not None and bool(self.inline_if(value)))


def define(
    name: str,
    handler: Callable[..., Any],
    *,
    schema: Any,
    summary: str = "",
    version: int = 1,
    timeout_seconds: int | None = None,
    max_attempts: int | None = None,
    inline_if: Callable[[Any], bool] | None = None,
) -> JobType:
    """The JobType of a decorated handler, checked; ValueError or TypeError saying what is wrong."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"job type name {name!r} must be lowercase letters, digits and _, at most 63, starting with a letter"
        )
    where = f"job type {name!r}"
    if not callable(handler):
        raise TypeError(f"{where}: the handler must be a function")
    is_async = inspect.iscoroutinefunction(handler)
    takes_job = _takes_job(handler, where)
    if inline_if is not None and is_async:
        raise ValueError(f"{where}: inline_if is for plain (CPU-bound) handlers; an async one always runs inline")
    model = None
    if isinstance(schema, type) and callable(to_schema := getattr(schema, "model_json_schema", None)):
        if not callable(getattr(schema, "model_validate", None)):
            raise TypeError(f"{where}: the model class {schema.__name__} has no model_validate")
        model, schema = schema, to_schema()
    _check_schema(schema, where)
    if not isinstance(summary, str) or len(summary) > MAX_SUMMARY_CHARS:
        raise ValueError(f"{where}: summary must be text of at most {MAX_SUMMARY_CHARS} characters")
    _check_whole(version, 1, 2**31 - 1, f"{where}: version")
    if timeout_seconds is not None:
        _check_whole(timeout_seconds, 1, MAX_TIMEOUT_SECONDS, f"{where}: timeout_seconds")
    if max_attempts is not None:
        _check_whole(max_attempts, 1, MAX_ATTEMPTS, f"{where}: max_attempts")
    return JobType(
        name,
        handler,
        schema,
        summary,
        version,
        timeout_seconds,
        max_attempts,
        model,
        is_async,
        takes_job,
        inline_if,
    )


def _takes_job(handler: Callable[..., Any], where: str) -> bool:
    """Whether ``handler`` is ``f(payload, job)`` rather than ``f(payload)``; TypeError if it is neither."""
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        raise TypeError(f"{where}: the handler's signature cannot be read") from None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required_keywords = [p for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if required_keywords or len(positional) not in (1, 2):
        raise TypeError(f"{where}: the handler must take (payload) or (payload, job)")
    return len(positional) == 2


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, Mapping):
        raise TypeError(f"{where}: schema must be a JSON Schema (a dict) or a model class with model_json_schema")
    try:
        encoded = json.dumps(schema, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{where}: schema is not JSON ({error})") from None
    if len(encoded.encode()) > MAX_SCHEMA_BYTES:
        raise ValueError(f"{where}: schema is larger than {MAX_SCHEMA_BYTES} bytes as JSON")
    try:
        validators.validator_for(schema).check_schema(dict(schema))
    except schema_errors.SchemaError as error:
        raise ValueError(f"{where}: schema is not a valid JSON Schema: {error.message}") from None


def _check_whole(value: Any, low: int, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}")


def whole_numbers(value: Any) -> Any:
    """``value`` with every whole JSON number an int, as json.loads would give it.

    On the wire every number is a double (google.protobuf.Value), so 10 arrives
    as 10.0; a handler expecting a count or an index should get 10.
    """
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) <= _EXACT_INTEGERS:
        return int(value)
    if isinstance(value, dict):
        return {key: whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_numbers(item) for item in value]
    return value
