"""Live job streams: who watches what, and getting each committed change to them (WatchJob, WatchJobs).

**Across replicas** changes travel by PostgreSQL LISTEN/NOTIFY: a trigger on the jobs table
(migrations/0014_job_watch.sql) announces every committed change, whichever replica (or the
database's own recovery of a lost attempt) made it, in commit order, and only when it commits.
The database is already the one place every change passes through, so no replica has to
remember to publish, and the broker being down changes nothing. The trigger announces only
while some replica has watchers (job_svc/watch_store.py), so the job path pays nothing for
NOTIFY while no one watches.

**No change lost between the snapshot and the stream**: a watcher registers here, and the hub is
listening (``ready``), before WatchJob reads its snapshot or WatchJobs says it has begun. Any
change committed after that is announced to a registered watcher.

**Slow readers never block the service.** The hub never waits for a watcher. A WatchJob watcher
is only told "your job changed" (a flag) and reads the job itself when its reader is ready, so
it skips intermediate states but never the last. A WatchJobs watcher keeps the latest state of
each changed job, in the order they changed, up to ``max_pending`` distinct jobs; one more, and
its stream ends ABORTED (WATCH_FELL_BEHIND): it must watch and list again.

**When the feed breaks** (the listening connection lost, the interest lapsed), changes may have
gone unannounced, so every watch ends UNAVAILABLE (WATCH_INTERRUPTED) rather than go on with a
gap: a WatchJob client opens it again and gets a fresh snapshot; a WatchJobs client lists again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from job_svc import metrics
from job_svc.errors import TooManyWatches, WatchFellBehind, WatchInterrupted
from job_svc.model import Job, Status
from jobqueue.runtime.backoff import Backoff
from jobqueue.runtime.errors import ServiceError

log = logging.getLogger("job_svc.watch")
_Key = TypeVar("_Key")

#: How often the hub renews its interest (well within watch_store.INTEREST_SECONDS).
RENEW_SECONDS = 5.0
#: How long the hub keeps listening after its last watcher left, so that a page reload reuses the feed.
LINGER_SECONDS = 30.0
#: How long a new watch waits for the feed to open before it is refused UNAVAILABLE.
READY_SECONDS = 15.0
#: The RetryInfo of a watch refused for a limit.
WATCH_RETRY_SECONDS = 5.0


class Feed(Protocol):
    """The announcements of changes (job_svc.watch_store.ChangeFeed)."""

    async def open(self, on_change: Callable[[str], None], on_lost: Callable[[], None]) -> None:
        """Start listening (nothing is announced yet)."""

    async def watch(self, owner: uuid.UUID | None) -> None:
        """Announce changes to ``owner``'s jobs (everyone's: None); return once every one from now on is."""

    async def unwatch(self, owner: uuid.UUID | None) -> None:
        """Stop announcing changes to ``owner``'s jobs (everyone's: None)."""

    async def renew(self) -> bool:
        """Keep announcing; False if announcing had lapsed for someone."""

    async def close(self) -> None:
        """Stop announcing and listening."""


class JobReader(Protocol):
    """Reading jobs by id (job_svc.store.JobStore)."""

    async def get_many(self, job_ids: Sequence[uuid.UUID]) -> Sequence[Job]:
        """The jobs with these ids that exist."""


@dataclass(frozen=True)
class Change:
    """One committed change to a job, as announced: which job, whose, of what type, from and to what status."""

    job_id: uuid.UUID
    owner_id: uuid.UUID
    type: str
    before: Status | None
    after: Status

    @classmethod
    def parse(cls, payload: str) -> Change | None:
        """The change a notification announces; None for a payload not in the trigger's form."""
        try:
            job_id, owner_id, job_type, before, after = payload.split(" ")
            return cls(
                uuid.UUID(job_id),
                uuid.UUID(owner_id),
                job_type,
                None if before == "-" else Status(before),
                Status(after),
            )
        except ValueError:
            return None


@dataclass(eq=False)
class _Watcher:
    owner: uuid.UUID
    #: WatchJob: the one job watched. None for WatchJobs.
    job_id: uuid.UUID | None = None
    #: WatchJobs: every user's jobs (an operator), not only the owner's.
    all_users: bool = False
    status: Status | None = None
    job_type: str | None = None
    #: WatchJobs: the latest state of each changed job not yet read, in the order they changed.
    pending: OrderedDict[uuid.UUID, Job] = field(default_factory=OrderedDict)
    #: Set when there is something to read (a change, or the end).
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Why the watch must end, once it must.
    failure: ServiceError | None = None
    #: Whether it began while the feed was open, and so ends when the feed does.
    live: bool = False

    @property
    def scope(self) -> uuid.UUID | None:
        """Whose jobs' changes it needs announced: its owner's, or everyone's (None)."""
        return None if self.all_users else self.owner

    def wants(self, change: Change) -> bool:
        """Whether the announced change may concern this watcher (the job's current state decides for WatchJobs)."""
        if self.job_id is not None:
            return change.job_id == self.job_id
        if not self.all_users and change.owner_id != self.owner:
            return False
        if self.job_type is not None and change.type != self.job_type:
            return False
        return self.status is None or self.status in (change.before, change.after)

    def end(self, failure: ServiceError) -> None:
        if self.failure is None:
            self.failure = failure
        self.wake.set()


class JobWatch:
    """One WatchJob stream's view of the hub: wait for a change to its job."""

    def __init__(self, watcher: _Watcher) -> None:
        self._watcher = watcher

    async def changed(self) -> None:
        """Return once the job changed since the last return (or the watch began); raise if the watch must end."""
        watcher = self._watcher
        await watcher.wake.wait()
        if watcher.failure is not None:
            raise watcher.failure
        watcher.wake.clear()


class JobsWatch:
    """One WatchJobs stream's view of the hub: the changed jobs, a batch at a time."""

    def __init__(self, watcher: _Watcher) -> None:
        self._watcher = watcher

    async def next_batch(self) -> list[Job]:
        """The jobs that changed since the last batch, oldest change first; raise if the watch must end."""
        watcher = self._watcher
        while True:
            await watcher.wake.wait()
            if watcher.failure is not None:
                raise watcher.failure
            watcher.wake.clear()
            if watcher.pending:
                batch = list(watcher.pending.values())
                watcher.pending.clear()
                return batch


class WatchHub:
    """Every watch open on this replica, and the one feed of changes they share."""

    def __init__(
        self,
        feed: Feed,
        jobs: JobReader,
        *,
        max_per_user: int,
        max_total: int,
        max_pending: int = 1000,
        linger_seconds: float = LINGER_SECONDS,
    ) -> None:
        self._feed = feed
        self._jobs = jobs
        self.max_per_user = max_per_user
        self.max_total = max_total
        self.max_pending = max_pending
        self._linger = linger_seconds
        self._watchers: set[_Watcher] = set()
        self._by_owner: Counter[uuid.UUID] = Counter()
        self._by_scope: Counter[uuid.UUID | None] = Counter()
        #: The interests the open feed holds (or is taking), by scope; each a task its watchers share.
        self._interests: dict[uuid.UUID | None, asyncio.Task[None]] = {}
        #: When each interest's last watcher left.
        self._idle_since: dict[uuid.UUID | None, float] = {}
        #: Counts the feeds opened, so a watcher can tell that the feed it took an interest in is gone.
        self._generation = 0
        self._wanted = asyncio.Event()
        self._ready = asyncio.Event()
        self._lost = asyncio.Event()
        self._incoming: list[Change] = []
        self._has_incoming = asyncio.Event()
        self._stopping = False

    @contextlib.asynccontextmanager
    async def watch_job(self, owner: uuid.UUID, job_id: uuid.UUID) -> AsyncIterator[JobWatch]:
        """Watch one of ``owner``'s jobs; on entry, every change committed from then on will be seen."""
        async with self._registered(_Watcher(owner, job_id=job_id)) as watcher:
            yield JobWatch(watcher)

    @contextlib.asynccontextmanager
    async def watch_jobs(
        self, owner: uuid.UUID, *, all_users: bool, status: Status | None, job_type: str | None
    ) -> AsyncIterator[JobsWatch]:
        """Watch ``owner``'s jobs (everyone's with ``all_users``); on entry, as watch_job."""
        watcher = _Watcher(owner, all_users=all_users, status=status, job_type=job_type)
        async with self._registered(watcher) as registered:
            yield JobsWatch(registered)

    @contextlib.asynccontextmanager
    async def _registered(self, watcher: _Watcher) -> AsyncIterator[_Watcher]:
        if self._stopping:
            raise WatchInterrupted("the job service is stopping; watch again")
        if len(self._watchers) >= self.max_total:
            raise TooManyWatches("this job service has all the watches it takes", retry_after=WATCH_RETRY_SECONDS)
        if self._by_owner[watcher.owner] >= self.max_per_user:
            raise TooManyWatches(
                f"at most {self.max_per_user} watches may be open at once; close one first",
                retry_after=WATCH_RETRY_SECONDS,
            )
        self._watchers.add(watcher)
        self._by_owner[watcher.owner] += 1
        self._by_scope[watcher.scope] += 1
        self._idle_since.pop(watcher.scope, None)
        metrics.WATCHES.inc()
        self._wanted.set()
        try:
            try:
                async with asyncio.timeout(READY_SECONDS):
                    await self._until_announced(watcher.scope)
            except TimeoutError:
                raise WatchInterrupted("the feed of changes is not available; watch again later") from None
            # No await since the interest was seen in place: the feed cannot have closed without ending it.
            watcher.live = True
            yield watcher
        finally:
            self._watchers.discard(watcher)
            _release(self._by_owner, watcher.owner)
            _release(self._by_scope, watcher.scope)
            if watcher.scope not in self._by_scope:
                self._idle_since[watcher.scope] = asyncio.get_running_loop().time()
            metrics.WATCHES.dec()
            if not self._watchers:
                self._wanted.clear()

    async def _until_announced(self, scope: uuid.UUID | None) -> None:
        """Return once the feed is open and announces every change to ``scope``'s jobs."""
        while True:
            while not self._ready.is_set():
                await self._ready.wait()
            generation = self._generation
            interest = self._interests.get(scope)
            if interest is None or (interest.done() and not _succeeded(interest)):
                interest = self._interests[scope] = asyncio.create_task(
                    self._feed.watch(scope), name=f"watch interest {scope}"
                )
            try:
                # Shielded: the interest is shared, and one watcher giving up must not cancel it.
                await asyncio.shield(interest)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not interest.cancelled() or (current is not None and current.cancelling()):
                    raise
                continue  # the feed closed under it (and cancelled it): wait for the next one
            except Exception as error:  # noqa: BLE001 - the next watcher tries afresh; the feed may be lost
                log.warning("could not take an interest in changes", extra={"error": repr(error)})
                raise WatchInterrupted("the feed of changes is not available; watch again") from None
            if self._ready.is_set() and self._generation == generation:
                return

    async def close(self) -> None:
        """End every watch (UNAVAILABLE: watch again, through another replica) and take no more."""
        self._stopping = True
        for watcher in list(self._watchers):
            watcher.end(WatchInterrupted("the job service is stopping; watch again"))

    async def run(self) -> None:
        """Keep the feed open while anyone watches (and LINGER_SECONDS after), and hand changes out."""
        backoff = Backoff(0.2, 5.0)
        failures = 0
        while True:
            await self._wanted.wait()
            try:
                await self._serve_feed()
                failures = 0
            except Exception as error:  # noqa: BLE001 - the feed is opened again; its watchers were told
                failures += 1
                log.warning("change feed lost; its watches ended", extra={"error": repr(error)})
                await asyncio.sleep(backoff.delay(failures))

    async def _serve_feed(self) -> None:
        self._lost.clear()
        self._incoming.clear()
        await self._feed.open(self._announced, self._lost.set)
        self._generation += 1
        dispatching = asyncio.create_task(self._dispatch(), name="watch dispatch")
        # A dispatcher that died (it should not) is a feed lost: its watchers would wait for ever.
        dispatching.add_done_callback(lambda _: self._lost.set())
        self._ready.set()
        try:
            await self._hold_feed()
        finally:
            # Before any await: a watch that saw the feed ready is live, and ended just below.
            self._ready.clear()
            self._interrupt("the feed of changes closed; watch again")
            interests, self._interests = list(self._interests.values()), {}
            self._idle_since.clear()
            for task in [dispatching, *interests]:
                task.cancel()
            await asyncio.gather(dispatching, *interests, return_exceptions=True)
            await self._feed.close()

    async def _hold_feed(self) -> None:
        """Renew the interests until the feed is lost (raise) or no one has watched for a while (return).

        An interest whose last watcher left LINGER_SECONDS ago is withdrawn: a page reload finds it
        still in place, and a user who closed their dashboard no longer costs anyone a NOTIFY.
        """
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), RENEW_SECONDS)
            if self._lost.is_set():
                raise ConnectionError("the listening connection closed")
            if not await self._feed.renew():
                raise ConnectionError("an interest lapsed: changes may have gone unannounced")
            now = loop.time()
            for scope, since in list(self._idle_since.items()):
                if now - since < self._linger or scope in self._by_scope:
                    continue
                del self._idle_since[scope]
                interest = self._interests.pop(scope, None)
                if interest is not None and interest.done() and _succeeded(interest):
                    await self._feed.unwatch(scope)
            if not self._watchers and not self._interests:
                return

    def _announced(self, payload: str) -> None:
        change = Change.parse(payload)
        if change is None:
            log.warning("ignored a change notification not in the trigger's form", extra={"payload": payload[:200]})
            return
        self._incoming.append(change)
        self._has_incoming.set()

    async def _dispatch(self) -> None:
        """Hand each batch of announced changes to the watchers they concern, one batch after another.

        One batch at a time, so each job's states reach a watcher in the order they were read, which
        is never older than the one before. Changes that arrive while a batch is read wait for the next.
        """
        while True:
            await self._has_incoming.wait()
            self._has_incoming.clear()
            changes, self._incoming = self._incoming, []
            metrics.WATCH_CHANGES.inc(len(changes))
            await self._deliver(changes)

    async def _deliver(self, changes: list[Change]) -> None:
        wanted: dict[_Watcher, list[Change]] = {}
        for watcher in self._watchers:
            concerning = [change for change in changes if watcher.wants(change)]
            if not concerning:
                continue
            if watcher.job_id is not None:
                watcher.wake.set()  # it reads the job itself
            else:
                wanted[watcher] = concerning
        if not wanted:
            return
        ids = list(dict.fromkeys(change.job_id for concerning in wanted.values() for change in concerning))
        try:
            jobs = {job.id: job for job in await self._jobs.get_many(ids)}
        except Exception as error:  # noqa: BLE001 - those watchers end; the rest go on
            log.warning("could not read changed jobs; their watches ended", extra={"error": repr(error)})
            for watcher in wanted:
                watcher.end(WatchInterrupted("could not read the changed jobs; watch and list again"))
            return
        for watcher, concerning in wanted.items():
            self._hand_out(watcher, concerning, jobs)

    def _hand_out(self, watcher: _Watcher, concerning: list[Change], jobs: dict[uuid.UUID, Job]) -> None:
        """Add the changed jobs that match ``watcher``'s filters to what it has to read, latest state only."""
        for change in concerning:
            job = jobs.get(change.job_id)
            if job is None or (watcher.job_type is not None and job.type != watcher.job_type):
                continue
            if watcher.status is not None and watcher.status not in (change.before, change.after, job.status):
                continue
            watcher.pending.pop(job.id, None)
            watcher.pending[job.id] = job
        if len(watcher.pending) > self.max_pending:
            metrics.WATCHES_FELL_BEHIND.inc()
            watcher.end(
                WatchFellBehind(f"more than {self.max_pending} changed jobs waited unread; watch and list again")
            )
        elif watcher.pending:
            watcher.wake.set()

    def _interrupt(self, message: str) -> None:
        for watcher in list(self._watchers):
            if watcher.live:
                watcher.end(WatchInterrupted(message))

    @property
    def open_watches(self) -> int:
        """How many watches are open on this replica."""
        return len(self._watchers)


def _release(counter: Counter[_Key], key: _Key) -> None:
    """One fewer of ``key``; a key counted 0 is dropped."""
    counter[key] -= 1
    if not counter[key]:
        del counter[key]


def _succeeded(task: asyncio.Task[None]) -> bool:
    """Whether a finished task returned (neither raised nor was cancelled)."""
    return not task.cancelled() and task.exception() is None
