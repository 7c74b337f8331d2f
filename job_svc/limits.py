"""Per-user limits on submitting jobs: a rate for every job, a smaller one for HIGH priority, a cap on unfinished ones.

Without them any user could flood the queue: submit as fast as the service accepts (15,000 jobs/s in
BatchCreateJobs), keep a backlog that every other user's jobs wait behind, and put all of it at HIGH
priority. Each refusal is RESOURCE_EXHAUSTED with an ErrorInfo reason and a RetryInfo saying when to
come back, and is counted in jobqueue_limit_refusals_total{reason}.

**Rates** are token buckets (common/rates.py) per user, kept in each job-service process and checked
in ``admit`` before anything touches the database: a CreateJob costs one token, a BatchCreateJobs of N
jobs N, and HIGH priority jobs also take from a second, smaller bucket. Per process means no round
trip on the hot path; the price is that with N replicas a user reaching them round robin gets up to
N times the rate (docs/security.md). A call refused takes no token, so a client that waits out the
RetryInfo is charged once. A repeat of a request_id whose job exists (an idempotent retry after a lost
reply) is charged at admission, since whether it is a repeat is known only once the database has
answered, and then refunded, once per request_id in each process: so an honest retry costs nothing,
and repeating one request_id for ever still costs a token for every call but the first repeat.

**The cap on unfinished jobs** (QUEUED or RUNNING) must hold across replicas: job_svc/unfinished.py
checks it on a per-process estimate while a user is far from it, and exactly in PostgreSQL, in the
insert's transaction (job_svc/store.py), near it. What "near" is comes from here: the jobs the other
replicas may have accepted for the user since the estimate's count was read, which only their rate
limit bounds.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from time import monotonic

from common.rates import Rate, RateLimiter
from job_svc.errors import TooManyHighPriorityJobs, TooManyJobs, TooManyUnfinishedJobs
from job_svc.model import NewJob, Priority
from job_svc.unfinished import Estimates
from jobqueue.runtime.errors import FieldViolation, InvalidArgument

#: The RetryInfo of a refusal for the cap: about when some of a backlog that large has finished.
UNFINISHED_RETRY_SECONDS = 5.0
#: Request ids whose repeat was refunded, remembered per process (so each is refunded once).
REFUNDED_REMEMBERED = 20_000


class JobLimits:
    """The limits CreateJob and BatchCreateJobs are checked against; a rate of None or a cap of 0 is off."""

    def __init__(
        self,
        *,
        rate: Rate | None = None,
        high_rate: Rate | None = None,
        max_unfinished: int = 0,
        other_replicas: int = 1,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.rate = rate
        self.high_rate = high_rate
        #: Most QUEUED and RUNNING jobs a user may have (0: no cap).
        self.max_unfinished = max_unfinished
        #: How many other job-service replicas the cap leaves room for: it is exact with this many more.
        self.other_replicas = other_replicas
        #: This process's estimates of each user's unfinished jobs (job_svc/unfinished.py).
        self.unfinished = Estimates(max_unfinished, self.margin, clock=clock)
        self._all = RateLimiter(rate, clock=clock) if rate is not None else None
        self._high = RateLimiter(high_rate, clock=clock) if high_rate is not None else None
        self._refunded: OrderedDict[bytes, None] = OrderedDict()

    def admit(self, jobs: Sequence[NewJob]) -> None:
        """Charge one call's jobs (all of one owner) to the owner's rates, or raise and charge nothing.

        INVALID_ARGUMENT for a batch larger than a bucket holds (it could never pass: split it);
        TooManyJobs or TooManyHighPriorityJobs, with the seconds until it would pass, beyond a rate.
        """
        if not jobs:
            return
        owner = str(jobs[0].owner_id)
        high = sum(1 for job in jobs if job.priority is Priority.HIGH)
        charges = [
            (self._all, len(jobs), "jobs", "JOB_BURST_PER_USER"),
            (self._high, high, "HIGH priority jobs", "HIGH_PRIORITY_BURST_PER_USER"),
        ]
        waits: list[float] = []
        for limiter, cost, what, setting in charges:
            if limiter is None or cost == 0:
                waits.append(0.0)
                continue
            if cost > limiter.rate.capacity:
                most = limiter.rate.capacity
                violation = FieldViolation("requests", f"at most {most} {what} fit in one call ({setting}); split it")
                raise InvalidArgument([violation])
            waits.append(limiter.wait(owner, cost))
        wait_all, wait_high = waits
        if wait_all > 0 and wait_all >= wait_high:
            raise TooManyJobs("too many jobs submitted; retry later", retry_after=wait_all)
        if wait_high > 0:
            raise TooManyHighPriorityJobs("too many HIGH priority jobs submitted; retry later", retry_after=wait_high)
        for limiter, cost, _, _ in charges:
            if limiter is not None and cost:
                limiter.take(owner, cost)

    def refund(self, repeats: Iterable[NewJob]) -> None:
        """Give back the tokens ``admit`` took for jobs the store found already created (by their request_id).

        Once per request_id in this process: a refund is remembered (the oldest forgotten first), and a
        request_id repeated again is charged.
        """
        for job in repeats:
            if job.request_id is None:
                continue
            key = job.owner_id.bytes + job.request_id.bytes
            if key in self._refunded:
                continue
            self._refunded[key] = None
            if len(self._refunded) > REFUNDED_REMEMBERED:
                self._refunded.popitem(last=False)
            owner = str(job.owner_id)
            if self._all is not None:
                self._all.give(owner, 1)
            if self._high is not None and job.priority is Priority.HIGH:
                self._high.give(owner, 1)

    def margin(self, age: float) -> float:
        """The most jobs the other replicas may have accepted for one user in ``age`` seconds (inf: unbounded).

        Each replica's bucket lets a user through at most its burst at once plus its rate since; with
        no rate nothing bounds it, and every create, near the cap or far, takes the exact check.
        """
        if not self.other_replicas:
            return 0.0
        if self.rate is None:
            return math.inf
        return self.other_replicas * (self.rate.capacity + self.rate.per_second * age)

    def over_cap(self) -> TooManyUnfinishedJobs:
        """The refusal of a job that would pass the cap on unfinished jobs."""
        return TooManyUnfinishedJobs(
            f"you have {self.max_unfinished} unfinished jobs (QUEUED or RUNNING), the most allowed;"
            " retry when some have finished",
            retry_after=UNFINISHED_RETRY_SECONDS,
        )
