"""Micro-batching: concurrent requests share one model pass, which runs off the event loop.

A request waits at most `window_s` for company, a batch holds at most `max_batch` texts, and the
queue is bounded: when it is full the request is refused at once (the router falls back) instead
of waiting behind a backlog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from .errors import ClassifierError

__all__ = ["MicroBatcher"]

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Runs `fn(texts) -> results` for batches of submitted texts on one worker thread."""

    def __init__(self, fn: Callable[[Sequence[str]], Sequence[T]], name: str, window_s: float = 0.002,
                 max_batch: int = 32, max_queue: int = 512, enabled: bool = True) -> None:
        self._fn = fn
        self._name = name
        self._window_s = window_s
        self._max_batch = max_batch if enabled else 1
        self._max_queue = max_queue
        self._enabled = enabled
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lora-router-{name}")
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[T]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0

    async def submit(self, text: str) -> T:
        if not self._enabled:
            [result] = await asyncio.get_running_loop().run_in_executor(self._executor, self._fn, [text])
            return result
        queue = self._ensure_worker()
        if queue.qsize() >= self._max_queue:
            raise ClassifierError(self._name, "micro-batch queue is full")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue.put_nowait((text, future))
        return await future

    def _ensure_worker(self) -> asyncio.Queue[tuple[str, asyncio.Future[T]]]:
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(self._queue), name=f"lora-router-{self._name}-batcher")
        return self._queue

    async def _run(self, queue: asyncio.Queue[tuple[str, asyncio.Future[T]]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self._window_s
            while len(batch) < self._max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0 and queue.empty():
                    break
                try:
                    batch.append(queue.get_nowait() if not queue.empty() else await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            live = [(text, future) for text, future in batch if not future.done()]
            if not live:
                continue
            self.batches += 1
            try:
                results = await loop.run_in_executor(self._executor, self._fn, [text for text, _ in live])
            except Exception as exc:
                for _, future in live:
                    if not future.done():
                        future.set_exception(ClassifierError(self._name, f"{type(exc).__name__}: {exc}"))
                continue
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
