"""Apply the schema migrations in this folder: ``python -m migrations``.

Each ``NNNN_name.sql`` file runs once, in order, in its own transaction, and is
recorded in ``schema_migrations`` with a checksum; an already-applied file that
has since been edited is refused rather than silently diverging. An advisory
lock lets any number of starters (compose, several services) run this at once.
The database named in DATABASE_URL is created first if it does not exist, and
the services' own database roles before any file runs (migrations/roles.py).
DATABASE_URL is the owner's: the services log in as their roles instead.

Hand-written because the usual tools (alembic, yoyo) bring a second database
driver and an ORM for what is forty lines over asyncpg.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from jobqueue.runtime import logs
from migrations import roles

log = logging.getLogger("migrations")

FOLDER = Path(__file__).parent
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/jobqueue"
LOCK_KEY = 0x6A6F6271  # arbitrary, fixed: "jobq"


def pending_files() -> list[Path]:
    """The migration files, in the order they apply."""
    return sorted(FOLDER.glob("[0-9][0-9][0-9][0-9]_*.sql"))


async def prepare_server(url: str, environ: Mapping[str, str]) -> None:
    """Create the database DATABASE_URL names and the services' roles, connected to the server's `postgres` database.

    Roles belong to the whole server, so the runners of every database on it (the test suite
    migrates several at once) take turns on them under an advisory lock of the `postgres` database:
    two ALTER ROLEs of one role at once fail ("tuple concurrently updated").
    """
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    connection = await asyncpg.connect(admin, timeout=10)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
                log.info("created database", extra={"database": name})
            except asyncpg.DuplicateDatabaseError:
                pass
        await connection.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        await roles.ensure(connection, environ)
    finally:
        await connection.close()  # which releases the lock


async def migrate(url: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """Apply every pending migration to the database at ``url``; returns the names applied.

    ``environ`` (default: the process environment) may set the services' role passwords.
    """
    await prepare_server(url, os.environ if environ is None else environ)
    connection = await asyncpg.connect(url, timeout=10)
    applied_now: list[str] = []
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    text        PRIMARY KEY,
                   checksum   text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await connection.fetch("SELECT version, checksum FROM schema_migrations")
        done: dict[str, str] = {row["version"]: row["checksum"] for row in rows}
        for path in pending_files():
            sql = path.read_text()
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if path.stem in done:
                if done[path.stem] != checksum:
                    raise RuntimeError(f"{path.name} was edited after it was applied; add a new migration instead")
                continue
            async with connection.transaction():
                await connection.execute(sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", path.stem, checksum
                )
            applied_now.append(path.stem)
            log.info("applied migration", extra={"version": path.stem})
    finally:
        await connection.close()
    return applied_now


def main() -> int:
    logs.setup("migrations")
    url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    try:
        applied = asyncio.run(migrate(url))
    except (OSError, asyncpg.PostgresError, RuntimeError) as error:  # OSError: a password file too
        log.error("migration failed", extra={"error": str(error)})
        return 1
    log.info("schema up to date", extra={"applied": applied})
    return 0


if __name__ == "__main__":
    sys.exit(main())
