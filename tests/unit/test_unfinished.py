"""The cap on unfinished jobs: the per-process estimate, when it is trusted, and the exact check near the cap."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Sequence

import pytest

from common.rates import Rate
from job_svc.errors import TooManyUnfinishedJobs
from job_svc.jobs import Jobs
from job_svc.limits import JobLimits
from job_svc.model import Job, NewJob
from job_svc.unfinished import MAX_AGE_SECONDS, REFRESH_SECONDS, Estimates, UnfinishedCap
from tests.support.fake_job_service import FakePublisher, FakeRelay, FakeStore, type_registry

ALICE, BOB = uuid.uuid4(), uuid.uuid4()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def read(estimates: Estimates, owner: uuid.UUID, count: int) -> None:
    estimates.begin_read(owner)
    estimates.end_read(owner, count)


def test_an_owner_never_read_takes_the_exact_check_and_is_read() -> None:
    clock = Clock()
    estimates = Estimates(100, lambda _age: 0.0, clock=clock)
    assert estimates.accept({ALICE: 1}) == {ALICE}
    assert estimates.to_read([ALICE]) == [ALICE]
    assert estimates.to_read([ALICE]) == []  # asked for already
    estimates.stored({ALICE: 1}, {ALICE})
    read(estimates, ALICE, 1)  # the read saw the job the exact check stored
    assert estimates.estimate(ALICE) == 1
    assert estimates.accept({ALICE: 99}) == set()  # fits exactly, with no margin
    assert estimates.accept({ALICE: 1}) == {ALICE}  # one more would not


def test_the_margin_leaves_room_for_what_other_replicas_accepted_since_the_read() -> None:
    clock = Clock()
    limits = JobLimits(rate=Rate(10, 1, burst=20), max_unfinished=100, clock=clock)
    assert limits.margin(0.5) == 25  # a burst plus half a second of rate
    assert JobLimits(max_unfinished=100).margin(0.0) == float("inf")  # no rate: nothing bounds the others
    assert JobLimits(rate=Rate(10, 1), max_unfinished=100, other_replicas=0).margin(9.0) == 0
    estimates = limits.unfinished
    estimates.accept({ALICE: 1})
    estimates.stored({ALICE: 1}, {ALICE})
    read(estimates, ALICE, 50)
    assert estimates.fits(ALICE, 30)  # 50 + 30 + a burst of 20 = 100
    assert not estimates.fits(ALICE, 31)
    clock.now += 0.5
    assert not estimates.fits(ALICE, 30)  # the others may have accepted 5 more by now
    assert estimates.fits(ALICE, 25)
    clock.now += MAX_AGE_SECONDS
    assert not estimates.fits(ALICE, 1)  # too old to trust at all


def test_jobs_being_stored_when_a_read_begins_stay_counted_after_it() -> None:
    clock = Clock()
    estimates = Estimates(1000, lambda _age: 0.0, clock=clock)
    estimates.accept({ALICE: 1})
    estimates.stored({ALICE: 1}, {ALICE})
    read(estimates, ALICE, 1)
    assert estimates.accept({ALICE: 10}) == set()  # being stored, on the estimate
    estimates.begin_read(ALICE)
    estimates.accept({ALICE: 5})  # accepted while the read runs
    estimates.end_read(ALICE, 1)  # its snapshot missed all fifteen
    assert estimates.estimate(ALICE) == 16
    estimates.stored({ALICE: 15}, set())
    estimates.begin_read(ALICE)
    estimates.end_read(ALICE, 16)  # nothing being stored any more: the read is the whole truth
    assert estimates.estimate(ALICE) == 16
    estimates.begin_read(ALICE)
    estimates.end_read(ALICE, None)  # a failed read changes nothing
    assert estimates.estimate(ALICE) == 16


def test_reads_are_asked_for_at_most_once_a_period_even_when_they_fail() -> None:
    clock = Clock()
    estimates = Estimates(1000, lambda _age: 0.0, clock=clock)
    estimates.accept({ALICE: 1, BOB: 1})
    assert sorted(estimates.to_read([ALICE, BOB])) == sorted([ALICE, BOB])
    read(estimates, ALICE, 1)
    estimates.begin_read(BOB)
    estimates.end_read(BOB, None)
    clock.now += REFRESH_SECONDS / 2
    assert estimates.to_read([ALICE, BOB]) == []
    clock.now += REFRESH_SECONDS / 2
    assert sorted(estimates.to_read([ALICE, BOB])) == sorted([ALICE, BOB])


def test_while_an_exact_check_is_pending_the_owner_gets_no_estimate() -> None:
    estimates = Estimates(1000, lambda _age: 0.0, clock=Clock())
    estimates.accept({ALICE: 1})
    read(estimates, ALICE, 990)
    assert estimates.accept({ALICE: 20}) == {ALICE}
    assert estimates.accept({ALICE: 1}) == {ALICE}  # 1 would fit the estimate, but the check must see it
    estimates.stored({ALICE: 21}, {ALICE})
    estimates.stored({ALICE: 1}, set())
    assert estimates.fits(ALICE, 1) is False  # 990 + 22 accepted since the read


def test_memory_is_bounded_but_an_owner_with_jobs_being_stored_is_kept() -> None:
    estimates = Estimates(1000, lambda _age: 0.0, max_users=3, clock=Clock())
    estimates.accept({ALICE: 1})  # being stored
    for _ in range(10):
        owner = uuid.uuid4()
        estimates.accept({owner: 1})
        estimates.stored({owner: 1}, {owner})
    assert len(estimates) == 3
    assert estimates.storing(ALICE) == 0  # accepted for the exact check, not the plain insert
    estimates.stored({ALICE: 1}, {ALICE})
    assert ALICE in estimates._users  # what was kept is the point


class GatedStore(FakeStore):
    """A FakeStore whose plain inserts wait for the test to let them through."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()

    async def create(
        self,
        jobs: Sequence[NewJob],
        max_unfinished: int = 0,
        *,
        whole: bool = False,
        capped: Collection[uuid.UUID] | None = None,
    ) -> Sequence[tuple[Job, bool] | None]:
        if not max_unfinished:
            await self.gate.wait()
        return await super().create(jobs, max_unfinished, whole=whole, capped=capped)


def service(store: FakeStore, cap: int, clock: Clock) -> Jobs:
    return Jobs(
        store,
        FakeRelay(),
        FakePublisher(),
        type_registry(),
        JobLimits(max_unfinished=cap, other_replicas=0, clock=clock),
    )


async def new(jobs: Jobs, owner: uuid.UUID = ALICE) -> NewJob:
    return await jobs.check_new(owner, "reverse_string", "abc")


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_far_from_the_cap_creates_are_plain_inserts_and_near_it_exact() -> None:
    clock = Clock()
    store = FakeStore()
    jobs = service(store, 10, clock)
    await jobs.create_batch([await new(jobs) for _ in range(2)])
    assert store.checked == [{ALICE}]  # never read: exact, and read in the background
    await settle()
    assert store.counts == [1]
    await jobs.create_batch([await new(jobs) for _ in range(5)])
    await jobs.create(await new(jobs))
    await asyncio.gather(jobs.create(await new(jobs)), jobs.create(await new(jobs, BOB)))  # one group-commit batch
    assert store.checked[1:] == [set(), set(), {BOB}]  # ALICE's on the estimate, BOB's exactly
    with pytest.raises(TooManyUnfinishedJobs):
        await jobs.create_batch([await new(jobs) for _ in range(2)])  # 9 + 2 > 10: exact, and refused
    await jobs.create(await new(jobs))
    assert store.checked[-2:] == [{ALICE}, {ALICE}]
    assert sum(1 for r in store.rows.values() if r.job.owner_id == ALICE) == 10
    clock.now += REFRESH_SECONDS
    await jobs.cancel(ALICE, next(r.job.id for r in store.rows.values() if r.job.owner_id == ALICE))
    with pytest.raises(TooManyUnfinishedJobs):
        await jobs.create_batch([await new(jobs) for _ in range(2)])  # still 9 + 2: refused, and read again
    await settle()
    assert store.counts[-1] == 1
    await jobs.create(await new(jobs))  # the read counted 9: one more fits on the estimate (no margin: one replica)
    assert store.checked[-1] == set()
    with pytest.raises(TooManyUnfinishedJobs):
        await jobs.create(await new(jobs))
    assert store.checked[-1] == {ALICE}
    assert sum(1 for r in store.rows.values() if r.job.owner_id == ALICE and not r.job.status.final) == 10


async def test_the_exact_check_waits_for_plain_inserts_it_could_not_see() -> None:
    clock = Clock()
    store = GatedStore()
    jobs = service(store, 10, clock)
    await jobs.create(await new(jobs))
    await settle()  # read: 1
    store.gate.clear()
    fast = asyncio.gather(jobs.create_batch([await new(jobs) for _ in range(5)]))  # 6 fit: a plain insert
    await settle()
    assert not fast.done()
    # 6 + 6 > 10: exact. Counted before the plain insert lands it would find 1 and store all six.
    exact = asyncio.gather(*[jobs.create(await new(jobs)) for _ in range(6)], return_exceptions=True)
    await settle()
    assert not exact.done()  # it waits for the plain insert
    store.gate.set()
    await fast
    outcomes = await exact
    assert [type(o).__name__ for o in outcomes].count("TooManyUnfinishedJobs") == 2
    assert sum(1 for r in store.rows.values() if r.job.owner_id == ALICE) == 10


async def test_a_read_that_fails_leaves_the_owner_on_the_exact_check(caplog: pytest.LogCaptureFixture) -> None:
    class Failing(FakeStore):
        async def count_unfinished(self, owners: Sequence[uuid.UUID], limit: int) -> dict[uuid.UUID, int]:
            raise ConnectionError("database gone")

    clock = Clock()
    store = Failing()
    cap = UnfinishedCap(store, Estimates(10, lambda _age: 0.0, clock=clock))
    jobs = service(FakeStore(), 10, clock)
    await cap.create([await new(jobs)])
    await settle()
    assert "could not count unfinished jobs" in caplog.text
    await cap.create([await new(jobs)])
    assert store.checked == [{ALICE}, {ALICE}]
