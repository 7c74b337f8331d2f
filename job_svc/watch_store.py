"""The SQL of live job streams: LISTEN to the jobs' change announcements, and say that someone listens.

migrations/0014_job_watch.sql announces every committed change to a job on CHANNEL, but only while
some replica holds a live row in job_watch_interest, so that no one pays for NOTIFY while no one
watches. This module is that row and the listening connection; job_svc/watch.py decides when to
open and close them.
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
#: How long after its last renewal an interest lapses (and the trigger stops announcing changes for it).
INTEREST_SECONDS = 30.0
#: How long opening waits, at most, for writes that began before the interest was visible to finish.
SETTLE_SECONDS = 10.0


class FeedSettleTimeout(Exception):
    """A write that began before the interest was visible was still running after SETTLE_SECONDS."""


class ChangeFeed:
    """One dedicated connection that LISTENs to CHANNEL, and this replica's row in job_watch_interest."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._connection: asyncpg.Connection | None = None
        self.replica = uuid.uuid4()

    async def open(self, on_change: Callable[[str], None], on_lost: Callable[[], None]) -> None:
        """Listen, make the interest live, and return once every change committed from now on is announced.

        The order is what makes a snapshot read after this returns safe to follow with the announced
        changes: LISTEN first, so nothing announced after the interest is live is missed; then the
        interest; then wait for the writes already under way, whose trigger may have looked before the
        interest was there and so will commit a change without announcing it. Only the job service's
        role writes jobs, and its sessions are the ones this role may see in pg_stat_activity.
        """
        connection = await asyncpg.connect(self._url, timeout=5, server_settings={"application_name": APPLICATION_NAME})
        try:
            connection.add_termination_listener(lambda _: on_lost())
            await connection.add_listener(CHANNEL, lambda _c, _pid, _channel, payload: on_change(payload))
            # Interests of replicas that died holding one lapse by themselves; this only tidies.
            await connection.execute(
                "DELETE FROM job_watch_interest WHERE expires_at < clock_timestamp() - interval '1 minute'"
            )
            await connection.execute(
                "INSERT INTO job_watch_interest (replica, expires_at)"
                " VALUES ($1, clock_timestamp() + make_interval(secs => $2))",
                self.replica,
                INTEREST_SECONDS,
            )
            await _settle(connection)
        except BaseException:
            await _close(connection)
            raise
        self._connection = connection

    async def renew(self) -> bool:
        """Push the interest's expiry on; False if it had lapsed (changes may have gone unannounced)."""
        connection = self._require()
        renewed = await connection.fetchval(
            "UPDATE job_watch_interest SET expires_at = clock_timestamp() + make_interval(secs => $2)"
            " WHERE replica = $1 AND expires_at > clock_timestamp() RETURNING true",
            self.replica,
            INTEREST_SECONDS,
        )
        return bool(renewed)

    async def close(self) -> None:
        """Withdraw the interest (best effort: it lapses by itself) and close the connection."""
        connection, self._connection = self._connection, None
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
