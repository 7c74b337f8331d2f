"""What each ``jobq`` command does: calls to :mod:`jobqueue.client`, then lines on stdout.

A command runs in two steps: :func:`inputs.read_input` takes what the user gives besides the
arguments, before the event loop starts (see there why); then the command's coroutine makes the
calls. Each returns its exit code (exits.Exit); the errors every command can meet (a refusal, no
token, a bad payload or file, a wait that ran out) are turned into a code and one line on stderr
by :func:`run`, once, rather than in each command.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TextIO

import grpc

from jobqueue.cli import config, exits, inputs, jobfile, output
from jobqueue.cli.exits import Exit
from jobqueue.cli.progress import ProgressBar
from jobqueue.client import (
    BATCH_SIZE,
    Job,
    JobPriority,
    JobQueueError,
    JobsClient,
    connect_auth,
    connect_jobs,
    is_final,
    tls_credentials,
)
from jobqueue.jobs.v1 import jobs_pb2

#: How often ``jobq watch ID`` asks for the job when the service cannot stream it (no WatchJob).
POLL_SECONDS = 0.5


@dataclass
class Context:
    """What a command reads and writes besides its arguments: the environment and the three streams."""

    env: config.Environment
    stdin: TextIO
    stdout: TextIO
    stderr: TextIO
    #: The terminal's width, for cutting table rows.
    width: int

    def out(self, *lines: str) -> None:
        output.write_lines(self.stdout, lines)

    def note(self, line: str) -> None:
        """A line for the person at the terminal (stderr), kept out of what a script reads."""
        output.write_lines(self.stderr, [line])

    def error(self, line: str) -> None:
        output.write_lines(self.stderr, [f"jobq: {line}"])


def run(args: argparse.Namespace, context: Context) -> Exit:
    """Run the command ``args`` name; the errors every command can meet become an exit code here."""
    address = _auth_address(args, context) if args.command in {"login", "register"} else _jobs_address(args, context)
    try:
        given = inputs.read_input(args, context.stdin, context.stderr)
        return asyncio.run(COMMANDS[args.command](args, context, given))
    except JobQueueError as error:
        context.error(exits.describe(error, address))
        return exits.for_error(error)
    except BrokenPipeError:
        raise  # the reader of stdout went away: __main__ ends quietly, as `jobq list | head` expects
    except (config.NotLoggedIn, jobfile.BadJob, inputs.UsageError, EOFError, OSError) as error:
        code, message = _local_failure(error)
        context.error(message)
        return code


def _local_failure(error: Exception) -> tuple[Exit, str]:
    """The exit code and the message for an error met before or besides any call."""
    if isinstance(error, config.NotLoggedIn):
        return Exit.UNAUTHENTICATED, str(error)
    if isinstance(error, TimeoutError):  # before OSError, of which it is a subclass
        return Exit.WAIT_TIMED_OUT, str(error)
    if isinstance(error, EOFError):  # Ctrl-D at a prompt
        return Exit.USAGE, "no input"
    if isinstance(error, OSError) and error.filename:  # --ca or --file unreadable, the config folder unwritable
        return Exit.USAGE, f"{error.strerror or error}: {error.filename}"
    return Exit.USAGE, str(error)


def _auth_address(args: argparse.Namespace, context: Context) -> str:
    return str(args.auth or context.env.auth_address)


def _jobs_address(args: argparse.Namespace, context: Context) -> str:
    return str(args.jobs or context.env.jobs_address)


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if args.ca is not None or args.tls:
        return tls_credentials(args.ca)
    return None


def _jobs(args: argparse.Namespace, context: Context) -> JobsClient:
    """A client of the job service with the stored token (NotLoggedIn without one)."""
    token = config.load(context.env.credentials_path).access_token
    return connect_jobs(_jobs_address(args, context), token=token, credentials=_credentials(args))


async def login(args: argparse.Namespace, context: Context, given: inputs.Given) -> Exit:
    """Log in with an email and password and store the token."""
    async with connect_auth(_auth_address(args, context), credentials=_credentials(args)) as auth:
        try:
            token = await auth.login(given.email, given.password)
        except JobQueueError as error:
            if error.code != grpc.StatusCode.UNAUTHENTICATED:
                raise
            context.error(error.message or "wrong email or password")
            return Exit.UNAUTHENTICATED
    path = context.env.credentials_path
    config.save(path, config.Credentials(token, given.email))
    context.out(f"logged in as {given.email} (token in {path})")
    return Exit.OK


async def logout(args: argparse.Namespace, context: Context, given: inputs.Given) -> Exit:
    """Forget the stored token."""
    path = context.env.credentials_path
    context.out(f"logged out (removed {path})" if config.forget(path) else "not logged in")
    return Exit.OK


async def register(args: argparse.Namespace, context: Context, given: inputs.Given) -> Exit:
    """Create an account."""
    name = args.name or given.email.split("@", 1)[0]
    async with connect_auth(_auth_address(args, context), credentials=_credentials(args)) as auth:
        user = await auth.register(given.email, given.password, name)
    context.out(f"registered {user.email}: now run `jobq login`")
    return Exit.OK


async def submit(args: argparse.Namespace, context: Context, given: inputs.Given) -> Exit:
    """Submit one job (and maybe wait for it), or a file of jobs."""
    if args.file is not None:
        return await _submit_file(args, context, given.requests)
    async with _jobs(args, context) as jobs:
        job = await jobs.submit(
            args.type,
            given.payload,
            priority=args.priority or JobPriority.UNSPECIFIED,
            max_attempts=args.max_attempts,
            timeout_seconds=args.timeout,
            request_id=args.request_id,
        )
        if not args.wait:
            context.out(output.job_json(job) if args.json else job.id)
            return Exit.OK
        context.note(f"submitted {job.id}; waiting for it (Ctrl-C stops the waiting, not the job)")
        job = await jobs.wait(job.id, timeout=args.timeout_wait)
    context.out(output.job_json(job) if args.json else str(job))
    return exits.for_status(job.status)


async def _submit_file(args: argparse.Namespace, context: Context, requests: list[jobs_pb2.CreateJobRequest]) -> Exit:
    """``submit --file``: send the jobs (every line already checked) BATCH_SIZE at a time, with a bar."""
    if not requests:
        context.note(f"no jobs in {inputs.file_name(args.file)}")
        return Exit.OK
    bar = ProgressBar.for_terminal(len(requests), context.stderr)
    # JSON lines on the same terminal as the bar would be drawn over by it.
    bar.enabled = bar.enabled and not (args.json and context.stdout.isatty())
    batches = 0
    async with _jobs(args, context) as jobs:
        bar.start()
        try:
            for start in range(0, len(requests), BATCH_SIZE):
                try:
                    stored = await jobs.submit_many(requests[start : start + BATCH_SIZE])
                except JobQueueError:
                    bar.close()
                    context.note(f"jobq: {start} of {len(requests)} jobs were stored before this batch was refused")
                    raise
                batches += 1
                bar.advance(len(stored))
                if args.json:
                    context.out(*(output.job_json(job) for job in stored))
        finally:
            bar.close()
    if not args.json:
        context.out(f"submitted {len(requests)} jobs in {batches} batch{'es' if batches != 1 else ''}")
    return Exit.OK


async def get(args: argparse.Namespace, context: Context, given: inputs.Given) -> Exit:
    """Show one job in full."""
    async with _jobs(args, context) as jobs:
        job = await jobs.get(args.id, history=args.history)
    if args.json:
        context.out(output.job_json(job))
        return Exit.OK
    context.out(*output.job_details(job))
    if args.history and job.attempt_history:
        context.out("", *output.attempt_table(job.attempt_history, context.width))
    elif args.history:
        # A job service older than the attempt history answers the request without it.
        context.out("", "no attempts yet" if job.attempts == 0 else "the job service sent no attempt history")
    return Exit.OK


async def list_jobs(args: argparse.Namespace, context: Context, given: inputs.Given) -> Exit:
    """List the caller's jobs."""
    async with _jobs(args, context) as jobs:
        found = jobs.list(status=args.status or 0, job_type=args.job_type, page_size=_page(args.limit))
        await _print_jobs(args, context, found)
    return Exit.OK


async def dead(args: argparse.Namespace, context: Context, given: inputs.Given) -> Exit:
    """List the dead jobs, or run them again."""
    async with _jobs(args, context) as jobs:
        if args.rerun:
            count = await jobs.rerun_dead(job_type=args.job_type, max_attempts=args.max_attempts)
            context.out(f'{{"rerunCount": {count}}}' if args.json else f"{count} jobs run again")
            return Exit.OK
        await _print_jobs(args, context, jobs.list_dead(job_type=args.job_type, page_size=_page(args.limit)))
    return Exit.OK


def _page(limit: int) -> int:
    """The page size for ``limit`` jobs and one more (to tell whether there are more): no more than the largest."""
    return min(limit + 1, 100) if limit else 0


async def _print_jobs(args: argparse.Namespace, context: Context, jobs: AsyncIterator[Job]) -> None:
    """Up to --limit jobs: JSON lines as they come, or a table once all are in (to align it)."""
    found: list[Job] = []
    count = 0
    more = False
    try:
        async for job in jobs:
            if args.limit and count == args.limit:
                more = True
                break
            count += 1
            if args.json:
                context.out(output.job_json(job))
            else:
                found.append(job)
    finally:
        # Stopping at --limit closes the pages' generator now, not at some later garbage collection.
        if isinstance(jobs, AsyncGenerator):
            await jobs.aclose()
    if not args.json:
        context.out(*output.job_table(found, context.width, _now()))
    if more:
        context.note(f"(the first {args.limit}; --limit N for more, --limit 0 for all)")


async def watch(args: argparse.Namespace, context: Context, given: inputs.Given) -> Exit:
    """Follow one job to its end, or every change to the caller's jobs until Ctrl-C."""
    async with _jobs(args, context) as jobs:
        if args.id is None:
            return await _watch_all(args, context, jobs)
        last: Job | None = None
        try:
            async for job in jobs.watch(args.id):
                last = _show_state(args, context, job)
        except JobQueueError as error:
            # A job service without WatchJob: ask for the job until it is final instead.
            if error.code != grpc.StatusCode.UNIMPLEMENTED or last is not None:
                raise
            while last is None or not is_final(last.status):
                job = await jobs.get(args.id)
                if last is None or job.proto != last.proto:
                    last = _show_state(args, context, job)
                if not is_final(job.status):
                    await asyncio.sleep(POLL_SECONDS)
    assert last is not None  # watch and the polling both end at a final state
    if not args.json:
        for label, text in (("result", last.result), ("error", last.error)):
            if text is not None:
                context.out(f"{label}: " + "\n  ".join(text.split("\n")))
    return exits.for_status(last.status)


def _show_state(args: argparse.Namespace, context: Context, job: Job) -> Job:
    context.out(output.job_json(job) if args.json else output.state_line(job, context.width))
    return job


async def _watch_all(args: argparse.Namespace, context: Context, jobs: JobsClient) -> Exit:
    """``watch`` without an id: every change as it comes, until Ctrl-C or the service ends the stream."""
    changes = jobs.watch_jobs(status=args.status or 0, job_type=args.job_type, all_users=args.all_users)
    began = False
    async for batch in changes:
        if not began:
            began = True
            context.note("watching; Ctrl-C to stop")
        for job in batch:
            context.out(output.job_json(job) if args.json else output.change_line(job, context.width))
    context.error("the job service ended the watch: changes from now on are not shown")
    return Exit.UNAVAILABLE


async def cancel(args: argparse.Namespace, context: Context, given: inputs.Given) -> Exit:
    """Cancel a job."""
    async with _jobs(args, context) as jobs:
        job = await jobs.cancel(args.id)
    _print_job(args, context, job)
    return Exit.OK


async def rerun(args: argparse.Namespace, context: Context, given: inputs.Given) -> Exit:
    """Run a FAILED job again."""
    async with _jobs(args, context) as jobs:
        job = await jobs.rerun(args.id, max_attempts=args.max_attempts)
    _print_job(args, context, job)
    return Exit.OK


def _print_job(args: argparse.Namespace, context: Context, job: Job) -> None:
    context.out(output.job_json(job) if args.json else "\n".join(output.job_table([job], context.width, _now())))


async def types(args: argparse.Namespace, context: Context, given: inputs.Given) -> Exit:
    """List the job types."""
    async with _jobs(args, context) as jobs:
        found = await jobs.job_types()
    if args.json:
        context.out(*(output.job_type_json(job_type) for job_type in found))
    else:
        context.out(*output.type_table(found, context.width))
    return Exit.OK


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


COMMANDS: dict[str, Callable[[argparse.Namespace, Context, inputs.Given], Coroutine[Any, Any, Exit]]] = {
    "login": login,
    "logout": logout,
    "register": register,
    "submit": submit,
    "get": get,
    "list": list_jobs,
    "watch": watch,
    "cancel": cancel,
    "rerun": rerun,
    "dead": dead,
    "types": types,
}
