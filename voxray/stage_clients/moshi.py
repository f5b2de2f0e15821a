"""Client of the Moshi deployment's Converse stream, through Serve's gRPC proxy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import TracebackType

import grpc

from voxray.v1 import common_pb2, moshi_pb2, moshi_pb2_grpc

SAMPLE_RATE = 24_000
FRAME_SAMPLES = 1920  # 80 ms


class MoshiStream:
    """One duplex conversation: queue 80 ms frames in, read one output per tick.

    `async with` opens the call and waits for the replica's `ready` (it holds a
    slot from then on); a refusal surfaces there as grpc.aio.AioRpcError
    (RESOURCE_EXHAUSTED when every slot is taken).
    """

    def __init__(self, channel: grpc.aio.Channel, session_id: str, *,
                 application: str = "moshi", ready_within_s: float = 10.0) -> None:
        self._stub = moshi_pb2_grpc.MoshiStub(channel)
        self._session_id = session_id
        self._application = application
        self._ready_within_s = ready_within_s
        self._queue: asyncio.Queue[moshi_pb2.MoshiRequest | None] = asyncio.Queue()
        self._seq = 0
        self._frames = 0
        self._call: grpc.aio.StreamStreamCall | None = None
        self.ready: moshi_pb2.MoshiReady | None = None

    def _meta(self) -> common_pb2.Meta:
        meta = common_pb2.Meta(session_id=self._session_id, seq=self._seq,
                               sent_unix_ns=time.time_ns())
        self._seq += 1
        return meta

    async def _requests(self) -> AsyncIterator[moshi_pb2.MoshiRequest]:
        while (req := await self._queue.get()) is not None:
            yield req

    async def __aenter__(self) -> MoshiStream:
        self._queue.put_nowait(moshi_pb2.MoshiRequest(
            meta=self._meta(), start=moshi_pb2.MoshiStart(sample_rate=SAMPLE_RATE)))
        self._call = self._stub.Converse(self._requests(),
                                         metadata=(("application", self._application),))
        try:
            first = await asyncio.wait_for(self._call.read(), self._ready_within_s)
        except BaseException:
            self._call.cancel()
            raise
        if first is grpc.aio.EOF or first.WhichOneof("kind") != "ready":
            self._call.cancel()
            raise RuntimeError("the Moshi stream did not start with `ready`")
        self.ready = first.ready
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._call is not None and not self._call.done():
            self._call.cancel()

    def send_frame(self, pcm16: bytes) -> None:
        """Queue one frame: FRAME_SAMPLES of 16-bit mono PCM at 24 kHz."""
        frame = moshi_pb2.MoshiFrame(frame_index=self._frames, audio=common_pb2.AudioChunk(
            pcm16=pcm16, sample_rate=SAMPLE_RATE, start_sample=self._frames * FRAME_SAMPLES))
        self._frames += 1
        self._queue.put_nowait(moshi_pb2.MoshiRequest(meta=self._meta(), frame=frame))

    def send_raw(self, request: moshi_pb2.MoshiRequest) -> None:
        """Queue a request as is (tests of the replica's input checks)."""
        self._queue.put_nowait(request)

    def close_send(self) -> None:
        """Hang up: the replica ends the conversation and frees its slot."""
        self._queue.put_nowait(None)

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()

    async def outputs(self) -> AsyncIterator[moshi_pb2.MoshiOutput]:
        assert self._call is not None, "use `async with MoshiStream(...)`"
        while (event := await self._call.read()) is not grpc.aio.EOF:
            yield event.output
