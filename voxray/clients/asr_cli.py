"""`voxray asr`: speak an audio file into the ASR app and show what comes back."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field

import av
import grpc
import numpy as np

from voxray.audio import read_audio
from voxray.stage_auth import stage_channel
from voxray.stage_clients.asr import SAMPLE_RATE, AsrStream
from voxray.v1 import asr_pb2


@dataclass
class Partial:
    at_s: float  # arrival, seconds after the utterance's first sample was captured
    audio_s: float  # how much of the utterance it covers
    text: str

    @property
    def lag_s(self) -> float:
        """How long after that audio was spoken the partial arrived."""
        return self.at_s - self.audio_s


@dataclass
class UtteranceResult:
    final: str
    eou_to_final_ms: float
    partials: list[Partial] = field(default_factory=list)
    audio_s: float = 0.0
    final_decode_ms: float = 0.0
    language: str = ""  # the final's (ISO 639-1)


def last_voiced_sample(pcm: np.ndarray, frame: int = 320, dbfs: float = -40.0) -> int:
    """End of the last 20 ms frame louder than `dbfs` (a client-side stand-in for a VAD)."""
    x = pcm.astype(np.float32) / 32768.0
    n = len(x) // frame
    if n == 0:
        return len(x)
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
    loud = np.nonzero(rms > 10 ** (dbfs / 20))[0]
    return int((loud[-1] + 1) * frame) if len(loud) else 0


async def speak_utterance(
    stream: AsrStream,
    events: asyncio.Queue[asr_pb2.AsrEvent | BaseException],
    pcm: np.ndarray,
    *,
    chunk_ms: int = 100,
    realtime: bool = True,
    on_partial: object = None,
) -> UtteranceResult:
    """Send one utterance, then end it and await its final.

    With `realtime`, a chunk is sent once its last sample would have left a
    microphone, so timings match a live caller's.
    """
    step = SAMPLE_RATE * chunk_ms // 1000
    t0 = time.monotonic()
    offset = stream.samples_sent
    partials: list[Partial] = []
    for i in range(0, len(pcm), step):
        chunk = pcm[i : i + step]
        if realtime:
            await asyncio.sleep(max(0.0, t0 + (i + len(chunk)) / SAMPLE_RATE - time.monotonic()))
        stream.send_audio(chunk.tobytes())
        while not events.empty():
            _collect(await next_event(events), partials, t0, offset, on_partial)
    eou_seq = stream.end_utterance()
    while True:
        ev = await next_event(events)
        if ev.WhichOneof("kind") == "final":
            latency = (time.monotonic() - stream.sent_at[eou_seq]) * 1000
            return UtteranceResult(ev.final.text, latency, partials, len(pcm) / SAMPLE_RATE,
                                   ev.decode_ms, ev.final.language)
        _collect(ev, partials, t0, offset, on_partial)


def _collect(ev: asr_pb2.AsrEvent, partials: list[Partial], t0: float, offset: int,
             on_partial: object) -> None:
    if ev.WhichOneof("kind") == "partial":
        p = Partial(time.monotonic() - t0, (ev.partial.audio_end_sample - offset) / SAMPLE_RATE,
                    ev.partial.text)
        partials.append(p)
        if callable(on_partial):
            on_partial(p)


class StreamEnded(Exception):
    """The stream closed (cleanly or with a gRPC error) while a reply was awaited."""


async def next_event(events: asyncio.Queue[asr_pb2.AsrEvent | BaseException],
                     wait_s: float | None = None) -> asr_pb2.AsrEvent:
    item = await asyncio.wait_for(events.get(), wait_s)
    if isinstance(item, BaseException):
        events.put_nowait(item)  # later readers see the end too
        raise item
    return item


async def pump(stream: AsrStream, events: asyncio.Queue[asr_pb2.AsrEvent | BaseException]
               ) -> None:
    """Move the stream's events into a queue; its end (or error) goes in last."""
    try:
        async for ev in stream:
            await events.put(ev)
    except grpc.aio.AioRpcError as e:
        await events.put(e)
    else:
        await events.put(StreamEnded("the ASR stream ended"))


async def stream_file(path: str, target: str, *, chunk_ms: int, realtime: bool,
                      tail_s: float) -> int:
    try:
        pcm = read_audio(path, SAMPLE_RATE)
    except (OSError, ValueError, av.error.FFmpegError) as e:
        print(f"voxray asr: cannot read audio from {path}: {e}", file=sys.stderr)
        return 2
    end = min(len(pcm), last_voiced_sample(pcm) + int(tail_s * SAMPLE_RATE))
    pcm = pcm[:end]
    async with stage_channel(target) as channel:
        async with AsrStream(channel, f"cli-{uuid.uuid4().hex[:8]}") as stream:
            events: asyncio.Queue[asr_pb2.AsrEvent | BaseException] = asyncio.Queue()
            reader = asyncio.create_task(pump(stream, events))
            try:
                ready = await next_event(events, 60)
                print(f"connected: {ready.ready.model} on {ready.ready.replica_id}")

                def show(p: Partial) -> None:
                    print(f"  partial @{p.at_s:5.2f}s (audio to {p.audio_s:5.2f}s): {p.text}")

                res = await speak_utterance(stream, events, pcm, chunk_ms=chunk_ms,
                                            realtime=realtime, on_partial=show)
                print(f"final: {res.final}")
                print(f"end of utterance -> final: {res.eou_to_final_ms:.0f} ms "
                      f"(decode {res.final_decode_ms:.0f} ms); audio {res.audio_s:.2f} s")
                stream.close_send()
                await reader
            except (grpc.aio.AioRpcError, StreamEnded) as e:
                if isinstance(e, grpc.aio.AioRpcError):
                    print(f"voxray asr: {e.code().name}: {e.details()}", file=sys.stderr)
                else:
                    print(f"voxray asr: {e}", file=sys.stderr)
                return 1
            finally:
                reader.cancel()
    return 0
