"""What ``jobq`` takes from the user besides its arguments, read before any call is made.

An email and password at a prompt (or the password on stdin), the payload, a file of jobs: all
are read and checked before the event loop starts, so that nothing blocks the loop, a bad file
costs no call, and Ctrl-C at a prompt or while stdin is read ends jobq at once (a thread blocked
on a terminal's stdin would keep it alive: asyncio.run waits for its threads).
"""

from __future__ import annotations

import argparse
import getpass
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from jobqueue.cli import jobfile
from jobqueue.client import Payload
from jobqueue.jobs.v1 import jobs_pb2


class UsageError(Exception):
    """Raised for a combination of arguments and input that the parser could not check."""


@dataclass(frozen=True)
class Given:
    """What the user gave besides the arguments, read before any call (see the module's docstring)."""

    email: str = ""
    password: str = field(default="", repr=False)
    #: ``submit TYPE PAYLOAD``: the payload.
    payload: Payload = ""
    #: ``submit --file``: the jobs, the command's options filled in.
    requests: list[jobs_pb2.CreateJobRequest] = field(default_factory=list)


def read_input(args: argparse.Namespace, stdin: TextIO, stderr: TextIO) -> Given:
    """The prompts' answers, the payload or the file of jobs the command ``args`` name needs."""
    if args.command in {"login", "register"}:
        email = _read_email(args, stdin, stderr)
        password = _read_password(args, stdin, "password: ")
        if args.command == "register" and not args.password_stdin and getpass.getpass("password again: ") != password:
            raise UsageError("the passwords differ")
        return Given(email=email, password=password)
    if args.command == "submit" and args.file is None:
        return Given(payload=jobfile.parse_payload(args.payload))
    if args.command == "submit":
        requests = _read_jobs(args.file, stdin)
        for request in requests:
            # The command's options are the defaults of the lines that do not say.
            request.priority = request.priority or jobs_pb2.JobPriority.ValueType(int(args.priority or 0))
            request.max_attempts = request.max_attempts or args.max_attempts
            request.timeout_seconds = request.timeout_seconds or args.timeout
        return Given(requests=requests)
    return Given()


def _read_password(args: argparse.Namespace, stdin: TextIO, prompt: str) -> str:
    if args.password_stdin:
        return stdin.readline().removesuffix("\n").removesuffix("\r")
    return getpass.getpass(prompt)


def _read_email(args: argparse.Namespace, stdin: TextIO, stderr: TextIO) -> str:
    if args.email:
        return str(args.email)
    if args.password_stdin:
        # stdin carries the password, so it cannot also be asked for the email.
        raise UsageError("--password-stdin needs --email")
    stderr.write("email: ")
    stderr.flush()
    return stdin.readline().strip()


def file_name(path: str) -> str:
    """How messages name the file of jobs at ``path``."""
    return "stdin" if path == "-" else path


def _read_jobs(path: str, stdin: TextIO) -> list[jobs_pb2.CreateJobRequest]:
    """The jobs of the file at ``path`` (stdin for ``-``); BadJob names the file and the line."""
    try:
        if path == "-":
            return jobfile.parse_lines(stdin)
        with Path(path).open(encoding="utf-8") as lines:
            return jobfile.parse_lines(lines)
    except jobfile.BadJob as error:
        raise jobfile.BadJob(f"{file_name(path)}: {error}") from None
