"""The database roles the services log in as: one per service, each with only the rights its code uses.

The migrations run as the database's owner; the services do not. The auth
service logs in as ``jobqueue_auth``, which may read and add accounts and change
an account's role, and nothing else; the job service as ``jobqueue_jobs``,
which may read and write jobs and their outbox and cannot read a password hash;
the worker has no database access at all. The grants are in the numbered
migrations (``0009_service_roles.sql`` first), next to the tables they cover,
so a migration adding a table grants it in the same file.

Roles belong to the whole PostgreSQL server, not to one database, so they are
created here, by the runner, on every run, rather than by a numbered migration
that runs once per database: a new database on a server that has the roles
finds them, and a server that lost one gets it back. Several runners may start
at once (compose, the test suite's parallel databases): they take turns here
under a lock (migrations/__main__.py, prepare_server).

A role's password, when its variable is set (``AUTH_DATABASE_PASSWORD``,
``JOB_DATABASE_PASSWORD``, or the same names with ``_FILE``), is set on every
run, so changing the variable and running the migrations again rotates it.
Without one the role has no password and can log in only where the server
trusts the connection (``make run`` and the tests on this machine's loopback).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import asyncpg


@dataclass(frozen=True)
class Role:
    """A service's database role, and the variable holding its password."""

    service: str
    name: str
    password_variable: str


AUTH = Role("auth_svc", "jobqueue_auth", "AUTH_DATABASE_PASSWORD")
JOBS = Role("job_svc", "jobqueue_jobs", "JOB_DATABASE_PASSWORD")
ROLES = (AUTH, JOBS)


def password(role: Role, environ: Mapping[str, str]) -> str | None:
    """The password ``environ`` gives ``role`` (inline, else from its ``_FILE``), or None if it gives none."""
    if inline := environ.get(role.password_variable, ""):
        return inline
    if path := environ.get(f"{role.password_variable}_FILE", ""):
        return Path(path).read_text().strip() or None
    return None


async def ensure(connection: asyncpg.Connection, environ: Mapping[str, str]) -> None:
    """Create each service's role if the server lacks it, and set the passwords ``environ`` gives.

    The caller holds the lock that keeps other runners out meanwhile.
    """
    for role in ROLES:
        if not await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role.name):
            # LOGIN only: no superuser, no CREATEDB, no CREATEROLE, no inheritance of other roles.
            await connection.execute(f'CREATE ROLE "{role.name}" LOGIN NOINHERIT')
        secret = password(role, environ)
        if secret is not None:
            # ALTER ROLE takes no parameters; the literal is quoted by the server's own rules.
            quoted = await connection.fetchval("SELECT quote_literal($1)", secret)
            await connection.execute(f'ALTER ROLE "{role.name}" PASSWORD {quoted}')


def url_as(url: str, role: Role, password: str | None = None) -> str:
    """``url`` with its user replaced by ``role`` (and its password by ``password``, or none)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = quote(role.name, safe="") + (f":{quote(password, safe='')}" if password else "")
    return parts._replace(netloc=f"{user}@{host}").geturl()
