"""The errors the auth service returns; each derives from a jobqueue.runtime.errors category, which sets its status."""

from __future__ import annotations

from jobqueue.runtime.errors import AlreadyExists, Unauthenticated


class EmailTaken(AlreadyExists):
    """Raised when Register is given an email (compared case-insensitively) that already has an account."""

    reason = "EMAIL_TAKEN"

    def __init__(self) -> None:
        super().__init__("an account with this email already exists")


class InvalidCredentials(Unauthenticated):
    """Raised when Login's email has no account or its password does not match; the two are indistinguishable."""

    reason = "INVALID_CREDENTIALS"

    def __init__(self) -> None:
        super().__init__("invalid email or password")
