"""The worker SDK: write a handler, decorate it with its job type, run the worker with one command.

::

    from jobqueue.worker import JobContext, PermanentError, Worker

    worker = Worker()

    @worker.job_type("send_email", schema={"type": "object", "required": ["to"]}, timeout_seconds=30)
    async def send_email(payload: dict, job: JobContext) -> dict:
        await job.progress(0.5, "connected")
        return {"message_id": "..."}

Then ``python -m jobqueue.worker myapp:worker`` (``--help`` lists the settings,
all read from the environment), or ``worker.run()``. Install it with
``pip install jobqueue-client[worker]``. ``Worker.job_type`` says what a
handler may be; the runtime behind it (consuming, claiming, fenced reports,
timeouts, cancellation, graceful stop, health, metrics) lives in this
package's other modules, which are not a public API.
"""

from jobqueue.worker.app import Worker
from jobqueue.worker.context import JobContext
from jobqueue.worker.job_types import PermanentError

__all__ = ["JobContext", "PermanentError", "Worker"]
