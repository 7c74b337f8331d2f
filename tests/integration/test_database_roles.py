"""Each service's database role holds only what its code uses: the grants of migrations/, on the real server.

Every service the tests start logs in as its role (tests/support/processes.py),
so the whole suite checks that the grants suffice; this module checks that they
go no further: the job service's role cannot read a password hash, the auth
service's cannot touch jobs, and neither can change the schema or the record of
migrations. It also checks that the runner creates the roles and sets their
passwords, and that running it again (or several at once) is harmless.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from migrations import roles
from migrations.__main__ import migrate
from tests.support.databases import ADMIN_DATABASE_URL, fresh_database


@pytest.fixture
async def as_jobs(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(roles.url_as(database_url, roles.JOBS))
    yield connection
    await connection.close()


@pytest.fixture
async def as_auth(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(roles.url_as(database_url, roles.AUTH))
    yield connection
    await connection.close()


async def test_the_job_services_role_is_refused_on_the_users_table(as_jobs: asyncpg.Connection) -> None:
    for statement in (
        "SELECT password_hash FROM users",
        "SELECT count(*) FROM users",
        "UPDATE users SET role = 'operator'",
        "DELETE FROM users",
        "INSERT INTO users (id, email, name, password_hash) VALUES (gen_random_uuid(), 'x@example.com', 'x', '')",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_jobs.execute(statement)


async def test_the_job_services_role_records_attempts_but_never_changes_or_deletes_them(
    as_jobs: asyncpg.Connection,
) -> None:
    for statement in ("DELETE FROM job_attempts", "UPDATE job_attempts SET outcome = outcome WHERE false"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_jobs.execute(statement)
    await as_jobs.execute("SELECT job_id, number, worker_id, outcome FROM job_attempts LIMIT 1")


async def test_the_auth_services_role_is_refused_on_jobs_and_may_change_only_an_accounts_role(
    as_auth: asyncpg.Connection,
) -> None:
    for statement in (
        "SELECT count(*) FROM jobs",
        "SELECT count(*) FROM job_outbox",
        "SELECT count(*) FROM job_attempts",
        "UPDATE users SET password_hash = ''",
        "UPDATE users SET email = 'someone@example.com'",
        "DELETE FROM users",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_auth.execute(statement)
    # What it does need: read, add, and change a role (python -m auth_svc.admin).
    await as_auth.execute("SELECT id, email, password_hash FROM users LIMIT 1")
    await as_auth.execute("UPDATE users SET role = role WHERE false")


@pytest.mark.parametrize("role", roles.ROLES, ids=lambda role: role.name)
async def test_no_service_role_can_change_the_schema_or_the_record_of_migrations(
    database_url: str, role: roles.Role
) -> None:
    connection = await asyncpg.connect(roles.url_as(database_url, role))
    try:
        for statement in (
            "CREATE TABLE intruder (id int)",
            "DROP TABLE jobs",
            "ALTER TABLE users ADD COLUMN intruder int",
            "TRUNCATE jobs",
            "DELETE FROM schema_migrations",
            "SELECT * FROM schema_migrations",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement)
        attributes = await connection.fetchrow(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        assert attributes is not None
        assert not any(attributes.values()), dict(attributes)
    finally:
        await connection.close()


async def test_the_runner_sets_a_given_password_and_parallel_runners_agree(run_id: str) -> None:
    # Passwords are cluster-wide: set them to what they were (none) afterwards, as the other tests expect.
    names = [f"jobqueue_test_{run_id}_roles_{i}" for i in range(4)]
    secret = f"pw-{uuid.uuid4().hex}"
    environ = {"AUTH_DATABASE_PASSWORD": secret, "JOB_DATABASE_PASSWORD": secret}
    admin = await asyncpg.connect(ADMIN_DATABASE_URL)
    try:
        # Four databases migrated at once, as the suite's parallel sessions do: no runner fails.
        urls = [urlsplit(ADMIN_DATABASE_URL)._replace(path=f"/{name}").geturl() for name in names]
        await asyncio.gather(*(migrate(url, environ) for url in urls))
        for role in roles.ROLES:
            stored = await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role.name)
            assert str(stored).startswith("SCRAM-SHA-256$"), role.name
    finally:
        for role in roles.ROLES:
            await admin.execute(f'ALTER ROLE "{role.name}" PASSWORD NULL')
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def test_a_database_migrated_again_keeps_its_grants(run_id: str) -> None:
    with fresh_database(f"jobqueue_test_{run_id}_regrant") as url:
        asyncio.run(migrate(url))

        async def check() -> None:
            connection = await asyncpg.connect(roles.url_as(url, roles.JOBS))
            try:
                assert await connection.fetchval("SELECT count(*) FROM jobs") == 0
            finally:
                await connection.close()

        asyncio.run(check())
