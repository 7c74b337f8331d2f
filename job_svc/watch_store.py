"""The SQL of live job streams: LISTEN to the jobs' change announcements, and say that someone listens.

migrations/0014_job_watch.sql announces every committed change to a job on CHANNEL, but only while
some replica holds a live row in job_watch_interest for the job's owner (or for every user), so
that no one pays for NOTIFY on jobs no one watches. This module is those rows and the listening
connection; job_svc/watch.py decides when to open and close them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from time import monotonic

import asyncpg

#: The channel migrations/0014_job_watch.sql notifies.
CHANNEL = "jobqueue_job_changes"
#: How the listening connection names itself in pg_stat_activity.
APPLICATION_NAME = "jobqueue-watch-feed"
#: How the connection that holds (or waits for) WATCH_LOCK_KEY names itself.
BEACON_NAME = "jobqueue-watch-beacon"
#: The advisory lock the jobs trigger's WHEN clause tries in shared mode (migrations/0014_job_watch.sql):
#: held or awaited exclusively by every process that has watchers, so that only then does it run.
WATCH_LOCK_KEY = 7306205391485411329
#: How long after its last renewal an interest lapses (and the trigger stops announcing changes for it).
INTEREST_SECONDS = 30.0
#: How long opening waits, at most, for writes that began before the interest was visible to finish.
SETTLE_SECONDS = 10.0


class FeedSettleTimeout(Exception):
    """A write that began before the interest was visible was still running after SETTLE_SECONDS."""


class ChangeFeed:
    """One dedicated connection that LISTENs to CHANNEL, and this replica's rows in job_watch_interest."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._connection: asyncpg.Connection | None = None
        #: Holds, or waits for, WATCH_LOCK_KEY exclusively for as long as the feed is open.
        self._beacon: asyncpg.Connection | None = None
        self._beacon_lock: asyncio.Task[None] | None = None
        self.replica = uuid.uuid4()
        #: How many interests this replica holds (each renewal must find them all live).
        self._interests = 0
        # One connection answers one statement at a time: the hub's renewals and its watchers'
        # interests take turns.
        self._lock = asyncio.Lock()

    async def open(self, on_change: Callable[[str], None], on_lost: Callable[[], None]) -> None:
        """Open the connection and LISTEN; no change is announced until an interest says whose (``watch``)."""
        connection = await asyncpg.connect(self._url, timeout=5, server_settings={"application_name": APPLICATION_NAME})
        try:
            connection.add_termination_listener(lambda _: on_lost())
            await connection.add_listener(CHANNEL, lambda _c, _pid, _channel, payload: on_change(payload))
            # Interests of replicas that died holding some lapse by themselves; this only tidies.
            await connection.execute(
                "DELETE FROM job_watch_interest WHERE expires_at < clock_timestamp() - interval '1 minute'"
            )
            beacon = await asyncpg.connect(self._url, timeout=5, server_settings={"application_name": BEACON_NAME})
        except BaseException:
            await _close(connection)
            raise
        beacon.add_termination_listener(lambda _: on_lost())
        self._connection, self._beacon = connection, beacon
        self._interests = 0
        # Blocks while another process holds the lock; its waiting alone already opens the gate.
        self._beacon_lock = asyncio.create_task(self._hold_gate(beacon, on_lost), name="watch beacon")

    @staticmethod
    async def _hold_gate(beacon: asyncpg.Connection, on_lost: Callable[[], None]) -> None:
        try:
            await beacon.execute("SELECT pg_advisory_lock($1)", WATCH_LOCK_KEY)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            on_lost()  # without the lock held or awaited, changes may go unannounced

    async def watch(self, owner: uuid.UUID | None) -> None:
        """Have changes to ``owner``'s jobs (every user's, for None) announced; return once every one is.

        The order is what makes a snapshot read after this returns safe to follow with the announced
        changes: LISTEN came first (``open``), so nothing announced once the interest is visible is
        missed; then the interest; then wait for the writes already under way, whose trigger may have
        looked before the interest was there and so will commit a change without announcing it. Only
        the job service's role writes jobs, and its sessions are the ones this role sees in
        pg_stat_activity.
        """
        async with self._lock:
            connection = self._require()
            await connection.execute(
                "INSERT INTO job_watch_interest (replica, owner_id, expires_at)"
                " VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))",
                self.replica,
                owner,
                INTEREST_SECONDS,
            )
            self._interests += 1
            await self._gate_opened(connection)
            await _settle(connection)

    async def _gate_opened(self, connection: asyncpg.Connection) -> None:
        """Wait until the jobs trigger runs for every change: our beacon's exclusive request is queued and
        some process holds the lock, so every transaction that skipped the trigger has committed."""
        beacon = self._beacon
        if beacon is None:
            raise asyncpg.InterfaceError("the change feed is not open")
        query = """SELECT coalesce(bool_or(pid = $2), false) AS queued,
                          coalesce(bool_or(granted AND mode = 'ExclusiveLock'), false) AS held
                   FROM pg_locks
                   WHERE locktype = 'advisory' AND objsubid = 1
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                     AND classid::bigint = ($1::bigint >> 32) AND objid::bigint = ($1::bigint & 4294967295)"""
        deadline = monotonic() + SETTLE_SECONDS
        while True:
            row = await connection.fetchrow(query, WATCH_LOCK_KEY, beacon.get_server_pid())
            if row is not None and row["queued"] and row["held"]:
                return
            if monotonic() > deadline:
                raise FeedSettleTimeout(f"the watch lock was not taken after {SETTLE_SECONDS} s")
            await asyncio.sleep(0.005)

    async def unwatch(self, owner: uuid.UUID | None) -> None:
        """Stop announcing changes to ``owner``'s jobs (every user's, for None) for this replica."""
        async with self._lock:
            await self._require().execute(
                "DELETE FROM job_watch_interest WHERE replica = $1 AND owner_id IS NOT DISTINCT FROM $2",
                self.replica,
                owner,
            )
            self._interests -= 1

    async def renew(self) -> bool:
        """Push every interest's expiry on; False if one had lapsed (changes may have gone unannounced)."""
        async with self._lock:
            renewed = await self._require().fetchval(
                "WITH renewed AS (UPDATE job_watch_interest"
                " SET expires_at = clock_timestamp() + make_interval(secs => $2)"
                " WHERE replica = $1 AND expires_at > clock_timestamp() RETURNING 1) SELECT count(*) FROM renewed",
                self.replica,
                INTEREST_SECONDS,
            )
            return bool(renewed == self._interests)

    async def close(self) -> None:
        """Withdraw the interests (best effort: they lapse by themselves) and close the connection."""
        connection, self._connection = self._connection, None
        self._interests = 0
        beacon, self._beacon = self._beacon, None
        if self._beacon_lock is not None:
            self._beacon_lock.cancel()
            self._beacon_lock = None
        if beacon is not None:
            beacon.terminate()  # and with it the lock: the trigger stops running if no one else watches
        if connection is None:
            return
        try:
            await connection.execute("DELETE FROM job_watch_interest WHERE replica = $1", self.replica)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass  # the interest lapses within INTEREST_SECONDS
        finally:
            await _close(connection)
        self.replica = uuid.uuid4()

    def _require(self) -> asyncpg.Connection:
        if self._connection is None:
            raise asyncpg.InterfaceError("the change feed is not open")
        return self._connection


async def _settle(connection: asyncpg.Connection) -> None:
    """Wait until the writes in progress when the interest became visible have all ended."""
    query = (
        "SELECT pid, backend_xid::text FROM pg_stat_activity"
        " WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
    )
    waiting = {(row[0], row[1]) for row in await connection.fetch(query)}
    deadline = monotonic() + SETTLE_SECONDS
    while waiting:
        if monotonic() > deadline:
            raise FeedSettleTimeout(f"{len(waiting)} writes still running after {SETTLE_SECONDS} s")
        await asyncio.sleep(0.005)
        waiting &= {(row[0], row[1]) for row in await connection.fetch(query)}


async def _close(connection: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(connection.close(), 2)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        connection.terminate()
