"""Group commit: concurrent calls that each want one small round trip share one big round trip.

A caller awaits ``Coalescer.submit(item)``. If fewer than ``max_concurrent``
batches are in flight, a batch starts at once (after one turn of the event
loop, so calls arriving together go together): at low load a call costs what
it did alone. While batches are in flight, new items wait and leave together
with the next one. Under load the batches grow by themselves, and the cost
per item (a database transaction, a gRPC call) is shared by the whole batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar, cast

Item = TypeVar("Item")
Result = TypeVar("Result")

#: Runs one batch: a result, or the exception for that item alone, per item and in order.
BatchRunner = Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]]


class Coalescer(Generic[Item, Result]):
    """Runs the items of concurrent ``submit`` calls in batches; see the module doc."""

    def __init__(self, run: BatchRunner[Item, Result], *, max_batch: int, max_concurrent: int) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_concurrent = max_concurrent
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """The result of ``item``, once the batch it joined has run; raises what the batch raised for it."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if len(self._flushers) < self._max_concurrent:
            task = asyncio.create_task(self._flush())
            self._flushers.add(task)
            # Only for a flusher cancelled before it ran its first line (its finally never runs).
            task.add_done_callback(self._flushers.discard)
        return await future

    async def _flush(self) -> None:
        """Run batches until nothing waits."""
        try:
            await asyncio.sleep(0)  # let the calls that arrived together join this batch
            await self._drain()
        finally:
            # Leave the set in the same step as the last look at the queue, with no await in
            # between. A done callback would leave it a loop turn later: a caller woken by this
            # flusher's last batch that submitted again at once found the set still full, started
            # no flusher, and waited for ever (tests/unit/test_batching.py, the sequential caller).
            current = asyncio.current_task()
            if current is not None:
                self._flushers.discard(cast("asyncio.Task[None]", current))

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            try:
                results = await self._run([item for item, _ in batch])
            except Exception as error:  # noqa: BLE001 - the batch failed as a whole: every caller in it gets why
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            except BaseException:
                for _, future in batch:
                    future.cancel()
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue  # the caller stopped waiting (its call was cancelled)
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
