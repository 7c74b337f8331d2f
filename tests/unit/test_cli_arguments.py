"""jobq's command line and what it reads: arguments, payloads, files of jobs, exit codes."""

from __future__ import annotations

import argparse

import grpc
import pytest

from jobqueue.cli import exits, jobfile, parser
from jobqueue.cli.exits import Exit
from jobqueue.client import FieldViolation, JobPriority, JobQueueError, JobStatus, to_value
from jobqueue.jobs.v1 import jobs_pb2


def parse(*argv: str) -> argparse.Namespace:
    return parser.parse(parser.build(), list(argv))


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What argparse printed for ``argv``, which must be refused with exit code 2."""
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == Exit.USAGE
    return capsys.readouterr().err


def test_submit_takes_type_payload_and_options() -> None:
    args = parse("submit", "reverse_string", "hello", "--priority", "HIGH", "--max-attempts", "3", "--wait", "--json")
    assert (args.command, args.type, args.payload) == ("submit", "reverse_string", "hello")
    assert (args.priority, args.max_attempts, args.timeout, args.wait, args.json) == (
        JobPriority.HIGH,
        3,
        0,
        True,
        True,
    )
    assert args.timeout_wait == 600.0


def test_service_options_come_after_the_command() -> None:
    args = parse("list", "--jobs", "jobs:1", "--auth", "auth:2", "--ca", "ca.pem", "--status", "failed", "--limit", "0")
    assert (args.jobs, args.auth, args.ca) == ("jobs:1", "auth:2", "ca.pem")
    assert (args.status, args.limit) == (JobStatus.FAILED, 0)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["submit"], "give TYPE and PAYLOAD"),
        (["submit", "reverse_string"], "give TYPE and PAYLOAD"),
        (["submit", "reverse_string", "x", "--file", "jobs.jsonl"], "not both"),
        (["submit", "--file", "jobs.jsonl", "--wait"], "--wait and --request-id are for one job"),
        (["submit", "t", "p", "--priority", "urgent"], "priority must be one of low, normal, high"),
        (["submit", "t", "p", "--max-attempts", "-1"], "must be a whole number"),
        (["submit", "t", "p", "--timeout-wait", "0"], "above 0"),
        (["list", "--status", "unspecified"], "no status 'unspecified'"),
        (["watch", "0b6c", "--status", "queued"], "--status, --type and --all-users are for watching without an id"),
        (["dead", "--max-attempts", "2"], "--max-attempts goes with --rerun"),
        (["submit", "t", "p", "--request-id", "import-1"], "request_id must be a UUID"),
        (["get"], "the following arguments are required: ID"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_exit_2_with_one_message(capsys: pytest.CaptureFixture[str], argv: list[str], says: str) -> None:
    assert says in usage_error(capsys, *argv)


def test_version_names_the_client_library(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("--version")
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("jobq ")


def test_the_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("--help")
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for code in Exit:
        assert f"\n  {int(code):<4} " in text, code


@pytest.mark.parametrize(
    ("text", "payload"),
    [
        ('"hello"', "hello"),
        ("10", 10),
        ("2.5", 2.5),
        ('{"a": 1}', {"a": 1}),
        ("[1, 2]", [1, 2]),
        ('"10"', "10"),
        ("hello", "hello"),  # not JSON: the word itself
        ("hello world", "hello world"),
        ("", ""),
    ],
)
def test_a_payload_is_json_or_else_the_text_itself(text: str, payload: object) -> None:
    assert jobfile.parse_payload(text) == payload


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"a": 1', "is not valid JSON"),  # starts like JSON: a typo, not a string
        ("[1, 2", "is not valid JSON"),
        ('"unclosed', "is not valid JSON"),
        ("true", "a bool is not a valid payload on its own"),
        ("null", "a job needs a payload"),
        (str(2**60), "beyond ±2**53"),
    ],
)
def test_a_payload_the_api_cannot_take_is_refused_before_any_call(text: str, says: str) -> None:
    with pytest.raises(jobfile.BadJob, match=says.replace("*", r"\*")):
        jobfile.parse_payload(text)


def test_a_line_becomes_the_create_request_it_describes() -> None:
    request = jobfile.parse_line(
        '{"type": "t", "payload": {"x": [1, true]}, "priority": "low", "max_attempts": 2,'
        ' "timeout_seconds": 9, "request_id": "0b6c8e5e-3f0c-4a53-9c1e-1f3f6a0c2d11"}'
    )
    expected = jobs_pb2.CreateJobRequest(
        type="t",
        payload=to_value({"x": [1, True]}),
        priority=jobs_pb2.JOB_PRIORITY_LOW,
        max_attempts=2,
        timeout_seconds=9,
        request_id="0b6c8e5e-3f0c-4a53-9c1e-1f3f6a0c2d11",
    )
    assert request == expected
    assert jobfile.parse_line('{"type": "t", "payload": 3, "priority": 3}').priority == jobs_pb2.JOB_PRIORITY_HIGH


def test_the_first_bad_line_is_named_by_its_number_and_blank_lines_are_skipped() -> None:
    good = '{"type": "t", "payload": "a"}\n'
    assert len(jobfile.parse_lines([good, "\n", "  \n", good])) == 2
    with pytest.raises(jobfile.BadJob, match=r"^line 4: unknown key 'priorty'"):
        jobfile.parse_lines([good, "\n", good, '{"type": "t", "payload": 1, "priorty": "high"}\n', "{"])


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{", "not valid JSON"),
        ('["t", "p"]', "must be a JSON object"),
        ('{"payload": 1}', '"type" must be a non-empty string'),
        ('{"type": "", "payload": 1}', '"type" must be a non-empty string'),
        ('{"type": "t"}', '"payload" is missing'),
        ('{"type": "t", "payload": null}', "a job needs a payload"),
        ('{"type": "t", "payload": 1, "max_attempts": -1}', '"max_attempts" must be a whole number'),
        ('{"type": "t", "payload": 1, "timeout_seconds": 1.5}', '"timeout_seconds" must be a whole number'),
        ('{"type": "t", "payload": 1, "priority": 7}', "priority must be one of"),
        ('{"type": "t", "payload": 1, "priority": true}', "priority must be one of"),
        ('{"type": "t", "payload": 1, "request_id": 5}', "request_id must be a UUID, not 5"),
        ('{"type": "t", "payload": 1, "request_id": "import-1"}', "request_id must be a UUID, not 'import-1'"),
    ],
)
def test_bad_lines_say_what_is_wrong(line: str, says: str) -> None:
    with pytest.raises(jobfile.BadJob, match=says):
        jobfile.parse_line(line)


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (grpc.StatusCode.NOT_FOUND, Exit.NOT_FOUND),
        (grpc.StatusCode.UNAUTHENTICATED, Exit.UNAUTHENTICATED),
        (grpc.StatusCode.INVALID_ARGUMENT, Exit.REFUSED),
        (grpc.StatusCode.FAILED_PRECONDITION, Exit.REFUSED),
        (grpc.StatusCode.PERMISSION_DENIED, Exit.REFUSED),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Exit.REFUSED),
        (grpc.StatusCode.UNAVAILABLE, Exit.UNAVAILABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, Exit.UNAVAILABLE),
        (grpc.StatusCode.UNIMPLEMENTED, Exit.UNAVAILABLE),
        (grpc.StatusCode.INTERNAL, Exit.UNAVAILABLE),
    ],
)
def test_each_status_code_has_its_exit_code(code: grpc.StatusCode, exit_code: Exit) -> None:
    assert exits.for_error(JobQueueError(code, "x")) == exit_code


def test_job_statuses_map_to_exit_codes() -> None:
    assert [exits.for_status(s) for s in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)] == [0, 1, 3]


def test_an_error_is_one_line_with_the_message_and_every_field_violation() -> None:
    refused = JobQueueError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "the request is invalid",
        reason="INVALID_ARGUMENT",
        field_violations=[FieldViolation("payload", "must be a string"), FieldViolation("type", "unknown")],
    )
    assert exits.describe(refused, "jobs:5002") == (
        "the request is invalid (payload: must be a string; type: unknown) [INVALID_ARGUMENT]"
    )
    # A message that names the violations itself is not followed by them again; a multi-line one is joined.
    named = JobQueueError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "id: must be a UUID\nand more",
        reason="INVALID_ARGUMENT",
        field_violations=[FieldViolation("id", "must be a UUID")],
    )
    assert exits.describe(named, "jobs:5002") == "id: must be a UUID and more [INVALID_ARGUMENT]"
    limited = JobQueueError(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", reason="TOO_MANY_JOBS", retry_after=30)
    assert exits.describe(limited, "jobs:5002") == "slow down (try again in 30 s) [TOO_MANY_JOBS]"
    expired = exits.describe(JobQueueError(grpc.StatusCode.UNAUTHENTICATED, "token expired"), "jobs:5002")
    assert expired == "token expired: not logged in, or the login expired: run `jobq login`"
    away = exits.describe(JobQueueError(grpc.StatusCode.UNAVAILABLE, "connection refused"), "jobs:5002")
    assert away == "cannot reach the service at jobs:5002: connection refused"
    assert "\n" not in away
