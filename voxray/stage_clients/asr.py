"""Client of the ASR deployment's Transcribe stream, through Serve's gRPC proxy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import TracebackType

import grpc

from voxray.v1 import asr_pb2, asr_pb2_grpc, common_pb2

SAMPLE_RATE = 16_000


class AsrStream:
    """One Transcribe call: send audio and end-of-utterance marks, read events.

    Sending never blocks on the network: requests go through a queue that the
    gRPC call drains, so a slow replica cannot stall the caller's audio loop.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        session_id: str,
        *,
        application: str = "asr",
        partials: bool = True,
        language: str = "",
    ) -> None:
        self._stub = asr_pb2_grpc.AsrStub(channel)
        self._session_id = session_id
        self._application = application
        self._start = asr_pb2.AsrStart(sample_rate=SAMPLE_RATE, language=language,
                                       partials=partials)
        self._queue: asyncio.Queue[asr_pb2.AsrRequest | None] = asyncio.Queue()
        self._seq = 0
        self._samples = 0
        self._utterance_id = 0
        self._call: grpc.aio.StreamStreamCall | None = None
        self.sent_at: dict[int, float] = {}  # request seq -> time.monotonic() when queued

    @property
    def samples_sent(self) -> int:
        return self._samples

    @property
    def open_utterance(self) -> int:
        """The id the events of the utterance now being spoken carry."""
        return self._utterance_id

    def _meta(self) -> common_pb2.Meta:
        meta = common_pb2.Meta(session_id=self._session_id, seq=self._seq,
                               sent_unix_ns=time.time_ns())
        self.sent_at[self._seq] = time.monotonic()
        self._seq += 1
        return meta

    async def _requests(self) -> AsyncIterator[asr_pb2.AsrRequest]:
        while (req := await self._queue.get()) is not None:
            yield req

    async def __aenter__(self) -> AsrStream:
        self._queue.put_nowait(asr_pb2.AsrRequest(meta=self._meta(), start=self._start))
        self._call = self._stub.Transcribe(
            self._requests(), metadata=(("application", self._application),)
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._call is not None and not self._call.done():
            self._call.cancel()

    def send_audio(self, pcm16: bytes) -> int:
        """Queue PCM16 mono 16 kHz; returns the request's seq."""
        seq = self._seq
        chunk = common_pb2.AudioChunk(pcm16=pcm16, sample_rate=SAMPLE_RATE,
                                      start_sample=self._samples)
        self._samples += len(pcm16) // 2
        self._queue.put_nowait(asr_pb2.AsrRequest(meta=self._meta(), audio=chunk))
        return seq

    def end_utterance(self, speech_end_sample: int | None = None) -> int:
        """Close the current utterance; returns the request's seq.

        speech_end_sample: where the client's VAD heard speech end, in this
        stream's timeline; the replica then need not look for the pause itself.
        """
        seq = self._seq
        eou = asr_pb2.EndOfUtterance(utterance_id=self._utterance_id,
                                     speech_end_sample=speech_end_sample)
        self._queue.put_nowait(asr_pb2.AsrRequest(meta=self._meta(), end_of_utterance=eou))
        self._utterance_id += 1
        return seq

    def close_send(self) -> None:
        """Half-close: the server finalizes any open speech, then ends the stream."""
        self._queue.put_nowait(None)

    def send_raw(self, request: asr_pb2.AsrRequest) -> None:
        """Queue a request as is (tests of the server's input checks)."""
        self._queue.put_nowait(request)

    def __aiter__(self) -> AsyncIterator[asr_pb2.AsrEvent]:
        assert self._call is not None, "use `async with AsrStream(...)`"
        return self._call.__aiter__()
