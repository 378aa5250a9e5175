"""Micro-batching: concurrent requests share one model pass, which runs off the event loop.

Greedy: a lone request runs at once (no added latency when idle); requests that arrive together, or
while a pass is running, form the next batch, and only then does the worker wait up to `window_s`
for more. A batch holds at most `max_batch` texts, and the queue is bounded: when it is full the
request is refused at once (the router falls back) instead of waiting behind a backlog. With
batching off the same bound applies to texts waiting for the thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from .errors import ClassifierError

__all__ = ["MicroBatcher"]

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Runs `fn(texts) -> results` for batches of submitted texts on one worker thread."""

    def __init__(self, fn: Callable[[Sequence[str]], Sequence[T]], name: str, window_s: float = 0.002,
                 max_batch: int = 32, max_queue: int = 512, enabled: bool = True,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        self._fn = fn
        self._on_batch = on_batch  # (batch size, texts still waiting), for metrics
        self._name = name
        self._window_s = window_s
        self._max_batch = max_batch if enabled else 1
        self._max_queue = max_queue
        self._enabled = enabled
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lora-router-{name}")
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[T]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog: set[Future[Sequence[T]]] = set()
        self.batches = 0

    async def submit(self, text: str) -> T:
        if not self._enabled:
            return await self._run_alone(text)
        queue = self._ensure_worker()
        if queue.qsize() >= self._max_queue:
            raise ClassifierError(self._name, "micro-batch queue is full")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue.put_nowait((text, future))
        return await future

    async def _run_alone(self, text: str) -> T:
        """Batching off: one pass per text, with the same bound on work waiting for the thread
        (counted until the thread is done with it, even when the caller gave up)."""
        if len(self._backlog) >= self._max_queue:
            raise ClassifierError(self._name, "inference queue is full")
        if self._on_batch is not None:
            self._on_batch(1, len(self._backlog))
        job = self._executor.submit(self._fn, [text])
        self._backlog.add(job)
        job.add_done_callback(self._backlog.discard)
        [result] = await asyncio.wrap_future(job)
        return result

    def _ensure_worker(self) -> asyncio.Queue[tuple[str, asyncio.Future[T]]]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done() or self._loop is not loop:
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(self._queue), name=f"lora-router-{self._name}-batcher")
        return self._queue

    async def _run(self, queue: asyncio.Queue[tuple[str, asyncio.Future[T]]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            await asyncio.sleep(0)  # let requests of the same tick join
            while len(batch) < self._max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            if len(batch) > 1:  # under load: wait a little for more company
                deadline = loop.time() + self._window_s
                while len(batch) < self._max_batch and (remaining := deadline - loop.time()) > 0:
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), remaining))
                    except TimeoutError:
                        break
            live = [(text, future) for text, future in batch if not future.done()]
            if not live:
                continue
            self.batches += 1
            if self._on_batch is not None:
                self._on_batch(len(live), queue.qsize())
            try:
                results = await loop.run_in_executor(self._executor, self._fn, [text for text, _ in live])
            except Exception as exc:
                error = (exc if isinstance(exc, ClassifierError)  # a remote model's own error keeps its kind
                         else ClassifierError(self._name, f"{type(exc).__name__}: {exc}"))
                for _, future in live:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def close(self) -> None:
        """Idempotent: stop the worker and the thread."""
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
