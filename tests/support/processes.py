"""Start the real service entry points (``python -m <svc>``) as local processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from common.health_check import SERVING, status_of

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def health_status(address: str, service: str = "", timeout: float = 1.0) -> int | None:
    """The health status a server reports for ``service``, or None if it cannot be asked."""
    return status_of(address, service, timeout=timeout)


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


class ServiceProcess:
    """One running service; its combined output goes to ``log_path``."""

    def __init__(self, module: str, env: Mapping[str, str], log_path: Path) -> None:
        self.module = module
        #: The environment the test gave it (on top of the test's own).
        self.env = dict(env)
        #: Set once the test killed the process on purpose (its exit code then means nothing).
        self.killed = False
        self.log_path = log_path
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, address: str, timeout: float = 30.0) -> None:
        """Block until the service reports SERVING on ``address``; fail with its log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.module} exited with {self.process.returncode}:\n{self.output()}")
            if health_status(address) == SERVING:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.module} not SERVING on {address} after {timeout} s:\n{self.output()}")

    def exit_code(self, timeout: float = 30.0) -> int:
        """For a service expected to stop by itself: its exit code (stopped, and the test failed, after ``timeout``)."""
        try:
            return self.process.wait(timeout)
        finally:
            self.stop()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
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
