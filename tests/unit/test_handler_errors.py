"""What a job's error says when its handler raised (jobqueue.worker.runner.describe): useful, bounded, storable."""

from __future__ import annotations

import pytest

from job_svc.rules import MAX_ERROR_CHARS as JOB_SERVICE_LIMIT
from jobqueue.worker import PermanentError, Worker
from jobqueue.worker.context import JobContext
from jobqueue.worker.runner import (
    ERROR_FRAME_CHARS,
    ERROR_FRAMES,
    ERROR_MESSAGE_CHARS,
    MAX_ERROR_CHARS,
    HandlerError,
    Result,
    Runner,
    describe,
)

HERE = "tests/unit/test_handler_errors.py"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def raise_in(depth: int, error: Exception) -> None:
    if depth > 1:
        raise_in(depth - 1, error)
    raise error


def caught(depth: int, error: Exception) -> BaseException:
    try:
        raise_in(depth, error)
    except Exception as raised:
        return raised
    raise AssertionError("unreachable")


RAISE_LINE = raise_in.__code__.co_firstlineno + 3
RECURSE_LINE = raise_in.__code__.co_firstlineno + 2


def test_an_error_names_the_exception_its_message_and_where_it_was_raised() -> None:
    error = caught(2, ValueError("the payload's 3rd field is odd"))
    assert describe(error, skip=1).splitlines() == [
        "ValueError: the payload's 3rd field is odd",
        f"  {HERE}:{RECURSE_LINE} in raise_in",
        f"  {HERE}:{RAISE_LINE} in raise_in",
    ]


def test_only_the_innermost_frames_are_kept() -> None:
    lines = describe(caught(ERROR_FRAMES + 7, KeyError("k")), skip=1).splitlines()
    assert lines[:2] == ["KeyError: 'k'", "  (7 outer frames left out)"]
    assert len(lines) == 2 + ERROR_FRAMES
    assert lines[-1] == f"  {HERE}:{RAISE_LINE} in raise_in"


@pytest.mark.parametrize(
    "message",
    ["x" * 100_000, "\x00" * 10_000, "é\udcff" * 10_000, "\n".join(["line"] * 10_000)],
    ids=["long", "nul", "surrogates", "lines"],
)
def test_an_error_is_bounded_and_storable_and_keeps_its_frames_whatever_the_message(message: str) -> None:
    described = describe(caught(50, RuntimeError(message)), skip=1)
    assert len(described) <= MAX_ERROR_CHARS < JOB_SERVICE_LIMIT
    assert "\x00" not in described
    described.encode("utf-8")  # what protobuf does with a string field
    head, frames = described.split("\n  (45 outer frames left out)\n")
    assert len(head) <= ERROR_MESSAGE_CHARS
    assert head.startswith("RuntimeError: ")
    assert frames.splitlines() == [f"  {HERE}:{RECURSE_LINE} in raise_in"] * 4 + [f"  {HERE}:{RAISE_LINE} in raise_in"]


def test_an_exception_without_a_message_or_with_a_broken_one_still_names_its_type() -> None:
    assert describe(caught(1, RuntimeError()), skip=1).splitlines()[0] == "RuntimeError"
    first = describe(caught(1, Unprintable()), skip=1).splitlines()[0]
    assert first == "Unprintable: (its message could not be turned into text)"


def test_a_file_outside_sys_path_keeps_its_full_path() -> None:
    code = compile("def boom():\n    raise OSError('disk')\n", "/nowhere/plugin.py", "exec")
    space: dict[str, object] = {}
    exec(code, space)  # noqa: S102 - a function whose file is not under any sys.path entry
    with pytest.raises(OSError, match="disk") as raised:
        space["boom"]()  # type: ignore[operator]
    assert describe(raised.value).splitlines()[-1] == "  /nowhere/plugin.py:2 in boom"


def test_a_frame_with_a_huge_file_name_takes_one_bounded_line() -> None:
    code = compile("def boom():\n    raise OSError('disk')\n", "/nowhere/" + "x" * 5000 + ".py", "exec")
    space: dict[str, object] = {}
    exec(code, space)  # noqa: S102 - a function from a file of a huge name
    with pytest.raises(OSError, match="disk") as raised:
        space["boom"]()  # type: ignore[operator]
    frame = describe(raised.value).splitlines()[-1]
    assert len(frame) == ERROR_FRAME_CHARS
    # The bounds of an error's lines add up to less than its own: a long line never crowds out the frames.
    lines = [ERROR_MESSAGE_CHARS, len("  (1000 outer frames left out)"), *[ERROR_FRAME_CHARS] * ERROR_FRAMES]
    assert sum(lines) + len(lines) - 1 <= MAX_ERROR_CHARS
    assert frame.startswith("  /nowhere/xxx")
    assert frame.endswith("…")


TYPES = Worker()
TEXT = {"type": "string"}


@TYPES.job_type("shout", schema=TEXT)
async def shout(value: str) -> str:
    if value == "boom":
        raise LookupError("no such word")
    return value.upper()


@TYPES.job_type("numbered", schema=TEXT)
async def numbered(value: str, job: JobContext) -> str:
    return f"{value} #{job.attempt}"


@TYPES.job_type("refuse", schema=TEXT)
async def refuse(value: str) -> str:
    raise PermanentError(f"{value!r} is not a mailbox")


@TYPES.job_type("odd_result", schema=TEXT)
async def odd_result(value: str) -> object:
    return {value} if value == "set" else {"value": value, "items": (1, 2)}


async def test_only_a_handler_that_asks_for_the_job_is_given_it() -> None:
    runner = Runner(TYPES.types, processes=0)
    assert await runner.run("shout", "hi", job=JobContext("j", "shout", 5)) == Result(True, "HI")
    assert await runner.run("numbered", "hi", job=JobContext("j", "numbered", 5)) == Result(True, "hi #5")
    assert await runner.run("numbered", "hi") == Result(True, "hi #1")


async def test_a_handler_exception_is_raised_as_handler_error_starting_at_the_handler() -> None:
    runner = Runner(TYPES.types, processes=0)
    with pytest.raises(HandlerError) as failed:
        await runner.run("shout", "boom")
    line = shout.__code__.co_firstlineno + 3
    assert str(failed.value) == f"LookupError: no such word\n  {HERE}:{line} in shout"
    assert isinstance(failed.value.__cause__, LookupError)  # the worker's log shows the whole chain


async def test_a_permanent_error_fails_the_job_with_its_message_and_no_retry() -> None:
    result = await Runner(TYPES.types, processes=0).run("refuse", "nobody")
    assert result == Result(False, "PermanentError: 'nobody' is not a mailbox")


async def test_a_result_is_any_json_value_and_anything_else_fails_the_job() -> None:
    runner = Runner(TYPES.types, processes=0)
    assert await runner.run("odd_result", "x") == Result(True, {"value": "x", "items": [1, 2]})
    failed = await runner.run("odd_result", "set")
    assert not failed.ok
    assert failed.value.startswith("the handler's result is not a JSON value (set:")
