"""What ``jobq``'s exit code says happened, and the one line on stderr that says it to a person.

Scripts branch on the code (``jobq submit ... --wait || ...``), so each code means one thing;
the table is printed by ``jobq --help`` (EPILOG) and in gen/README.md.
"""

from __future__ import annotations

import enum

import grpc

from jobqueue.client import JobQueueError, JobStatus


class Exit(enum.IntEnum):
    """``jobq``'s exit codes."""

    #: Done; for --wait and watch: the job COMPLETED.
    OK = 0
    #: --wait or watch: the job FAILED.
    JOB_FAILED = 1
    #: The command line, a payload or a file of jobs is wrong (argparse's own code for usage errors).
    USAGE = 2
    #: --wait or watch: the job was CANCELLED.
    JOB_CANCELLED = 3
    #: No such job (or not yours).
    NOT_FOUND = 4
    #: Not logged in, or the login expired or was refused.
    UNAUTHENTICATED = 5
    #: The service refused the request (invalid, not allowed now, not permitted, over a limit).
    REFUSED = 6
    #: The service could not be reached or could not answer.
    UNAVAILABLE = 7
    #: --wait: the job was not finished within --timeout-wait.
    WAIT_TIMED_OUT = 8
    #: Interrupted with Ctrl-C (128 + SIGINT, as shells report it).
    INTERRUPTED = 130
    #: Whatever read stdout stopped reading (``jobq list | head``): 128 + SIGPIPE, as for ``cat``.
    STDOUT_CLOSED = 141


EPILOG = """\
exit codes:
  0    done; with --wait or watch: the job COMPLETED
  1    with --wait or watch: the job FAILED
  2    usage error: bad arguments, payload or file of jobs
  3    with --wait or watch: the job was CANCELLED
  4    no such job (or it is not yours)
  5    not logged in, or the login expired: run `jobq login`
  6    refused by the service (invalid request, wrong state, not permitted, over a limit)
  7    service unavailable (not reachable, or it could not answer)
  8    --wait: the job was not finished within --timeout-wait
  130  interrupted (Ctrl-C)
  141  stdout was closed early (jobq list | head), as for other commands
"""

_REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


def for_status(status: JobStatus) -> Exit:
    """The exit code of --wait and watch for a job that ended in ``status``."""
    if status == JobStatus.FAILED:
        return Exit.JOB_FAILED
    if status == JobStatus.CANCELLED:
        return Exit.JOB_CANCELLED
    return Exit.OK


def for_error(error: JobQueueError) -> Exit:
    """The exit code for a call the service refused or could not answer."""
    if error.code == grpc.StatusCode.NOT_FOUND:
        return Exit.NOT_FOUND
    if error.code == grpc.StatusCode.UNAUTHENTICATED:
        return Exit.UNAUTHENTICATED
    if error.code in _REFUSALS:
        return Exit.REFUSED
    # UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, UNIMPLEMENTED, INTERNAL, UNKNOWN...: nothing the
    # caller's request could change.
    return Exit.UNAVAILABLE


def describe(error: JobQueueError, address: str) -> str:
    """One line for a person: the status message, every field violation, and what to do where it is clear."""
    # One line, whatever the service put in its message.
    text = " ".join(error.message.split()) or error.code.name.lower().replace("_", " ")
    # The job service's messages already name the violations; others' may not.
    missing = [f"{v.field}: {v.description}" for v in error.field_violations]
    missing = [violation for violation in missing if violation not in text]
    if missing:
        text += " (" + "; ".join(missing) + ")"
    if error.code == grpc.StatusCode.UNAUTHENTICATED:
        return f"{text}: not logged in, or the login expired: run `jobq login`"
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach the service at {address}: {text}"
    if error.retry_after is not None:
        text += f" (try again in {error.retry_after:g} s)"
    return f"{text} [{error.reason or error.code.name}]"
