"""Dynamic batching: rows of concurrent requests gathered into one call of a batch function.

Requests ``submit`` their rows to one asyncio queue; a collector task takes the first waiting row,
waits up to ``max_wait_ms`` for more (at most ``max_batch_size``), and runs the batch function on
them in one worker thread, so the event loop stays free while the model runs. Each row's result
(or exception) goes back to its request. A request that times out gets ``TimeoutError``; its rows
still waiting are dropped, not run. A full queue refuses new rows with ``Busy``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .config import BatchPolicy

log = logging.getLogger(__name__)

BatchFn = Callable[[list[Any]], Sequence[Any]]  # payloads -> one result or exception per payload


class Busy(RuntimeError):
    """The queue is full: the request should be retried later."""


@dataclass
class _Item:
    payload: Any
    future: asyncio.Future


class Batcher:
    """Gathers rows into batches for ``fn``; start with ``start()`` inside the running loop."""

    def __init__(self, fn: BatchFn, policy: BatchPolicy | None = None,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.fn = fn
        self.policy = policy or BatchPolicy()
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._taken: list[_Item] = []  # rows off the queue whose results are not delivered yet

    def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.policy.max_queue)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resprompt-model")
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        """Stops the collector; every row not answered yet, waiting or in the batch being run, gets ``Busy``
        at once (its request a 503) rather than waiting for its timeout."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        pending = list(self._taken)
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for item in pending:
            if not item.future.done():
                item.future.set_exception(Busy("the server is shutting down"))
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def run_exclusive(self, fn: Callable, *args) -> Any:
        """Runs ``fn(*args)`` on the model worker thread, between batches (loading prompts, say)."""
        if self._pool is None:
            raise RuntimeError("Batcher.start() was not called")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @property
    def waiting(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    async def submit(self, payloads: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Results for ``payloads`` (each a result or the exception its row raised), in order.

        Raises ``Busy`` when the queue cannot take them all and ``asyncio.TimeoutError`` after ``timeout`` s.
        """
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        if self._queue.qsize() + len(payloads) > self.policy.max_queue:
            raise Busy(f"the server is busy ({self._queue.qsize()} rows waiting); retry later")
        loop = asyncio.get_running_loop()
        items = [_Item(p, loop.create_future()) for p in payloads]
        for item in items:
            self._queue.put_nowait(item)
        futures = [item.future for item in items]
        try:
            return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout)
        finally:
            for f in futures:  # on timeout or cancellation: rows not yet run are skipped
                f.cancel()

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._taken = []
            batch = await self._gather(loop)
            live = [item for item in batch if not item.future.done()]
            if not live:
                continue
            if self.on_batch is not None:
                self.on_batch(len(live))
            try:
                results = await loop.run_in_executor(self._pool, self.fn, [item.payload for item in live])
            except Exception as e:  # noqa: BLE001 (the batch fails, the server does not)
                log.exception("batch of %d rows failed", len(live))
                results = [e] * len(live)
            for item, result in zip(live, results):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)

    async def _gather(self, loop) -> list[_Item]:
        """The first waiting row and whatever else arrives within ``max_wait_ms``, up to the batch size."""
        batch = self._taken  # the same list: stop() answers what was taken if it cancels us mid-batch
        batch.append(await self._queue.get())
        deadline = loop.time() + self.policy.max_wait_ms / 1000
        while len(batch) < self.policy.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch
