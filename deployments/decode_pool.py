"""Runs blocking model calls off the event loop, most urgent first.

Sessions of one replica share the model; a final transcript someone is
waiting for must not queue behind another session's partial. A priority is
any number, lowest first: URGENT and BACKGROUND (the ASR), or URGENT and deadlines on
the `time.monotonic()` clock, earliest first (the TTS). A pool uses one scheme or the
other: BACKGROUND would sort before every deadline.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deployments.load_meter import LoadMeter

URGENT = 0.0
BACKGROUND = 1.0

_Job = tuple[float, int, Callable[[], Any], asyncio.Future[Any]]


class DecodePool:
    def __init__(self, workers: int, name: str = "decode") -> None:
        self._workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._queue: asyncio.PriorityQueue[_Job]
        self._tasks: list[asyncio.Task[None]] = []
        self._counter = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.load = LoadMeter(workers)  # jobs queued or running, over the workers

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        self._queue = asyncio.PriorityQueue()
        self._tasks = [loop.create_task(self._run()) for _ in range(self._workers)]

    async def run(self, priority: float, fn: Callable[[], Any]) -> Any:
        """Run fn() on a worker thread when its turn comes; cancelling drops it if not started."""
        self._start()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((priority, next(self._counter), fn, fut))
        self.load.add(1)
        try:
            return await fut
        finally:
            self.load.add(-1)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            _, _, fn, fut = await self._queue.get()
            if fut.done():  # its caller went away
                continue
            try:
                result = await loop.run_in_executor(self._executor, fn)
            except Exception as e:  # delivered to the caller, never kills the worker
                if not fut.done():
                    fut.set_exception(e)
            else:
                if not fut.done():
                    fut.set_result(result)
