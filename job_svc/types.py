"""The job types this job service knows: the job_types table, cached with each schema's compiled validator.

Workers declare the types they run (DeclareJobTypes); the table is the one
truth, shared by every job-service replica, and this registry is a replica's
copy of it, read by CreateJob on every call without a query:

- ``run`` reads it at start and then every REFRESH_SECONDS, first a cheap
  fingerprint (names, versions and times only), the whole table only when the
  fingerprint changed, so a declaration made through another replica is seen
  here within a few seconds;
- a CreateJob naming a type the copy lacks waits for a read that starts after
  it arrived (the type may have just been declared elsewhere: a declaration
  committed before the call is always seen), but reads happen at most once
  every SOONEST_RELOAD_SECONDS and are shared by every call waiting, so a flood
  of made-up names costs the database nothing more, and each such call at most
  that long;
- a declaration through this replica updates the copy as soon as it commits.

Validators are compiled once per (name, version) and kept across reads.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from common import db
from job_svc.model import DeclaredType
from job_svc.schemas import CompiledSchema, check_declarations, compile_schema
from job_svc.type_store import Outcome

log = logging.getLogger(__name__)

#: How often a replica looks for types declared through the others.
REFRESH_SECONDS = 3.0
#: The shortest time between two reads that unknown type names may cause.
SOONEST_RELOAD_SECONDS = 0.25


class TypeSource(Protocol):
    """The job_types table, as the registry needs it (job_svc.type_store.TypeStore)."""

    async def load(self) -> Sequence[DeclaredType]:
        """Every type, ordered by name."""

    async def fingerprint(self) -> str:
        """A text that changes whenever a type is added or changed."""

    async def declare(self, types: Sequence[DeclaredType]) -> Sequence[tuple[DeclaredType, Outcome]]:
        """Apply the version policy to each type in one transaction (TypeConflict on a conflict)."""


@dataclass(frozen=True)
class KnownType:
    """A stored type and its compiled schema."""

    declared: DeclaredType
    schema: CompiledSchema


class JobTypeRegistry:
    """A replica's copy of the job_types table (see the module doc)."""

    def __init__(
        self,
        source: TypeSource,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        soonest_seconds: float = SOONEST_RELOAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._refresh_seconds = refresh_seconds
        self._soonest = soonest_seconds
        self._clock = clock
        self._types: dict[str, KnownType] = {}
        self._fingerprint: str | None = None
        self._read_at = -math.inf
        self._reading = asyncio.Lock()

    def get(self, name: str) -> KnownType | None:
        """The type, as last read; None if the copy lacks it."""
        return self._types.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def names(self) -> list[str]:
        """Every known type's name, sorted."""
        return sorted(self._types)

    def declared(self) -> list[DeclaredType]:
        """Every known type, ordered by name."""
        return [self._types[name].declared for name in self.names()]

    async def find(self, name: str) -> KnownType | None:
        """The type; if the copy lacks it, as a read of the table that began after this call finds it.

        Reads are at most once every ``soonest_seconds``: a call may wait that long for its turn, and
        the calls waiting together share one read. A database that cannot be reached raises its
        transient error (UNAVAILABLE), not "unknown type".
        """
        known = self._types.get(name)
        if known is None:
            await self.look_up([name])
            known = self._types.get(name)
        return known

    async def look_up(self, names: Collection[str]) -> None:
        """Make the copy hold ``names`` as a read that began after this call would: one read for them all.

        Then ``get`` answers for each (None: not declared). ``find`` does this for one name; a batch of
        jobs does it once for all its names, not once for each job naming a type still unknown.
        """
        if all(name in self._types for name in names):
            return
        arrived = self._clock()
        async with self._reading:
            if self._read_at < arrived:  # no read began since this call arrived: one must
                wait = self._read_at + self._soonest - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._read()

    async def refresh(self) -> None:
        """Read the table again if its fingerprint changed since the last read."""
        async with self._reading:
            await self._read()

    async def _read(self) -> None:
        self._read_at = self._clock()
        fingerprint = await self._source.fingerprint()
        if fingerprint == self._fingerprint:
            return
        self._replace(await self._source.load())
        self._fingerprint = fingerprint

    async def run(self) -> None:
        """Refresh every ``refresh_seconds`` until cancelled; an unreachable database is tried again next time."""
        while True:
            try:
                await self.refresh()
            except db.TRANSIENT_ERRORS as error:
                log.warning("job types not read; the last ones stay in use", extra={"error": repr(error)})
            await asyncio.sleep(self._refresh_seconds)

    async def declare(self, types: Sequence[DeclaredType]) -> list[DeclaredType]:
        """Store a worker's declarations (INVALID_ARGUMENT if malformed, TypeConflict); each as now stored, in order."""
        check_declarations(types)
        results = await self._source.declare(types)
        for stored, outcome in results:
            if outcome is not Outcome.OLDER:
                self._add(stored)
        return [stored for stored, _ in results]

    def _replace(self, types: Sequence[DeclaredType]) -> None:
        old = self._types
        self._types = {}
        for declared in types:
            self._add(declared, old.get(declared.name))

    def _add(self, declared: DeclaredType, previous: KnownType | None = None) -> None:
        previous = previous or self._types.get(declared.name)
        if previous is not None and previous.declared.version == declared.version:
            # Same (name, version), same schema (the version policy guarantees it): keep the compiled validator.
            self._types[declared.name] = KnownType(declared, previous.schema)
        else:
            self._types[declared.name] = KnownType(declared, compile_schema(declared.payload_schema))
