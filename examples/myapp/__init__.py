"""An example worker: two job types written with the worker SDK, run with ``python -m jobqueue.worker myapp:worker``.

``check_ports`` is I/O-bound, so it is ``async``: it opens TCP connections to
many hosts at once on the worker's event loop, saying how far it got after
each. ``count_primes`` is CPU-bound, so it is a plain function: the worker runs
it in a handler process, where it cannot hold up the event loop. Each declares
the JSON Schema of its payload; the job service refuses a payload that breaks
it before any worker sees it.
"""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any

from jobqueue.worker import JobContext, Worker

worker = Worker()

PORTS = {
    "type": "object",
    "properties": {
        "targets": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "host": {"type": "string", "minLength": 1, "maxLength": 253},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                },
                "required": ["host", "port"],
                "additionalProperties": False,
            },
            "minItems": 1,
            "maxItems": 100,
        },
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
    },
    "required": ["targets"],
    "additionalProperties": False,
}


async def connect(host: str, port: int) -> str | None:
    """None if ``host`` accepts a TCP connection on ``port``, else why not."""
    try:
        _, writer = await asyncio.open_connection(host, port)
    except socket.gaierror:
        return "unknown host"
    except ConnectionRefusedError:
        return "refused"
    except OSError as error:
        return error.strerror or type(error).__name__
    writer.close()
    return None


@worker.job_type(
    "check_ports",
    schema=PORTS,
    summary="{targets: [{host, port}, ...], timeout_seconds}; the result is {open: [...], closed: {target: why}}",
    timeout_seconds=120,
)
async def check_ports(payload: dict[str, Any], job: JobContext) -> dict[str, Any]:
    """Which targets accept a TCP connection: all tried at once, progress reported as each answers."""
    seconds = payload.get("timeout_seconds", 2)

    async def check(target: dict[str, Any]) -> tuple[str, str | None]:
        name = f"{target['host']}:{target['port']}"
        try:
            async with asyncio.timeout(seconds):
                return name, await connect(target["host"], target["port"])
        except TimeoutError:
            return name, "timed out"

    targets = payload["targets"]
    opened, closed = [], {}
    for done, answer in enumerate(asyncio.as_completed([check(target) for target in targets]), 1):
        name, problem = await answer
        if problem is None:
            opened.append(name)
        else:
            closed[name] = problem
        await job.progress(done / len(targets), f"{name}: {problem or 'open'}")
    return {"open": sorted(opened), "closed": dict(sorted(closed.items()))}


@worker.job_type(
    "count_primes",
    schema={"type": "integer", "minimum": 2, "maximum": 50_000_000},
    summary="a whole number n, 2..50,000,000; the result is {below: n, count, largest}: the primes below n",
)
def count_primes(n: int) -> dict[str, Any]:
    """The primes below ``n``, by the sieve of Eratosthenes (50,000,000: about a second and 50 MB)."""
    sieve = bytearray([1]) * n
    sieve[:2] = b"\x00\x00"
    for i in range(2, math.isqrt(n - 1) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, n, i)))
    count = sieve.count(1)
    return {"below": n, "count": count, "largest": sieve.rfind(1) if count else None}
