"""One clock for all of a replica's duplex conversations; no Ray, no torch.

Each conversation holds a slot of the batch. Every 80 ms the scheduler takes
one input frame per joined conversation and runs a single batched step off the
event loop, then hands each conversation its output.

Late and bursty input: the clock never waits for a stream. A conversation
with no frame at a tick is stepped with silence (`late_frames`); frames that
arrive faster than the clock queue up to `max_buffered_frames`, past which the
oldest are dropped (`dropped_frames`), so a stream's lag stays bounded and a
slow client never stalls the others. If a step itself overruns the tick, the
clock resynchronises instead of bursting to catch up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from deployments.moshi.engine import TickResult

log = logging.getLogger(__name__)

TICK_S = 0.08


class Stepper(Protocol):
    slots: int
    frame_size: int

    def step(self, frames: np.ndarray, active: np.ndarray, reset: np.ndarray) -> TickResult: ...

    def text_piece(self, token: int) -> str: ...


class NoFreeSlot(Exception):
    pass


@dataclass
class TickOutput:
    tick: int
    pcm: np.ndarray
    text_token: int
    text: str
    input_frame_index: int
    late_frames: int
    dropped_frames: int


@dataclass
class TickStats:
    step_ms: float
    active: int
    late: int          # joined conversations stepped with silence this tick
    overrun: bool      # the step took longer than a tick


class Conversation:
    def __init__(self, slot: int, max_buffered: int) -> None:
        self.slot = slot
        self._inbox: deque[tuple[int, np.ndarray]] = deque()
        self._max_buffered = max_buffered
        self.outbox: asyncio.Queue[TickOutput] = asyncio.Queue()
        self.joined = False  # stepped from its first frame on
        self.ticks = 0
        self.late_frames = 0
        self.dropped_frames = 0

    def offer(self, frame_index: int, pcm: np.ndarray) -> None:
        self.joined = True
        self._inbox.append((frame_index, pcm))
        while len(self._inbox) > self._max_buffered:
            self._inbox.popleft()
            self.dropped_frames += 1

    def take(self) -> tuple[int, np.ndarray] | None:
        if self._inbox:
            return self._inbox.popleft()
        self.late_frames += 1
        return None


class DuplexScheduler:
    def __init__(self, stepper: Stepper, max_buffered_frames: int, tick_s: float = TICK_S,
                 on_tick: Callable[[TickStats], None] | None = None) -> None:
        self._stepper = stepper
        self._max_buffered = max_buffered_frames
        self._tick_s = tick_s
        self._on_tick = on_tick
        self._by_slot: dict[int, Conversation] = {}
        self._reset = np.zeros(stepper.slots, dtype=bool)
        # One thread: steps are sequential and the model is not thread-safe.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="moshi-step")
        self._clock: asyncio.Task[None] | None = None

    @property
    def slots(self) -> int:
        return self._stepper.slots

    @property
    def frame_size(self) -> int:
        return self._stepper.frame_size

    @property
    def in_use(self) -> int:
        return len(self._by_slot)

    def open(self) -> Conversation:
        free = next((s for s in range(self.slots) if s not in self._by_slot), None)
        if free is None:
            raise NoFreeSlot(f"all {self.slots} duplex slots of this replica are in use")
        conv = Conversation(free, self._max_buffered)
        self._by_slot[free] = conv
        if self._clock is None or self._clock.done():
            self._clock = asyncio.get_running_loop().create_task(self._run())
        return conv

    def close(self, conv: Conversation) -> None:
        if self._by_slot.get(conv.slot) is conv:
            del self._by_slot[conv.slot]
            # The row is cleared before the slot's next step, whoever holds it by then.
            self._reset[conv.slot] = True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self._by_slot:
            joined = [c for c in self._by_slot.values() if c.joined]
            if joined:
                await self._tick(joined)
            next_at += self._tick_s
            delay = next_at - loop.time()
            if delay < -self._tick_s:
                next_at = loop.time()  # fell a whole tick behind: resync, don't burst
            await asyncio.sleep(max(delay, 0.0))

    async def _tick(self, joined: list[Conversation]) -> None:
        frames = np.zeros((self.slots, self.frame_size), dtype=np.float32)
        active = np.zeros(self.slots, dtype=bool)
        heard: dict[int, int] = {}
        late = 0
        for conv in joined:
            active[conv.slot] = True
            item = conv.take()
            if item is None:
                heard[conv.slot] = -1
                late += 1
            else:
                heard[conv.slot], frames[conv.slot] = item
        reset, self._reset = self._reset, np.zeros(self.slots, dtype=bool)
        result = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._stepper.step, frames, active, reset)
        for conv in joined:
            token = int(result.text_tokens[conv.slot])
            conv.outbox.put_nowait(TickOutput(
                conv.ticks, result.pcm[conv.slot], token, self._stepper.text_piece(token),
                heard[conv.slot], conv.late_frames, conv.dropped_frames))
            conv.ticks += 1
        if self._on_tick is not None:
            self._on_tick(TickStats(result.step_ms, len(joined), late,
                                    result.step_ms > self._tick_s * 1000))

    async def aclose(self) -> None:
        self._by_slot.clear()
        if self._clock is not None:
            await asyncio.gather(self._clock, return_exceptions=True)
        self._executor.shutdown(wait=True)
