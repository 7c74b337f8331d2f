"""Running a job: pick its handler, check its payload, and run it on the event loop or in a handler process.

An ``async def`` handler runs on the event loop; a plain one is CPU-bound and
runs in one of the worker's handler processes (unless its type's ``inline_if``
says the input is too small to be worth the round trip).

A job's own problems (unknown type, a payload that breaks its schema, a
handler raising PermanentError, a result that is not JSON) are a Result with
ok=False: permanent failures, reported FAILED. Any other exception a handler
raises is raised as HandlerError, whose text is what the job's owner reads:
the exception's type and message and where it was raised (``describe``); the
consumer fails that attempt as retryable (jobqueue/worker/delivery.py).
Anything else that goes wrong is ours, not the handler's, and is raised as it is.

A handler process is handed the handler itself, which pickles as a reference
(its module and name) and is imported there; so a plain handler must be a
module-level function, which ``Runner`` checks at start. A handler process
describes its handler's exception itself and sends back only that text: there
the traceback is a real one, and an exception that cannot cross the process
boundary (one whose class does not unpickle) would otherwise break the pool
and look like a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import json
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing import resource_tracker
from typing import Any

from jobqueue.worker.context import JobContext
from jobqueue.worker.job_types import JobType, PayloadError, PermanentError

log = logging.getLogger(__name__)

UNKNOWN_TYPE = "unknown job type"
#: The most frames of a handler's traceback a job's error shows: the innermost ones.
ERROR_FRAMES = 5
#: The longest first line of a job's error from a handler: the exception's type and message.
ERROR_MESSAGE_CHARS = 1000
#: The longest line of a job's error naming a frame.
ERROR_FRAME_CHARS = 200
#: The longest error ``describe`` writes: its lines' bounds add up to less, so a long message
#: never crowds out the frames. The job service refuses a report with more than
#: job_svc.rules.MAX_ERROR_CHARS (8192).
MAX_ERROR_CHARS = 4096


@dataclass(frozen=True)
class Result:
    """How a job went: ``ok`` with its result (any JSON value), or not ``ok`` with the error text."""

    ok: bool
    value: Any


class HandlerError(Exception):
    """Raised when a job's handler raised; its text (see ``describe``) is the attempt's error."""


def describe(error: BaseException, *, skip: int = 0) -> str:
    """A handler's exception as its job's error: type, message, and the innermost frames, bounded.

    ``"ValueError: bad input\\n  my_jobs/parse.py:12 in check"``: the
    exception's type and message, then at most ERROR_FRAMES frames as
    file:line in function (no source lines and no locals: the job's owner
    reads this), each file relative to the sys.path entry it was imported
    from. Each line is bounded, NUL and lone surrogates are escaped (the job
    service refuses NUL, protobuf refuses surrogates). ``skip`` leaves out the
    outermost frames (the runner's own).
    """
    frames = list(traceback.walk_tb(error.__traceback__))[skip:]
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the exception's type
        message = "(its message could not be turned into text)"
    lines = [_line(type(error).__qualname__ + (f": {message}" if message else ""), ERROR_MESSAGE_CHARS)]
    if len(frames) > ERROR_FRAMES:
        lines.append(f"  ({len(frames) - ERROR_FRAMES} outer frames left out)")
    for frame, line in frames[-ERROR_FRAMES:]:
        code = frame.f_code
        lines.append(_line(f"  {_short_path(code.co_filename)}:{line} in {code.co_qualname}", ERROR_FRAME_CHARS))
    return _line("\n".join(lines), MAX_ERROR_CHARS)


def _line(text: str, limit: int) -> str:
    """``text`` with NUL and lone surrogates escaped, cut to ``limit`` characters."""
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_path(filename: str) -> str:
    """``filename`` relative to the longest sys.path entry holding it (``worker_svc/demo.py``), else as it is."""
    roots = sorted({os.path.abspath(entry or os.curdir) for entry in sys.path}, key=len, reverse=True)
    for root in roots:
        if filename.startswith(root.rstrip(os.sep) + os.sep):
            return filename[len(root.rstrip(os.sep)) + 1 :]
    return filename


def _call_handler(handler: Callable[..., Any], takes_job: bool, value: Any, job: JobContext) -> Result:
    """A plain handler on its parsed payload (here or in a handler process); HandlerError if it raised."""
    try:
        result = handler(value, job) if takes_job else handler(value)
    except PermanentError as error:
        return Result(False, _permanent(error))
    except Exception as error:
        raise HandlerError(describe(error, skip=1)) from error
    return _outcome(result)


async def _await_handler(job_type: JobType, value: Any, job: JobContext) -> Result:
    """``job_type``'s async handler on its parsed payload; as ``_call_handler``."""
    try:
        result = await (job_type.handler(value, job) if job_type.takes_job else job_type.handler(value))
    except PermanentError as error:
        return Result(False, _permanent(error))
    except Exception as error:
        raise HandlerError(describe(error, skip=1)) from error
    return _outcome(result)


def _permanent(error: PermanentError) -> str:
    """A PermanentError as its job's error: the first line ``describe`` writes, its type and message."""
    return describe(error).split("\n", 1)[0]


def _outcome(result: Any) -> Result:
    """The Result of a handler that returned ``result``: ok if it is a JSON value."""
    if isinstance(result, str):
        return Result(True, result)
    try:
        # Round-tripped, so what is reported is plain JSON: tuples become lists, keys must be strings.
        return Result(True, json.loads(json.dumps(result, allow_nan=False)))
    except (TypeError, ValueError) as error:
        return Result(False, f"the handler's result is not a JSON value ({type(result).__name__}: {error})")


_PR_SET_PDEATHSIG = 1


def _init_handler_process(parent: int, modules: Sequence[str]) -> None:
    """Initializer of each handler process.

    It imports the handlers' ``modules`` at once, so the first job does not
    wait for them (and a module that fails to import fails every job of its types).

    Ctrl-C signals the whole process group; if the pool processes died of it,
    the jobs they were running would look like crashes instead of being handed
    back by the main process's graceful stop, which owns the pool's lifetime.
    Since they ignore SIGTERM, they are told to die with SIGKILL when the worker
    itself dies (Linux): a SIGKILLed worker would otherwise leave them idle forever.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the worker died before prctl took effect
            os._exit(1)
    for module in modules:
        importlib.import_module(module)


#: The resource tracker's own warnings (their text starts with its name); see _start_resource_tracker.
_QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker, without its warning about a dead worker's semaphores.

    A pool's queues use named semaphores, and the tracker (a helper process
    started with the first pool) unlinks those whose owner died without doing
    so. When the worker is SIGKILLed, that clean-up is just what should happen
    and nothing is lost, yet the tracker warns "There appear to be 5 leaked
    semaphore objects to clean up at shutdown", which reads like a bug under
    `make run`. A worker that stops cleanly shuts its pools down, which
    unregisters their semaphores, so then there is nothing to warn about at all.
    The tracker takes its warning filters from our command line
    (sys.warnoptions), so the filter is added only while it is started: the
    worker and its handler processes keep every warning.
    """
    sys.warnoptions.append(_QUIET_TRACKER)
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions.remove(_QUIET_TRACKER)


class HandlerProcess:
    """One handler process, running one job at a time, which can be stopped mid-job.

    It is a pool of one process, so that a job which must stop (cancelled, or
    past its timeout) is stopped by killing the process that runs it, with no
    other job in that process. A successor is started at once, so the next job
    does not wait for it.
    """

    def __init__(self, modules: Sequence[str] = ()) -> None:
        """``modules``: those of the handlers this process runs, imported when it starts."""
        self._modules = tuple(modules)
        self._pool = self._new_pool()
        self._pid: asyncio.Future[int] | None = None
        self._closed = False

    def _new_pool(self) -> ProcessPoolExecutor:
        _start_resource_tracker()  # before the pool's semaphores would start it
        # "spawn", not the Linux default "fork": forking a process that runs
        # gRPC and asyncio threads can copy their locks in a held state.
        return ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_handler_process,
            initargs=(os.getpid(), self._modules),
        )

    def start(self) -> asyncio.Future[int]:
        """Start the process if it is not started; the future gives its pid."""
        if self._pid is None:
            self._pid = asyncio.get_running_loop().run_in_executor(self._pool, os.getpid)
        return self._pid

    async def run(self, job_type: JobType, value: Any, job: JobContext) -> Result:
        """The handler's Result, computed in this process; HandlerError if the handler raised.

        Cancelling the call kills the process (the handler stops at once) and
        starts another. BrokenProcessPool means the process died under the job.
        """
        pool = self._pool
        pid: int | None = None
        try:
            pid = await self.pid()
            return await asyncio.get_running_loop().run_in_executor(
                pool, _call_handler, job_type.handler, job_type.takes_job, value, replace(job, _sink=None)
            )
        except asyncio.CancelledError:
            if pid is not None:  # the job was handed over: stop it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._replace(pool)
            raise
        except BrokenProcessPool:
            # Killed from outside, or out of memory: every later job would fail
            # the same way unless the process is replaced.
            log.error("handler process died; starting a new one", extra={"job_type": job_type.name})
            self._replace(pool)
            raise

    def _replace(self, pool: ProcessPoolExecutor) -> None:
        if pool is not self._pool:
            return  # replaced already
        self._pool = self._new_pool()
        self._pid = None
        pool.shutdown(wait=False, cancel_futures=True)
        if not self._closed:
            self.start()

    async def close(self) -> None:
        """Stop the process (after the job it is running)."""
        self._closed = True
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    async def pid(self) -> int:
        """The process's pid (starting it if needed)."""
        # Shielded: the start is this process's, not the caller's to cancel.
        return await asyncio.shield(self.start())


class Runner:
    """Runs jobs of ``types``: async handlers on the event loop, plain ones in ``processes`` handler processes."""

    def __init__(self, types: Mapping[str, JobType], processes: int = 1) -> None:
        """ValueError if a plain handler is not a module-level function (a handler process could not import it)."""
        for job_type in types.values():
            if not job_type.is_async:
                _check_importable(job_type)
        self._types = dict(types)
        modules = sorted({t.handler.__module__ for t in types.values() if not t.is_async})
        self._processes = [HandlerProcess(modules) for _ in range(processes)]
        #: The handler processes no job holds; see ``turn``.
        self._idle: asyncio.Queue[HandlerProcess] = asyncio.Queue()
        for process in self._processes:
            self._idle.put_nowait(process)
        self._closed = False

    async def start(self) -> None:
        """Start the handler processes now, so the first heavy job does not wait for them."""
        await self.pids()

    async def pids(self) -> list[int]:
        """The handler processes' pids."""
        return list(await asyncio.gather(*(process.pid() for process in self._processes)))

    @contextlib.asynccontextmanager
    async def turn(self, job_type: str, payload: Any) -> AsyncIterator[HandlerProcess | None]:
        """Wait, holding nothing, until the job can start at once; claim it and ``run`` it inside.

        A job for the pool waits for a free handler process, which it is given
        (pass it to ``run``); any other job goes at once, given None. The job
        service times a claimed job from its claim, so a worker holding many
        prefetched jobs must not claim one that would then queue behind others
        and use up its timeout there.
        """
        if not self._in_pool(job_type, payload):
            yield None
            return
        process = await self._idle.get()
        try:
            yield process
        finally:
            self._idle.put_nowait(process)

    def _in_pool(self, job_type: str, payload: Any) -> bool:
        known = self._types.get(job_type)
        if known is None or known.is_async:
            return False
        if known.inline_if is None:
            return True
        try:
            return not known.runs_inline(known.parse(payload))
        except PayloadError:
            return False  # run answers it at once

    async def run(
        self, job_type: str, payload: Any, process: HandlerProcess | None = None, *, job: JobContext | None = None
    ) -> Result:
        """The Result of the job ``job`` (by default a first attempt); HandlerError if its handler raised.

        Raises nothing else of the job's. A job for the pool runs in
        ``process``, the one its ``turn`` gave, or else in the next free one.
        Cancelling the call stops the handler: an async one where it awaits, a
        plain one at once (its process is killed).
        """
        job = job or JobContext("", job_type, 1)
        known = self._types.get(job_type)
        if known is None:
            return Result(False, UNKNOWN_TYPE)
        try:
            value = known.parse(payload)
        except PayloadError as error:
            return Result(False, str(error))
        if known.is_async:
            return await _await_handler(known, value, job)
        if known.runs_inline(value):
            return _call_handler(known.handler, known.takes_job, value, replace(job, _sink=None))
        if self._closed:
            raise RuntimeError("cannot run a pool job: the runner is closed")
        if process is not None:
            return await process.run(known, value, job)
        async with self.turn(job_type, payload) as free:
            assert free is not None  # a pool job's turn always gives a process
            return await free.run(known, value, job)

    async def close(self) -> None:
        """Stop the handler processes (after the jobs they are running)."""
        self._closed = True
        await asyncio.gather(*(process.close() for process in self._processes))


def _check_importable(job_type: JobType) -> None:
    """ValueError unless ``job_type``'s plain handler pickles as a reference a handler process can import."""
    handler = job_type.handler
    try:
        same = pickle.loads(pickle.dumps(handler)) is handler  # noqa: S301 - our own bytes, this very moment
    except Exception:  # noqa: BLE001 - whatever pickle raises, the handler cannot be sent
        same = False
    if not same:
        raise ValueError(
            f"job type {job_type.name!r}: a plain (CPU-bound) handler runs in a handler process, which imports it "
            f"by name, so it must be a function defined at the top level of a module, not {handler!r}"
        )
