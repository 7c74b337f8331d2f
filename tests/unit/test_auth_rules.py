"""What Register and Login accept (auth_svc.rules): normal forms, limits, and one violation per bad field."""

from __future__ import annotations

import pytest

from auth_svc import rules
from jobqueue.runtime.errors import InvalidArgument

GOOD_EMAIL = "ada@example.com"
GOOD_PASSWORD = "correct horse"
GOOD_NAME = "Ada Lovelace"


def violated_fields(email: str = GOOD_EMAIL, password: str = GOOD_PASSWORD, name: str = GOOD_NAME) -> list[str]:
    """The fields check_registration refuses, in order (empty if it accepts)."""
    try:
        rules.check_registration(email, password, name)
    except InvalidArgument as error:
        return [violation.field for violation in error.violations]
    return []


def test_email_is_trimmed_and_lower_cased() -> None:
    registration = rules.check_registration("  Ada.Lovelace@Example.COM \t", GOOD_PASSWORD, GOOD_NAME)
    assert registration.email == "ada.lovelace@example.com"
    assert rules.normalise_email(" ADA@EXAMPLE.COM ") == rules.normalise_email("ada@example.com")


@pytest.mark.parametrize(
    "email",
    [
        "a@b.co",
        "first.last+tag@sub.example.org",
        "o'brien@example.ie",
        "user@xn--bcher-kva.example",
        "x@123.example.com",
    ],
)
def test_sane_addresses_are_accepted(email: str) -> None:
    assert violated_fields(email=email) == []


@pytest.mark.parametrize(
    "email",
    [
        "",
        "   ",
        "plainaddress",
        "@example.com",
        "ada@",
        "ada@example",
        "ada@@example.com",
        "ada@exa mple.com",
        "a da@example.com",
        ".ada@example.com",
        "ada.@example.com",
        "a..da@example.com",
        "ada@-example.com",
        "ada@example-.com",
        "ada@example..com",
        "ada@example.c",
        "ada@example.123",
        "ada\n@example.com",
        "josé@example.com",
        "ada@bücher.example",
        f"{'a' * 65}@example.com",
    ],
)
def test_malformed_addresses_are_refused(email: str) -> None:
    assert violated_fields(email=email) == ["email"]


def address_of_length(length: int) -> str:
    """A well-formed address of exactly ``length`` (250..300) characters."""
    head = "a" * 64 + "@" + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + "."
    return head + "e" * (length - len(head))


def test_email_length_limit_is_254_characters_after_trimming() -> None:
    assert violated_fields(email=address_of_length(254)) == []
    assert violated_fields(email=f"  {address_of_length(254).upper()}  ") == []
    assert violated_fields(email=address_of_length(255)) == ["email"]
    assert rules.email_problem(address_of_length(255)) == "must be at most 254 characters"


@pytest.mark.parametrize(
    ("password", "fits"),
    [
        ("a" * 7, False),
        ("a" * 8, True),
        ("a" * 72, True),
        ("a" * 73, False),
        # 2-byte characters: 36 of them are 72 bytes, 37 are 74 (though only 37 characters).
        ("é" * 36, True),
        ("é" * 37, False),
        # 3-byte characters: 24 fill 72 bytes exactly.
        ("€" * 24, True),
        ("€" * 25, False),
        # 4-byte characters: 18 fill 72 bytes; 19 overflow with only 19 characters.
        ("🔑" * 18, True),
        ("🔑" * 19, False),
        # Mixed: 70 ASCII bytes + one 3-byte character = 73 bytes in 71 characters.
        ("a" * 70 + "€", False),
        ("a" * 69 + "€", True),
        # Eight multi-byte characters are eight characters, whatever their bytes.
        ("ééééééé", False),
        ("éééééééé", True),
    ],
)
def test_password_is_8_to_128_characters_and_at_most_72_utf8_bytes(password: str, fits: bool) -> None:
    assert violated_fields(password=password) == ([] if fits else ["password"])


def test_password_character_limit_applies_before_the_byte_limit() -> None:
    # 129 characters are refused for their length, with a message saying so.
    assert rules.password_problem("a" * 129) == "must be at most 128 characters"
    assert "72 bytes" in (rules.password_problem("é" * 40) or "")


def test_password_is_never_altered() -> None:
    password = "  spaced out  "
    assert rules.check_registration(GOOD_EMAIL, password, GOOD_NAME).password == password


def test_name_is_trimmed() -> None:
    assert rules.check_registration(GOOD_EMAIL, GOOD_PASSWORD, "\t Ada Lovelace \n").name == "Ada Lovelace"


@pytest.mark.parametrize(
    ("name", "fits"),
    [
        ("A", True),
        ("x" * 100, True),
        ("  " + "x" * 100 + "  ", True),
        ("x" * 101, False),
        ("", False),
        ("   \t\n ", False),
        ("Zoë 🦄 Ünïcödé", True),
        ("Ada\nLovelace", False),
        ("Ada\x00", False),
        ("Ada\x1b[31m", False),
        ("Ada\x7f", False),
        ("Ada\u0085Lovelace", False),
        ("Ada\u2028Lovelace", False),
        # A zero-width joiner is a format character that emoji sequences need, not a control.
        ("👩\u200d💻 Ada", True),
    ],
)
def test_name_is_1_to_100_characters_without_control_characters(name: str, fits: bool) -> None:
    assert violated_fields(name=name) == ([] if fits else ["name"])


def test_every_bad_field_gets_one_violation() -> None:
    with pytest.raises(InvalidArgument) as caught:
        rules.check_registration("nope", "short", "\x07")
    violations = caught.value.violations
    assert [v.field for v in violations] == ["email", "password", "name"]
    assert all(v.description for v in violations)
    assert caught.value.reason == "INVALID_ARGUMENT"


def test_login_normalises_the_email_and_only_requires_both_fields() -> None:
    assert rules.check_login("  Ada@Example.COM ", "anything") == "ada@example.com"
    # Shape and length are not checked at login: those get the generic UNAUTHENTICATED answer.
    assert rules.check_login("not an email", "x" * 500) == "not an email"
    with pytest.raises(InvalidArgument) as caught:
        rules.check_login("   ", "")
    assert [v.field for v in caught.value.violations] == ["email", "password"]
