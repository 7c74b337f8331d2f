"""JobContext: what a handler may know about the job it runs, and how an async handler says how far it got."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field

#: Longest progress message the job service stores; a longer one is cut.
MAX_PROGRESS_MESSAGE_CHARS = 200

#: Where a running job's progress goes (jobqueue.worker.progress.Progress.report).
ProgressSink = Callable[[float, str], None]


@dataclass(frozen=True)
class JobContext:
    """The job a handler runs: pass a handler a second parameter to get it, ``def handler(payload, job)``.

    ``attempt`` is the number of this attempt (1 for the first; it keeps
    counting across re-runs, as the job's ``attempts`` does).
    """

    job_id: str
    job_type: str
    attempt: int
    _sink: ProgressSink | None = field(default=None, repr=False, compare=False)

    def progress(self, fraction: float, message: str = "") -> Awaitable[None]:
        """Say how far the job got: ``fraction`` of the work done (0 to 1), and a short note for a person.

        The job's owner sees the latest through GetJob. Reports are sent at
        most once per PROGRESS_INTERVAL_SECONDS per job, the latest one winning,
        so a handler may call this as often as it likes. Async handlers only:
        one in a handler process has no way to reach the job service, and is
        told so at once (RuntimeError). Messages longer than 200 characters are
        cut. The report is taken when called; awaiting it, as an async handler
        naturally does, completes at once.
        """
        if self._sink is None:
            raise RuntimeError("progress is reported by async handlers only")
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not math.isfinite(fraction):
            raise ValueError(f"progress fraction must be a number from 0 to 1, not {fraction!r}")
        if not 0 <= fraction <= 1:
            raise ValueError(f"progress fraction must be from 0 to 1, not {fraction}")
        if len(message) > MAX_PROGRESS_MESSAGE_CHARS:
            message = message[: MAX_PROGRESS_MESSAGE_CHARS - 1] + "…"
        self._sink(float(fraction), message)
        return _Taken()


class _Taken:
    """An awaitable that is complete already: what ``progress`` returns."""

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator, so that awaiting it returns at once
