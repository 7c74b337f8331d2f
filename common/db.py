"""PostgreSQL connections shared by the services that keep state (auth, jobs)."""

from __future__ import annotations

import asyncpg

#: Errors that mean "the database cannot be reached right now", answered UNAVAILABLE.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    # asyncpg's own state machine, on a connection the server dropped mid-statement ("cannot switch
    # to state 12; another operation is in progress"): seen when PostgreSQL restarted under load,
    # where answering INTERNAL made workers fail jobs whose handlers had succeeded.
    asyncpg.InternalClientError,
)


async def create_pool(url: str, *, max_size: int) -> asyncpg.Pool:
    """A pool that connects lazily, so a service starts (NOT_SERVING) while the database is down.

    Connections are opened on demand and re-opened after an outage; the short
    connect timeout turns an unreachable database into a quick UNAVAILABLE
    instead of a hung call.
    """
    return await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=max_size,
        timeout=5,
        command_timeout=30,
        max_inactive_connection_lifetime=300,
        reset=_no_session_state,
        # asyncpg prepares every statement; after five runs PostgreSQL may keep
        # one generic plan for good, made for the table sizes of that moment.
        # A new database's jobs table is empty then, so the batched claim and
        # report UPDATEs kept sequential scans as the table grew (measured in
        # `make bench`: 11,000 scans reading 166 M rows in a 20,000-job run,
        # 2.4 ms of PostgreSQL CPU per job instead of 0.8). Planning each
        # execution afresh costs far less than that risk.
        server_settings={"plan_cache_mode": "force_custom_plan"},
    )


async def _no_session_state(connection: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool.

    asyncpg's default reset query (UNLISTEN, RESET ALL, advisory unlocks, ...)
    is a round trip after every statement, paid before ``pool.fetch`` returns.
    Our services never leave session state behind: no SET, LISTEN, cursors or
    advisory locks outside a transaction. An open transaction is still rolled
    back by asyncpg itself before this is called.
    """


async def ping(pool: asyncpg.Pool) -> None:
    """Raise unless the database answers a trivial query."""
    async with pool.acquire(timeout=2) as connection:
        await connection.fetchval("SELECT 1")
