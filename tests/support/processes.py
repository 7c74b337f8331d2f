"""The one way the tests start and stop services: the real entry points (``python -m <svc>``) as local processes.

``start_service`` starts one with the environment a test gives it (and a free
port unless that names one), waits until its health service answers SERVING,
and fails with the service's output if it exits or never serves.
A service given the tests' owner DATABASE_URL logs in as its own role instead
(``as_service_role``), as it does under `make run` and compose, so every test
also checks that the grants of migrations/ suffice.
``ServiceProcess.stop`` sends SIGTERM and returns the exit code; ``kill`` is a
crash. Every suite's fixtures (tests/support/system.py for the whole system,
tests/integration/conftest.py for one job service) and every test that needs
a service of its own go through here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from jobqueue.runtime.health_check import SERVING, Tls, status_of, tls_of
from migrations import roles

ROOT = Path(__file__).resolve().parents[2]

#: The setting naming the port of each service's gRPC health service.
#: How long a stopped service may take before it is killed: longer than any service's own grace
#: (the worker's SHUTDOWN_GRACE_SECONDS is 30 s), so a service that uses all of its grace and then
#: exits cleanly is not mistaken for a hung one.
STOP_TIMEOUT = 45.0
HEALTH_PORT_SETTING = {"auth_svc": "AUTH_PORT", "job_svc": "JOB_PORT", "worker_svc": "WORKER_HEALTH_PORT"}


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive TCP ports nothing listens on right now (as `make run` gives workers)."""
    for _ in range(100):
        base = free_port()
        if base + count > 65_536:
            continue
        held = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def health_status(address: str, service: str = "", timeout: float = 1.0, tls: Tls | None = None) -> int | None:
    """The health status a server reports for ``service``, or None if it cannot be asked (``tls``: over TLS)."""
    return status_of(address, service, timeout=timeout, tls=tls)


def children(pid: int) -> list[int]:
    """The pids of the live processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Fields after the parenthesised command: state, ppid, ...
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if int(ppid) == pid and state != "Z":
                found.append(int(entry.name))
    return found


def handler_processes(worker_pid: int) -> list[int]:
    """A worker's children that run handlers (not multiprocessing's resource tracker)."""
    found = []
    for pid in children(worker_pid):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue  # gone since it was listed
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


#: The user of the URLs the tests' databases are made with (tests/support/databases.py): the owner.
OWNER = "postgres"
#: The database role each service logs in as.
SERVICE_ROLES = {role.service: role for role in roles.ROLES}


def as_service_role(module: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with a DATABASE_URL of the owner's replaced by the same URL as ``module``'s own role.

    A URL of any other user (a test's deliberately wrong one) is left as it is. A proxy's URL names the owner
    too (with the proxy's port), so a service behind a test's proxy also logs in as its role.
    """
    changed = dict(env)
    role = SERVICE_ROLES.get(module)
    url = urlsplit(env.get("DATABASE_URL", ""))
    if role and url.username == OWNER:
        # A password stays: the tests' server trusts loopback, but a test may check that it is never logged.
        changed["DATABASE_URL"] = roles.url_as(url.geturl(), role, url.password)
    return changed


def start_service(
    module: str,
    env: Mapping[str, str],
    log_path: Path,
    *,
    wait: bool = True,
    timeout: float = 30.0,
    argv: Sequence[str] | None = None,
) -> ServiceProcess:
    """Start ``python -m module`` (or ``argv``) with ``env``; unless ``wait`` is False, return once it is SERVING.

    A free port is chosen for its health port setting (HEALTH_PORT_SETTING) unless
    ``env`` names one. If the service exits or does not serve within ``timeout``,
    it is stopped and the test fails with its output.
    """
    setting = HEALTH_PORT_SETTING[module]
    process = ServiceProcess(module, {setting: str(free_port()), **env}, log_path, argv=argv)
    if wait:
        try:
            process.wait_healthy(timeout=timeout)
        except BaseException:
            process.stop()
            raise
    return process


class ServiceProcess:
    """One running service; its combined output goes to ``log_path``.

    As a context manager it is stopped on leaving (its exit code is then ``returncode``).
    """

    def __init__(
        self, module: str, env: Mapping[str, str], log_path: Path, *, argv: Sequence[str] | None = None
    ) -> None:
        """Start ``python -m module``, or ``argv`` (then ``module`` only names it: `make run`'s supervisor)."""
        self.module = module
        #: The environment the test gave it (on top of the test's own).
        self.env = dict(env)
        #: Set once the test killed the process on purpose (its exit code then means nothing).
        self.killed = False
        self.log_path = log_path
        full_env = {**os.environ, **as_service_role(module, env), "PYTHONUNBUFFERED": "1"}
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            argv or [sys.executable, "-m", module], cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        """The port of its gRPC health service (of the module's HEALTH_PORT_SETTING)."""
        return int(self.env[HEALTH_PORT_SETTING[self.module]])

    @property
    def address(self) -> str:
        """Where its gRPC server (the auth or job service) or health service (a worker) listens."""
        return f"127.0.0.1:{self.port}"

    @property
    def returncode(self) -> int | None:
        """Its exit code once it exited (negative: the signal that ended it), else None."""
        return self.process.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, address: str | None = None, timeout: float = 30.0) -> None:
        """Block until the service reports SERVING on ``address`` (default: its own); fail with its log otherwise."""
        address = address or self.address
        # A service given a certificate serves TLS only: asked as its own health probe would ask it.
        tls = tls_of(self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.module} exited with {self.process.returncode}:\n{self.output()}")
            if health_status(address, tls=tls) == SERVING:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.module} not SERVING on {address} after {timeout} s:\n{self.output()}")

    def exit_code(self, timeout: float = 30.0) -> int:
        """For a service expected to stop by itself: its exit code (stopped, and the test failed, after ``timeout``)."""
        try:
            return self.process.wait(timeout)
        finally:
            self.stop()

    def terminate(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send ``sig`` (SIGTERM: the stop every deployment sends) and return at once; ``wait`` for the exit."""
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        """Its exit code, once it exits (subprocess.TimeoutExpired after ``timeout``)."""
        return self.process.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig`` and wait; returns the exit code (SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.killed = True
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()
