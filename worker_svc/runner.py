"""Running a job: pick its handler, check its payload, and compute the result off the event loop when heavy.

A job's own problems (unknown type, payload that breaks its rule) are a
Result with ok=False: permanent failures, reported FAILED. Anything else that
goes wrong is raised to the caller, including whatever a handler raises: the
consumer fails that attempt as retryable (worker_svc/consumer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from common.job_types import PayloadError, parse_payload
from worker_svc.handlers import HANDLERS, install, run_handler

log = logging.getLogger(__name__)

UNKNOWN_TYPE = "unknown job type"


@dataclass(frozen=True)
class Result:
    """How a job went: ``ok`` with the result text, or not ``ok`` with the error text."""

    ok: bool
    text: str


_PR_SET_PDEATHSIG = 1


def _init_handler_process(parent: int, modules: Sequence[str]) -> None:
    """Initializer of each handler process.

    A spawned process starts with only the built-in job types; it installs the
    worker's JOB_TYPE_MODULES itself, so handlers from those modules run here too.

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
    install(modules)


def _ready() -> bool:
    return True


class Runner:
    """Runs jobs: cheap handlers inline, CPU-bound ones in a pool of ``processes`` processes.

    ``modules`` are the JOB_TYPE_MODULES the worker installed (worker_svc.handlers.install)
    before creating the runner; every handler process installs them too.
    """

    def __init__(self, processes: int = 1, modules: Sequence[str] = ()) -> None:
        self._processes = processes
        self._modules = tuple(modules)
        self._pool = self._new_pool()
        #: One per pool process; see ``turn``.
        self._free_processes = asyncio.Semaphore(processes)

    def _new_pool(self) -> ProcessPoolExecutor:
        # "spawn", not the Linux default "fork": forking a process that runs
        # gRPC and asyncio threads can copy their locks in a held state.
        return ProcessPoolExecutor(
            self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_handler_process,
            initargs=(os.getpid(), self._modules),
        )

    async def start(self) -> None:
        """Start the pool processes now, so the first heavy job does not wait for them."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, _ready) for _ in range(self._processes)))

    @contextlib.asynccontextmanager
    async def turn(self, job_type: str, payload: Any) -> AsyncIterator[None]:
        """Wait, holding nothing, until the job can start at once; it should be claimed and run inside.

        A job for the pool waits for a free pool process; any other job goes
        at once. The job service times a claimed job from its claim, so a worker
        holding many prefetched jobs must not claim one that would then queue
        behind others in the pool and use up its timeout there.
        """
        if self._in_pool(job_type, payload):
            async with self._free_processes:
                yield
        else:
            yield

    def _in_pool(self, job_type: str, payload: Any) -> bool:
        handler = HANDLERS.get(job_type)
        if handler is None or not handler.cpu_bound:
            return False
        try:
            value = parse_payload(job_type, payload)
        except (PayloadError, KeyError):
            return False  # run answers it at once
        return handler.small is None or not handler.small(value)

    async def run(self, job_type: str, payload: Any) -> Result:
        """The result of the job; raises only for failures that are not the job's fault."""
        handler = HANDLERS.get(job_type)
        if handler is None:
            return Result(False, UNKNOWN_TYPE)
        try:
            value = parse_payload(job_type, payload)
        except PayloadError as error:
            return Result(False, f"payload: {error}")
        except KeyError:
            # A handler whose type is missing from JOB_TYPES; a unit test keeps the two tables equal.
            return Result(False, UNKNOWN_TYPE)
        if not handler.cpu_bound or (handler.small is not None and handler.small(value)):
            return Result(True, handler.run(value))
        pool = self._pool
        try:
            return Result(True, await asyncio.get_running_loop().run_in_executor(pool, run_handler, job_type, value))
        except BrokenProcessPool:
            # A pool process died (killed, out of memory); every later job would
            # fail the same way unless the pool is replaced.
            if pool is self._pool:
                log.error("handler process died; starting a new pool", extra={"job_type": job_type})
                self._pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    async def close(self) -> None:
        """Stop the pool processes (after the jobs they are running)."""
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
