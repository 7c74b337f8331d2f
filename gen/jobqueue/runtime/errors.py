"""The error categories every service's own errors derive from, and their gRPC status.

Domain code raises these (or a service's subclasses of them) and never touches
the gRPC context; the server's interceptor turns them into a status with a
google.rpc.ErrorInfo (machine-readable reason) and, for bad input, a
google.rpc.BadRequest naming each offending field. The table at the bottom is
the one place a category meets a status code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc

ERROR_DOMAIN = "jobqueue"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. ``payload``) and what is wrong with it."""

    field: str
    description: str


class ServiceError(Exception):
    """Base of every error a service deliberately returns to a caller."""

    #: Machine-readable cause in UPPER_SNAKE_CASE, sent as ErrorInfo.reason.
    reason = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(ServiceError):
    """Raised when a request is malformed; carries one violation per bad field."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Iterable[FieldViolation], *, reason: str | None = None) -> None:
        self.violations = tuple(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(summary or "invalid request", reason=reason)


class Unauthenticated(ServiceError):
    """Raised when a call carries no credential, or one that is not valid."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    """Raised when a valid credential is not allowed to make this call."""

    reason = "PERMISSION_DENIED"


class NotFound(ServiceError):
    """Raised when the named thing does not exist, or belongs to someone else."""

    reason = "NOT_FOUND"


class AlreadyExists(ServiceError):
    """Raised when a create would duplicate something unique."""

    reason = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    """Raised when the thing exists but is not in a state that allows the call."""

    reason = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    """Raised when a limit is reached; retrying later may succeed.

    ``retry_after`` (seconds) is when: the caller receives it as a google.rpc.RetryInfo.
    """

    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, reason: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class Aborted(ServiceError):
    """Raised when a call was cut short by something the caller should start over from (a watch that fell behind)."""

    reason = "ABORTED"


class Unavailable(ServiceError):
    """Raised when a dependency (database, broker) cannot be reached; safe to retry."""

    reason = "UNAVAILABLE"


STATUS_OF: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Aborted: grpc.StatusCode.ABORTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code(error: ServiceError) -> grpc.StatusCode:
    """The gRPC status for an error: that of the nearest category in its class hierarchy."""
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.UNKNOWN


#: Every status code by its number (google.rpc.Code), the form protobuf messages carry it in.
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def code_number(code: grpc.StatusCode) -> int:
    """The number of a status code, as a protobuf field (UpdateJobsResult.code, google.rpc.Status.code) holds it."""
    number: int = code.value[0]
    return number


def code_from_number(number: int) -> grpc.StatusCode:
    """The status code a number stands for; UNKNOWN for a number gRPC does not define."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)
