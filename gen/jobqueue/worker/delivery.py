"""What the worker does with one delivery (the worker's half of the UpdateJob protocol).

decode -> wait for its turn (a free handler process, for a job that needs one)
-> claim (RUNNING, fresh claim_id; the reply's attempts is this attempt)
-> run the handler (an async one may report progress meanwhile, under the
claim_id: jobqueue/worker/progress.py) -> report COMPLETED or FAILED for that
attempt -> ack.

A handler that raises fails its attempt as retryable, with the description of
its exception (type, message, innermost frames: jobqueue.worker.runner.describe) as
the attempt's error, which the job's owner reads through GetJob. An error of
the worker's own (a bug in our code) is logged in full here, and the job gets
only its type: its details are ours to read, not the owner's.

A message whose channel closed while it waited for its turn is dropped
unclaimed: the broker has already handed it out again, and claiming this copy
would run the job twice (the later claim takes the job over).

A message is acknowledged only once the job service has stored a report that
settles it (or has said the job is no longer ours), so a worker that dies at
any point leaves the message to be redelivered. A malformed body is rejected
without requeue, which dead-letters it. Each delivery runs in a task of its
own and every failure is contained in it: nothing here ever stops consumption.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import grpc
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelInvalidStateError

from jobqueue.runtime import tracing
from jobqueue.runtime.messages import (
    CANCELLATION_TYPE,
    MESSAGE_TYPE,
    Delivery,
    MalformedDelivery,
    MalformedMessage,
    decode_cancellation,
    decode_delivery,
)
from jobqueue.runtime.signing import Verifier
from jobqueue.worker import metrics
from jobqueue.worker.consumer import BROKER_ERRORS
from jobqueue.worker.context import JobContext
from jobqueue.worker.progress import Progress
from jobqueue.worker.reports import Failure, ReportAbandoned, ReportRefused
from jobqueue.worker.runner import HandlerError, HandlerProcess, Result

log = logging.getLogger(__name__)

#: Refusals of a report that say nothing about the job: the attempt it ends may be retried.
_NOT_THE_JOBS_FAULT = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


class HandlerTimeout(Exception):
    """Raised when a handler runs past its job's timeout (a retryable failure)."""


class Reports(Protocol):
    """Where job state changes go (jobqueue.worker.reports.ReportClient); see its methods for the contract."""

    async def claim(self, job_id: str, claim_id: str) -> int | None:
        """Report RUNNING; the attempt number, or None if the job is no longer ours."""

    async def complete(self, job_id: str, attempt: int, result: Any) -> bool:
        """Report COMPLETED with a JSON value; False if superseded."""

    async def progress(self, job_id: str, claim_id: str, fraction: float, message: str) -> None:
        """Report how far the job got, once; never raises for the job service's answer."""

    async def fail(self, job_id: str, attempt: int, error: str, *, retryable: bool = False) -> Failure:
        """Report FAILED; what became of the job."""


class JobRunner(Protocol):
    """What runs a job (jobqueue.worker.runner.Runner)."""

    def turn(self, job_type: str, payload: Any) -> AbstractAsyncContextManager[HandlerProcess | None]:
        """Entered once the job can start at once; gives the free handler process it needs, if any."""

    async def run(
        self, job_type: str, payload: Any, process: HandlerProcess | None = None, *, job: JobContext | None = None
    ) -> Result:
        """The result of the job's attempt; HandlerError if the handler raised. Cancelling it stops the handler."""


class DeliveryHandler:
    """Handles each delivery from the job queue; see the module doc."""

    def __init__(
        self,
        reports: Reports,
        runner: JobRunner,
        verifier: Verifier,
        *,
        requeue_delay: float = 1.0,
        progress_interval: float = 1.0,
    ) -> None:
        """``verifier`` checks that the job service signed each message: no other is run (jobqueue.runtime.signing).

        ``progress_interval``: the fewest seconds between two progress reports of a job.
        """
        self._reports = reports
        self._progress_interval = progress_interval
        self._runner = runner
        self._verifier = verifier
        # Handing a message straight back when the job service refuses our
        # reports would spin it between workers as fast as the network allows.
        self._requeue_delay = requeue_delay
        #: Messages dead-lettered because their body was unusable, since start.
        self.malformed = 0
        #: The handler runs in progress, by job id, so a cancellation can stop one.
        self._running: dict[str, asyncio.Future[Result]] = {}

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Process one delivery to the end: acked, rejected, handed back, or left for redelivery."""
        if forged := self._verifier.check(MESSAGE_TYPE, message.body, message.headers):
            metrics.FORGED.labels("job", forged).inc()
            log.warning(
                "message not signed by the job service dead-lettered",
                extra={"reason": forged, "body_bytes": len(message.body), "message_id": message.message_id},
            )
            await _settle(message.reject(requeue=False), "reject")
            return
        try:
            delivery = decode_delivery(message.body)
        except MalformedDelivery as error:
            self.malformed += 1
            metrics.MALFORMED.inc()
            log.warning(
                "malformed message dead-lettered",
                extra={
                    "error": str(error),
                    "body_bytes": len(message.body),
                    "message_id": message.message_id,
                    "malformed_total": self.malformed,
                },
            )
            await _settle(message.reject(requeue=False), "reject")
            return
        # A child of the message's receive span (the aio-pika instrumentation's, from the headers the
        # relay wrote), so the claim, the run and the reports join the job's trace.
        with tracing.job_span("process", delivery.job_type, delivery.job_id):
            async with self._runner.turn(delivery.job_type, delivery.payload) as process:
                if not _still_held(message):
                    metrics.STALE_COPIES.inc()
                    log.info(
                        "channel closed while the message waited for its turn; the broker has redelivered it",
                        extra={"job_id": delivery.job_id, "job_type": delivery.job_type},
                    )
                    return
                await self._claim_and_run(message, delivery, process)

    async def _claim_and_run(
        self, message: AbstractIncomingMessage, delivery: Delivery, process: HandlerProcess | None
    ) -> None:
        fields: dict[str, Any] = {"job_id": delivery.job_id, "job_type": delivery.job_type}
        attempt: int | None = None
        try:
            claim_id = str(uuid.uuid4())
            attempt = await self._reports.claim(delivery.job_id, claim_id)
            if attempt is None:
                metrics.JOBS.labels(delivery.job_type, "not_ours").inc()
                log.info("job no longer ours (finished, cancelled or unknown); not running it", extra=fields)
                await _settle(message.ack(), "ack", fields)
                return
            fields["attempt"] = attempt
            result = await self._run(delivery, process, attempt, claim_id)
            if result is None:
                # The job is CANCELLED already; the job service would refuse any report.
                metrics.JOBS.labels(delivery.job_type, "cancelled").inc()
                log.info("job cancelled while running; handler stopped", extra=fields)
                await _settle(message.ack(), "ack", fields)
                return
            if result.ok:
                if await self._reports.complete(delivery.job_id, attempt, result.value):
                    log.debug("job completed", extra=fields)
                    metrics.JOBS.labels(delivery.job_type, "completed").inc()
                else:
                    metrics.JOBS.labels(delivery.job_type, "superseded").inc()
            else:
                await self._reports.fail(delivery.job_id, attempt, result.value)
                metrics.JOBS.labels(delivery.job_type, "failed").inc()
                log.info("job failed", extra={**fields, "error": result.value})
            await _settle(message.ack(), "ack", fields)
        except ReportAbandoned as error:
            log.warning(
                "handing job back: no report could be stored before stopping", extra={**fields, "error": str(error)}
            )
        except HandlerTimeout as error:
            metrics.JOBS.labels(delivery.job_type, "timed_out").inc()
            log.warning("job timed out; handler stopped", extra={**fields, "error": str(error)})
            await self._recover(message, delivery, attempt, error)
        except HandlerError as error:
            # exc_info: the whole chain (for a handler process, the remote traceback) stays in our log.
            log.warning("job's handler raised", extra={**fields, "error": str(error)}, exc_info=True)
            await self._recover(message, delivery, attempt, error)
        except ReportRefused as error:
            # A refusal says what is wrong (a worker token or certificate the job service does not accept):
            # one line, not a traceback, since it repeats for every job until the setting is fixed.
            log.error(
                "the job service refused this worker's report",
                extra={**fields, "code": error.code.name, "error": error.details},
            )
            await self._recover(message, delivery, attempt, error)
        except Exception as error:
            log.exception("job handling failed", extra=fields)
            await self._recover(message, delivery, attempt, error)

    async def _run(
        self, delivery: Delivery, process: HandlerProcess | None, attempt: int, claim_id: str
    ) -> Result | None:
        """The handler's result, or None if the job was cancelled (see ``cancel``) while it ran."""

        async def send(fraction: float, message: str) -> None:
            await self._reports.progress(delivery.job_id, claim_id, fraction, message)

        progress = Progress(send, self._progress_interval)
        job = JobContext(delivery.job_id, delivery.job_type, attempt, progress.report)
        run = asyncio.ensure_future(self._runner.run(delivery.job_type, delivery.payload, process, job=job))
        self._running[delivery.job_id] = run
        started = time.monotonic()
        try:
            return await asyncio.wait_for(run, delivery.timeout_seconds)
        except TimeoutError:
            # wait_for cancelled the run, which stopped the handler (killed its
            # handler process); the attempt fails and may be retried.
            raise HandlerTimeout(f"timed out after {delivery.timeout_seconds} s") from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being stopped, not the job: hand the message back
            return None
        finally:
            await progress.close()
            self._running.pop(delivery.job_id, None)
            metrics.HANDLER_SECONDS.labels(delivery.job_type).observe(time.monotonic() - started)

    def cancel(self, job_id: str) -> bool:
        """Stop the handler of ``job_id`` if it runs here; returns whether it did.

        A handler in a handler process stops at once (the process is killed and
        replaced), an async one at its next await; a plain one run inline (its
        type's inline_if) is quick by contract and is not interrupted.
        """
        run = self._running.get(job_id)
        if run is None or run.done():
            return False
        run.cancel()
        return True

    async def handle_control(self, message: AbstractIncomingMessage) -> None:
        """Act on a notice from the control exchange (a JobCancellation); never raises."""
        if forged := self._verifier.check(CANCELLATION_TYPE, message.body, message.headers):
            metrics.FORGED.labels("control", forged).inc()
            log.warning("control notice not signed by the job service ignored", extra={"reason": forged})
            return
        try:
            job_id = decode_cancellation(message.body)
        except MalformedMessage:
            log.warning("malformed control notice ignored", extra={"body_bytes": len(message.body)})
            return
        if self.cancel(job_id):
            log.info("stopping a cancelled job", extra={"job_id": job_id})

    async def _recover(
        self, message: AbstractIncomingMessage, delivery: Delivery, attempt: int | None, error: Exception
    ) -> None:
        """After an unexpected error: settle the job as FAILED if we hold an attempt, else hand the message back."""
        fields: dict[str, Any] = {"job_id": delivery.job_id, "job_type": delivery.job_type, "attempt": attempt}
        if attempt is not None:
            # A refused report would be refused again; a crash may well not recur, and neither may
            # an INTERNAL or UNKNOWN answer, which is the job service's failure, not the job's.
            retryable = not isinstance(error, ReportRefused) or error.code in _NOT_THE_JOBS_FAULT
            if isinstance(error, HandlerTimeout | HandlerError):
                reason = str(error)
            elif isinstance(error, ReportRefused):
                reason = f"the job service refused the worker's report ({error})"
            else:
                reason = f"internal worker error ({type(error).__name__})"
            try:
                outcome = await self._reports.fail(delivery.job_id, attempt, reason, retryable=retryable)
            except ReportAbandoned:
                return
            except Exception:
                log.exception("could not report the job FAILED; handing it back", extra=fields)
            else:
                if outcome is Failure.FINAL and retryable:
                    # Out of attempts: keep the message for an operator in <queue>.dead.
                    log.warning("job failed for good; message dead-lettered", extra=fields)
                    await _settle(message.reject(requeue=False), "reject", fields)
                else:
                    await _settle(message.ack(), "ack", fields)
                return
        await asyncio.sleep(self._requeue_delay)
        await _settle(message.nack(requeue=True), "nack", fields)


def _still_held(message: AbstractIncomingMessage) -> bool:
    """Whether the channel ``message`` came on is open, so the broker has not handed it to anyone else."""
    try:
        message.channel  # noqa: B018 - aio-pika raises here once the channel is closed
    except ChannelInvalidStateError:
        return False
    return True


async def _settle(operation: Awaitable[None], name: str, fields: dict[str, Any] | None = None) -> None:
    """Ack/nack/reject a message, tolerating a channel that closed meanwhile.

    The broker then redelivers the message; since its report (if any) is
    stored, the next worker's claim is answered "superseded" and it just acks.
    """
    try:
        await operation
    except BROKER_ERRORS as error:
        log.warning(
            "could not settle message; it will be redelivered",
            extra={**(fields or {}), "operation": name, "error": repr(error)},
        )
