"""Job types' payload JSON Schemas: checking a declaration, compiling a schema, checking a payload against it.

A worker declares each type it runs with a JSON Schema (DeclareJobTypes);
``check_declarations`` refuses what the service will not hold, naming the
field. ``compile_schema`` builds the validator of a schema once (the registry
caches it per name and version): its class comes from the schema's
``$schema`` (draft 2020-12 without one), and its references resolve only
inside the schema and to the drafts' own meta-schemas: a ``$ref`` to any other
document is refused at declaration and never fetched, since fetching would let
a schema make the service call any URL.

``payload_violations`` is CreateJob's check, on its hot path: the generic
rules every type shares (present, at most MAX_PAYLOAD_BYTES as JSON, no NUL
anywhere: PostgreSQL's jsonb cannot store it), then ``is_valid``, and only for
an invalid payload the list of errors, each on the path of the value it
concerns (``payload.items[2].name``) with any echoed value cut, because errors
travel in trailers.

Pure functions, no I/O: unit-tested directly (tests/unit/test_job_schemas.py).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import jsonschema
import referencing
import referencing.exceptions
from jsonschema import validators
from jsonschema.protocols import Validator
from referencing.jsonschema import DRAFT202012, specification_with

from job_svc.errors import PayloadUncheckable
from job_svc.model import DeclaredType
from job_svc.rules import MAX_ECHOED_CHARS, MAX_VIOLATIONS, compact_json, echoed
from jobqueue.runtime.errors import FieldViolation, InvalidArgument
from jobqueue.runtime.limits import MAX_ATTEMPTS, MAX_SCHEMA_BYTES, MAX_SUMMARY_CHARS, MAX_TIMEOUT_SECONDS, NAME_PATTERN

#: Largest payload, as compact JSON (UTF-8 bytes).
MAX_PAYLOAD_BYTES = 1 << 20
#: Most types one DeclareJobTypes call may declare.
MAX_DECLARED_TYPES = 100
#: Longest description of one schema violation, whatever the schema's own values (an enum's list, say) make it.
MAX_DESCRIPTION_CHARS = 300
#: A key that reads as-is in a path: ``payload.items``; any other is quoted: ``payload["two words"]``.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The validator class of a schema that names no ``$schema``.
DEFAULT_VALIDATOR: type[Validator] = jsonschema.Draft202012Validator


class UnresolvableSchema(ValueError):
    """Raised when a schema's reference cannot be resolved without fetching another document."""


@dataclass(frozen=True)
class CompiledSchema:
    """A type's schema, ready to check payloads."""

    validator: Validator

    def violations(self, payload: Any, field: str = "payload") -> list[FieldViolation]:
        """Why ``payload`` does not satisfy the schema (empty if it does); at most MAX_VIOLATIONS, then a count note.

        ``is_valid`` first: most payloads are valid, and it stops at the first
        error without building any.
        """
        try:
            if self.validator.is_valid(payload):
                return []
            errors = list(itertools.islice(self.validator.iter_errors(payload), MAX_VIOLATIONS + 1))
        except referencing.exceptions.Unresolvable as error:
            # Declarations are refused with such a reference; one nested under another $id may slip through.
            raise PayloadUncheckable(
                f"the job type's schema has a reference that does not resolve: {echoed(str(error))}"
            ) from None
        found = [FieldViolation(path(field, error.absolute_path), _description(error)) for error in errors]
        if len(found) > MAX_VIOLATIONS:
            return [*found[:MAX_VIOLATIONS], FieldViolation(field, "more violations are not listed")]
        return found


def compile_schema(schema: dict[str, Any]) -> CompiledSchema:
    """The validator of a checked schema (see ``check_schema``), which never fetches a reference."""
    cls = validator_class(schema)
    assert cls is not None, "compile only schemas check_schema accepted"
    # An empty registry retrieves nothing; jsonschema adds the drafts' meta-schemas to it itself. Without
    # a registry of ours it would fetch unknown references over HTTP.
    return CompiledSchema(cls(schema, registry=referencing.Registry()))


def validator_class(schema: dict[str, Any]) -> type[Validator] | None:
    """The validator class ``$schema`` names (draft 2020-12 without one); None for a ``$schema`` jsonschema lacks."""
    if "$schema" not in schema:
        return DEFAULT_VALIDATOR
    # default=None (not a class, hence the cast) tells an unknown $schema apart; without a default,
    # jsonschema would warn and use the latest draft.
    found = validators.validator_for(schema, default=cast(Any, None))
    return cast("type[Validator] | None", found)


def check_schema(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` cannot be a payload schema, or None if it can."""
    if len(compact_json(schema).encode()) > MAX_SCHEMA_BYTES:
        return f"must be at most {MAX_SCHEMA_BYTES} bytes as JSON"
    cls = validator_class(schema)
    if cls is None:
        return f"$schema {echoed(str(schema['$schema']))} is not a JSON Schema draft this service knows"
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as error:
        return f"is not a valid JSON Schema: {_description(error)} (at {path('schema', error.absolute_path)})"
    try:
        _check_references(schema)
    except UnresolvableSchema as error:
        return str(error)
    return None


def _check_references(schema: dict[str, Any]) -> None:
    """Raise UnresolvableSchema for a ``$ref`` that does not resolve inside the schema.

    Each reference is resolved from the schema's root (a relative one under a nested ``$id`` may be
    refused though validation would resolve it: refusing is the safe side), in a registry that
    holds this schema alone and retrieves nothing.
    """
    resource = specification_with(str(schema.get("$schema", "")), default=DRAFT202012).create_resource(schema)
    base = resource.id() or ""
    resolver = referencing.Registry().with_resource(base, resource).crawl().resolver(base_uri=base)
    for reference in _references(schema):
        try:
            resolver.lookup(reference)
        except referencing.exceptions.Unresolvable:
            raise UnresolvableSchema(
                f"$ref {echoed(reference)} does not resolve inside the schema; references to other documents"
                " are not followed"
            ) from None


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("$ref", "$dynamicRef") and isinstance(item, str):
                yield item
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def check_declarations(types: Sequence[DeclaredType]) -> None:
    """INVALID_ARGUMENT, naming each bad field (``job_types[i].name``), unless ``types`` may be declared."""
    if not 1 <= len(types) <= MAX_DECLARED_TYPES:
        raise InvalidArgument([FieldViolation("job_types", f"must hold 1 to {MAX_DECLARED_TYPES} job types")])
    violations: list[FieldViolation] = []
    seen: set[str] = set()
    for i, declared in enumerate(types):
        field = f"job_types[{i}]"
        if not NAME_PATTERN.fullmatch(declared.name):
            violations.append(
                FieldViolation(
                    f"{field}.name",
                    f"{echoed(declared.name)} must be lowercase letters, digits and _, at most 63, starting with"
                    " a letter",
                )
            )
        elif declared.name in seen:
            violations.append(FieldViolation(f"{field}.name", f"{echoed(declared.name)} is declared twice"))
        seen.add(declared.name)
        if len(declared.summary) > MAX_SUMMARY_CHARS:
            violations.append(FieldViolation(f"{field}.summary", f"must be at most {MAX_SUMMARY_CHARS} characters"))
        if "\x00" in declared.summary:
            violations.append(FieldViolation(f"{field}.summary", "must not contain NUL characters"))
        if declared.version < 1:
            violations.append(FieldViolation(f"{field}.version", "must be 1 or more"))
        if not 0 <= declared.default_max_attempts <= MAX_ATTEMPTS:
            violations.append(
                FieldViolation(f"{field}.default_max_attempts", f"must be 1 to {MAX_ATTEMPTS}, or 0 for the default")
            )
        if not 0 <= declared.default_timeout_seconds <= MAX_TIMEOUT_SECONDS:
            violations.append(
                FieldViolation(
                    f"{field}.default_timeout_seconds", f"must be 1 to {MAX_TIMEOUT_SECONDS}, or 0 for the default"
                )
            )
        nul = _nul_path(declared.payload_schema, f"{field}.payload_schema")
        reason = f"holds a NUL character at {nul}" if nul else check_schema(declared.payload_schema)
        if reason:
            violations.append(FieldViolation(f"{field}.payload_schema", reason))
    if violations:
        raise InvalidArgument(violations[:MAX_VIOLATIONS])


def generic_violation(payload: Any) -> FieldViolation | None:
    """What breaks the rules every payload follows, whatever its type: present, small enough, no NUL."""
    if payload is None:
        return FieldViolation("payload", "is required")
    # A number is small, and a string's JSON is at most 6 bytes a character (\uXXXX): only a long
    # string, a list or an object needs encoding to be sized.
    short = not isinstance(payload, str | list | dict) or (
        isinstance(payload, str) and len(payload) * 6 + 2 <= MAX_PAYLOAD_BYTES
    )
    if not short and len(compact_json(payload).encode("utf-8", "surrogatepass")) > MAX_PAYLOAD_BYTES:
        return FieldViolation("payload", f"must be at most {MAX_PAYLOAD_BYTES} bytes as JSON")
    nul = _nul_path(payload, "payload")
    if nul is not None:
        return FieldViolation(nul, "must not contain NUL characters (U+0000)")
    return None


def _nul_path(value: Any, at: str) -> str | None:
    """The path of the first string or key holding NUL inside ``value``, or None."""
    if isinstance(value, str):
        return at if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = path(at, [key])
            if "\x00" in key:
                return inner
            found = _nul_path(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{at}[{index}]")
            if found is not None:
                return found
    return None


def path(field: str, steps: Sequence[str | int] | Any) -> str:
    """The path of a value inside ``field``, as a FieldViolation names it: ``payload.items[2].name``."""
    text = field
    for step in steps:
        if isinstance(step, int):
            text += f"[{step}]"
        elif _PLAIN_KEY.fullmatch(step) and len(step) <= MAX_ECHOED_CHARS:
            text += f".{step}"
        else:
            key = step if len(step) <= MAX_ECHOED_CHARS else f"{step[:MAX_ECHOED_CHARS]}..."
            text += f"[{json.dumps(key)}]"
    return text


def _description(error: jsonschema.ValidationError | jsonschema.SchemaError) -> str:
    """jsonschema's message, with the value it quotes cut to an echo's length, and the whole bounded."""
    message = error.message
    quoted = repr(error.instance)
    if len(quoted) > MAX_ECHOED_CHARS + 2:
        short = echoed(error.instance) if isinstance(error.instance, str) else f"{quoted[:MAX_ECHOED_CHARS]}..."
        message = message.replace(quoted, short)
    if len(message) > MAX_DESCRIPTION_CHARS:
        message = f"{message[:MAX_DESCRIPTION_CHARS]}..."
    return message
