"""Page tokens come back from callers, who may send anything: every bad one is INVALID_ARGUMENT on page_token.

tests/unit/test_job_rules.py covers the tokens the service issues; this module
covers what a hostile or careless caller can send instead.
"""

from __future__ import annotations

import base64
import inspect
import json
import string
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from job_svc.rules import MAX_PAGE_TOKEN_CHARS, decode_page_token, encode_page_token
from jobqueue.runtime.errors import InvalidArgument

AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
JOB_ID = uuid.UUID("0b6c7c1e-8f0a-4d3e-9b59-2f3b1c7d9a10")
FILTERS: list[str | None] = ["QUEUED", "reverse_string"]


def token(data: object) -> str:
    """What encode_page_token would make of ``data`` if it were a cursor."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def raw_token(text: str | bytes) -> str:
    """``text`` base64-encoded as a token is, whatever it holds."""
    return base64.urlsafe_b64encode(text.encode() if isinstance(text, str) else text).decode()


def assert_refused(page_token: str, filters: list[str | None]) -> None:
    with pytest.raises(InvalidArgument) as refused:
        decode_page_token(page_token, filters)
    assert [v.field for v in refused.value.violations] == ["page_token"]


@contextmanager
def stack_room(frames: int) -> Iterator[None]:
    """Only ``frames`` more levels of recursion from here, as when a call arrives on an already deep stack."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


@pytest.mark.parametrize(
    "data",
    [
        [AT.isoformat(), 5, *FILTERS],
        [AT.isoformat(), 5.5, *FILTERS],
        [AT.isoformat(), True, *FILTERS],
        [AT.isoformat(), None, *FILTERS],
        [AT.isoformat(), [str(JOB_ID)], *FILTERS],
        [AT.isoformat(), {"id": str(JOB_ID)}, *FILTERS],
        [1772600767, str(JOB_ID), *FILTERS],
        [None, str(JOB_ID), *FILTERS],
        [[AT.isoformat()], str(JOB_ID), *FILTERS],
        {AT.isoformat(): 1, str(JOB_ID): 2},
        {"at": AT.isoformat(), "id": str(JOB_ID)},
        str(JOB_ID),
        12,
        None,
    ],
    ids=[
        "int-id",
        "float-id",
        "bool-id",
        "null-id",
        "list-id",
        "object-id",
        "number-time",
        "null-time",
        "list-time",
        "object-keyed-like-a-cursor",
        "object",
        "string",
        "number",
        "null",
    ],
)
def test_a_cursor_of_the_wrong_types_is_refused(data: object) -> None:
    assert_refused(token(data), FILTERS)


@pytest.mark.parametrize(
    "at",
    ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"],
    ids=["before-year-1-in-utc", "after-year-9999-in-utc"],
)
def test_a_time_without_a_utc_form_is_refused(at: str) -> None:
    """The database compares cursors in UTC; these have none, so the query could not even be sent."""
    assert_refused(token([at, str(JOB_ID), *FILTERS]), FILTERS)


def test_the_ends_of_time_in_utc_are_cursors() -> None:
    for at in (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)):
        assert decode_page_token(encode_page_token(at, JOB_ID, FILTERS), FILTERS) == (at, JOB_ID)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "=",
        "A",
        "AAA",
        "é€",
        "\x00",
        "\ud800",
        raw_token(b"\x00"),
        raw_token(b"\xff\xfe\xfd"),
        raw_token("[1, 2"),
        raw_token("NaN"),
        raw_token("1" * 700),
    ],
    ids=[
        "empty",
        "padding",
        "one-char",
        "short",
        "non-ascii",
        "nul",
        "lone-surrogate",
        "nul-json",
        "not-utf8",
        "truncated-json",
        "nan",
        "huge-number",
    ],
)
def test_text_that_is_no_token_is_refused(garbage: str) -> None:
    assert_refused(garbage, FILTERS)


def test_a_token_longer_than_any_issued_is_refused_before_decoding() -> None:
    issued = encode_page_token(AT, JOB_ID, FILTERS)
    assert len(issued) < MAX_PAGE_TOKEN_CHARS
    assert_refused("A" * (1 << 20), FILTERS)
    # Still refused when what it decodes to is a valid cursor (JSON allows any amount of white space).
    padded = raw_token(json.dumps([AT.isoformat(), str(JOB_ID), *FILTERS]) + " " * MAX_PAGE_TOKEN_CHARS)
    assert decode_page_token(padded[:MAX_PAGE_TOKEN_CHARS], FILTERS) == (AT, JOB_ID)
    assert len(padded) > MAX_PAGE_TOKEN_CHARS
    assert_refused(padded, FILTERS)


@pytest.mark.parametrize(("opener", "closer", "depth"), [("[", "]", 300), ('{"":', "}", 150)])
def test_deeply_nested_json_is_refused_even_on_a_deep_stack(opener: str, closer: str, depth: int) -> None:
    nested = raw_token(opener * depth + "1" + closer * depth)
    assert len(nested) <= MAX_PAGE_TOKEN_CHARS
    with stack_room(100):
        assert_refused(nested, FILTERS)


@pytest.mark.parametrize(
    "token_filters",
    [[], ["QUEUED"], ["QUEUED", "reverse_string", None], [None, "reverse_string"], [["QUEUED"], "reverse_string"]],
    ids=["none", "too-few", "too-many", "other-value", "wrong-type"],
)
def test_a_token_for_other_filters_is_refused(token_filters: list[Any]) -> None:
    assert_refused(token([AT.isoformat(), str(JOB_ID), *token_filters]), FILTERS)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def decoded(page_token: str) -> tuple[datetime, uuid.UUID] | list[str]:
    """The cursor in ``page_token``, or the fields named when it is refused."""
    try:
        return decode_page_token(page_token, FILTERS)
    except InvalidArgument as refused:
        return [v.field for v in refused.violations]


@given(data=JSON)
def test_any_json_is_a_cursor_or_refused(data: object) -> None:
    outcome = decoded(token(data))
    if isinstance(outcome, list):
        assert outcome == ["page_token"]
    else:
        assert isinstance(data, list)
        assert data[2:] == FILTERS
        assert outcome[0].tzinfo is not None


@given(text=st.text() | st.text(alphabet=string.ascii_letters + string.digits + "-_="))
def test_any_text_is_a_cursor_or_refused(text: str) -> None:
    outcome = decoded(text)
    assert outcome == ["page_token"] or isinstance(outcome[1], uuid.UUID)


@given(
    # Offsets in whole minutes, as real zones have (isoformat's form of sub-second offsets does not round-trip).
    at=st.datetimes(timezones=st.integers(-23 * 60, 23 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))),
    job_id=st.uuids(),
)
def test_every_cursor_with_a_utc_form_comes_back_from_its_token(at: datetime, job_id: uuid.UUID) -> None:
    try:
        at.astimezone(UTC)
    except OverflowError:
        assert_refused(encode_page_token(at, job_id, FILTERS), FILTERS)
    else:
        assert decode_page_token(encode_page_token(at, job_id, FILTERS), FILTERS) == (at, job_id)
