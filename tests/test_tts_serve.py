"""The TTS app on a local Ray cluster through Serve's gRPC proxy: real Kokoro speech,
checked by transcribing it back with the ASR app."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
from ray import serve

from voxray.audio import resample
from voxray.clients.asr_cli import next_event, pump, speak_utterance
from voxray.stage_auth import stage_channel
from voxray.stage_clients.asr import AsrStream
from voxray.v1 import asr_pb2, common_pb2, tts_pb2, tts_pb2_grpc
from voxray.wer import wer

pytestmark = pytest.mark.slow
APP = (("application", "tts"),)


async def transcribe(target: str, pcm24: np.ndarray) -> str:
    pcm = resample(pcm24, 24000, 16000)
    pcm = np.concatenate([np.zeros(4800, np.int16), pcm, np.zeros(8000, np.int16)])
    async with stage_channel(target) as channel:
        async with AsrStream(channel, "tts-check") as stream:
            events: asyncio.Queue[asr_pb2.AsrEvent | BaseException] = asyncio.Queue()
            reader = asyncio.create_task(pump(stream, events))
            await next_event(events, 60)
            res = await speak_utterance(stream, events, pcm, chunk_ms=500, realtime=False)
            reader.cancel()
    return res.final


def collect(events: list[tts_pb2.TtsEvent]) -> tuple[np.ndarray, list[tts_pb2.TtsAudio]]:
    audio = [e.audio for e in events if e.WhichOneof("kind") == "audio"]
    pcm = np.frombuffer(b"".join(a.audio.pcm16 for a in audio), "<i2")
    return pcm, audio


TEXT = ("Sure! The museum opens at 9:30 and a ticket costs $12. "
        "Bring a **warm** coat 🧥, because it is cold outside.")


async def test_synthesized_speech_reads_back(serve_grpc: str) -> None:
    async with stage_channel(serve_grpc) as ch:
        stub = tts_pb2_grpc.TtsStub(ch)
        req = tts_pb2.TtsRequest(meta=common_pb2.Meta(session_id="t1", seq=7), text=TEXT)
        events = [e async for e in stub.Synthesize(req, metadata=APP)]
    pcm, audio = collect(events)
    assert events[-1].WhichOneof("kind") == "done"
    done = events[-1].done
    assert done.total_samples == len(pcm) and done.characters_spoken == len(TEXT)
    assert all(a.audio.sample_rate == 24000 for a in audio)
    assert len(pcm) / 24000 > 4.0 and np.abs(pcm).max() > 3000  # seconds of loud audio
    heard = await transcribe(serve_grpc, pcm)
    expected = ("Sure! The museum opens at nine thirty and a ticket costs twelve dollars. "
                "Bring a warm coat, because it is cold outside.")
    assert wer(expected, heard) <= 0.25, heard
    # spans: in order, contiguous, covering the text; each span's audio ends with span_complete
    spans = [(a.span.start, a.span.end) for a in audio]
    distinct = list(dict.fromkeys(spans))
    assert distinct[0][0] == 0 and distinct[-1][1] == len(TEXT)
    assert all(a[1] == b[0] for a, b in zip(distinct, distinct[1:], strict=False))
    assert TEXT[distinct[0][0] : distinct[0][1]] == "Sure! "
    for span in distinct:
        flags = [a.span_complete for a in audio if (a.span.start, a.span.end) == span]
        assert flags[-1] and not any(flags[:-1])
    starts = [a.audio.start_sample for a in audio]
    assert starts == sorted(starts) and starts[0] == 0
    assert all(e.meta.session_id == "t1" and e.meta.reply_to_seq == 7 for e in events)


async def test_stream_of_deltas_speaks_before_the_text_is_complete(serve_grpc: str) -> None:
    words = "Okay, here is the plan for tomorrow. We leave at eight and drive to the lake.".split()
    queue: asyncio.Queue[tts_pb2.TtsStreamRequest | None] = asyncio.Queue()
    queue.put_nowait(tts_pb2.TtsStreamRequest(start=tts_pb2.VoiceOptions(voice="am_michael")))
    first_audio = asyncio.Event()
    held_back = 4  # the text's last words are sent only once audio has come

    async def requests():  # type: ignore[no-untyped-def]
        while (r := await queue.get()) is not None:
            yield r

    async def feed() -> None:
        for i, w in enumerate(words):
            if i == len(words) - held_back:
                # a TTS that waited for the whole text would never speak: this times out
                await asyncio.wait_for(first_audio.wait(), 120)
            queue.put_nowait(tts_pb2.TtsStreamRequest(meta=common_pb2.Meta(seq=i + 1),
                                                      text=w + " "))
            await asyncio.sleep(0.2)  # an LLM at 5 words/s (a busy replica's pace in a call)
        queue.put_nowait(None)

    feeder: asyncio.Task[None] | None = None
    events: list[tts_pb2.TtsEvent] = []
    async with stage_channel(serve_grpc) as ch:
        async for ev in tts_pb2_grpc.TtsStub(ch).SynthesizeStream(requests(), metadata=APP):
            if ev.WhichOneof("kind") == "ready":
                assert not events and ev.ready.voice == "am_michael"
                feeder = asyncio.create_task(feed())
            elif ev.WhichOneof("kind") == "audio":
                first_audio.set()
            events.append(ev)
    assert feeder is not None
    await feeder  # (raises TimeoutError if no audio came before the text was complete)
    first = next(e for e in events if e.WhichOneof("kind") == "audio")
    assert first.meta.reply_to_seq == 1  # "Okay," completed the first unit
    pcm, _ = collect(events)
    heard = await transcribe(serve_grpc, pcm)
    assert wer(" ".join(words), heard) <= 0.25, heard


@pytest.mark.parametrize(("request_", "code", "text"), [
    (tts_pb2.TtsRequest(text="   "), grpc.StatusCode.INVALID_ARGUMENT, "text is empty"),
    (tts_pb2.TtsRequest(text="hi", voice=tts_pb2.VoiceOptions(voice="zz_nobody")),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown voice 'zz_nobody'"),
    (tts_pb2.TtsRequest(text="hi", voice=tts_pb2.VoiceOptions(speed=9)),
     grpc.StatusCode.INVALID_ARGUMENT, "outside 0.5-2.0"),
    (tts_pb2.TtsRequest(text="🙂✨ ** --"), grpc.StatusCode.INVALID_ARGUMENT, "nothing speakable"),
    (tts_pb2.TtsRequest(text="word " * 20_000), grpc.StatusCode.INVALID_ARGUMENT,
     "max_text_chars"),
])
async def test_bad_requests_get_a_clear_status(serve_grpc: str, request_: tts_pb2.TtsRequest,
                                               code: grpc.StatusCode, text: str) -> None:
    async with stage_channel(serve_grpc) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in tts_pb2_grpc.TtsStub(ch).Synthesize(request_, metadata=APP):
                pass
    assert err.value.code() == code and text in (err.value.details() or "")


async def test_cancel_stops_synthesis_and_frees_the_replica(serve_grpc: str) -> None:
    handle = serve.get_deployment_handle("TtsDeployment", app_name="tts")
    long_text = " ".join(f"This is sentence number {i} of a very long answer." for i in range(40))
    async with stage_channel(serve_grpc) as ch:
        stub = tts_pb2_grpc.TtsStub(ch)
        call = stub.Synthesize(tts_pb2.TtsRequest(text=long_text), metadata=APP)
        async for ev in call:
            if ev.WhichOneof("kind") == "audio":
                break
        at_cancel = await handle.units_synthesized.remote()
        call.cancel()
        seen = []
        for _ in range(12):  # 40 sentences would take ~40 s; watch for 3 s
            await asyncio.sleep(0.25)
            seen.append(await handle.units_synthesized.remote() - at_cancel)
        assert seen[-1] <= 1 and seen[-1] == seen[len(seen) // 2], seen
        t0 = time.monotonic()
        events = [e async for e in stub.Synthesize(tts_pb2.TtsRequest(text="Hello again."),
                                                   metadata=APP)]
    # (the 40 sentences would hold it for a minute or more)
    assert time.monotonic() - t0 < 15.0 and events[-1].WhichOneof("kind") == "done"


@pytest.mark.parametrize(("requests_", "text"), [
    ([tts_pb2.TtsStreamRequest(text="hello")], "must be `start`"),
    ([tts_pb2.TtsStreamRequest(start=tts_pb2.VoiceOptions()),
      tts_pb2.TtsStreamRequest(start=tts_pb2.VoiceOptions())], "unexpected `start`"),
    ([tts_pb2.TtsStreamRequest(start=tts_pb2.VoiceOptions(voice="af_heart", language="fr-fr"))],
     "does not fit English voice"),
])
async def test_bad_stream_requests_get_a_clear_status(
        serve_grpc: str, requests_: list[tts_pb2.TtsStreamRequest], text: str) -> None:
    async with stage_channel(serve_grpc) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in tts_pb2_grpc.TtsStub(ch).SynthesizeStream(iter(requests_),
                                                                       metadata=APP):
                pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert text in (err.value.details() or ""), err.value.details()


def test_cli_writes_a_wav_that_reads_back(serve_grpc: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys
    import wave

    out = tmp_path / "reply.wav"
    run = subprocess.run([sys.executable, "-m", "voxray.cli", "tts", "It costs $5, thank you.",
                          "--voice", "bf_emma", "--out", str(out), "--target", serve_grpc],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    with wave.open(str(out)) as w:
        assert w.getframerate() == 24000
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    heard = asyncio.run(transcribe(serve_grpc, pcm))
    assert wer("It costs five dollars, thank you.", heard) <= 0.25, heard
    bad = subprocess.run([sys.executable, "-m", "voxray.cli", "tts", "hi", "--voice", "nope",
                          "--target", serve_grpc], capture_output=True, text=True, timeout=60,
                         check=False)
    assert bad.returncode == 1 and "unknown voice 'nope'" in bad.stderr


async def test_a_long_text_does_not_starve_a_new_stream(serve_grpc: str) -> None:
    long_text = " ".join(f"Here is sentence number {i} of a long story." for i in range(12))
    async with stage_channel(serve_grpc) as ch:
        stub = tts_pb2_grpc.TtsStub(ch)
        long_call = stub.Synthesize(tts_pb2.TtsRequest(text=long_text), metadata=APP)
        long_done = asyncio.Event()

        async def drain() -> None:
            async for _ in long_call:
                pass
            long_done.set()

        drainer = asyncio.create_task(drain())
        await asyncio.sleep(1.0)  # the long text is being spoken
        t0 = time.monotonic()
        async for ev in stub.Synthesize(tts_pb2.TtsRequest(text="Hello."), metadata=APP):
            if ev.WhichOneof("kind") == "audio":
                waited = time.monotonic() - t0
                break
        # it is spoken while the story still is (a queue behind the story would finish the
        # story first), after at most a unit of it: far less than the story's ~12 units
        assert not long_done.is_set() and waited < 15.0, waited
        long_call.cancel()
        await asyncio.gather(drainer, return_exceptions=True)
