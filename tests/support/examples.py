"""The example application (examples/myapp) as the tests run it: where it is, what its jobs must answer.

check_ports is given three kinds of target besides a host no resolver knows:
ones that accept, ones that refuse, and a silent one that never answers, so
that the job is still running, its progress shown, after the others answered.
"""

from __future__ import annotations

import asyncio
import socket
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from jobqueue.client import Job, JobsClient, JobStatus
from tests.support.processes import ROOT

#: The folder holding the example's package: a worker runs ``myapp:worker`` from it (PYTHONPATH, or the image's /app).
FOLDER = ROOT / "examples"
APP = "myapp:worker"
#: The SDK's version, which tags the base image examples/Dockerfile is built FROM.
SDK_VERSION: str = tomllib.loads((ROOT / "gen" / "pyproject.toml").read_text())["project"]["version"]
BASE_IMAGE = f"jobqueue-worker-base:{SDK_VERSION}"
#: check_ports' timeout for each target, in the tests' payloads: how long the silent target holds the job.
TIMEOUT_SECONDS = 2

#: count_primes(1,000,000) as the example must answer it.
PRIMES_BELOW_A_MILLION: dict[str, Any] = {"below": 1_000_000, "count": 78_498, "largest": 999_983}
#: A name no resolver knows (.invalid is reserved for that, RFC 6761).
UNKNOWN = ("no-such-host.invalid", 80)


@dataclass
class Targets:
    """check_ports targets of each kind, as (host, port)."""

    opened: list[tuple[str, int]]
    refused: list[tuple[str, int]]
    silent: list[tuple[str, int]] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        targets = [*self.opened, *self.refused, *self.silent, UNKNOWN]
        return {
            "targets": [{"host": host, "port": port} for host, port in targets],
            "timeout_seconds": TIMEOUT_SECONDS,
        }

    def result(self) -> dict[str, Any]:
        """What check_ports answers for ``payload()``."""
        closed = {f"{host}:{port}": "refused" for host, port in self.refused}
        closed |= {f"{host}:{port}": "timed out" for host, port in self.silent}
        closed[f"{UNKNOWN[0]}:{UNKNOWN[1]}"] = "unknown host"
        return {"open": sorted(f"{host}:{port}" for host, port in self.opened), "closed": dict(sorted(closed.items()))}


@contextmanager
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 whose connections never complete: a listener whose queue one unaccepted connection fills.

    Linux drops the SYN of a connection to a listener with a full accept queue, so
    the client waits, as it would for a host behind a firewall that drops packets.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            yield port


async def check_ports_runs_then_completes(jobs: JobsClient, targets: Targets) -> Job:
    """Submit check_ports; while the silent targets hold it, its progress shows the others; its finished Job."""
    assert targets.silent, "without a silent target the job may finish before any progress is reported"
    job = await jobs.submit("check_ports", targets.payload())
    deadline = time.monotonic() + TIMEOUT_SECONDS + 30
    while (running := await jobs.get(job.id)).progress is None:
        assert running.status in (JobStatus.QUEUED, JobStatus.RUNNING), running
        assert time.monotonic() < deadline, f"no progress shown: {running}"
        await asyncio.sleep(0.05)
    answered = len(targets.opened) + len(targets.refused) + 1
    assert running.status == JobStatus.RUNNING, running
    assert 0 < running.progress.fraction * (answered + len(targets.silent)) <= answered, running.progress
    assert running.progress.message.rsplit(": ", 1)[1] in ("open", "refused", "unknown host"), running.progress
    return await jobs.wait(job.id, timeout=60)
