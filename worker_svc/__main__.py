"""Run the worker service: ``python -m worker_svc`` (``--help`` lists its settings; exit codes:
jobqueue.runtime.service).

It is the worker SDK (jobqueue.worker) running the built-in job types
(worker_svc/builtins.py), and the demo ones (worker_svc/demo.py) when
DEMO_JOB_TYPES=true.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jobqueue.runtime import service
from jobqueue.worker import Worker
from jobqueue.worker.serve import DESCRIPTION, serve
from worker_svc import builtins, demo
from worker_svc.settings import Settings


def worker(settings: Settings) -> Worker:
    """The job types ``settings`` ask for."""
    chosen = Worker()
    chosen.include(builtins.worker)
    if settings.demo_job_types:
        chosen.include(demo.worker)
    return chosen


async def run(settings: Settings, supervisor: service.Supervisor) -> None:
    """Serve the job types ``settings`` ask for until a stop is requested."""
    await serve(worker(settings).types, settings, supervisor)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return service.run("worker_svc", Settings, run, description=DESCRIPTION, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
