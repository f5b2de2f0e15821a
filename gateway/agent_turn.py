"""One agent reply: the LLM streams text into a TTS stream, whose audio goes to the track.

Cancelling the task cancels both gRPC calls (the LLM replica aborts the
engine request, the TTS replica stops synthesis).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import numpy as np

from gateway.agent_track import AgentAudioTrack
from gateway.llm_client import generate, llm_request
from voxray.v1 import common_pb2, tts_pb2, tts_pb2_grpc


@dataclass
class ReplyTimes:
    started: float = 0.0  # the user's final transcript is in; the LLM call starts
    llm_first_token: float = 0.0
    tts_first_audio: float = 0.0  # first audible chunk back from TTS
    llm_done: float = 0.0


@dataclass
class Reply:
    turn: int
    text: str = ""  # everything the LLM said (sent to TTS)
    finished: bool = False  # all audio is queued on the track
    times: ReplyTimes | None = None


async def run_reply(
    channel: grpc.aio.Channel, track: AgentAudioTrack, conversation_id: str,
    history: list[tuple[str, str]], reply: Reply, voice: str,
    on_text: Callable[[str], None],
) -> None:
    times = reply.times = ReplyTimes(started=time.monotonic())
    tts_in: asyncio.Queue[tts_pb2.TtsStreamRequest | None] = asyncio.Queue()
    seq = 0

    def tts_send(**kind: object) -> None:
        nonlocal seq
        tts_in.put_nowait(tts_pb2.TtsStreamRequest(
            meta=common_pb2.Meta(session_id=conversation_id, seq=seq,
                                 sent_unix_ns=time.time_ns()), **kind))  # type: ignore[arg-type]
        seq += 1

    async def requests() -> AsyncIterator[tts_pb2.TtsStreamRequest]:
        while (req := await tts_in.get()) is not None:
            yield req

    # Open TTS first, so it is ready when the first tokens arrive.
    tts_send(start=tts_pb2.VoiceOptions(voice=voice))
    tts = tts_pb2_grpc.TtsStub(channel).SynthesizeStream(
        requests(), metadata=(("application", "tts"),))
    llm = generate(channel, llm_request(conversation_id, history, seq=reply.turn))

    async def feed_tts() -> None:
        async for event in llm:
            if event.WhichOneof("kind") == "delta":
                times.llm_first_token = times.llm_first_token or time.monotonic()
                reply.text += event.delta.text
                tts_send(text=event.delta.text)
                on_text(event.delta.text)
        times.llm_done = time.monotonic()
        tts_in.put_nowait(None)  # half-close: TTS speaks the rest, then ends

    feeder = asyncio.create_task(feed_tts())
    try:
        async for event in tts:
            if event.WhichOneof("kind") != "audio":
                continue
            pcm = np.frombuffer(event.audio.audio.pcm16, "<i2")
            if not times.tts_first_audio and np.abs(pcm).max(initial=0) > 328:
                times.tts_first_audio = time.monotonic()
            track.push(reply.turn, pcm, event.audio.span.start, event.audio.span.end)
        await feeder
        reply.finished = True
    finally:
        feeder.cancel()
        llm.cancel()
        tts.cancel()
