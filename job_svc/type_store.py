"""Every SQL statement on the job_types table: read the types, tell whether they changed, store declarations.

Apart from job_svc/store.py (the jobs and their outbox) because nothing here
touches a job, and the types are read in a few statements of their own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import Enum

import asyncpg

from job_svc.errors import TypeConflict
from job_svc.model import DeclaredType

_COLUMNS = "name, summary, payload_schema, version, default_max_attempts, default_timeout_seconds, declared_at"


class Outcome(Enum):
    """What a declaration did to the stored type."""

    CREATED = "created"
    REPLACED = "replaced"
    CONFIRMED = "confirmed"
    OLDER = "older"
    #: Never returned: ``declare`` raises TypeConflict instead.
    CONFLICT = "conflict"


def _declared(row: asyncpg.Record) -> DeclaredType:
    return DeclaredType(
        name=row["name"],
        summary=row["summary"],
        payload_schema=json.loads(row["payload_schema"]),
        version=row["version"],
        default_max_attempts=row["default_max_attempts"],
        default_timeout_seconds=row["default_timeout_seconds"],
        declared_at=row["declared_at"],
    )


class TypeStore:
    """The job_types table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def load(self) -> list[DeclaredType]:
        """Every type, ordered by name."""
        rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM job_types ORDER BY name")
        return [_declared(row) for row in rows]

    async def fingerprint(self) -> str:
        """A short text that changes whenever any type is added or changed (declared_at included).

        Cheap: it reads neither schema nor summary, so replicas may ask every few seconds.
        """
        value = await self._pool.fetchval(
            """SELECT md5(coalesce(string_agg(name || ':' || version || ':' || updated_at::text || ':'
                                              || coalesce(declared_at::text, ''), ',' ORDER BY name), ''))
               FROM job_types"""
        )
        return str(value)

    async def declare(self, types: Sequence[DeclaredType]) -> list[tuple[DeclaredType, Outcome]]:
        """Apply the version policy to each type, in one transaction; each as now stored and what happened, in order.

        The rows are locked (in name order, so concurrent declarers cannot
        deadlock) before they are compared; a new name is inserted with ON
        CONFLICT DO NOTHING, and one a concurrent declarer inserted first is
        then locked and compared like any other. A CONFLICT (same version,
        different declaration) rolls the whole call back: TypeConflict, naming
        each such type.
        """
        async with self._pool.acquire() as connection, connection.transaction():
            names = sorted(t.name for t in types)
            rows = await connection.fetch(
                f"SELECT {_COLUMNS} FROM job_types WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE", names
            )
            stored = {row["name"]: _declared(row) for row in rows}
            results: dict[str, tuple[DeclaredType, Outcome]] = {}
            # In name order, as the locks were taken: inserts lock too.
            for declared in sorted(types, key=lambda t: t.name):
                current = stored.get(declared.name)
                if current is None:
                    row = await connection.fetchrow(
                        f"""INSERT INTO job_types (name, summary, payload_schema, version, default_max_attempts,
                                                   default_timeout_seconds, declared_at)
                            VALUES ($1, $2, $3::jsonb, $4, $5, $6, now())
                            ON CONFLICT (name) DO NOTHING RETURNING {_COLUMNS}""",
                        *_values(declared),
                    )
                    if row is not None:
                        results[declared.name] = (_declared(row), Outcome.CREATED)
                        continue
                    # A concurrent declarer inserted it since our SELECT: lock it and compare, as if it were there.
                    locked = await connection.fetchrow(
                        f"SELECT {_COLUMNS} FROM job_types WHERE name = $1 FOR UPDATE", declared.name
                    )
                    assert locked is not None, "job types are never deleted"
                    current = _declared(locked)
                results[declared.name] = await _declare_over(connection, current, declared)
            conflicts = [stored for stored, outcome in results.values() if outcome is Outcome.CONFLICT]
            if conflicts:
                # Raised inside the transaction, so that none of the call's types is changed.
                raise TypeConflict(
                    "; ".join(
                        f"job type {t.name!r} version {t.version} is already declared differently: give the new"
                        " declaration a higher version"
                        for t in conflicts
                    )
                )
            return [results[t.name] for t in types]


async def _declare_over(
    connection: asyncpg.pool.PoolConnectionProxy, current: DeclaredType, declared: DeclaredType
) -> tuple[DeclaredType, Outcome]:
    if declared.version < current.version:
        return current, Outcome.OLDER
    if declared.version == current.version and not current.same_declaration(declared):
        return current, Outcome.CONFLICT
    if declared.version == current.version:
        row = await connection.fetchrow(
            f"UPDATE job_types SET declared_at = now(), updated_at = now() WHERE name = $1 RETURNING {_COLUMNS}",
            declared.name,
        )
        assert row is not None
        return _declared(row), Outcome.CONFIRMED
    row = await connection.fetchrow(
        f"""UPDATE job_types SET summary = $2, payload_schema = $3::jsonb, version = $4, default_max_attempts = $5,
                                 default_timeout_seconds = $6, declared_at = now(), updated_at = now()
            WHERE name = $1 RETURNING {_COLUMNS}""",
        *_values(declared),
    )
    assert row is not None
    return _declared(row), Outcome.REPLACED


def _values(declared: DeclaredType) -> tuple[object, ...]:
    return (
        declared.name,
        declared.summary,
        json.dumps(declared.payload_schema),
        declared.version,
        declared.default_max_attempts,
        declared.default_timeout_seconds,
    )
