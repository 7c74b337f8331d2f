"""What Register and Login accept: the rules for email, password and name, and their normal forms.

Every rule is checked and every bad field reported at once (one violation per
field), so a caller can fix a request in one round trip.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from auth_svc.passwords import MAX_PASSWORD_BYTES
from jobqueue.runtime.errors import FieldViolation, InvalidArgument

MAX_EMAIL_CHARS = 254
MAX_EMAIL_LOCAL_CHARS = 64
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 128
MAX_NAME_CHARS = 100

# Addresses are ASCII (no SMTPUTF8): lower-casing is then the same in Python and
# in PostgreSQL under any collation, which the users table's CHECK relies on.
# Internationalised domains still fit in their punycode (xn--) form.
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EMAIL = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?:{_LABEL}\.)+[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])")

# Line and paragraph separators break a name across lines in logs and UIs just
# as a newline would, so they count as control characters here.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


@dataclass(frozen=True)
class Registration:
    """A Register request that passed every rule, in normal form."""

    email: str
    password: str = field(repr=False)
    name: str


def normalise_email(email: str) -> str:
    """The stored form of an email: surrounding whitespace removed, lower-cased."""
    return email.strip().lower()


def email_problem(email: str) -> str | None:
    """Why a normalised email is not acceptable, or None if it is."""
    if not email:
        return "must not be empty"
    if len(email) > MAX_EMAIL_CHARS:
        return f"must be at most {MAX_EMAIL_CHARS} characters"
    match = _EMAIL.fullmatch(email)
    if match is None or len(match["local"]) > MAX_EMAIL_LOCAL_CHARS:
        return "must be an email address such as name@example.com"
    return None


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable, or None if it is."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"must be at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"must be at most {MAX_PASSWORD_CHARS} characters"
    # Checked here, not left to bcrypt (which raises ValueError), so the caller
    # learns which field is wrong instead of getting INTERNAL.
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return f"must be at most {MAX_PASSWORD_BYTES} bytes once UTF-8 encoded (non-ASCII characters take 2-4 bytes)"
    return None


def normalise_name(name: str) -> str:
    """The stored form of a display name: surrounding whitespace removed."""
    return name.strip()


def name_problem(name: str) -> str | None:
    """Why a normalised display name is not acceptable, or None if it is."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_CHARS:
        return f"must be at most {MAX_NAME_CHARS} characters"
    if any(unicodedata.category(char) in _CONTROL_CATEGORIES for char in name):
        return "must not contain control characters"
    return None


def _raise_if_any(problems: dict[str, str | None]) -> None:
    violations = [FieldViolation(name, problem) for name, problem in problems.items() if problem is not None]
    if violations:
        raise InvalidArgument(violations)


def check_registration(email: str, password: str, name: str) -> Registration:
    """The normal form of a Register request; raises InvalidArgument naming every bad field."""
    registration = Registration(normalise_email(email), password, normalise_name(name))
    _raise_if_any(
        {
            "email": email_problem(registration.email),
            "password": password_problem(registration.password),
            "name": name_problem(registration.name),
        }
    )
    return registration


def login_email_problem(email: str) -> str | None:
    """Why a normalised Login email cannot name any account, or None if it may."""
    if not email:
        return "must not be empty"
    # PostgreSQL text cannot hold a NUL, so it cannot even be compared; no account's email has one
    # (email_problem refuses it), so refusing it tells a caller nothing about which emails exist.
    if "\x00" in email:
        return "must not contain NUL characters"
    return None


def check_login(email: str, password: str) -> str:
    """The normalised email of a Login request; raises InvalidArgument if a field is missing or unusable.

    Only emptiness, and an email the database cannot even look up, are checked:
    anything else wrong with the credentials gets the one generic
    UNAUTHENTICATED answer, whatever the reason.
    """
    normalised = normalise_email(email)
    _raise_if_any(
        {
            "email": login_email_problem(normalised),
            "password": None if password else "must not be empty",
        }
    )
    return normalised
