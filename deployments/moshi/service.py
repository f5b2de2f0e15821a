"""The Moshi gRPC protocol (`Moshi.Converse`) over the replica's DuplexScheduler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np

from deployments.errors import StageError, invalid
from deployments.moshi.engine import SAMPLE_RATE
from deployments.moshi.scheduler import DuplexScheduler, NoFreeSlot, TickOutput
from deployments.streams import Stamper
from voxray.v1 import common_pb2, moshi_pb2

log = logging.getLogger(__name__)


class MoshiService:
    def __init__(self, scheduler: DuplexScheduler, max_buffered_frames: int,
                 max_unread_ticks: int, replica_id: str = "local") -> None:
        self.scheduler = scheduler
        self.replica_id = replica_id
        self._max_buffered = max_buffered_frames
        self._max_unread = max_unread_ticks

    async def converse(
        self, requests: AsyncIterator[moshi_pb2.MoshiRequest]
    ) -> AsyncIterator[moshi_pb2.MoshiEvent]:
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") != "start":
            raise invalid("the first request of a Converse call must be `start`")
        if first.start.sample_rate != SAMPLE_RATE:
            raise invalid(f"sample_rate must be {SAMPLE_RATE}, got {first.start.sample_rate}")
        try:
            conv = self.scheduler.open()
        except NoFreeSlot as e:
            raise StageError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"{e} (replica {self.replica_id}); retry, or try another replica"
                             ) from None
        stamp = Stamper(first.meta.session_id)
        failed: asyncio.Future[StageError | None] = asyncio.get_running_loop().create_future()
        reader = asyncio.create_task(self._read(requests, conv.offer, failed))
        try:
            yield moshi_pb2.MoshiEvent(meta=stamp.meta(first.meta.seq), ready=moshi_pb2.MoshiReady(
                replica_id=self.replica_id, slot=conv.slot, max_buffered_frames=self._max_buffered))
            while True:
                get = asyncio.ensure_future(conv.outbox.get())
                either: list[asyncio.Future[Any]] = [get, failed]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    error = failed.result()
                    if error is None:
                        return  # the caller hung up
                    raise error
                if conv.outbox.qsize() > self._max_unread:
                    raise StageError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                     "the client stopped reading the conversation's output")
                yield moshi_pb2.MoshiEvent(meta=stamp.meta(0), output=_output(get.result()))
        finally:
            self.scheduler.close(conv)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, requests: AsyncIterator[moshi_pb2.MoshiRequest],
                    offer: Callable[[int, np.ndarray], None],
                    failed: asyncio.Future[StageError | None]) -> None:
        expected_bytes = self.scheduler.frame_size * 2
        result: StageError | None = None
        try:
            async for req in requests:
                if req.WhichOneof("kind") != "frame":
                    raise invalid(f"unexpected `{req.WhichOneof('kind')}` request after start")
                audio = req.frame.audio
                if audio.sample_rate != SAMPLE_RATE or len(audio.pcm16) != expected_bytes:
                    raise invalid(
                        f"a frame must be {self.scheduler.frame_size} samples of 16-bit PCM at "
                        f"{SAMPLE_RATE} Hz; got {len(audio.pcm16)} bytes at {audio.sample_rate} Hz")
                pcm = np.frombuffer(audio.pcm16, dtype="<i2").astype(np.float32) / 32768.0
                offer(req.frame.frame_index, pcm)
        except StageError as e:
            result = e
        finally:
            if not failed.done():
                failed.set_result(result)


def _output(out: TickOutput) -> moshi_pb2.MoshiOutput:
    pcm = (np.clip(out.pcm, -1.0, 1.0) * 32767).astype("<i2")
    return moshi_pb2.MoshiOutput(
        tick=out.tick, text=out.text, text_token=out.text_token,
        audio=common_pb2.AudioChunk(pcm16=pcm.tobytes(), sample_rate=SAMPLE_RATE,
                                    start_sample=out.tick * len(pcm)),
        input_frame_index=out.input_frame_index, late_frames=out.late_frames,
        dropped_frames=out.dropped_frames)
