"""A small dynamic batching queue: work items of concurrent requests, run together on one thread.

A request awaits :meth:`BatchQueue.submit`; the queue's thread takes the first waiting item,
gathers what else arrives within ``window_s`` (up to ``max_batch`` items), and runs ``work`` on
them all at once, so the faces of concurrent requests go through the model in one batch. The
event loop never runs the model: it only waits on a future that the thread settles. The model is
used by this one thread alone, which also keeps two requests from fighting over the same cores.

If a batch fails, each of its items is run again alone, so one bad item fails only its own request.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, Optional, TypeVar

__all__ = ["BatchQueue"]

T = TypeVar("T")
R = TypeVar("R")
_STOP = object()


class BatchQueue(Generic[T, R]):
    """Run ``work`` over batches of the items that concurrent callers :meth:`submit`.

    Args:
        work: Items -> one result per item, in order (runs on the queue's thread).
        window_s: How long to wait for more items after the first one arrives.
        max_batch: The most items in one batch.
        on_batch: Called with each batch's size (for metrics).
        on_start: Called once on the queue's thread before any work (per-thread settings, e.g. torch's threads).
    """

    def __init__(self, work: Callable[[list[T]], Sequence[R]], window_s: float = 0.005, max_batch: int = 8,
                 on_batch: Optional[Callable[[int], None]] = None, name: str = "facetorch-batch",
                 on_start: Optional[Callable[[], None]] = None) -> None:  # fmt: skip
        if max_batch < 1 or window_s < 0:
            raise ValueError(f"max_batch must be 1 or more and window_s 0 or more, got {max_batch} and {window_s}")
        self.work = work
        self.window_s = window_s
        self.max_batch = max_batch
        self.on_batch = on_batch
        self.on_start = on_start
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def submit(self, item: T) -> R:
        """The result of ``item``, computed in a batch with whatever else was submitted meanwhile."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put((item, future, loop))
        return await future

    def close(self, timeout: float = 30.0) -> None:
        """Finish the items already queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    # -------------------------------------------------------------- the queue's thread
    def _run(self) -> None:
        if self.on_start is not None:
            self.on_start()
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                try:  # what is waiting already joins at once; then up to the window's end
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._process(batch)

    def _process(self, batch: list[tuple[T, asyncio.Future, asyncio.AbstractEventLoop]], retry: bool = False) -> None:
        if self.on_batch is not None and not retry:
            self.on_batch(len(batch))
        try:
            results = list(self.work([item for item, _, _ in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"the batch's work gave {len(results)} results for {len(batch)} items")
            outcomes: list[tuple[Any, Optional[BaseException]]] = [(result, None) for result in results]
        except Exception as error:
            if len(batch) > 1:  # one bad item must not fail the others: each again, alone
                for one in batch:
                    self._process([one], retry=True)
                return
            outcomes = [(None, error)]
        for (_, future, loop), (result, error) in zip(batch, outcomes):
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the caller's loop is closed: nobody waits for this answer any more
                pass


def _settle(future: asyncio.Future, result: Any, error: Optional[BaseException]) -> None:
    if future.done():  # cancelled: the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
