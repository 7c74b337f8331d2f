"""What jobq reads before any call: prompts' answers, the payload, a file of jobs with the command's defaults."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from jobqueue.cli import commands, config, inputs, jobfile, parser
from jobqueue.cli.exits import Exit
from jobqueue.jobs.v1 import jobs_pb2


def context(tmp_path: Path, stdin: str = "") -> commands.Context:
    env = config.Environment.from_environ({"XDG_CONFIG_HOME": str(tmp_path)})
    return commands.Context(env, io.StringIO(stdin), io.StringIO(), io.StringIO(), 120)


def given(tmp_path: Path, *argv: str, stdin: str = "") -> inputs.Given:
    here = context(tmp_path, stdin)
    return inputs.read_input(parser.parse(parser.build(), list(argv)), here.stdin, here.stderr)


def test_login_reads_the_password_from_stdin_with_the_email_from_its_flag(tmp_path: Path) -> None:
    read = given(tmp_path, "login", "--email", "a@b.c", "--password-stdin", stdin="pass word \n")
    assert (read.email, read.password) == ("a@b.c", "pass word ")  # only the line's end is taken off
    assert "pass word" not in repr(read)


def test_password_stdin_without_email_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(inputs.UsageError, match="--password-stdin needs --email"):
        given(tmp_path, "login", "--password-stdin", stdin="secret\n")


def test_a_file_of_jobs_takes_the_commands_options_where_a_line_does_not_say(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"type": "t", "payload": 1}\n{"type": "t", "payload": 2, "priority": "low", "max_attempts": 9}\n')
    read = given(tmp_path, "submit", "--file", str(jobs), "--priority", "high", "--max-attempts", "2", "--timeout", "5")
    assert [(r.priority, r.max_attempts, r.timeout_seconds) for r in read.requests] == [
        (jobs_pb2.JOB_PRIORITY_HIGH, 2, 5),
        (jobs_pb2.JOB_PRIORITY_LOW, 9, 5),
    ]
    from_stdin = given(tmp_path, "submit", "--file", "-", stdin='{"type": "t", "payload": "x"}\n')
    assert [r.type for r in from_stdin.requests] == ["t"]


def test_a_bad_file_names_itself_and_the_line(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"type": "t", "payload": 1}\n{"type": "t"}\n')
    with pytest.raises(jobfile.BadJob, match=rf"^{jobs}: line 2: \"payload\" is missing$"):
        given(tmp_path, "submit", "--file", str(jobs))
    with pytest.raises(jobfile.BadJob, match=r"^stdin: line 1: not valid JSON"):
        given(tmp_path, "submit", "--file", "-", stdin="nope\n")


@pytest.mark.parametrize(
    ("argv", "stdin", "code", "says"),
    [
        (["submit", "t", "{x"], "", Exit.USAGE, "jobq: payload '{x' is not valid JSON"),
        (["submit", "--file", "missing.jsonl"], "", Exit.USAGE, "jobq: No such file or directory: missing.jsonl"),
        (["list"], "", Exit.UNAUTHENTICATED, "jobq: not logged in: run `jobq login` first"),
        (
            ["login", "--email", "a@b.c", "--password-stdin", "--ca", "missing.pem"],
            "pw\n",
            Exit.USAGE,
            "jobq: No such file or directory: missing.pem",
        ),
    ],
)
def test_errors_before_any_call_are_one_line_and_an_exit_code(
    tmp_path: Path, argv: list[str], stdin: str, code: Exit, says: str
) -> None:
    here = context(tmp_path, stdin)
    assert commands.run(parser.parse(parser.build(), argv), here) == code
    assert isinstance(here.stderr, io.StringIO)
    assert here.stderr.getvalue().startswith(says)
    assert here.stderr.getvalue().count("\n") == 1
