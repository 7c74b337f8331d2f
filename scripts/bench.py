"""Benchmark the whole system as ``make run`` runs it, and print what one job costs: ``make bench``.

Set-up: a fresh database ``jobqueue_bench`` and queue ``jobs_bench``, development secrets in a temporary
folder, then run_system's plan started stage by stage, a new user's token, and a warm-up run to the end.
The measured phase submits the mixed jobs of tests/support/load.py in one of three ways:

- ``closed``: C clients on one channel, each sending its next CreateJob once its last one returned;
- ``open``:   R jobs a second for S seconds, each sent on schedule whatever the earlier ones are doing;
- ``batch``:  BatchCreateJobs calls of B jobs, C calls in flight.

It ends when every job is final, which the bench learns by counting final jobs in PostgreSQL every
0.25 s (the bench's own small cost, inside the postgres CPU figure). It reports jobs/s end to end
(N / (last finished_at - first send), one clock), the call latency, each job's latency (its finished_at,
PostgreSQL's now() as the outcome was stored, minus the client's send time), CPU ms per job of every
process over the phase (from /proc; the servers are shared, so others' load shows, and so does the rest
of the machine), and each service's peak RSS. Every job must then be COMPLETED with exactly its
expected result, or the bench exits 1: a fast wrong run is a failure. A good run appends one JSON line
to bench/results.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
# `python scripts/bench.py` puts scripts/ on the path but not the repository root (the services'
# packages, migrations, tests/support); the tests import this file as scripts.bench, the other way round.
for _folder in (ROOT, ROOT / "scripts"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import aio_pika  # noqa: E402
import asyncpg  # noqa: E402
import grpc  # noqa: E402
import run_system  # noqa: E402

from jobqueue.auth.v1 import auth_pb2, auth_pb2_grpc  # noqa: E402
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc  # noqa: E402
from jobqueue.runtime.health_check import HealthCheck, tls_of  # noqa: E402
from jobqueue.runtime.rabbitmq import Topology  # noqa: E402
from jobqueue.runtime.secrets import ensure_dev_secrets  # noqa: E402
from migrations.__main__ import migrate  # noqa: E402
from tests.support.load import MIXED_TYPES, Spec, mixed  # noqa: E402

DATABASE, QUEUE = "jobqueue_bench", "jobs_bench"
ADMIN_URL = os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
RESULTS = ROOT / "bench" / "results.jsonl"
FINAL = ("COMPLETED", "FAILED", "CANCELLED")
POLL_SECONDS, CALL_SECONDS, START_SECONDS, STOP_SECONDS = 0.25, 60.0, 60.0, 30.0
#: The job service's per-user limits, set where no run reaches them (the checks still run). The cap is
#: far above the room it leaves for other replicas (a burst plus two seconds of the rate), so the
#: bench's user is far from it, as most users are: job_svc/unfinished.py checks it on its estimate.
BENCH_LIMITS = {
    "JOBS_PER_SECOND_PER_USER": "1000000",
    "JOB_BURST_PER_USER": "1000000",
    "HIGH_PRIORITY_JOBS_PER_SECOND_PER_USER": "1000000",
    "HIGH_PRIORITY_BURST_PER_USER": "1000000",
    "MAX_UNFINISHED_JOBS_PER_USER": "100000000",
}
#: How long the last jobs may take after the last submission before the run counts as stuck.
DRAIN_SECONDS = 300.0
TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Raised when the system cannot be set up or a run goes wrong; main prints it and exits 1."""


# --- pure pieces (tests/unit/test_bench.py) -------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of a non-empty sample."""
    if not values or not 0 < q <= 100:
        raise ValueError("percentile needs values and 0 < q <= 100")
    return sorted(values)[math.ceil(q / 100 * len(values)) - 1]


@dataclass(frozen=True)
class ProcStat:
    """What the bench needs of a /proc/<pid>/stat line."""

    pid: int
    comm: str
    #: utime + stime + cutime + cstime: its own CPU and that of the children it has reaped.
    ticks: int


def parse_stat(line: str) -> ProcStat:
    """Parse a /proc/<pid>/stat line; the name sits in parentheses and may hold spaces and parentheses."""
    head, _, rest = line.rpartition(")")
    pid, _, comm = head.partition(" (")
    fields = rest.split()  # fields[0] is field 3 of proc(5); utime, stime, cutime, cstime are 14..17
    return ProcStat(int(pid), comm, sum(int(f) for f in fields[11:15]))


def schedule(rate: float, seconds: float) -> list[float]:
    """Send times of an open loop, in seconds from its start: evenly spaced, ``rate`` a second."""
    return [i / rate for i in range(round(rate * seconds))]


def verify(expected: Mapping[str, str], found: Mapping[str, tuple[str, str | None]], submitted: int) -> list[str]:
    """What is wrong with a run, empty if nothing is.

    ``expected``: each accepted job's id -> its result; ``found``: each stored job's id -> (status,
    result); ``submitted``: how many jobs the bench tried to create.
    """
    problems = []
    if len(expected) != submitted:
        problems.append(f"{submitted - len(expected)} of {submitted} submissions were not accepted")
    checks = {
        "accepted but not stored": sorted(expected.keys() - found.keys()),
        "stored but never accepted": sorted(found.keys() - expected.keys()),
        "not final": sorted(i for i, (status, _) in found.items() if status not in FINAL),
        "final but not COMPLETED with the expected result": sorted(
            i for i in expected.keys() & found.keys() if found[i][0] in FINAL and found[i] != ("COMPLETED", expected[i])
        ),
    }
    for what, ids in checks.items():
        if ids:
            example = f"{ids[0]}: {found.get(ids[0])!r}, expected {expected.get(ids[0])!r}"
            problems.append(f"{len(ids)} jobs {what}, e.g. {example[:200]}")
    return problems


# --- reading /proc --------------------------------------------------------------------------------------


def read_stat(pid: int) -> ProcStat | None:
    """The process's stat, or None if it is gone."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())
    return None


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children of any of its threads, recursively)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError):
            for child in map(int, children.read_text().split()):
                found += [child, *descendants(child)]
    return found


def is_broker(pid: int) -> bool:
    """Whether a beam.smp is the RabbitMQ server (`-s rabbit boot`), not a rabbitmqctl someone runs."""
    with contextlib.suppress(FileNotFoundError):
        return b"\0rabbit\0boot\0" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def cpu_snapshot(services: Mapping[str, int]) -> dict[str, int]:
    """CPU ticks so far of each process group the bench reports, and of the whole machine (``machine``).

    Each process counts with the children it reaped, so a postgres backend that exits mid-run stays in
    the total through the postmaster, and a worker's handler processes through the worker.
    """
    groups = {name: [pid, *descendants(pid)] for name, pid in services.items()}
    stats = [s for p in Path("/proc").iterdir() if p.name.isdigit() and (s := read_stat(int(p.name)))]
    groups["postgres"] = [s.pid for s in stats if s.comm == "postgres"]
    brokers = [s.pid for s in stats if s.comm == "beam.smp" and is_broker(s.pid)]
    groups["rabbitmq"] = [p for pid in brokers for p in (pid, *descendants(pid))]
    groups["bench (load generator)"] = [os.getpid()]  # every thread of ours; not our children, the services
    ticks = {name: sum(s.ticks for s in map(read_stat, pids) if s is not None) for name, pids in groups.items()}
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return {**ticks, "machine": user + nice + system + irq + softirq + steal}


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MB; 0 if it is gone."""
    with contextlib.suppress(FileNotFoundError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- the system under test ------------------------------------------------------------------------------


def free_ports(count: int, start: int) -> int:
    """The first of ``count`` consecutive free ports from ``start`` on (workers' health ports count up)."""

    def free(port: int) -> bool:
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
            except OSError:
                return False
        return True

    base = start
    while not all(free(p) for p in range(base, base + count)):
        base += 1
    return base


class System:
    """run_system's services (not the dashboard) as child processes, each writing a log file into ``logs``."""

    def __init__(self, workers: int, environ: Mapping[str, str], logs: Path) -> None:
        self.environ = dict(environ)
        # Not the dashboard: a browser's view is not on the job path, and no browser is open.
        self.children = [
            child for child in run_system.plan(workers, self.environ, sys.executable) if child.name != "web"
        ]
        self.logs = logs
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    def pids(self) -> dict[str, int]:
        """Each service's pid, by name."""
        return {name: p.pid for name, p in self.processes.items()}

    async def start(self) -> None:
        """Start stage by stage; each stage's services must report SERVING before the next starts."""
        for stage in run_system.start_stages(self.children):
            for child in stage:
                with (self.logs / f"{child.name}.log").open("wb") as log:
                    self.processes[child.name] = await asyncio.create_subprocess_exec(
                        *child.argv,
                        cwd=ROOT,
                        env={**self.environ, "PYTHONUNBUFFERED": "1", **child.env},
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        process_group=0,  # our Ctrl-C must not reach them: they are stopped in order
                        preexec_fn=run_system._child_setup(os.getpid()),  # and they die with us
                    )
            for child in stage:
                # The plan gives workers no health_address (run_system does not wait for them); the
                # bench does, so that the measured phase starts with every worker consuming.
                address = child.health_address or f"127.0.0.1:{child.env['WORKER_HEALTH_PORT']}"
                try:
                    async with asyncio.timeout(START_SECONDS):
                        await self._wait_serving(child.name, address)
                except TimeoutError:
                    raise BenchError(f"{child.name} was not SERVING on {address} after {START_SECONDS} s") from None

    async def _wait_serving(self, name: str, address: str) -> None:
        async with open_channel(address, self.environ) as channel:
            health = HealthCheck(channel, timeout=1.0)
            while self.processes[name].returncode is None:
                if await health.serving():
                    return
                await asyncio.sleep(0.2)
        raise BenchError(f"{name} exited with code {self.processes[name].returncode} while starting")

    def check_running(self) -> None:
        """Raise BenchError if a service has exited on its own."""
        if gone := {name: p.returncode for name, p in self.processes.items() if p.returncode is not None}:
            raise BenchError(f"services exited during the run, exit codes {gone} (0 means a SIGTERM from elsewhere)")

    async def stop(self) -> dict[str, int]:
        """SIGTERM the workers, then job, then auth, each stage in turn; returns each exit code."""
        started = [c for c in self.children if c.name in self.processes]
        for stage in run_system.stop_stages(started):
            for child in stage:
                with contextlib.suppress(ProcessLookupError):
                    self.processes[child.name].send_signal(signal.SIGTERM)
            for child in stage:
                process = self.processes[child.name]
                try:
                    await asyncio.wait_for(process.wait(), STOP_SECONDS)
                except TimeoutError:
                    os.killpg(process.pid, signal.SIGKILL)  # shows as exit code -9
                    await process.wait()
        return {name: p.returncode for name, p in self.processes.items() if p.returncode is not None}


def open_channel(address: str, environ: Mapping[str, str]) -> grpc.aio.Channel:
    """A channel to a service started with ``environ``: TLS, as its health probe asks, if it has a certificate.

    So ``TLS_CERT_FILE=... TLS_KEY_FILE=... JOB_SERVICE_CA_FILE=... make bench`` measures the system over TLS.
    """
    tls = tls_of(environ)
    return grpc.aio.insecure_channel(address) if tls is None else grpc.aio.secure_channel(address, *tls)


async def fresh_database_and_queue() -> str:
    """Drop and re-create the bench's database and queues, so nothing of an earlier run remains; its URL."""
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()
    url = urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{DATABASE}"))
    await migrate(url)
    async with await aio_pika.connect(RABBITMQ_URL) as connection:
        channel = await connection.channel()
        # The queue of every type before routing, the dead letters, and the queues of the types the bench runs.
        topology = Topology(QUEUE)
        for queue in (QUEUE, topology.dead_letter_queue, *map(topology.job_queue, MIXED_TYPES)):
            await channel.queue_delete(queue)
    return url


async def login(address: str, environ: Mapping[str, str]) -> str:
    """Register a new user and log in; returns the access token."""
    email, password = f"bench-{uuid.uuid4().hex[:12]}@example.com", "bench password 1"
    async with open_channel(address, environ) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        await stub.Register(auth_pb2.RegisterRequest(email=email, password=password, name="Bench"), timeout=30)
        return (await stub.Login(auth_pb2.LoginRequest(email=email, password=password), timeout=30)).access_token


# --- the load -------------------------------------------------------------------------------------------


@dataclass
class Load:
    """Submits jobs, and keeps what it saw."""

    stub: jobs_pb2_grpc.JobServiceAsyncStub
    metadata: tuple[tuple[str, str], ...]
    #: Accepted job id -> (its spec, wall-clock time just before its call was sent).
    sent: dict[str, tuple[Spec, float]] = field(default_factory=dict)
    call_ms: list[float] = field(default_factory=list)
    #: Jobs refused, by status code name.
    refused: Counter[str] = field(default_factory=Counter)
    #: Open loop only: how late each job was sent after its scheduled time.
    lateness_ms: list[float] = field(default_factory=list)

    async def create(self, specs: Sequence[Spec], *, batch: bool = False) -> None:
        """Submit ``specs``: one CreateJob call (one spec), or one BatchCreateJobs call."""
        requests = [jobs_pb2.CreateJobRequest(type=s.type, payload=s.value) for s in specs]
        sent, started = time.time(), time.perf_counter()
        try:
            if batch:
                batch_request = jobs_pb2.BatchCreateJobsRequest(requests=requests)
                reply = await self.stub.BatchCreateJobs(batch_request, metadata=self.metadata, timeout=CALL_SECONDS)
                jobs = list(reply.jobs)
            else:
                jobs = [(await self.stub.CreateJob(*requests, metadata=self.metadata, timeout=CALL_SECONDS)).job]
        except grpc.aio.AioRpcError as error:
            self.refused[error.code().name] += len(specs)
            return
        self.call_ms.append((time.perf_counter() - started) * 1000)
        self.sent.update((job.id, (spec, sent)) for job, spec in zip(jobs, specs, strict=True))


async def in_flight(load: Load, calls: Iterator[Sequence[Spec]], concurrency: int, *, batch: bool = False) -> None:
    """Closed loop: ``concurrency`` clients, each making its next call as soon as its last one returned."""

    async def client() -> None:
        for specs in calls:  # shared: each client takes the next call not yet taken
            await load.create(specs, batch=batch)

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def on_schedule(load: Load, specs: Sequence[Spec], send_times: Sequence[float]) -> None:
    """Open loop: each job sent at its time, whether or not the earlier ones have been answered."""
    start, calls = time.monotonic(), []
    for spec, offset in zip(specs, send_times, strict=True):
        if (delay := start + offset - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        load.lateness_ms.append(max(0.0, time.monotonic() - start - offset) * 1000)
        calls.append(asyncio.ensure_future(load.create([spec])))
    await asyncio.gather(*calls)


async def wait_final(db: asyncpg.Connection, count: int, system: System) -> None:
    """Poll until ``count`` jobs are final, or DRAIN_SECONDS pass (verification then says which are not)."""
    deadline = time.monotonic() + DRAIN_SECONDS
    query = f"SELECT count(*) FROM jobs WHERE status IN {FINAL}"  # noqa: S608 - constants only
    while time.monotonic() < deadline:
        system.check_running()
        if await db.fetchval(query) >= count:
            return
        await asyncio.sleep(POLL_SECONDS)


# --- the run --------------------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, system: System, db: asyncpg.Connection, load: Load) -> dict[str, Any]:
    """Warm up, run the measured phase, verify every job; returns the figures of the run."""
    await in_flight(load, ([s] for s in mixed(args.warmup)), 32)
    await wait_final(db, len(load.sent), system)
    if load.refused:
        raise BenchError(f"the warm-up's jobs were refused, by status: {dict(load.refused)}")
    warm = set(load.sent)
    load.call_ms.clear()

    specs = mixed(round(args.rate * args.seconds) if args.mode == "open" else args.jobs)
    before, submit_start = cpu_snapshot(system.pids()), time.monotonic()
    if args.mode == "closed":
        await in_flight(load, ([s] for s in specs), args.concurrency)
    elif args.mode == "open":
        await on_schedule(load, specs, schedule(args.rate, args.seconds))
    else:
        batches = (specs[i : i + args.batch_size] for i in range(0, len(specs), args.batch_size))
        await in_flight(load, batches, args.concurrency, batch=True)
    submit_seconds = time.monotonic() - submit_start
    await wait_final(db, len(load.sent), system)
    after = cpu_snapshot(system.pids())
    rss = {}
    for name, pid in system.pids().items():
        rss[name] = peak_rss_mb(pid)
        if name.startswith("worker"):
            rss[f"{name} pool"] = sum(map(peak_rss_mb, descendants(pid)))

    rows = await db.fetch("SELECT id::text, status, result, finished_at FROM jobs")
    expected = {i: spec.expected for i, (spec, _) in load.sent.items()}
    problems = verify(expected, {r["id"]: (r["status"], r["result"]) for r in rows}, args.warmup + len(specs))
    if load.refused:
        problems.append(f"jobs refused, by status: {dict(load.refused)}")
    if problems:
        raise BenchError("the run is wrong:\n  " + "\n  ".join(problems))

    finished = {r["id"]: r["finished_at"].timestamp() for r in rows if r["id"] not in warm}
    sent = {i: at for i, (_, at) in load.sent.items() if i not in warm}
    wall = max(finished.values()) - min(sent.values())
    ms = {name: (after[name] - before[name]) * 1000 / TICKS / len(specs) for name in before}
    other = ms.pop("machine") - sum(ms.values())
    return {
        "jobs": len(specs),
        "wall_s": round(wall, 3),
        "submit_s": round(submit_seconds, 3),
        "submitted_per_s": round(len(specs) / submit_seconds, 1),
        "jobs_per_s": round(len(specs) / wall, 1),
        "create_latency_ms": summary(load.call_ms, "p50", "p99"),
        "job_latency_ms": summary([(finished[i] - at) * 1000 for i, at in sent.items()], "p50", "p99", "max"),
        **({"generator_lateness_ms": summary(load.lateness_ms, "p50", "p99", "max")} if load.lateness_ms else {}),
        "cpu_ms_per_job": {**{k: round(v, 3) for k, v in ms.items()}, "total": round(sum(ms.values()), 3)},
        "other_cpu_ms_per_job": round(other, 3),
        "peak_rss_mb": {k: round(v, 1) for k, v in rss.items()},
    }


def summary(values: Sequence[float], *points: str) -> dict[str, float]:
    """Named points of ``values`` ("p50", "p99", "max"), rounded to 0.1."""
    return {p: round(max(values) if p == "max" else percentile(values, float(p[1:])), 1) for p in points}


def table(args: argparse.Namespace, figures: Mapping[str, Any]) -> str:
    """The figures, for people."""
    how = f"rate {args.rate:g}/s for {args.seconds:g} s" if args.mode == "open" else f"concurrency {args.concurrency}"
    lines = [
        f"{args.mode} loop, {args.workers} workers, prefetch {args.prefetch}, {how}: {figures['jobs']} jobs",
        f"  {'throughput':<26}{figures['jobs_per_s']:>9.1f} jobs/s ({figures['wall_s']} s first send to last finish)",
        f"  {'accepted':<26}{figures['submitted_per_s']:>9.1f} jobs/s ({figures['submit_s']} s to submit them all)",
    ]
    call = "BatchCreateJobs call" if args.mode == "batch" else "CreateJob call"
    for title, key in ((call, "create_latency_ms"), ("job", "job_latency_ms"), ("sent late", "generator_lateness_ms")):
        if key in figures:
            lines.append(f"  {title + ' ms':<26}" + "  ".join(f"{k} {v:>7.1f}" for k, v in figures[key].items()))
    cpu = {**figures["cpu_ms_per_job"], "(rest of the machine)": figures["other_cpu_ms_per_job"]}
    lines += ["  CPU ms per job", *(f"    {name:<24}{value:>9.3f}" for name, value in cpu.items())]
    lines += [
        "  peak RSS MB (a worker's pool: its child processes summed)",
        *(f"    {name:<24}{value:>9.1f}" for name, value in figures["peak_rss_mb"].items()),
    ]
    logged = "; ".join(f"{name} {dict(c)}" for name, c in figures["log_lines_above_info"].items() if c)
    lines.append(f"  log lines above INFO      {logged or 'none'}")
    return "\n".join([*lines, f"  verified: all {figures['jobs']} jobs COMPLETED with the expected result"])


def log_levels(folder: Path) -> dict[str, dict[str, int]]:
    """How many lines above INFO each service logged (its log is JSON lines with a ``level``)."""

    def level(line: str) -> str:
        try:
            return str(json.loads(line)["level"])
        except (ValueError, KeyError, TypeError):
            return "not JSON"  # a traceback, say

    counts = {}
    for log in sorted(folder.glob("*.log")):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        counts[log.stem] = {k: n for k, n in Counter(map(level, lines)).items() if k not in ("debug", "info")}
    return counts


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Set up, measure and tear down; returns the figures (BenchError if anything went wrong)."""
    url = await fresh_database_and_queue()
    auth_port = free_ports(1, 21001)
    job_port = free_ports(1, auth_port + 1)
    environ = {
        **os.environ,
        "APP_ENV": "development",
        "DATABASE_URL": url,
        "RABBITMQ_QUEUE": QUEUE,
        "DEV_SECRETS_DIR": str(ensure_dev_secrets(folder / "secrets")),
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "AUTH_PORT": str(auth_port),
        "JOB_PORT": str(job_port),
        "WORKER_HEALTH_PORT": str(free_ports(args.workers, job_port + 1)),
        "PREFETCH_COUNT": str(args.prefetch),
        "HANDLER_PROCESSES": str(args.handler_processes),
        # One user submits as fast as it can: the per-user limits stay on, so their checks are measured,
        # at values no run reaches (docs/security.md).
        **BENCH_LIMITS,
    }
    system = System(args.workers, environ, folder)
    try:
        await system.start()
        token = await login(f"127.0.0.1:{auth_port}", environ)
        db = await asyncpg.connect(url)
        try:
            async with open_channel(f"127.0.0.1:{job_port}", environ) as channel:
                load = Load(jobs_pb2_grpc.JobServiceStub(channel), (("authorization", f"Bearer {token}"),))
                figures = await measure(args, system, db, load)
        finally:
            await db.close()
    finally:
        codes = await system.stop()
    if bad := {name: code for name, code in codes.items() if code != 0}:
        raise BenchError(f"services did not stop cleanly, exit codes {bad}")
    return {**figures, "log_lines_above_info": log_levels(folder)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Benchmark auth, jobs and N workers run as `make run` runs them; print the figures and "
        "append them to bench/results.jsonl. Exits 1 unless every job ends COMPLETED with the right result.",
    )
    add = parser.add_argument
    add("--mode", choices=("closed", "open", "batch"), default="closed", help="how jobs arrive (default: closed)")
    add("-W", "--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    add("--prefetch", type=int, default=100, help="PREFETCH_COUNT (default: %(default)s, as in the workers)")
    add("--handler-processes", type=int, default=1, help="each worker's HANDLER_PROCESSES (default: %(default)s)")
    add("-C", "--concurrency", type=int, help="calls in flight, closed (default 32) and batch (default 4)")
    add("-N", "--jobs", type=int, default=20000, help="jobs, closed and batch (default: %(default)s)")
    add("-R", "--rate", type=float, default=400, help="jobs a second, open (default: %(default)s)")
    add("--seconds", type=float, default=20, help="how long jobs arrive, open (default: %(default)s)")
    add("--batch-size", type=int, default=1000, help="jobs per BatchCreateJobs call (default: %(default)s)")
    add("--warmup", type=int, default=200, help="jobs run to completion before measuring (default: %(default)s)")
    add("--results", type=Path, default=RESULTS, help="where a good run appends its JSON line (default: %(default)s)")
    args = parser.parse_args(argv)
    args.concurrency = args.concurrency or (4 if args.mode == "batch" else 32)
    for name in ("workers", "prefetch", "handler_processes", "concurrency", "jobs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 1 or args.rate <= 0 or args.seconds <= 0 or round(args.rate * args.seconds) < 1:
        parser.error("--warmup, --rate and --seconds must be positive, and rate x seconds at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="jobqueue-bench-"))
    try:
        figures = asyncio.run(run(args, folder))
    except BenchError as error:
        print(f"bench: {error}\nbench: the services' logs are in {folder}", file=sys.stderr)
        return 1
    print(table(args, figures))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    record = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip() or "unknown",  # uncommitted edits are not in it
        "flags": {k: v for k, v in vars(args).items() if k != "results"},
        **figures,
        "verified": True,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as results:
        results.write(json.dumps(record) + "\n")
    if any(set(c) - {"warning"} for c in figures["log_lines_above_info"].values()):
        print(f"bench: services logged errors; their logs are kept in {folder}")
    else:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
