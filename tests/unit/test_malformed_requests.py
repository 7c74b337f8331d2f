"""Malformed requests the hostile-input test found (tests/integration/test_hostile_input.py), checked on the pure rules.

Each once escaped as INTERNAL, or as an error too large for the caller's own
client to accept; each is now INVALID_ARGUMENT naming its field, in a few
hundred bytes whatever the request held.
"""

from __future__ import annotations

import math

import pytest
from google.protobuf import struct_pb2

from auth_svc import rules as auth_rules
from job_svc.rules import MAX_ECHOED_CHARS, MAX_VIOLATIONS, check_listing, echoed, first_violations
from job_svc.servicer import payload_from_proto
from jobqueue.runtime.errors import FieldViolation, InvalidArgument

#: The job types the job service knows before any worker declared one (the database installs them).
TYPES = frozenset({"reverse_string", "uppercase_text", "fibonacci_calc"})


def fields(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


@pytest.mark.parametrize("email", ["\x00", "ada@example.com\x00", "\x00ada@example.com"])
def test_a_login_email_with_nul_is_refused_before_the_database_sees_it(email: str) -> None:
    """PostgreSQL text cannot hold NUL: the lookup failed with CharacterNotInRepertoireError (INTERNAL)."""
    with pytest.raises(InvalidArgument, match=r"^email: must not contain NUL characters$"):
        auth_rules.check_login(email, "whatever!")


def test_a_login_still_only_checks_presence_otherwise() -> None:
    assert auth_rules.check_login(" Not An Email ", "x") == "not an email"
    with pytest.raises(InvalidArgument) as refused:
        auth_rules.check_login("   ", "")
    assert fields(refused.value) == ["email", "password"]


def _list(*items: struct_pb2.Value) -> struct_pb2.Value:
    return struct_pb2.Value(list_value=struct_pb2.ListValue(values=items))


@pytest.mark.parametrize(
    "payload",
    [
        _list(struct_pb2.Value(number_value=math.nan)),
        _list(struct_pb2.Value(string_value="ok"), _list(struct_pb2.Value(number_value=math.inf))),
        struct_pb2.Value(struct_value=struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=-math.inf)})),
    ],
    ids=["nan-in-a-list", "infinity-deeper", "infinity-in-a-struct"],
)
def test_a_payload_holding_a_number_json_cannot_write_is_refused(payload: struct_pb2.Value) -> None:
    """json_format raised ValueError for these (INTERNAL); at the top level they were already refused."""
    with pytest.raises(InvalidArgument, match=r"^payload: must hold only finite numbers$"):
        payload_from_proto(payload, present=True)


def test_a_payload_of_finite_numbers_in_lists_and_structs_is_kept() -> None:
    payload = _list(struct_pb2.Value(number_value=1.5), struct_pb2.Value(null_value=struct_pb2.NULL_VALUE))
    assert payload_from_proto(payload, present=True) == [1.5, None]


def test_an_error_repeats_at_most_a_short_prefix_of_the_callers_value() -> None:
    assert echoed("nope") == "'nope'"
    assert echoed("x" * MAX_ECHOED_CHARS) == repr("x" * MAX_ECHOED_CHARS)
    long = echoed("é" * 100_000)
    assert long == f"{'é' * MAX_ECHOED_CHARS!r}... (100000 characters)"
    with pytest.raises(InvalidArgument) as refused:
        check_listing(0, "x" * 100_000, TYPES)
    [violation] = refused.value.violations
    assert violation.field == "type"
    assert len(violation.description) < 200


def test_a_batch_names_its_first_violations_and_counts_the_rest() -> None:
    few = [FieldViolation(f"requests[{i}].type", "unknown") for i in range(MAX_VIOLATIONS)]
    assert first_violations(few, "requests") == few
    many = [FieldViolation(f"requests[{i}].type", "unknown") for i in range(1000)]
    listed = first_violations(many, "requests")
    assert listed[:MAX_VIOLATIONS] == many[:MAX_VIOLATIONS]
    assert listed[MAX_VIOLATIONS:] == [
        FieldViolation("requests", f"{1000 - MAX_VIOLATIONS} more violations are not listed")
    ]
