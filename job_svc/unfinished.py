"""The cap on each user's unfinished jobs, checked on an estimate far from it and exactly near it.

The exact check (``JobStore.create`` with ``max_unfinished``) takes a per-owner advisory lock and
counts the owner's QUEUED and RUNNING jobs in the insert's transaction: four round trips more than a
plain INSERT, and one user's creates then run one after another. Most creates are nowhere near the
cap, so each process keeps, per user, an estimate that is never below the truth as far as this
process is concerned:

    estimate = the count last read from PostgreSQL + the jobs this process accepted since that read

(jobs still being stored when the read began count as accepted since: the read may not have seen
them). A create whose jobs fit with room to spare is stored with the plain INSERT; one that comes
close takes the exact check. Close means within a margin of what the *other* replicas may have
accepted for the user since the read (``margin(age)``: by default one replica's rate limit, its
burst plus its rate times the read's age), so the cap is exact with one or two replicas; beyond,
see docs/security.md for the arithmetic.

Reads happen in the background, at most once per REFRESH_SECONDS per user while the user submits,
so no create waits for one. A user with no read yet, or one older than MAX_AGE_SECONDS (idle), is
checked exactly while its read is made. An exact check first waits for this process's plain
INSERTs of the same user to finish (its count must see them), and while it is pending that user's
creates here all take it. Memory is bounded: the least recently used users beyond ``max_users`` are
forgotten (and checked exactly, as new ones, when they come back).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Protocol

from job_svc.model import Job, NewJob

log = logging.getLogger(__name__)

#: How old a read may get while its user submits before it is made again (in the background).
REFRESH_SECONDS = 1.0
#: Beyond this age an estimate is not trusted at all: its user's creates take the exact check.
MAX_AGE_SECONDS = 2.0
#: Users whose estimates each process keeps at most (the least recently used are forgotten first).
MAX_USERS = 100_000
#: Owners counted in one background read.
READ_BATCH = 1000


@dataclass(slots=True)
class _Estimate:
    """What one process knows of one user's unfinished jobs."""

    #: The count last read, and when that read began (its snapshot is no older).
    read: int | None = None
    read_at: float = -math.inf
    #: Jobs accepted since the read began, plus those being stored when it began.
    since: int = 0
    #: Jobs accepted and being stored now, on the estimate (plain INSERT) and by the exact check.
    fast: int = 0
    exact: int = 0
    #: A read under way: when it began, ``since`` then, and the jobs being stored then.
    reading: tuple[float, int, int] | None = None
    #: When a read was last asked for (so one that fails is asked again only a period later).
    asked_at: float = -math.inf

    @property
    def busy(self) -> bool:
        return bool(self.fast or self.exact or self.reading)


class Estimates:
    """Per-user estimates of unfinished jobs and the choice between the plain INSERT and the exact check.

    Pure bookkeeping (no I/O): ``UnfinishedCap`` below does the reads and the stores.
    """

    def __init__(
        self,
        cap: int,
        margin: Callable[[float], float],
        *,
        max_users: int = MAX_USERS,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.cap = cap
        self._margin = margin
        self._max_users = max_users
        self._clock = clock
        self._users: OrderedDict[uuid.UUID, _Estimate] = OrderedDict()

    def _touch(self, owner: uuid.UUID) -> _Estimate:
        estimate = self._users.pop(owner, None) or _Estimate()
        self._users[owner] = estimate
        # Forget the least recently used, but never one with jobs being stored or a read under way: its
        # exact check must wait for those jobs, and a read's result must find where to go.
        for _ in range(len(self._users) - self._max_users):
            oldest, entry = self._users.popitem(last=False)
            if entry.busy:
                self._users[oldest] = entry
        return estimate

    def fits(self, owner: uuid.UUID, count: int) -> bool:
        """Whether ``count`` more jobs of ``owner`` fit on the estimate alone, with the margin to spare."""
        estimate = self._users.get(owner)
        if estimate is None or estimate.read is None or estimate.exact:
            return False
        age = self._clock() - estimate.read_at
        if age > MAX_AGE_SECONDS:
            return False
        return estimate.read + estimate.since + count + self._margin(max(age, 0.0)) <= self.cap

    def accept(self, counts: Mapping[uuid.UUID, int]) -> set[uuid.UUID]:
        """Take jobs (``counts`` per owner) to be stored; returns the owners whose jobs need the exact check.

        Every job counts in its owner's estimate from now on, stored or not (refused, repeated or
        failed ones too), until the next read: the estimate may only err high.
        """
        exact: set[uuid.UUID] = set()
        for owner, count in counts.items():
            fast = self.fits(owner, count)
            estimate = self._touch(owner)
            estimate.since += count
            if fast:
                estimate.fast += count
            else:
                estimate.exact += count
                exact.add(owner)
        return exact

    def stored(self, counts: Mapping[uuid.UUID, int], exact: Collection[uuid.UUID]) -> None:
        """The jobs ``accept`` took are stored, or failed to be: no longer being stored."""
        for owner, count in counts.items():
            estimate = self._users.get(owner)
            if estimate is None:
                continue
            if owner in exact:
                estimate.exact -= count
            else:
                estimate.fast -= count

    def storing(self, owner: uuid.UUID) -> int:
        """Jobs of ``owner`` being stored by plain INSERT (an exact check waits until there are none)."""
        estimate = self._users.get(owner)
        return 0 if estimate is None else estimate.fast

    def to_read(self, owners: Collection[uuid.UUID]) -> list[uuid.UUID]:
        """Those of ``owners`` whose read is missing or REFRESH_SECONDS old, and not asked for within that time.

        Each is marked asked for now.
        """
        now = self._clock()
        due: list[uuid.UUID] = []
        for owner in owners:
            estimate = self._users.get(owner)
            if estimate is None or estimate.reading is not None or now - estimate.asked_at < REFRESH_SECONDS:
                continue
            if now - estimate.read_at >= REFRESH_SECONDS:
                estimate.asked_at = now
                due.append(owner)
        return due

    def begin_read(self, owner: uuid.UUID) -> None:
        """A read of ``owner``'s count begins now (its snapshot will be taken after this)."""
        estimate = self._users.get(owner)
        if estimate is not None:
            estimate.reading = (self._clock(), estimate.since, estimate.fast + estimate.exact)

    def end_read(self, owner: uuid.UUID, count: int | None) -> None:
        """The read begun last for ``owner`` found ``count`` unfinished jobs (None: it failed)."""
        estimate = self._users.get(owner)
        if estimate is None or estimate.reading is None:
            return
        began, since_then, storing_then = estimate.reading
        estimate.reading = None
        if count is not None:
            estimate.read, estimate.read_at = count, began
            # Jobs accepted after the read began, and those being stored then (it may not have seen them).
            estimate.since = estimate.since - since_then + storing_then

    def estimate(self, owner: uuid.UUID) -> int | None:
        """The estimate of ``owner``'s unfinished jobs (None before a read)."""
        entry = self._users.get(owner)
        return None if entry is None or entry.read is None else entry.read + entry.since

    def __len__(self) -> int:
        return len(self._users)


class CapStore(Protocol):
    """What the cap needs of the jobs table (job_svc.store.JobStore)."""

    async def create(
        self,
        jobs: Sequence[NewJob],
        max_unfinished: int = 0,
        *,
        whole: bool = False,
        capped: Collection[uuid.UUID] | None = None,
    ) -> Sequence[tuple[Job, bool] | None]:
        """Store jobs, checking the cap exactly for the owners in ``capped`` (every owner when None)."""

    async def count_unfinished(self, owners: Sequence[uuid.UUID], limit: int) -> dict[uuid.UUID, int]:
        """Each owner's QUEUED and RUNNING jobs, counted up to ``limit``."""


class UnfinishedCap:
    """Stores jobs under the cap on unfinished jobs: on the estimate far from it, exactly near it."""

    def __init__(self, store: CapStore, estimates: Estimates) -> None:
        self._store = store
        self._estimates = estimates
        #: Owners whose exact check waits for their plain INSERTs to finish.
        self._drained: dict[uuid.UUID, asyncio.Event] = {}
        self._due: dict[uuid.UUID, None] = {}
        self._reader: asyncio.Task[None] | None = None

    async def create(self, jobs: Sequence[NewJob], *, whole: bool = False) -> Sequence[tuple[Job, bool] | None]:
        """Store the jobs as ``JobStore.create`` with the cap does: None for each that does not fit."""
        cap = self._estimates.cap
        if not cap:
            return await self._store.create(jobs, whole=whole)
        counts = Counter(job.owner_id for job in jobs)
        exact = self._estimates.accept(counts)
        self._read(counts.keys())
        try:
            if not exact:
                return await self._store.create(jobs, whole=whole)
            for owner in exact:
                await self._drain(owner)
            return await self._store.create(jobs, cap, whole=whole, capped=exact)
        finally:
            self._estimates.stored(counts, exact)
            for owner in counts.keys() - exact:
                if owner in self._drained and not self._estimates.storing(owner):
                    self._drained.pop(owner).set()

    async def _drain(self, owner: uuid.UUID) -> None:
        """Wait until this process stores no job of ``owner`` by plain INSERT (none starts meanwhile)."""
        while self._estimates.storing(owner):
            event = self._drained.setdefault(owner, asyncio.Event())
            await event.wait()

    def _read(self, owners: Collection[uuid.UUID]) -> None:
        """Have the owners' counts read again in the background, if they are due."""
        for owner in self._estimates.to_read(owners):
            self._due[owner] = None
        if self._due and (self._reader is None or self._reader.done()):
            self._reader = asyncio.create_task(self._read_due(), name="unfinished-reads")

    async def _read_due(self) -> None:
        while self._due:
            owners = list(self._due)[:READ_BATCH]
            for owner in owners:
                del self._due[owner]
                self._estimates.begin_read(owner)
            counts: Mapping[uuid.UUID, int] | None = None
            try:
                counts = await self._store.count_unfinished(owners, self._estimates.cap + 1)
            except Exception as error:  # noqa: BLE001 - the estimates stay as they were: the exact check covers them
                log.warning("could not count unfinished jobs", extra={"owners": len(owners), "error": repr(error)})
            finally:
                for owner in owners:
                    self._estimates.end_read(owner, None if counts is None else counts.get(owner, 0))
