"""Auth service faults: SIGTERM under a steady stream of Register/Login calls, and PostgreSQL cut for 30 s.

Both scenarios run the real `python -m auth_svc` (tests/support/system.py)
with its database behind a proxy the test owns, and drive it with CLIENTS
concurrent clients, each registering a fresh account and logging into it, over
and over. What a client may see is narrow: OK, or a status that says "retry"
(UNAVAILABLE; CANCELLED for a call a stopping server dropped), never UNKNOWN,
INTERNAL or a hung call; and no registration that answered OK is ever lost.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_svc.__main__ import STOP_GRACE
from jobqueue.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.support.processes import health_status
from tests.support.system import System

CLIENTS = 16
OUTAGE_SECONDS = 30
PASSWORD = "correct horse battery"
OK = grpc.StatusCode.OK
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Call:
    """One finished call of the load: what, for whom, its status and when it started and ended (monotonic)."""

    method: str
    email: str
    code: grpc.StatusCode
    started: float
    ended: float


class Load:
    """CLIENTS clients, each on its own channel, registering a fresh account and logging into it until stopped."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="auth-load")
        #: Appended to by the load's thread; a list append is atomic, so the test may read it meanwhile.
        self.calls: list[Call] = []

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "a load client hung"

    def registered(self) -> list[str]:
        """The emails whose Register answered OK."""
        return [c.email for c in list(self.calls) if c.method == "Register" and c.code == OK]

    def wait_registered(self, count: int, after: float = 0.0, timeout: float = 30.0) -> None:
        """Block until ``count`` Registers that started after ``after`` answered OK."""
        deadline = time.monotonic() + timeout
        while sum(c.method == "Register" and c.code == OK and c.started > after for c in list(self.calls)) < count:
            assert time.monotonic() < deadline, f"too few registrations succeeded: {self.codes()}"
            time.sleep(0.05)

    def codes(self) -> Counter[tuple[str, str]]:
        """How many calls ended with each (method, status)."""
        return Counter((c.method, c.code.name) for c in list(self.calls))

    async def _run(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(CLIENTS)))

    async def _client(self) -> None:
        async with grpc.aio.insecure_channel(self._address) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            while not self._stop.is_set():
                email = f"load-{uuid.uuid4().hex[:16]}@example.com"
                request = auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="Load")
                if await self._call("Register", email, stub.Register(request, timeout=10)) == OK:
                    login = auth_pb2.LoginRequest(email=email, password=PASSWORD)
                    await self._call("Login", email, stub.Login(login, timeout=10))
                else:
                    await asyncio.sleep(0.05)  # a refused client backs off instead of spinning

    async def _call(self, method: str, email: str, call: Any) -> grpc.StatusCode:
        started = time.monotonic()
        try:
            await call
            code = OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
        self.calls.append(Call(method, email, code, started, time.monotonic()))
        return code


class HealthWatch:
    """A Health/Watch stream on the overall status, read in a thread: (when, status) per update, and how it ended."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        # The health stubs' type hints omit the generated methods.
        stub: Any = health_pb2_grpc.HealthStub(self._channel)
        self._stream = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        self.updates: list[tuple[float, int]] = []
        self.ended: tuple[float, grpc.StatusCode] | None = None
        self._thread = threading.Thread(target=self._read, name="health-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for reply in self._stream:
                self.updates.append((time.monotonic(), int(reply.status)))
        except grpc.RpcError as error:
            self.ended = (time.monotonic(), error.code())
        else:
            self.ended = (time.monotonic(), OK)

    def first(self, status: int) -> float | None:
        """When ``status`` was first reported, if it was."""
        return next((at for at, seen in self.updates if seen == status), None)

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(5)
        self._channel.close()


def can_log_in(address: str, emails: list[str]) -> Counter[str]:
    """Log into every account once, a few at a time; counts the outcomes by status name."""

    async def run() -> Counter[str]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            limit = asyncio.Semaphore(8)

            async def one(email: str) -> str:
                async with limit:
                    try:
                        await stub.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD), timeout=30)
                    except grpc.aio.AioRpcError as error:
                        return f"{error.code().name} for {email}"
                    return "OK"

            return Counter(await asyncio.gather(*(one(e) for e in emails)))

    return asyncio.run(run())


@pytest.fixture
def auth_only(service_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    """The auth service alone, its database behind the System's proxy."""
    rounds = getattr(request, "param", service_env["BCRYPT_ROUNDS"])
    system = System({**service_env, "BCRYPT_ROUNDS": str(rounds)}, tmp_path)
    system.start_auth()
    yield system
    codes = system.stop()
    assert codes == {"auth_svc": 0}, codes


def wait_for_health(address: str, wanted: int, timeout: float) -> float:
    """Poll Health/Check until it reports ``wanted``; returns when it did."""
    deadline = time.monotonic() + timeout
    while (status := health_status(address, timeout=0.5)) != wanted:
        assert time.monotonic() < deadline, f"health stayed {status}, wanted {wanted}"
        time.sleep(0.05)
    return time.monotonic()


# bcrypt at cost 10 (~50 ms a hash here) keeps a dozen calls in flight at any moment,
# so SIGTERM always lands while the server is busy and there is something to drain.
@pytest.mark.parametrize("auth_only", [10], indirect=True, ids=["bcrypt-cost-10"])
def test_sigterm_under_load_turns_not_serving_drains_and_keeps_every_registration(
    auth_only: System, capsys: pytest.CaptureFixture[str]
) -> None:
    system = auth_only
    assert system.auth is not None
    process = system.auth
    with Load(system.auth_address) as load:
        load.wait_registered(40)
        watch = HealthWatch(system.auth_address)
        wait_for_health(system.auth_address, SERVING, 5)
        deadline = time.monotonic() + 5
        while watch.first(SERVING) is None:
            assert time.monotonic() < deadline, "the health watch never started"
            time.sleep(0.01)
        sigterm_at = time.monotonic()
        process.terminate()
        process.wait(STOP_GRACE + 10)
        exited_at = time.monotonic()
        code = process.stop()  # already exited: only collects the code and closes the log
        time.sleep(0.5)  # the clients keep calling a server that is gone
    watch.close()
    calls = list(load.calls)

    assert code == 0, process.output()
    assert '"msg": "stopped"' in process.output()
    stop_seconds = exited_at - sigterm_at
    # The grace plus closing the pool; an idle watcher's stream holds the stop for the whole grace.
    assert stop_seconds < STOP_GRACE + 1.5, stop_seconds

    codes = load.codes()
    assert {c.code for c in calls} <= {OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, codes

    # Health turned NOT_SERVING while the server was still up (its own stream said so), then it drained:
    # calls it had taken before kept finishing OK after the health changed.
    not_serving_at = watch.first(NOT_SERVING)
    assert not_serving_at is not None, watch.updates
    assert sigterm_at < not_serving_at < exited_at
    drained = [c for c in calls if c.code == OK and c.started < sigterm_at < not_serving_at < c.ended]
    assert drained, "no call in flight at SIGTERM finished OK"
    drained_seconds = max(c.ended for c in drained) - sigterm_at
    assert drained_seconds < STOP_GRACE, drained_seconds
    refused = [c for c in calls if c.code != OK]
    assert refused, "no call met the stopped server (the load ended too early to prove anything)"
    # A call sent in the last instant before SIGTERM may reach a server already stopping; any older one was taken.
    assert all(c.started > sigterm_at - 0.1 for c in refused), "a call that started before SIGTERM was not served"

    registered = load.registered()
    system.start_auth()
    outcomes = can_log_in(system.auth_address, registered)
    assert outcomes == Counter({"OK": len(registered)}), outcomes
    with capsys.disabled():
        print(
            f"\nauth SIGTERM under load: {len(calls)} calls {dict(codes)}; NOT_SERVING "
            f"{not_serving_at - sigterm_at:.3f} s after SIGTERM, first refusal after "
            f"{min(c.ended for c in refused) - sigterm_at:.3f} s, {len(drained)} in-flight calls drained by "
            f"{drained_seconds:.3f} s, "
            f"exit 0 after {stop_seconds:.2f} s (grace {STOP_GRACE} s); {len(registered)} accounts all log in"
        )


def test_postgresql_cut_for_30_seconds_answers_unavailable_and_recovers_by_itself(
    auth_only: System, capsys: pytest.CaptureFixture[str]
) -> None:
    system = auth_only
    assert system.auth is not None
    process = system.auth
    address = system.auth_address
    with Load(address) as load:
        load.wait_registered(50)
        cut_at = time.monotonic()
        system.database_proxy.cut()
        detected_at = wait_for_health(address, NOT_SERVING, 10)
        # Sampled all through the outage: the process stays up and keeps saying NOT_SERVING.
        samples: list[int | None] = []
        while time.monotonic() < cut_at + OUTAGE_SECONDS:
            assert process.process.poll() is None, f"the auth service exited during the outage:\n{process.output()}"
            samples.append(health_status(address, timeout=0.5))
            time.sleep(0.2)
        restored_at = time.monotonic()
        system.database_proxy.restore()
        serving_at = wait_for_health(address, SERVING, 30)
        load.wait_registered(CLIENTS, after=restored_at)
        served_at = min(c.ended for c in load.calls if c.code == OK and c.started > restored_at)
    calls = list(load.calls)

    codes = load.codes()
    assert {c.code for c in calls} <= {OK, grpc.StatusCode.UNAVAILABLE}, codes
    # Once the outage was noticed, every call was refused quickly, as UNAVAILABLE.
    during = [c for c in calls if detected_at < c.started and c.ended < restored_at]
    assert len(during) > 100, f"the clients stopped calling during the outage: {codes}"
    assert {c.code for c in during} == {grpc.StatusCode.UNAVAILABLE}
    assert max(c.ended - c.started for c in during) < 5
    assert set(samples) == {NOT_SERVING}, Counter(samples)
    assert process.output().count('"msg": "auth service listening"') == 1  # one process, never restarted

    # Every registration that answered OK, before, during or after the cut, was kept.
    registered = load.registered()
    outcomes = can_log_in(address, registered)
    assert outcomes == Counter({"OK": len(registered)}), outcomes
    with capsys.disabled():
        print(
            f"\nauth PostgreSQL cut {OUTAGE_SECONDS} s: {len(calls)} calls {dict(codes)}; NOT_SERVING "
            f"{detected_at - cut_at:.1f} s after the cut; recovered {serving_at - restored_at:.1f} s after restore "
            f"(SERVING), first call OK {served_at - restored_at:.1f} s after; {len(registered)} accounts all log in"
        )
