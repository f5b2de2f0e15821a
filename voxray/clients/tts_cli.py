"""`voxray tts`: have the TTS app speak a text, write the audio to a WAV."""

from __future__ import annotations

import sys
import time
import wave

import grpc

from voxray.stage_auth import stage_channel
from voxray.v1 import common_pb2, tts_pb2, tts_pb2_grpc


async def speak(text: str, target: str, out: str, voice: str, speed: float | None) -> int:
    opts = tts_pb2.VoiceOptions(voice=voice)
    if speed is not None:
        opts.speed = speed
    request = tts_pb2.TtsRequest(meta=common_pb2.Meta(session_id="cli"), text=text, voice=opts)
    pcm = bytearray()
    t0 = time.monotonic()
    first = None
    try:
        async with stage_channel(target) as channel:
            stub = tts_pb2_grpc.TtsStub(channel)
            async for ev in stub.Synthesize(request, metadata=(("application", "tts"),)):
                if ev.WhichOneof("kind") == "audio":
                    first = first or time.monotonic() - t0
                    pcm += ev.audio.audio.pcm16
                    span = ev.audio.span
                    if ev.audio.span_complete and span.end > span.start:  # (not a pause)
                        print(f"  {len(pcm) / 48000:6.2f}s  {text[span.start : span.end]!r}")
    except grpc.aio.AioRpcError as e:
        print(f"voxray tts: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(bytes(pcm))
    print(f"wrote {out}: {len(pcm) / 48000:.2f} s of audio; first audio after "
          f"{(first or 0) * 1000:.0f} ms")
    return 0
