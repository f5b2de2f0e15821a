"""`voxray asr`: speak an audio file into the ASR app and show what comes back."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field

import grpc
import numpy as np

from gateway.asr_client import SAMPLE_RATE, AsrStream
from voxray.audio import read_audio
from voxray.v1 import asr_pb2


@dataclass
class UtteranceResult:
    final: str
    eou_to_final_ms: float
    partials: list[tuple[float, float, str]] = field(default_factory=list)  # (at_s, audio_s, text)
    audio_s: float = 0.0
    final_decode_ms: float = 0.0


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
    events: asyncio.Queue[asr_pb2.AsrEvent],
    pcm: np.ndarray,
    *,
    chunk_ms: int = 100,
    realtime: bool = True,
    on_partial: object = None,
) -> UtteranceResult:
    """Send one utterance (paced like a microphone if realtime), then end it and await its final."""
    step = SAMPLE_RATE * chunk_ms // 1000
    t0 = time.monotonic()
    partials: list[tuple[float, float, str]] = []
    for i in range(0, len(pcm), step):
        if realtime:
            await asyncio.sleep(max(0.0, t0 + i / SAMPLE_RATE - time.monotonic()))
        stream.send_audio(pcm[i : i + step].tobytes())
        while not events.empty():
            _collect(events.get_nowait(), partials, t0, on_partial)
    if realtime:  # the last chunk's audio is "spoken" only once its duration has passed
        await asyncio.sleep(max(0.0, t0 + len(pcm) / SAMPLE_RATE - time.monotonic()))
    eou_seq = stream.end_utterance()
    while True:
        ev = await events.get()
        if ev.WhichOneof("kind") == "final":
            latency = (time.monotonic() - stream.sent_at[eou_seq]) * 1000
            return UtteranceResult(ev.final.text, latency, partials, len(pcm) / SAMPLE_RATE,
                                   ev.decode_ms)
        _collect(ev, partials, t0, on_partial)


def _collect(ev: asr_pb2.AsrEvent, partials: list[tuple[float, float, str]], t0: float,
             on_partial: object) -> None:
    if ev.WhichOneof("kind") == "partial":
        at = time.monotonic() - t0
        partials.append((at, ev.partial.audio_end_sample / SAMPLE_RATE, ev.partial.text))
        if callable(on_partial):
            on_partial(at, ev.partial)


async def pump(stream: AsrStream, events: asyncio.Queue[asr_pb2.AsrEvent]) -> None:
    async for ev in stream:
        await events.put(ev)


async def stream_file(path: str, target: str, *, chunk_ms: int, realtime: bool,
                      tail_s: float) -> int:
    pcm = read_audio(path, SAMPLE_RATE)
    end = min(len(pcm), last_voiced_sample(pcm) + int(tail_s * SAMPLE_RATE))
    pcm = pcm[:end]
    async with grpc.aio.insecure_channel(target) as channel:
        async with AsrStream(channel, f"cli-{uuid.uuid4().hex[:8]}") as stream:
            events: asyncio.Queue[asr_pb2.AsrEvent] = asyncio.Queue()
            reader = asyncio.create_task(pump(stream, events))
            try:
                ready = await asyncio.wait_for(events.get(), 30)
                print(f"connected: {ready.ready.model} on {ready.ready.replica_id}")

                def show(at: float, p: asr_pb2.Transcript) -> None:
                    print(f"  partial @{at:5.2f}s (audio {p.audio_end_sample / SAMPLE_RATE:5.2f}s)"
                          f": {p.text}")

                res = await speak_utterance(stream, events, pcm, chunk_ms=chunk_ms,
                                            realtime=realtime, on_partial=show)
                print(f"final: {res.final}")
                print(f"end of utterance -> final: {res.eou_to_final_ms:.0f} ms "
                      f"(decode {res.final_decode_ms:.0f} ms); audio {res.audio_s:.2f} s")
                stream.close_send()
                await reader
            except grpc.aio.AioRpcError as e:
                print(f"voxray asr: {e.code().name}: {e.details()}", file=sys.stderr)
                return 1
            finally:
                reader.cancel()
    return 0
