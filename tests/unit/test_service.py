"""jobqueue.runtime.service.run, the way every service runs: real event loop, real tasks, real signals, real sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from jobqueue.runtime import service
from jobqueue.runtime.service import Supervisor
from jobqueue.runtime.settings import ServiceSettings, SettingsError, setting

#: How long a test's service waits for a stop before it gives up and returns by itself (exit 0).
PATIENCE = 5.0


@dataclass(frozen=True)
class DemoSettings(ServiceSettings):
    """A service's settings, as small as they come."""

    demo_port: int = setting(0, "where it listens", port=True)
    demo_token: str = setting("", "a secret", secret=True)
    demo_url: str = setting("amqp://guest:guest@127.0.0.1:5672/", "a broker")


class Record:
    """What a test's service did, in order."""

    def __init__(self) -> None:
        self.steps: list[str] = []


Serve = Callable[[DemoSettings, Supervisor], Awaitable[None]]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """run() routes the root logger to stderr as JSON; put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run(serve: Serve, *argv: str) -> int:
    return service.run("demo_svc", DemoSettings, serve, description="A service under test.", argv=list(argv))


def log_lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def waiting_service(record: Record, start: Callable[[Supervisor], object]) -> Serve:
    """A service that calls ``start`` once up, waits for a stop (PATIENCE at most), and records its steps."""

    async def serve(settings: DemoSettings, supervisor: Supervisor) -> None:
        try:
            start(supervisor)
            try:
                await asyncio.wait_for(supervisor.wait_for_stop(), PATIENCE)
                record.steps.append("stop requested")
            except TimeoutError:
                record.steps.append("nobody asked it to stop")
                return
            record.steps.append("graceful stop")
        finally:
            record.steps.append("cleanup")

    return serve


def test_a_crashed_background_task_stops_the_service_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    record = Record()
    sibling_cancelled = asyncio.Event()

    async def crashes() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("relay bug")

    async def runs_until_cancelled() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            sibling_cancelled.set()

    def start(supervisor: Supervisor) -> None:
        supervisor.spawn(crashes(), name="relay")
        supervisor.spawn(runs_until_cancelled(), name="health")

    assert run(waiting_service(record, start)) == 1
    # The crash ended in the service's own graceful stop, then its cleanup, and no task outlived it.
    assert record.steps == ["stop requested", "graceful stop", "cleanup"]
    assert sibling_cancelled.is_set()
    crashes_logged = [line for line in log_lines(capsys.readouterr().err) if line.get("task") == "relay"]
    assert len(crashes_logged) == 1, crashes_logged
    assert crashes_logged[0]["level"] == "error"
    assert crashes_logged[0]["msg"] == "background task crashed; stopping"
    assert "RuntimeError: relay bug" in crashes_logged[0]["exc"]


def test_a_background_task_that_ends_while_running_stops_the_service_with_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    record = Record()

    async def gives_up() -> None:
        await asyncio.sleep(0.05)

    assert run(waiting_service(record, lambda supervisor: supervisor.spawn(gives_up(), name="relay"))) == 1
    assert record.steps == ["stop requested", "graceful stop", "cleanup"]
    ended = [line for line in log_lines(capsys.readouterr().err) if line.get("task") == "relay"]
    assert [line["msg"] for line in ended] == ["background task ended while the service was running; stopping"]


def test_a_task_that_ends_as_part_of_the_stop_is_no_failure() -> None:
    stopping = asyncio.Event()

    async def until_shutdown() -> None:  # a health monitor: it returns once shutdown began
        await stopping.wait()

    async def serve(settings: DemoSettings, supervisor: Supervisor) -> None:
        task = supervisor.spawn(until_shutdown(), name="health")
        supervisor.request_stop()
        await supervisor.wait_for_stop()
        stopping.set()
        await task

    assert run(serve) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_service_gracefully_with_exit_0(signum: signal.Signals) -> None:
    record = Record()
    cancelled = asyncio.Event()

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    def start(supervisor: Supervisor) -> None:
        supervisor.spawn(background(), name="relay")
        os.kill(os.getpid(), signum)

    assert run(waiting_service(record, start)) == 0
    assert record.steps == ["stop requested", "graceful stop", "cleanup"]
    assert cancelled.is_set()


def test_no_background_task_outlives_the_service_and_its_failure_while_stopping_counts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()
            raise RuntimeError("cannot flush on the way out")

    async def serve(settings: DemoSettings, supervisor: Supervisor) -> None:
        supervisor.spawn(forever(), name="forgotten")
        await asyncio.sleep(0)  # it started; the service forgets to stop it

    assert run(serve) == 1
    assert cancelled.is_set()
    failed = [line for line in log_lines(capsys.readouterr().err) if line.get("task") == "forgotten"]
    assert len(failed) == 1
    assert "cannot flush on the way out" in failed[0]["exc"]


def test_cancel_ends_only_the_tasks_it_is_given() -> None:
    seen: list[str] = []

    async def serve(settings: DemoSettings, supervisor: Supervisor) -> None:
        relay = supervisor.spawn(asyncio.sleep(3600), name="relay")
        health = supervisor.spawn(asyncio.sleep(3600), name="health")
        await supervisor.cancel(relay)
        seen.append(f"relay done={relay.done()} health done={health.done()}")
        supervisor.request_stop()

    assert run(serve) == 0
    assert seen == ["relay done=True health done=False"]


def test_a_port_it_cannot_listen_on_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        cleaned_up = []

        async def serve(settings: DemoSettings, supervisor: Supervisor) -> None:
            try:
                await asyncio.start_server(lambda r, w: None, "127.0.0.1", taken)
            finally:
                cleaned_up.append(True)

        assert run(serve) == 1
    err = capsys.readouterr().err
    assert cleaned_up == [True]
    errors = [line for line in log_lines(err) if line["level"] == "error"]
    assert len(errors) == 1, err
    assert errors[0]["msg"] == "cannot start"
    assert str(taken) in errors[0]["error"]
    assert "Traceback" not in err


def test_a_bad_setting_exits_2_with_one_line_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("APP_ENV", "prod")
    started = []

    async def serve(settings: DemoSettings, supervisor: Supervisor) -> None:
        started.append(True)

    assert run(serve) == 2
    assert not started
    assert capsys.readouterr().err == "demo_svc: APP_ENV='prod' must be one of development, production\n"


def test_a_configuration_error_found_while_starting_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    async def serve(settings: DemoSettings, supervisor: Supervisor) -> None:
        raise SettingsError("DEMO_TOKEN_FILE='/nowhere' cannot be read")

    assert run(serve) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "demo_svc: DEMO_TOKEN_FILE='/nowhere' cannot be read"


def test_help_lists_every_setting_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    async def serve(settings: DemoSettings, supervisor: Supervisor) -> None:
        raise AssertionError("--help must not start the service")

    assert run(serve, "--help") == 0
    out = capsys.readouterr().out
    assert "A service under test." in out
    for variable in ("APP_ENV", "LOG_LEVEL", "DEV_SECRETS_DIR", "DEMO_PORT", "DEMO_TOKEN", "DEMO_URL"):
        assert variable in out


def test_an_unexpected_argument_exits_2_with_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    async def serve(settings: DemoSettings, supervisor: Supervisor) -> None:
        raise AssertionError("a bad command line must not start the service")

    assert run(serve, "--port", "5") == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m demo_svc")
    assert "unrecognized arguments: --port 5" in err


def test_the_start_up_line_shows_the_settings_without_their_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEMO_TOKEN", "hunter2-token")
    monkeypatch.setenv("DEMO_URL", "amqp://jobs:hunter2-password@broker:5672/")

    async def serve(settings: DemoSettings, supervisor: Supervisor) -> None:
        logging.getLogger("demo").info("connecting", extra={"url": settings.demo_url, "settings": settings})

    assert run(serve) == 0
    err = capsys.readouterr().err
    assert "hunter2" not in err
    (starting,) = [line for line in log_lines(err) if line["msg"] == "starting"]
    assert starting["settings"]["demo_token"] == "***"
    assert starting["settings"]["demo_url"] == "amqp://jobs:***@broker:5672/"
    assert starting["settings"]["app_env"] == "development"
    (connecting,) = [line for line in log_lines(err) if line["msg"] == "connecting"]
    assert connecting["url"] == "amqp://jobs:***@broker:5672/"
