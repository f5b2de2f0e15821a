"""The TTS service's unit pipeline without Ray: the real Kokoro engine, a text stream fed
as an LLM would, and the engine's runs timed to see which overlap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from deployments.errors import StageError
from deployments.tts.config import TtsArgs
from deployments.tts.service import TtsService
from voxray.v1 import tts_pb2

TEXT = "Sure, the capital of France is Paris. It is a large city on the Seine river."


@pytest.fixture(scope="module")
def services() -> dict[int, TtsService]:
    base = dict(intra_op_threads=1, synth_workers=2, first_unit_max_words=1)
    return {ahead: TtsService(TtsArgs(units_ahead=ahead, **base)) for ahead in (1, 2)}


async def deltas(text: str) -> AsyncIterator[tts_pb2.TtsStreamRequest]:
    yield tts_pb2.TtsStreamRequest(start=tts_pb2.VoiceOptions(voice="af_heart"))
    for word in text.split(" "):
        yield tts_pb2.TtsStreamRequest(text=word + " ")
        await asyncio.sleep(0.01)  # an LLM's pace


def timed_runs(service: TtsService) -> list[tuple[float, float, str]]:
    """Wrap the engine so each synthesis records (start, end, words)."""
    runs: list[tuple[float, float, str]] = []
    engine = service.engine
    original = engine.synthesize

    def synthesize(text: str, *args: object, **kw: object):  # type: ignore[no-untyped-def]
        t0 = time.monotonic()
        out = original(text, *args, **kw)  # type: ignore[arg-type]
        runs.append((t0, time.monotonic(), text))
        return out

    engine.synthesize = synthesize  # type: ignore[method-assign]
    return runs


async def speak(service: TtsService) -> tuple[list[tts_pb2.TtsEvent], list[tuple[float, float,
                                                                                  str]]]:
    runs = timed_runs(service)
    events = [e async for e in service.synthesize_stream(deltas(TEXT))]
    # recorded as each run ends, and runs made side by side can end in either order
    return events, sorted(runs)


async def test_the_next_unit_is_made_while_the_one_before_it_is(
        services: dict[int, TtsService]) -> None:
    events, runs = await speak(services[2])
    audio = [e.audio for e in events if e.WhichOneof("kind") == "audio"]
    # sent in order, covering the text, each chunk after the one before it
    spans = [(a.span.start, a.span.end) for a in audio]
    assert spans == sorted(spans) and spans[0][0] == 0 and spans[-1][1] == len(TEXT.strip()) + 1
    starts = [a.audio.start_sample for a in audio]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert events[-1].done.characters_spoken == spans[-1][1]
    assert len(runs) >= 4 and runs[0][2] == "Sure,"
    overlapping = sum(1 for (s1, e1, _), (s2, _, _) in zip(runs, runs[1:], strict=False)
                      if s2 < e1)
    assert overlapping >= 1, runs  # two units were being made at once

    _, one_at_a_time = await speak(services[1])
    assert not [1 for (_, e1, _), (s2, _, _) in zip(one_at_a_time, one_at_a_time[1:],
                                                    strict=False) if s2 < e1 - 0.005]


async def test_a_cancelled_stream_stops_the_units_made_ahead(
        services: dict[int, TtsService]) -> None:
    service = services[2]
    stream = service.synthesize_stream(deltas(TEXT))
    async for event in stream:
        if event.WhichOneof("kind") == "audio":
            break  # the caller hangs up after the first audio
    await stream.aclose()  # type: ignore[attr-defined]
    before = service.units_synthesized
    await asyncio.sleep(1.5)
    assert service.units_synthesized - before <= 1  # at most the unit already under way


async def test_a_bad_request_mid_stream_ends_it_with_its_status(
        services: dict[int, TtsService]) -> None:
    """A request the stream refuses after units are under way ends the stream with that
    status (the units made ahead are dropped), it does not leave the stream waiting."""
    async def bad_after_words() -> AsyncIterator[tts_pb2.TtsStreamRequest]:
        async for request in deltas("Sure, the capital of France is Paris."):
            yield request
        yield tts_pb2.TtsStreamRequest(start=tts_pb2.VoiceOptions(voice="af_heart"))

    with pytest.raises(StageError, match="unexpected `start`"):
        await asyncio.wait_for(
            asyncio.ensure_future(_drain(services[2].synthesize_stream(bad_after_words()))), 30)


async def _drain(events: AsyncIterator[tts_pb2.TtsEvent]) -> None:
    async for _ in events:
        pass
