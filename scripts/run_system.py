"""Run the whole system as local processes: auth, jobs, N workers and the web dashboard; Ctrl-C stops them in order.

This is what ``make run`` executes. Auth and jobs start first; workers and the
dashboard (``python -m web_svc``, whose URL the banner prints) start once both
report SERVING on grpc.health.v1, so a worker's first report finds the job
service up. Each child's output is passed through with its name in front.

Once everything is up, a child that exits on its own is restarted, like a
process manager (or compose's ``restart: unless-stopped``) would: after a
backoff that doubles from 0.5 s up to 30 s and starts over once a run has
lasted 30 s, with one line saying what died, how, and when it comes back. The
rest keep serving meanwhile: workers keep their reports until the job service
is back, and the queue keeps the jobs of a dead worker. A child that exits 5
times within 60 s is crash-looping: we say so loudly, once, and keep retrying
it every 30 s rather than give up (a crash loop here is most often a
dependency that is down, and it heals when the dependency returns) or stop
the rest (which would throw away what still works). A child that fails before
the system is up (a bad setting, a taken port) still stops everything: that is
a mistake to fix, not a crash to heal.

Before starting anything, every port the children will listen on is tried:
if one is taken (most often by another ``make run``), one line says which and
what holds it, and we exit 1 with nothing started. Children listen on loopback
unless told otherwise: BIND_HOST (default 127.0.0.1) is given to each of them
as AUTH_HOST / JOB_HOST / WORKER_HEALTH_HOST / WEB_HOST (which also carry the metrics
endpoints), unless that variable is set itself. The banner prints the very
addresses handed to the children.

The workers are ``python -m worker_svc`` (the built-in job types, and the demo
ones with DEMO_JOB_TYPES=true), or, with WORKER_APP=MODULE:ATTRIBUTE, a worker of
your own: ``python -m jobqueue.worker MODULE:ATTRIBUTE`` (gen/jobqueue/worker).

Stopping (SIGINT, SIGTERM or SIGHUP) goes workers and dashboard -> job -> auth, waiting for each
stage, so a worker finishing its last job can still report it. A child that has
not exited after --stop-timeout seconds is killed (and we say so); a second
Ctrl-C kills at once. Exit status: 0 only if every child was running when the
stop was asked for and exited 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import grpc

ROOT = Path(__file__).resolve().parents[1]
# `python scripts/run_system.py` puts scripts/ on the path but not the repository root (common/).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jobqueue.runtime.backoff import Backoff  # noqa: E402
from jobqueue.runtime.health_check import HealthCheck, tls_of  # noqa: E402
from migrations import roles  # noqa: E402
from migrations.__main__ import DEFAULT_DATABASE_URL  # noqa: E402

#: Our own messages carry this name, in the same column as the children's.
SELF = "run"
#: A child line longer than this is passed on in pieces rather than held in memory.
MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class Listen:
    """One address a child listens on: what it serves there, and the host and port it binds."""

    what: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.what} {address(self.host, self.port)}"


@dataclass(frozen=True)
class Child:
    """One process to run: what to execute, and where it sits in the start and stop order."""

    name: str
    argv: tuple[str, ...]
    #: Variables set on top of the inherited environment.
    env: Mapping[str, str] = field(default_factory=dict)
    #: If set, later start stages wait until this grpc.health.v1 address reports SERVING.
    health_address: str | None = None
    #: Lower stages start first.
    start_stage: int = 0
    #: Lower stages are stopped (and waited for) first.
    stop_stage: int = 0
    #: What it listens on (as its ``env`` tells it to): checked before the start, and printed in the banner.
    listens: tuple[Listen, ...] = ()


@dataclass(frozen=True)
class RestartPolicy:
    """When a child that exited on its own is started again, and when that counts as a crash loop."""

    #: The first restart waits about this long; each further one twice as long (with jitter).
    base: float = 0.5
    #: No restart waits longer than this.
    cap: float = 30.0
    #: A run that lasted this long was a success: the next restart waits ``base`` again.
    stable_after: float = 30.0
    #: This many exits within ``window`` seconds is a crash loop, reported loudly.
    crash_loop_exits: int = 5
    window: float = 60.0


def env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    """An integer environment variable; ValueError naming the variable if it does not parse."""
    raw = environ.get(name, "")
    if not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


#: Where the children listen unless BIND_HOST (or their own *_HOST variable) says otherwise.
DEFAULT_BIND_HOST = "127.0.0.1"


def address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def probe_host(bind_host: str) -> str:
    """Where this machine reaches a server bound to ``bind_host`` (a wildcard means loopback)."""
    return "127.0.0.1" if bind_host in ("", "0.0.0.0", "::", "[::]") else bind_host


def worker_health_ports(base: int, count: int) -> list[int]:
    """One health port per worker, counting up from ``base``, so workers can share a machine."""
    return [base + i for i in range(count)]


def metrics_ports(base: int, workers: int) -> list[dict[str, str]]:
    """Each child's METRICS_PORT (auth, job, then each worker), counting up from ``base``; none if ``base`` is 0."""
    return [{"METRICS_PORT": str(base + i)} if base else {"METRICS_PORT": "0"} for i in range(2 + workers)]


def bind_hosts(environ: Mapping[str, str]) -> dict[str, str]:
    """Each service's *_HOST: its own variable if set, else BIND_HOST, else loopback."""
    default = environ.get("BIND_HOST", "").strip() or DEFAULT_BIND_HOST
    names = ("AUTH_HOST", "JOB_HOST", "WORKER_HEALTH_HOST", "WEB_HOST")
    return {name: environ.get(name, "").strip() or default for name in names}


def database_url(environ: Mapping[str, str], role: roles.Role) -> dict[str, str]:
    """DATABASE_URL for the service of ``role``: the server and database `make migrate` used, as that role.

    The migrations run as DATABASE_URL's user (the owner) and create the roles there, with the
    passwords AUTH_DATABASE_PASSWORD / JOB_DATABASE_PASSWORD give, if any; the services log in as them.
    """
    owner = environ.get("DATABASE_URL", "") or DEFAULT_DATABASE_URL
    return {"DATABASE_URL": roles.url_as(owner, role, roles.password(role, environ))}


def worker_argv(environ: Mapping[str, str], python: str) -> tuple[str, ...]:
    """How a worker is started: the Worker WORKER_APP names (MODULE:ATTRIBUTE), else the worker service."""
    app = environ.get("WORKER_APP", "").strip()
    return (python, "-m", "jobqueue.worker", app) if app else (python, "-m", "worker_svc")


#: Where the web dashboard listens unless WEB_PORT says otherwise.
DEFAULT_WEB_PORT = 5080


def dashboard_url(environ: Mapping[str, str]) -> str:
    """Where a browser on this machine opens the dashboard of a local run."""
    host = probe_host(bind_hosts(environ)["WEB_HOST"])
    return f"http://{address(host, env_int(environ, 'WEB_PORT', DEFAULT_WEB_PORT))}/"


def plan(workers: int, environ: Mapping[str, str], python: str = sys.executable) -> list[Child]:
    """The children of a local run: auth and job (started first, stopped last), then the workers and the dashboard."""
    hosts = bind_hosts(environ)
    auth_port, job_port = env_int(environ, "AUTH_PORT", 5001), env_int(environ, "JOB_PORT", 5002)
    web_port = env_int(environ, "WEB_PORT", DEFAULT_WEB_PORT)
    auth = address(probe_host(hosts["AUTH_HOST"]), auth_port)
    job = address(probe_host(hosts["JOB_HOST"]), job_port)
    ports = worker_health_ports(env_int(environ, "WORKER_HEALTH_PORT", 5003), workers)
    auth_metrics, job_metrics, *worker_metrics = metrics_ports(env_int(environ, "METRICS_PORT", 0), workers)

    def listens(what: str, host: str, port: int, metrics: Mapping[str, str]) -> tuple[Listen, ...]:
        # The services serve /metrics on the host of their gRPC server.
        on = int(metrics["METRICS_PORT"])
        return (Listen(what, host, port), *([Listen("metrics", host, on)] if on else []))

    return [
        Child(
            "auth",
            (python, "-m", "auth_svc"),
            {"AUTH_HOST": hosts["AUTH_HOST"], **auth_metrics, **database_url(environ, roles.AUTH)},
            health_address=auth,
            start_stage=0,
            stop_stage=2,
            listens=listens("grpc", hosts["AUTH_HOST"], auth_port, auth_metrics),
        ),
        Child(
            "job",
            (python, "-m", "job_svc"),
            {"JOB_HOST": hosts["JOB_HOST"], **job_metrics, **database_url(environ, roles.JOBS)},
            health_address=job,
            start_stage=0,
            stop_stage=1,
            listens=listens("grpc", hosts["JOB_HOST"], job_port, job_metrics),
        ),
        *(
            Child(
                f"worker-{i + 1}",
                worker_argv(environ, python),
                # Workers follow the job service to whatever port it was given.
                env={
                    "WORKER_HEALTH_HOST": hosts["WORKER_HEALTH_HOST"],
                    "WORKER_HEALTH_PORT": str(port),
                    "JOB_SERVICE_ADDR": environ.get("JOB_SERVICE_ADDR", job),
                    **worker_metrics[i],
                },
                start_stage=1,
                stop_stage=0,
                listens=listens("health", hosts["WORKER_HEALTH_HOST"], port, worker_metrics[i]),
            )
            for i, port in enumerate(ports)
        ),
        Child(
            "web",
            (python, "-m", "web_svc"),
            # The dashboard follows the services to whatever ports they were given.
            {
                "WEB_HOST": hosts["WEB_HOST"],
                "WEB_PORT": str(web_port),
                "AUTH_SERVICE_ADDR": environ.get("AUTH_SERVICE_ADDR", auth),
                "JOB_SERVICE_ADDR": environ.get("JOB_SERVICE_ADDR", job),
            },
            start_stage=1,
            stop_stage=0,
            listens=(Listen("http", hosts["WEB_HOST"], web_port),),
        ),
    ]


# --- ports taken before the start --------------------------------------------------------------------------

#: /proc/net/tcp's state of a listening socket.
_LISTEN = "0A"


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (bound as the services bind: SO_REUSEADDR)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # not ours to judge: the service says what is wrong with its host
    family, kind, proto, _, where = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError:
            return False
    return True


def listening_inodes(port: int, proc: Path = Path("/proc")) -> set[str]:
    """The socket inodes listening on TCP ``port`` (any address), from /proc/net/tcp and tcp6."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def socket_owner(inodes: set[str], proc: Path = Path("/proc")) -> tuple[int, str] | None:
    """The pid and command of a process holding one of these socket inodes, if /proc lets us see it."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            held = any(os.readlink(fd) in wanted for fd in (pid_dir / "fd").iterdir())
            if not held:
                continue
            argv = (pid_dir / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:  # gone, or not ours to look at
            continue
        command = " ".join(
            [Path(argv[0].decode(errors="replace")).name, *(a.decode(errors="replace") for a in argv[1:])]
        )
        return int(pid_dir.name), command if len(command) <= 60 else command[:57] + "..."
    return None


def holder(port: int) -> str:
    """Who holds ``port``: ``pid 123 (python3 -m job_svc)``, or ``in use`` when /proc does not tell."""
    owner = socket_owner(inodes) if (inodes := listening_inodes(port)) else None
    return f"pid {owner[0]} ({owner[1]})" if owner else "in use"


def taken_ports(children: Sequence[Child]) -> str | None:
    """One line naming every port of ``children`` that is taken and what holds it; None if all are free."""
    by_holder: dict[str, list[str]] = {}
    for child in children:
        for listen in child.listens:
            if not port_free(listen.host, listen.port):
                what = child.name if listen.what != "metrics" else f"{child.name} metrics"
                by_holder.setdefault(holder(listen.port), []).append(f"{listen.port} ({what})")
    if not by_holder:
        return None
    taken = "; ".join(
        f"{', '.join(ports)} {'in use' if held == 'in use' else f'held by {held}'}" for held, ports in by_holder.items()
    )
    return (
        f"cannot start, port{'s' if sum(map(len, by_holder.values())) > 1 else ''} taken: {taken}. Another make run? "
        "Stop it, or choose other ports (AUTH_PORT, JOB_PORT, WORKER_HEALTH_PORT, WEB_PORT, METRICS_PORT)."
    )


def _stages(children: Sequence[Child], key: Callable[[Child], int]) -> list[list[Child]]:
    return [[c for c in children if key(c) == stage] for stage in sorted({key(c) for c in children})]


def start_stages(children: Sequence[Child]) -> list[list[Child]]:
    """Children grouped by start stage, first stage first (plan order kept within a stage)."""
    return _stages(children, lambda c: c.start_stage)


def stop_stages(children: Sequence[Child]) -> list[list[Child]]:
    """Children grouped by stop stage, the one to stop first first."""
    return _stages(children, lambda c: c.stop_stage)


def label(name: str, width: int) -> bytes:
    """The prefix of every line from ``name``, padded so that columns line up."""
    return f"{name:<{width}} | ".encode()


class LinePrefixer:
    """Turns a child's output chunks into whole lines, each starting with the child's label."""

    def __init__(self, prefix: bytes, max_line: int = MAX_LINE) -> None:
        self._prefix = prefix
        self._max_line = max_line
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete lines now available, prefixed; a partial line waits for its end."""
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        while len(self._pending) > self._max_line:
            lines.append(self._pending[: self._max_line])
            self._pending = self._pending[self._max_line :]
        return b"".join(self._prefix + line + b"\n" for line in lines)

    def flush(self) -> bytes:
        """What remains at end of output, as a last line (empty if nothing remains)."""
        rest, self._pending = self._pending, b""
        return self._prefix + rest + b"\n" if rest else b""


def _load_prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return cast(Callable[[int, int], int], ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):
        return None


# Looked up here, not in the forked child, where loading a library is unsafe.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _child_setup(parent: int) -> Callable[[], None]:
    """What a child runs between fork and exec: die with us, so even a SIGKILLed run leaves no orphans."""

    def setup() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
            # We may have died before prctl took effect; then nobody would signal this child.
            if os.getppid() != parent:
                os._exit(1)

    return setup


def describe_exit(code: int) -> str:
    """An exit status in words: ``code 3`` or ``signal SIGKILL``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"code {code}"


class Supervisor:
    """Starts the children stage by stage, relays their output, and stops them in order."""

    def __init__(
        self,
        children: Sequence[Child],
        *,
        out: BinaryIO,
        environ: Mapping[str, str],
        cwd: Path = ROOT,
        startup_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        restart: RestartPolicy = RestartPolicy(),
        hints: Sequence[str] = (),
    ) -> None:
        self.children = list(children)
        self._restart = restart
        self._hints = list(hints)
        self._out = out
        self._environ = dict(environ)
        self._cwd = cwd
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._width = max(len(n) for n in [SELF, *(c.name for c in self.children)])
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._exits: dict[str, asyncio.Task[int]] = {}
        self._pumps: list[asyncio.Task[None]] = []
        self._out_broken = False

    def _write(self, data: bytes) -> None:
        if self._out_broken or not data:
            return
        try:
            self._out.write(data)
            self._out.flush()
        except BrokenPipeError:
            # The reader went away (`make run | head`); keep draining the children so they never block.
            self._out_broken = True

    def say(self, message: str) -> None:
        """Print a message of our own, in the children's format."""
        self._write(b"".join(label(SELF, self._width) + line.encode() + b"\n" for line in message.splitlines()))

    async def _pump(self, child: Child, stream: asyncio.StreamReader) -> None:
        prefixer = LinePrefixer(label(child.name, self._width))
        while chunk := await stream.read(MAX_LINE):
            self._write(prefixer.feed(chunk))
        self._write(prefixer.flush())

    async def _spawn(self, child: Child) -> None:
        process = await asyncio.create_subprocess_exec(
            *child.argv,
            cwd=self._cwd,
            env={**self._environ, "PYTHONUNBUFFERED": "1", **child.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own process group keeps the terminal's Ctrl-C away from the
            # children: only we get it, so we can stop them in order.
            process_group=0,
            preexec_fn=_child_setup(os.getpid()),
        )
        self._processes[child.name] = process
        self._exits[child.name] = asyncio.ensure_future(process.wait())
        assert process.stdout is not None  # stdout=PIPE
        self._pumps.append(asyncio.ensure_future(self._pump(child, process.stdout)))

    async def _wait_serving(self, child: Child, address: str, stop: asyncio.Event) -> str | None:
        """None once ``child`` is SERVING (or a stop was asked for); otherwise why it never got there."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._startup_timeout
        # Asked as the child's own health probe would ask it: over TLS if it was given a certificate.
        tls = tls_of({**self._environ, **child.env})
        opened = grpc.aio.insecure_channel(address) if tls is None else grpc.aio.secure_channel(address, *tls)
        async with opened as channel:
            health = HealthCheck(channel, timeout=1.0)
            while not stop.is_set():
                exited = self._exits[child.name]
                if exited.done():
                    return f"{child.name} exited with {describe_exit(exited.result())} before it was ready"
                if loop.time() > deadline:
                    return f"{child.name} was not SERVING on {address} after {self._startup_timeout:g} s"
                if await health.serving():
                    return None
                await asyncio.sleep(0.2)
        return None

    async def _keep(self, child: Child, stop: asyncio.Event) -> None:
        """Until a stop is asked for, start ``child`` again each time it exits on its own (see the module doc)."""
        loop = asyncio.get_running_loop()
        policy = self._restart
        backoff = Backoff(policy.base, policy.cap)
        exits: deque[float] = deque()
        started = loop.time()
        looping = False
        while True:
            exited = self._exits[child.name]
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if stop.is_set():
                return
            now = loop.time()
            if now - started >= policy.stable_after:
                backoff.reset()
                looping = False
            exits.append(now)
            while exits and exits[0] < now - policy.window:
                exits.popleft()
            delay = backoff.next_delay()
            how = describe_exit(exited.result())
            if len(exits) >= policy.crash_loop_exits and not looping:
                looping = True
                self.say(
                    f"{child.name} IS CRASH-LOOPING: {len(exits)} exits within {policy.window:g} s, the last with "
                    f"{how}.\nIts own last lines are above. The rest keep running; {child.name} is retried, "
                    f"at most {policy.cap:g} s apart, until it stays up or you press Ctrl-C."
                )
            self.say(
                f"{child.name} exited unexpectedly with {how}; restarting it in {delay:.1f} s"
                f"{' (crash-looping)' if looping else ''}; the rest keep running"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
                return
            await self._spawn(child)
            started = loop.time()
            self.say(f"{child.name} restarted, pid {self._processes[child.name].pid}")

    async def run(self, stop: asyncio.Event, force: asyncio.Event | None = None) -> int:
        """Run until ``stop`` is set (or a child fails to start); then stop every child. Returns the exit status.

        Setting ``force`` while stopping kills whatever is still running.
        """
        failure: str | None = None
        try:
            for stage in start_stages(self.children):
                for child in stage:
                    await self._spawn(child)
                for child in stage:
                    if child.health_address is not None and failure is None:
                        failure = await self._wait_serving(child, child.health_address, stop)
                if failure is not None or stop.is_set():
                    break
            else:
                self.say(self.banner())
                # Not cancelled: one may be starting a process, which must be tracked to be stopped.
                await asyncio.gather(*(self._keep(child, stop) for child in self.children))
        finally:
            if failure is not None:
                self.say(f"{failure}; stopping the rest")
            else:
                self.say("stopping: workers and web, then job, then auth (Ctrl-C again to kill)")
            down = [name for name, exited in self._exits.items() if exited.done()]
            codes = await self._stop_all(force or asyncio.Event())
        bad = {name: code for name, code in codes.items() if code != 0}
        for name, code in bad.items():
            when = "before the stop (it was waiting to be restarted)" if name in down else ""
            self.say(" ".join(filter(None, [f"{name} exited with {describe_exit(code)}", when])))
        if failure is None and not bad:
            self.say("all stopped cleanly")
            return 0
        return 1

    async def _stop_all(self, force: asyncio.Event) -> dict[str, int]:
        started = [c for c in self.children if c.name in self._processes]
        for stage in stop_stages(started):
            for child in stage:
                if not self._exits[child.name].done():
                    # Only the child itself: its own helpers (a process pool, say)
                    # are its business to stop, after its in-flight work is done.
                    with contextlib.suppress(ProcessLookupError):
                        self._processes[child.name].send_signal(signal.SIGTERM)
            waits = [self._exits[c.name] for c in stage]
            forced = asyncio.ensure_future(force.wait())
            either: list[asyncio.Future[Any]] = [asyncio.gather(*waits), forced]
            try:
                await asyncio.wait(either, timeout=self._stop_timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                forced.cancel()
            for child in stage:
                if not self._exits[child.name].done():
                    self.say(f"{child.name} did not stop within {self._stop_timeout:g} s; killing it")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self._processes[child.name].pid, signal.SIGKILL)
                    await self._exits[child.name]
        # Output still in the pipes is worth showing, but a grandchild that
        # kept a pipe open must not hold us forever.
        _, late = await asyncio.wait(self._pumps, timeout=5.0) if self._pumps else (set(), set())
        for pump in late:
            pump.cancel()
        return {name: exited.result() for name, exited in self._exits.items()}

    def banner(self) -> str:
        """What runs where (the addresses each child was told to listen on), and how to stop it."""
        lines = ["Job Queue Processor is running:"]
        wheres = [", ".join(map(str, child.listens)) for child in self.children]
        width = max(map(len, wheres), default=0)
        for child, where in zip(self.children, wheres, strict=True):
            pid = self._processes[child.name].pid
            command = " ".join([Path(child.argv[0]).name, *child.argv[1:]])
            lines.append(f"  {child.name:<{self._width}}  {where:<{width}}  pid {pid}  ({command})")
        return "\n".join([*lines, *self._hints, "Ctrl-C to stop."])


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    """The command line, with defaults from the environment."""
    parser = argparse.ArgumentParser(
        description="Run auth_svc, job_svc, N worker_svc processes and web_svc locally; Ctrl-C stops them "
        "(workers and web first, then job, then auth).",
        epilog="Environment: WORKERS (default worker count, 2); BIND_HOST (127.0.0.1: loopback only; 0.0.0.0 "
        "opens every interface), given to the services as AUTH_HOST, JOB_HOST, WORKER_HEALTH_HOST and WEB_HOST unless "
        "those are set; AUTH_PORT (5001), JOB_PORT (5002), WORKER_HEALTH_PORT (5003: worker i gets 5003+i), WEB_PORT "
        "(5080, the dashboard), METRICS_PORT "
        "(0: off; else auth gets it, job the next, then each worker). Every variable is passed on to the "
        "services; see each one's --help for theirs.",
    )
    parser.add_argument(
        "--workers", type=int, default=env_int(environ, "WORKERS", 2), help="how many workers (default: %(default)s)"
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for auth and job to report SERVING (default: %(default)s)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds each stop stage may take before its processes are killed (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    return args


async def _main(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    stop, force = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (force if stop.is_set() else stop).set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, on_signal)
    children = plan(args.workers, environ)
    job_address = next(c.health_address for c in children if c.name == "job")
    # Plaintext unless given a certificate (docs/security.md, "TLS set-up"): then the CA verifies it.
    transport = f"-cacert {environ.get('TLS_CA_FILE') or 'CA.pem'}" if environ.get("TLS_CERT_FILE") else "-plaintext"
    supervisor = Supervisor(
        children,
        out=sys.stdout.buffer,
        environ=environ,
        startup_timeout=args.startup_timeout,
        stop_timeout=args.stop_timeout,
        hints=[
            "Logs: one JSON object per line, after the process name; LOG_LEVEL=DEBUG shows more.",
            f"Try: .venv/bin/grpcurl {transport} {job_address} list",
            f"Dashboard: {dashboard_url(environ)} (log in with an account: README, walkthrough step 1)",
        ],
    )
    supervisor.say(f"starting auth and job, then {args.workers} worker(s) and the web dashboard, from {ROOT}")
    return await supervisor.run(stop, force)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    environ = dict(os.environ)
    try:
        args = parse_args(argv, environ)
        plan(0, environ)  # fail on a malformed port variable before starting anything
    except ValueError as error:
        print(f"run_system: {error}", file=sys.stderr)
        return 2
    taken = taken_ports(plan(args.workers, environ))
    if taken is not None:
        print(f"run_system: {taken}", file=sys.stderr)
        return 1
    return asyncio.run(_main(args, environ))


if __name__ == "__main__":
    sys.exit(main())
