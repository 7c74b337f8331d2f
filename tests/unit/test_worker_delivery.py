"""Per-delivery logic: claim, run, report, and only then ack; every failure contained in its delivery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelInvalidStateError
from google.protobuf import struct_pb2

from jobqueue.jobs.v1 import delivery_pb2
from jobqueue.runtime.messages import CANCELLATION_TYPE, MESSAGE_TYPE
from jobqueue.runtime.signing import Signer, Verifier
from jobqueue.worker import metrics
from jobqueue.worker.context import JobContext
from jobqueue.worker.delivery import DeliveryHandler
from jobqueue.worker.reports import Failure, ReportAbandoned, ReportRefused
from jobqueue.worker.runner import HandlerError, HandlerProcess, Result

JOB_ID = "0b6c7c1e-8f0a-4d3e-9b59-2f3b1c7d9a10"
#: The worker token these tests' job service and worker share; messages are signed with it by default.
TOKEN = b"worker-token-of-the-delivery-tests"
SIGNER = Signer(lambda: frozenset({TOKEN}))
VERIFIER = Verifier([TOKEN])

Scripted = Any  # a value to return, or an exception to raise


@dataclass
class FakeMessage:
    """Records how the handler settled it."""

    body: bytes
    message_id: str | None = "m-1"
    settled: list[tuple[str, bool | None]] = field(default_factory=list)
    fail_settling: bool = False
    channel_closed: bool = False
    #: What kind of message it is, and its headers: signed by the job service unless given.
    kind: str = MESSAGE_TYPE
    headers: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.headers is None:
            self.headers = SIGNER.headers(self.kind, self.body)

    @property
    def channel(self) -> object:
        """What aio-pika's message gives: its channel, or ChannelInvalidStateError once that closed."""
        if self.channel_closed:
            raise ChannelInvalidStateError
        return object()

    async def _settle(self, how: str, requeue: bool | None) -> None:
        if self.fail_settling:
            raise ConnectionError("channel closed")
        self.settled.append((how, requeue))

    async def ack(self) -> None:
        await self._settle("ack", None)

    async def nack(self, requeue: bool = True) -> None:
        await self._settle("nack", requeue)

    async def reject(self, requeue: bool = False) -> None:
        await self._settle("reject", requeue)


@dataclass
class FakeReports:
    """Answers claims and reports from a script; records them, in order, in ``log``."""

    claim_reply: Scripted = 1
    complete_reply: Scripted = True
    fail_reply: Scripted = Failure.RETRYING
    log: list[tuple[Any, ...]] = field(default_factory=list)
    retryable: list[bool] = field(default_factory=list)

    @staticmethod
    def _answer(reply: Scripted) -> Any:
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def claim(self, job_id: str, claim_id: str) -> int | None:
        self.log.append(("claim", job_id, claim_id))
        return cast(int | None, self._answer(self.claim_reply))

    async def complete(self, job_id: str, attempt: int, result: Any) -> bool:
        self.log.append(("complete", job_id, attempt, result))
        return cast(bool, self._answer(self.complete_reply))

    async def progress(self, job_id: str, claim_id: str, fraction: float, message: str) -> None:
        self.log.append(("progress", job_id, claim_id, fraction, message))

    async def fail(self, job_id: str, attempt: int, error: str, *, retryable: bool = False) -> Failure:
        self.log.append(("fail", job_id, attempt, error))
        self.retryable.append(retryable)
        return cast(Failure, self._answer(self.fail_reply))


@dataclass
class FakeRunner:
    """Returns (or raises) ``reply`` for every job; records the jobs it ran."""

    reply: Scripted = field(default_factory=lambda: Result(True, "dlrow olleh"))
    ran: list[tuple[str, Any]] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def turn(self, job_type: str, payload: Any) -> AsyncIterator[None]:
        yield

    async def run(
        self, job_type: str, payload: Any, process: HandlerProcess | None = None, *, job: JobContext | None = None
    ) -> Result:
        self.ran.append((job_type, payload))
        assert job is not None
        self.attempts.append(job.attempt)
        if isinstance(self.reply, BaseException):
            raise self.reply
        return cast(Result, self.reply)


def body(job_type: str = "reverse_string", payload: str = "hello world") -> bytes:
    message = delivery_pb2.JobDelivery(job_id=JOB_ID, type=job_type, payload=struct_pb2.Value(string_value=payload))
    return message.SerializeToString()


async def handle(
    reports: FakeReports, runner: FakeRunner | None = None, message: FakeMessage | None = None
) -> FakeMessage:
    message = message or FakeMessage(body())
    handler = DeliveryHandler(reports, runner or FakeRunner(), VERIFIER, requeue_delay=0)
    await handler.handle(cast(AbstractIncomingMessage, message))
    return message


async def test_claims_runs_reports_then_acks() -> None:
    reports, runner = FakeReports(claim_reply=4), FakeRunner()
    message = await handle(reports, runner)
    assert [entry[0] for entry in reports.log] == ["claim", "complete"]
    assert reports.log[1] == ("complete", JOB_ID, 4, "dlrow olleh")
    assert runner.ran == [("reverse_string", "hello world")]
    assert message.settled == [("ack", None)]


async def test_a_job_is_claimed_only_once_the_runner_gives_it_its_turn() -> None:
    """A claim starts the job's timeout in the job service, so it must wait for a free pool process."""
    turn = asyncio.Event()

    class WaitingRunner(FakeRunner):
        @contextlib.asynccontextmanager
        async def turn(self, job_type: str, payload: Any) -> AsyncIterator[None]:
            await turn.wait()
            yield

    reports, runner = FakeReports(claim_reply=1), WaitingRunner()
    handling = asyncio.create_task(handle(reports, runner))
    await asyncio.sleep(0.05)
    assert reports.log == []
    turn.set()
    message = await asyncio.wait_for(handling, 1)
    assert [entry[0] for entry in reports.log] == ["claim", "complete"]
    assert message.settled == [("ack", None)]


async def test_every_delivery_gets_a_fresh_claim_id() -> None:
    reports = FakeReports()
    await handle(reports)
    await handle(reports)
    claims = [entry[2] for entry in reports.log if entry[0] == "claim"]
    assert len(claims) == 2
    assert claims[0] != claims[1]


async def test_ack_waits_for_the_report() -> None:
    release = asyncio.Event()
    message = FakeMessage(body())

    class SlowReports(FakeReports):
        async def complete(self, job_id: str, attempt: int, result: str) -> bool:
            await release.wait()
            return await super().complete(job_id, attempt, result)

    task = asyncio.create_task(handle(SlowReports(), message=message))
    await asyncio.sleep(0.05)
    assert message.settled == []
    release.set()
    await task
    assert message.settled == [("ack", None)]


async def test_a_failed_job_is_reported_failed_and_acked() -> None:
    reports = FakeReports(claim_reply=2)
    message = await handle(reports, FakeRunner(Result(False, "payload: must be a string")))
    assert reports.log[1] == ("fail", JOB_ID, 2, "payload: must be a string")
    assert message.settled == [("ack", None)]


async def test_superseded_claim_is_acked_without_running() -> None:
    reports, runner = FakeReports(claim_reply=None), FakeRunner()
    message = await handle(reports, runner)
    assert runner.ran == []
    assert [entry[0] for entry in reports.log] == ["claim"]
    assert message.settled == [("ack", None)]


async def test_superseded_final_report_is_acked() -> None:
    message = await handle(FakeReports(complete_reply=False))
    assert message.settled == [("ack", None)]


@pytest.mark.parametrize("raw", [b"", b"garbage", b"\n\x03abc"])
async def test_malformed_body_is_dead_lettered_and_counted(raw: bytes) -> None:
    reports = FakeReports()
    handler = DeliveryHandler(reports, FakeRunner(), VERIFIER, requeue_delay=0)
    first, second = FakeMessage(raw), FakeMessage(raw)
    await handler.handle(cast(AbstractIncomingMessage, first))
    await handler.handle(cast(AbstractIncomingMessage, second))
    assert first.settled == second.settled == [("reject", False)]
    assert handler.malformed == 2
    assert reports.log == []


@pytest.mark.parametrize("stage", ["claim", "complete"])
async def test_abandoned_report_leaves_the_message_unacked(stage: str) -> None:
    reports = FakeReports()
    setattr(reports, f"{stage}_reply", ReportAbandoned("stopping"))
    message = await handle(reports)
    assert message.settled == []


async def test_claim_error_hands_the_message_back_and_says_why_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reports = FakeReports(claim_reply=ReportRefused(grpc.StatusCode.UNAUTHENTICATED, "bad token"))
    runner = FakeRunner()
    message = await handle(reports, runner)
    assert runner.ran == []
    assert [entry[0] for entry in reports.log] == ["claim"]
    assert message.settled == [("nack", True)]
    [refused] = [record for record in caplog.records if record.levelname == "ERROR"]
    assert (refused.getMessage(), refused.__dict__["code"], refused.exc_info) == (
        "the job service refused this worker's report",
        "UNAUTHENTICATED",
        None,
    )


async def test_the_handler_is_told_the_attempt_the_claim_returned() -> None:
    reports, runner = FakeReports(claim_reply=4), FakeRunner()
    await handle(reports, runner)
    assert runner.attempts == [4]


HANDLER_ERROR = "DemoFailure: attempt 3 fails on purpose (the first 5 do)\n  worker_svc/demo.py:60 in fail"


async def test_a_handler_exception_is_a_retryable_failure_whose_error_describes_it() -> None:
    reports = FakeReports(claim_reply=3)
    message = await handle(reports, FakeRunner(HandlerError(HANDLER_ERROR)))
    assert reports.log[1] == ("fail", JOB_ID, 3, HANDLER_ERROR)
    assert reports.retryable == [True]
    assert message.settled == [("ack", None)]  # the job service queues the retry itself


async def test_a_worker_error_is_a_retryable_failure_that_names_only_its_type() -> None:
    """A bug of ours: its message and traceback are for our log, not for the job's owner."""
    reports = FakeReports(claim_reply=3)
    message = await handle(reports, FakeRunner(RuntimeError("boom in /srv/worker internals")))
    assert reports.log[1] == ("fail", JOB_ID, 3, "internal worker error (RuntimeError)")
    assert reports.retryable == [True]
    assert message.settled == [("ack", None)]


@pytest.mark.parametrize("error", [HandlerError(HANDLER_ERROR), RuntimeError("boom")], ids=["handler", "worker"])
async def test_a_failure_on_the_last_attempt_dead_letters_the_message(error: Exception) -> None:
    reports = FakeReports(claim_reply=3, fail_reply=Failure.FINAL)
    message = await handle(reports, FakeRunner(error))
    assert message.settled == [("reject", False)]


async def test_a_payload_the_handler_rejects_is_not_retried() -> None:
    reports = FakeReports(claim_reply=1, fail_reply=Failure.FINAL)
    message = await handle(reports, FakeRunner(Result(False, "payload: must be a string")))
    assert reports.retryable == [False]
    assert message.settled == [("ack", None)]


async def test_refused_result_is_reported_failed_with_the_reason() -> None:
    refused = ReportRefused(grpc.StatusCode.INVALID_ARGUMENT, "result: too long")
    reports = FakeReports(complete_reply=refused)
    message = await handle(reports)
    kind, _, attempt, error = reports.log[-1]
    assert (kind, attempt) == ("fail", 1)
    assert reports.retryable == [False]
    assert "INVALID_ARGUMENT: result: too long" in error
    assert message.settled == [("ack", None)]


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN])
async def test_a_result_refused_by_a_job_service_failure_fails_the_attempt_retryably(code: grpc.StatusCode) -> None:
    # The job service's own failure (a database outage it did not recognise, say) must not end a
    # job whose handler succeeded: the attempt fails retryably, so the job runs again.
    reports = FakeReports(complete_reply=ReportRefused(code, "internal error"))
    message = await handle(reports)
    kind, _, attempt, error = reports.log[-1]
    assert (kind, attempt) == ("fail", 1)
    assert reports.retryable == [True]
    assert f"{code.name}: internal error" in error
    assert message.settled == [("ack", None)]


async def test_when_even_failed_cannot_be_reported_the_message_is_handed_back() -> None:
    reports = FakeReports(fail_reply=RuntimeError("job service bug"))
    message = await handle(reports, FakeRunner(RuntimeError("boom")))
    assert message.settled == [("nack", True)]


async def test_a_closed_channel_at_ack_time_is_survived() -> None:
    message = await handle(FakeReports(), message=FakeMessage(body(), fail_settling=True))
    assert message.settled == []


async def test_a_message_whose_channel_closed_while_it_waited_is_not_claimed() -> None:
    message = FakeMessage(body())

    class Runner(FakeRunner):
        @contextlib.asynccontextmanager
        async def turn(self, job_type: str, payload: Any) -> AsyncIterator[None]:
            message.channel_closed = True  # the connection dropped while this message waited
            yield

    reports, runner = FakeReports(), Runner()
    await handle(reports, runner, message)
    assert reports.log == []
    assert runner.ran == []
    assert message.settled == []  # the broker has handed it out again; nothing to settle here


async def test_one_delivery_failing_does_not_affect_another() -> None:
    class Runner(FakeRunner):
        async def run(
            self, job_type: str, payload: Any, process: HandlerProcess | None = None, *, job: JobContext | None = None
        ) -> Result:
            if payload == "bad":
                raise RuntimeError("boom")
            return Result(True, payload[::-1])

    reports = FakeReports(fail_reply=RuntimeError("down"))
    handler = DeliveryHandler(reports, Runner(), VERIFIER, requeue_delay=0)
    bad, good = FakeMessage(body(payload="bad")), FakeMessage(body(payload="good"))
    await asyncio.gather(
        handler.handle(cast(AbstractIncomingMessage, bad)), handler.handle(cast(AbstractIncomingMessage, good))
    )
    assert bad.settled == [("nack", True)]
    assert good.settled == [("ack", None)]
    assert ("complete", JOB_ID, 1, "doog") in reports.log


class BlockingRunner(FakeRunner):
    """A handler that runs until it is cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()

    async def run(
        self, job_type: str, payload: Any, process: HandlerProcess | None = None, *, job: JobContext | None = None
    ) -> Result:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def cancellation(job_id: str = JOB_ID) -> FakeMessage:
    return FakeMessage(delivery_pb2.JobCancellation(job_id=job_id).SerializeToString(), kind=CANCELLATION_TYPE)


async def test_a_cancellation_notice_stops_the_running_handler_and_acks_without_a_report() -> None:
    reports, runner = FakeReports(claim_reply=1), BlockingRunner()
    handler = DeliveryHandler(reports, runner, VERIFIER, requeue_delay=0)
    message = FakeMessage(body())
    task = asyncio.create_task(handler.handle(cast(AbstractIncomingMessage, message)))
    await asyncio.wait_for(runner.started.wait(), 5)
    await handler.handle_control(cast(AbstractIncomingMessage, cancellation("some-other-job")))
    assert not task.done()
    await handler.handle_control(cast(AbstractIncomingMessage, cancellation()))
    await asyncio.wait_for(task, 5)
    assert [entry[0] for entry in reports.log] == ["claim"]  # no COMPLETED or FAILED report
    assert message.settled == [("ack", None)]


async def test_stopping_the_worker_is_not_mistaken_for_a_cancellation() -> None:
    reports, runner = FakeReports(claim_reply=1), BlockingRunner()
    handler = DeliveryHandler(reports, runner, VERIFIER, requeue_delay=0)
    message = FakeMessage(body())
    task = asyncio.create_task(handler.handle(cast(AbstractIncomingMessage, message)))
    await asyncio.wait_for(runner.started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert message.settled == []  # left unacknowledged, so the broker redelivers it


async def test_a_garbage_control_notice_is_ignored() -> None:
    handler = DeliveryHandler(FakeReports(), FakeRunner(), VERIFIER, requeue_delay=0)
    await handler.handle_control(
        cast(AbstractIncomingMessage, FakeMessage(b"\xff\xff garbage", kind=CANCELLATION_TYPE))
    )


async def test_a_handler_past_its_timeout_is_stopped_and_fails_retryably() -> None:
    reports, runner = FakeReports(claim_reply=1), BlockingRunner()
    delivery = delivery_pb2.JobDelivery(
        job_id=JOB_ID, type="reverse_string", payload=struct_pb2.Value(string_value="x"), timeout_seconds=1
    )
    message = await asyncio.wait_for(handle(reports, runner, FakeMessage(delivery.SerializeToString())), 5)
    assert reports.log[-1] == ("fail", JOB_ID, 1, "timed out after 1 s")
    assert reports.retryable == [True]
    assert message.settled == [("ack", None)]


def forged(kind: str) -> float:
    """How many messages of ``kind`` the worker counted as not signed by the job service, so far."""
    counts: list[float] = [metrics.FORGED.labels(kind, reason)._value.get() for reason in ("unsigned", "bad_signature")]
    return sum(counts)


@pytest.mark.parametrize(
    "headers",
    [
        {},  # unsigned
        SIGNER.headers(MESSAGE_TYPE, body(payload="what was stored")),  # a real signature, another payload
        Signer(lambda: frozenset({b"a token the worker does not hold"})).headers(MESSAGE_TYPE, body()),
        SIGNER.headers(CANCELLATION_TYPE, body()),  # signed as another kind of message
        {"x-jobqueue-signatures": ["not a signature"]},
    ],
    ids=["unsigned", "altered", "other-key", "other-kind", "garbage"],
)
async def test_a_message_the_job_service_did_not_sign_is_dead_lettered_unrun(headers: dict[str, Any]) -> None:
    reports, runner = FakeReports(claim_reply=1), FakeRunner()
    before = forged("job")
    message = await handle(reports, runner, FakeMessage(body(), headers=headers))
    assert message.settled == [("reject", False)]  # to <queue>.dead
    assert reports.log == []  # not claimed, not run
    assert forged("job") == before + 1


async def test_an_unsigned_cancellation_is_ignored() -> None:
    reports, runner = FakeReports(claim_reply=1), BlockingRunner()
    handler = DeliveryHandler(reports, runner, VERIFIER, requeue_delay=0)
    task = asyncio.create_task(handler.handle(cast(AbstractIncomingMessage, FakeMessage(body()))))
    await asyncio.wait_for(runner.started.wait(), 5)
    before = forged("control")
    notice = delivery_pb2.JobCancellation(job_id=JOB_ID).SerializeToString()
    await handler.handle_control(cast(AbstractIncomingMessage, FakeMessage(notice, kind=CANCELLATION_TYPE, headers={})))
    await asyncio.sleep(0.05)
    assert not task.done()  # the job keeps running
    assert forged("control") == before + 1
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_result_that_is_not_text_is_reported_as_the_json_value_it_is() -> None:
    reports = FakeReports(claim_reply=2)
    message = await handle(reports, FakeRunner(Result(True, {"message_id": "m-7", "sizes": [1, 2]})))
    assert reports.log[-1] == ("complete", JOB_ID, 2, {"message_id": "m-7", "sizes": [1, 2]})
    assert message.settled == [("ack", None)]


async def test_progress_goes_under_the_claim_at_most_once_per_interval_the_latest_winning() -> None:
    class ChattyRunner(FakeRunner):
        async def run(
            self, job_type: str, payload: Any, process: HandlerProcess | None = None, *, job: JobContext | None = None
        ) -> Result:
            assert job is not None
            await job.progress(0.1, "started")
            await asyncio.sleep(0.01)  # the first report leaves at once
            for tenth in range(2, 10):
                # Within the interval: each replaces the one before, and only the last one leaves.
                await job.progress(tenth / 10, f"step {tenth}")
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.6)
            return Result(True, "done")

    reports = FakeReports(claim_reply=1)
    handler = DeliveryHandler(reports, ChattyRunner(), VERIFIER, requeue_delay=0, progress_interval=0.5)
    await handler.handle(cast(AbstractIncomingMessage, FakeMessage(body())))
    (claim_id,) = {entry[2] for entry in reports.log if entry[0] == "claim"}
    assert [entry for entry in reports.log if entry[0] == "progress"] == [
        ("progress", JOB_ID, claim_id, 0.1, "started"),
        ("progress", JOB_ID, claim_id, 0.9, "step 9"),
    ]
    assert reports.log[-1] == ("complete", JOB_ID, 1, "done")
