"""The ASR app on a local Ray cluster, reached through Serve's gRPC proxy with real speech."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import numpy as np
import pytest

from tests import speech
from voxray.clients.asr_cli import (
    UtteranceResult,
    last_voiced_sample,
    next_event,
    pump,
    speak_utterance,
)
from voxray.stage_auth import stage_channel
from voxray.stage_clients.asr import AsrStream
from voxray.v1 import asr_pb2, common_pb2
from voxray.wer import wer

pytestmark = pytest.mark.slow


@asynccontextmanager
async def session(target: str, session_id: str) -> AsyncIterator[tuple[AsrStream, asyncio.Queue]]:
    async with stage_channel(target) as channel:
        async with AsrStream(channel, session_id) as stream:
            events: asyncio.Queue[asr_pb2.AsrEvent | BaseException] = asyncio.Queue()
            reader = asyncio.create_task(pump(stream, events))
            ready = await next_event(events, 60)
            assert ready.WhichOneof("kind") == "ready" and ready.meta.session_id == session_id
            try:
                yield stream, events
            finally:
                reader.cancel()


def utterance(key: str, tail_s: float = 0.3) -> np.ndarray:
    pcm = speech.load(key)
    return pcm[: last_voiced_sample(pcm) + int(tail_s * 16000)]


async def say(stream: AsrStream, events: asyncio.Queue, key: str, speed: float = 1.0
              ) -> UtteranceResult:
    """Send at `speed` x real time in 100 ms chunks (speed 1: like a microphone)."""
    pcm = utterance(key)
    if speed == 1.0:
        return await speak_utterance(stream, events, pcm, chunk_ms=100)
    step = 1600
    for i in range(0, len(pcm), step):
        stream.send_audio(pcm[i : i + step].tobytes())
        await asyncio.sleep(0.1 / speed)
    return await speak_utterance(stream, events, pcm[:0], realtime=False)


async def test_transcribes_several_utterances_on_one_stream(serve_grpc: str) -> None:
    keys = ["s01", "s06", "s12", "s25"]
    async with session(serve_grpc, "multi") as (stream, events):
        results = [await say(stream, events, k, speed=3.0) for k in keys]
    hyps = [r.final for r in results]
    total = np.mean([wer(speech.references()[k], h) for k, h in zip(keys, hyps, strict=True)])
    assert total <= 0.2, hyps


async def test_partials_arrive_while_the_user_speaks(serve_grpc: str) -> None:
    async with session(serve_grpc, "partials") as (stream, events):
        res = await say(stream, events, "s25")
    assert wer(speech.references()["s25"], res.final) <= 0.25, res.final
    during = [p for p in res.partials if p.at_s < res.audio_s and p.text]
    assert len(during) >= 4, res.partials
    # each partial covers audio that ends shortly before it arrived
    assert max(p.lag_s for p in during) < 1.5, res.partials
    assert "concert" in during[len(during) // 2].text.lower()


async def test_final_answers_the_end_of_utterance_request(serve_grpc: str) -> None:
    async with session(serve_grpc, "seq") as (stream, events):
        pcm = utterance("s19")
        for i in range(0, len(pcm), 8000):
            stream.send_audio(pcm[i : i + 8000].tobytes())
        eou = stream.end_utterance()
        while (ev := await next_event(events, 30)).WhichOneof("kind") != "final":
            pass
    assert ev.meta.reply_to_seq == eou and ev.meta.session_id == "seq"
    assert ev.utterance_id == 0 and ev.final.words
    assert [w.start_s for w in ev.final.words] == sorted(w.start_s for w in ev.final.words)
    assert wer(speech.references()["s19"], ev.final.text) <= 0.2


async def test_concurrent_sessions_do_not_mix(serve_grpc: str) -> None:
    async def run(sid: str, key: str) -> str:
        async with session(serve_grpc, sid) as (stream, events):
            return (await say(stream, events, key, speed=2.0)).final

    a, b = await asyncio.gather(run("a", "s02"), run("b", "s21"))
    assert wer(speech.references()["s02"], a) <= 0.3, a
    assert wer(speech.references()["s21"], b) <= 0.3, b
    assert "football" not in a.lower() and "table" not in b.lower()


async def test_half_close_finalizes_open_speech(serve_grpc: str) -> None:
    async with session(serve_grpc, "halfclose") as (stream, events):
        pcm = utterance("s22")
        for i in range(0, len(pcm), 8000):
            stream.send_audio(pcm[i : i + 8000].tobytes())
        stream.close_send()
        finals = []
        while True:
            ev = await next_event(events, 30)
            if ev.WhichOneof("kind") == "final":
                finals.append(ev.final.text)
                break
    assert wer(speech.references()["s22"], finals[0]) <= 0.3


def meta(seq: int) -> common_pb2.Meta:
    return common_pb2.Meta(session_id="bad", seq=seq)


START = asr_pb2.AsrRequest(meta=meta(0), start=asr_pb2.AsrStart(sample_rate=16000))
SPEECH = utterance("s01").tobytes()
BAD_INPUTS = {
    "no start": ([asr_pb2.AsrRequest(meta=meta(0), audio=common_pb2.AudioChunk(pcm16=b"\0\0"))],
                 grpc.StatusCode.INVALID_ARGUMENT, "must be `start`"),
    "wrong rate": ([asr_pb2.AsrRequest(meta=meta(0), start=asr_pb2.AsrStart(sample_rate=48000))],
                   grpc.StatusCode.INVALID_ARGUMENT, "send 16000 Hz"),
    "odd bytes": ([START, asr_pb2.AsrRequest(meta=meta(1), audio=common_pb2.AudioChunk(
        pcm16=b"\0\0\0"))], grpc.StatusCode.INVALID_ARGUMENT, "even count"),
    "chunk rate": ([START, asr_pb2.AsrRequest(meta=meta(1), audio=common_pb2.AudioChunk(
        pcm16=b"\0\0", sample_rate=8000))], grpc.StatusCode.INVALID_ARGUMENT, "8000"),
    "oversized chunk": ([START, asr_pb2.AsrRequest(meta=meta(1), audio=common_pb2.AudioChunk(
        pcm16=b"\0\0" * 32000))], grpc.StatusCode.INVALID_ARGUMENT, "max_chunk_ms"),
    "too long": ([START] + [asr_pb2.AsrRequest(meta=meta(i), audio=common_pb2.AudioChunk(
        pcm16=b"\1\0" * 16000)) for i in range(1, 22)],
        grpc.StatusCode.OUT_OF_RANGE, "max_utterance_s=20"),
    "wrong utterance id": ([START, asr_pb2.AsrRequest(meta=meta(1), end_of_utterance=(
        asr_pb2.EndOfUtterance(utterance_id=4)))], grpc.StatusCode.INVALID_ARGUMENT,
        "open one is 0"),
    "empty request": ([START, asr_pb2.AsrRequest(meta=meta(1))],
                      grpc.StatusCode.INVALID_ARGUMENT, "no audio"),
    "second start": ([START, START], grpc.StatusCode.INVALID_ARGUMENT, "only be the first"),
}


async def test_bad_input_ends_only_that_stream(serve_grpc: str) -> None:
    async with session(serve_grpc, "bystander") as (good, good_events):
        half = len(SPEECH) // 2 // 16000 * 16000  # bytes: whole 0.5 s chunks
        for i in range(0, half, 16000):
            good.send_audio(SPEECH[i : i + 16000])
        for name, (requests, code, text) in BAD_INPUTS.items():
            async with stage_channel(serve_grpc) as channel:
                stream = AsrStream(channel, "bad")
                call = stream._stub.Transcribe(iter(requests), metadata=(("application", "asr"),))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in call:
                        pass
                assert err.value.code() == code, (name, err.value.details())
                assert text in (err.value.details() or ""), (name, err.value.details())
        for i in range(half, len(SPEECH), 16000):
            good.send_audio(SPEECH[i : i + 16000])
        good.end_utterance()
        while (ev := await next_event(good_events, 30)).WhichOneof("kind") != "final":
            pass
    assert wer(speech.references()["s01"], ev.final.text) <= 0.3


async def test_vanished_client_leaves_the_replica_serving(serve_grpc: str) -> None:
    for _ in range(3):
        async with session(serve_grpc, "vanish") as (stream, _events):
            for i in range(0, len(SPEECH), 16000):
                stream.send_audio(SPEECH[i : i + 16000])
            await asyncio.sleep(0.2)  # mid-decode; leaving the block cancels the call
    async with session(serve_grpc, "after") as (stream, events):
        res = await say(stream, events, "s05", speed=3.0)
    assert wer(speech.references()["s05"], res.final) <= 0.3


def test_cli_streams_a_file_and_prints_the_final(serve_grpc: str, tmp_path) -> None:
    # a 44.1 kHz stereo file: the client resamples with PyAV
    import av

    src = speech.load("s18")
    path = tmp_path / "stereo.wav"
    with av.open(str(path), "w") as out:
        st = out.add_stream("pcm_s16le", rate=44100, layout="stereo")
        interleaved = np.repeat(src[:, None], 2, axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
        frame.sample_rate = 16000
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=44100)
        for f in resampler.resample(frame) + resampler.resample(None):
            for packet in st.encode(f):
                out.mux(packet)
        for packet in st.encode(None):
            out.mux(packet)
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "voxray.cli", "asr", "--wav", str(path),
                          "--target", serve_grpc, "--fast"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    final = next(line for line in run.stdout.splitlines() if line.startswith("final: "))
    assert wer(speech.references()["s18"], final[len("final: "):]) <= 0.3, run.stdout
    assert "end of utterance -> final:" in run.stdout and time.monotonic() - t0 < 120


def _metric_lines(url: str, name: str) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return [line for line in r.read().decode().splitlines() if line.startswith(name)]


async def test_replica_exports_prometheus_metrics(serve_app, serve_grpc: str) -> None:
    # makes its own final and its own refused stream: it passes alone and in any order
    async with session(serve_grpc, "metrics") as (stream, events):
        await say(stream, events, "s11", speed=3.0)
    requests, code, _ = BAD_INPUTS["no start"]
    async with stage_channel(serve_grpc) as channel:
        call = AsrStream(channel, "metrics-bad")._stub.Transcribe(
            iter(requests), metadata=(("application", "asr"),))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() == code
    deadline = time.monotonic() + 60
    while True:  # Ray's agent exports on an interval
        count = _metric_lines(serve_app.metrics, "ray_voxray_asr_final_latency_ms_count")
        ended = _metric_lines(serve_app.metrics, "ray_voxray_asr_streams_total")
        if count and ended and any('code="INVALID_ARGUMENT"' in line for line in ended):
            break
        assert time.monotonic() < deadline, (count, ended)
        await asyncio.sleep(2)
    assert float(count[0].rsplit(" ", 1)[1]) >= 1


async def test_each_turn_in_the_language_it_was_spoken(serve_grpc: str) -> None:
    """The CPU profile's `language: auto`: one stream, English then Spanish then French."""
    async with session(serve_grpc, "languages") as (stream, events):
        english = await say(stream, events, "s05", speed=3.0)
        assert english.language == "en" and wer(speech.references()["s05"], english.final) <= 0.3
        for key in ("es1", "fr1"):
            language, text = speech.languages()[key]
            pcm = speech.load_language(key)
            res = await speak_utterance(stream, events, pcm, realtime=False)
            assert res.language == language, (key, res)
            assert wer(speech.unaccented(text), speech.unaccented(res.final)) <= 0.4, res.final
    for bad, needle in [("xx", "not one Whisper knows"), ("Spanish", "not one Whisper knows")]:
        async with stage_channel(serve_grpc) as channel:
            start = asr_pb2.AsrRequest(meta=meta(0), start=asr_pb2.AsrStart(
                sample_rate=16000, language=bad))
            call = AsrStream(channel, "bad-language")._stub.Transcribe(
                iter([start]), metadata=(("application", "asr"),))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in call:
                    pass
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert needle in (err.value.details() or ""), err.value.details()
