"""`make run`'s supervisor with real processes: start and stop order, output prefixing, failure handling.

These tests run small ``python -c`` children in place of the services, so they
check the real process handling without needing the services or their servers.
Its pure parts (the plan, the prefixer) are in tests/unit/test_run_system.py.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    # scripts/ is not a package, so mypy (given scripts/run_system.py) knows the
    # file as the top-level module `run_system`; importing it as
    # `scripts.run_system` would make mypy see one file under two names.
    import run_system
else:
    from scripts import run_system

Child = run_system.Child
RestartPolicy = run_system.RestartPolicy
Supervisor = run_system.Supervisor
#: Restarts at once, so that tests of restarting do not wait.
QUICK = RestartPolicy(base=0.01, cap=0.05, crash_loop_exits=3)


# --- the supervisor, with stand-in children --------------------------------------------------------------

# A stand-in service: says "<name> ready", then on SIGTERM appends its name to
# the log file and exits 0 -- unless its mode says otherwise. One that ignores
# SIGTERM also ignores the supervisor's death signal, so it leaves by itself
# once orphaned (a test killed half-way must not leave it behind).
CHILD = """
import os, signal, sys, time
parent = os.getppid()
name, log, mode = sys.argv[1:4]
def stop(*_):
    with open(log, "a") as f:
        f.write(name + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore" else stop)
print(name, "ready", flush=True)
if mode.startswith("exit:"):
    sys.exit(int(mode[5:]))
if mode.startswith("once:"):  # exit the first time only (a marker file remembers)
    marker = f"{log}.{name}.exited"
    if not os.path.exists(marker):
        open(marker, "w").close()
        sys.exit(int(mode[5:]))
print("no newline at the end", end="", flush=True)
while os.getppid() == parent:
    time.sleep(0.2)
"""


def child(
    name: str,
    log: Path,
    mode: str = "normal",
    *,
    health_address: str | None = None,
    start_stage: int = 0,
    stop_stage: int = 0,
) -> Child:
    argv = (sys.executable, "-c", CHILD, name, str(log), mode)
    return Child(name, argv, health_address=health_address, start_stage=start_stage, stop_stage=stop_stage)


def supervisor(
    children: list[Child],
    out: io.BytesIO,
    *,
    startup_timeout: float = 20.0,
    stop_timeout: float = 10.0,
    restart: RestartPolicy = QUICK,
) -> Supervisor:
    environ: Mapping[str, str] = dict(os.environ)
    return Supervisor(
        children,
        out=out,
        environ=environ,
        startup_timeout=startup_timeout,
        stop_timeout=stop_timeout,
        restart=restart,
    )


async def until_output(out: io.BytesIO, *needles: bytes, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not all(n in out.getvalue() for n in needles):
            await asyncio.sleep(0.02)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a parent that does not reap counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def pids(out: io.BytesIO, names: list[str]) -> list[int]:
    """The pids the banner lists for ``names``."""
    found = []
    for line in out.getvalue().decode().splitlines():
        words = line.split()
        if len(words) > 3 and words[2] in names and "pid" in words:
            found.append(int(words[words.index("pid") + 1]))
    return found


#: What the children of plan_for print once their SIGTERM handling is in place.
ALL_READY = [f"{n} ready".encode() for n in ("auth", "job", "worker-1", "worker-2")]


def plan_for(log: Path, worker_mode: str = "normal") -> list[Child]:
    return [
        child("auth", log, stop_stage=2),
        child("job", log, stop_stage=1),
        child("worker-1", log, worker_mode, start_stage=1),
        child("worker-2", log, start_stage=1),
    ]


async def test_stop_goes_workers_then_job_then_auth(tmp_path: Path) -> None:
    log, out, stop = tmp_path / "stops", io.BytesIO(), asyncio.Event()
    running = asyncio.ensure_future(supervisor(plan_for(log), out).run(stop))
    await until_output(out, *ALL_READY)
    stop.set()
    assert await running == 0
    order = log.read_text().split()
    assert sorted(order[:2]) == ["worker-1", "worker-2"]
    assert order[2:] == ["job", "auth"]
    lines = out.getvalue().decode().splitlines()
    assert "worker-2 | worker-2 ready" in lines
    assert "auth     | no newline at the end" in lines
    assert "run      | all stopped cleanly" in lines


async def test_a_child_that_exits_on_its_own_is_restarted_while_the_rest_keep_running(tmp_path: Path) -> None:
    log, out, stop = tmp_path / "stops", io.BytesIO(), asyncio.Event()
    running = asyncio.ensure_future(supervisor(plan_for(log, worker_mode="once:3"), out).run(stop))
    await until_output(out, b"Ctrl-C to stop", b"run      | worker-1 restarted, pid ")
    async with asyncio.timeout(10):
        while out.getvalue().count(b"worker-1 | worker-1 ready") < 2:
            await asyncio.sleep(0.02)
    text = out.getvalue().decode()
    assert "run      | worker-1 exited unexpectedly with code 3; restarting it in " in text
    assert text.count("worker-1 | worker-1 ready") == 2
    others = pids(out, ["auth", "job", "worker-2"])
    assert len(others) == 3
    assert all(_alive(pid) for pid in others)  # never stopped, never restarted
    stop.set()
    assert await running == 0  # every child was running when the stop came, and stopped cleanly
    assert sorted(log.read_text().split()) == ["auth", "job", "worker-1", "worker-2"]


async def test_a_crash_looping_child_is_reported_once_and_retried_while_the_rest_keep_running(tmp_path: Path) -> None:
    log, out, stop = tmp_path / "stops", io.BytesIO(), asyncio.Event()
    running = asyncio.ensure_future(supervisor(plan_for(log, worker_mode="exit:3"), out).run(stop))
    await until_output(out, b"worker-1 IS CRASH-LOOPING: 3 exits within 60 s, the last with code 3.")
    # It is still retried after the report, and only reported once.
    await until_output(out, b"restarting it in 0.0 s (crash-looping)")
    count = out.getvalue().count(b"worker-1 | worker-1 ready")
    async with asyncio.timeout(10):
        while out.getvalue().count(b"worker-1 | worker-1 ready") < count + 2:
            await asyncio.sleep(0.02)
    text = out.getvalue().decode()
    assert text.count("IS CRASH-LOOPING") == 1
    others = pids(out, ["auth", "job", "worker-2"])
    assert all(_alive(pid) for pid in others)
    stop.set()
    assert await running == 1  # a child was down: not a clean stop
    assert sorted(log.read_text().split()) == ["auth", "job", "worker-2"]
    assert "stopping: workers and web, then job, then auth" in out.getvalue().decode()


async def test_a_stop_during_a_restart_backoff_starts_nothing_more(tmp_path: Path) -> None:
    log, out, stop = tmp_path / "stops", io.BytesIO(), asyncio.Event()
    slow = RestartPolicy(base=30.0, cap=60.0)
    running = asyncio.ensure_future(supervisor(plan_for(log, worker_mode="exit:3"), out, restart=slow).run(stop))
    await until_output(out, b"worker-1 exited unexpectedly with code 3; restarting it in ")
    stop.set()
    async with asyncio.timeout(10):  # not after the 15-30 s backoff
        assert await running == 1
    text = out.getvalue().decode()
    assert text.count("worker-1 | worker-1 ready") == 1
    assert "worker-1 exited with code 3 before the stop (it was waiting to be restarted)" in text


async def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    log, out, stop = tmp_path / "stops", io.BytesIO(), asyncio.Event()
    running = asyncio.ensure_future(supervisor(plan_for(log, worker_mode="ignore"), out, stop_timeout=0.5).run(stop))
    await until_output(out, *ALL_READY)
    stop.set()
    assert await running == 1
    text = out.getvalue().decode()
    assert "worker-1 did not stop within 0.5 s; killing it" in text
    assert "worker-1 exited with signal SIGKILL" in text
    assert log.read_text().split()[-2:] == ["job", "auth"]


async def test_force_kills_without_waiting(tmp_path: Path) -> None:
    log, out, stop, force = tmp_path / "stops", io.BytesIO(), asyncio.Event(), asyncio.Event()
    running = asyncio.ensure_future(
        supervisor(plan_for(log, worker_mode="ignore"), out, stop_timeout=60).run(stop, force)
    )
    await until_output(out, *ALL_READY)
    stop.set()
    await asyncio.sleep(0.2)
    force.set()
    async with asyncio.timeout(10):
        assert await running == 1
    assert "worker-1 did not stop" in out.getvalue().decode()


async def test_no_child_outlives_the_supervisor(tmp_path: Path) -> None:
    log, out, stop = tmp_path / "stops", io.BytesIO(), asyncio.Event()
    running = asyncio.ensure_future(supervisor(plan_for(log, worker_mode="ignore"), out, stop_timeout=0.2).run(stop))
    await until_output(out, b"Ctrl-C to stop")
    started = pids(out, ["auth", "job", "worker-1", "worker-2"])
    assert len(started) == 4
    assert all(_alive(pid) for pid in started)
    stop.set()
    await running
    assert not any(_alive(pid) for pid in started)


@pytest.fixture
def dead_address() -> Iterator[str]:
    """An address where nothing answers: the port is held (bound, not listening) for the whole test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


async def test_workers_wait_for_the_services_to_be_serving(tmp_path: Path, dead_address: str) -> None:
    log, out = tmp_path / "stops", io.BytesIO()
    address = dead_address
    children = [child("job", log, "exit:4", health_address=address), child("worker-1", log, start_stage=1)]
    assert await supervisor(children, out).run(asyncio.Event()) == 1
    text = out.getvalue().decode()
    assert "job exited with code 4 before it was ready; stopping the rest" in text
    assert "worker-1" not in text


async def test_a_service_that_never_serves_fails_the_start(tmp_path: Path, dead_address: str) -> None:
    log, out = tmp_path / "stops", io.BytesIO()
    address = dead_address
    children = [child("auth", log, health_address=address), child("worker-1", log, start_stage=1)]
    assert await supervisor(children, out, startup_timeout=0.5).run(asyncio.Event()) == 1
    text = out.getvalue().decode()
    assert f"auth was not SERVING on {address} after 0.5 s" in text
    assert "worker-1 ready" not in text
    assert log.read_text().split() == ["auth"]


# Runs a supervisor in a process of its own, so the test can SIGKILL it.
DRIVER = """
import asyncio, os, sys
from scripts.run_system import Child, Supervisor
child = Child("sleeper", (sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"))
supervisor = Supervisor([child], out=sys.stdout.buffer, environ=dict(os.environ))
asyncio.run(supervisor.run(asyncio.Event()))
"""


async def test_children_die_with_a_killed_supervisor() -> None:
    driver = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DRIVER, cwd=run_system.ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert driver.stdout is not None
    out = io.BytesIO()
    async with asyncio.timeout(20):
        while b"sleeper | up" not in out.getvalue():
            out.write(await driver.stdout.readline())
    [sleeper] = pids(out, ["sleeper"])
    assert _alive(sleeper)
    driver.kill()
    await driver.wait()
    async with asyncio.timeout(10):
        while _alive(sleeper):
            await asyncio.sleep(0.05)


# --- the command itself: ports checked before anything starts ------------------------------------------------


def test_a_taken_port_stops_the_start_in_one_line_naming_its_holder(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**os.environ, "AUTH_PORT": "0", "JOB_PORT": str(port), "WORKER_HEALTH_PORT": "0"}
        done = subprocess.run(
            [sys.executable, "scripts/run_system.py", "--workers", "1"],
            cwd=run_system.ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 1
    assert done.stdout == ""  # nothing was started
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"run_system: cannot start, port taken: {port} (job) held by pid {os.getpid()} (")
