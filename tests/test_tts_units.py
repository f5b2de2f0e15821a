"""The TTS service's unit pipeline without Ray: the real Kokoro engine, a text stream fed
as an LLM would, and the engine's runs timed to see which overlap."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator

import numpy as np
import psutil
import pytest

from deployments.errors import StageError
from deployments.tts.config import TtsArgs
from deployments.tts.engine import KokoroEngine
from deployments.tts.service import TtsService
from deployments.tts.unit_cache import UnitCache, UnitKey
from voxray.v1 import tts_pb2

TEXT = "Sure, the capital of France is Paris. It is a large city on the Seine river."


@pytest.fixture(scope="module")
def services() -> dict[int, TtsService]:
    # no unit cache: these tests time the runs each stream makes
    base = dict(intra_op_threads=1, synth_workers=2, first_unit_max_words=1, unit_cache_mb=0)
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


async def test_a_unit_that_ends_a_sentence_or_clause_is_followed_by_its_pause(
        services: dict[int, TtsService]) -> None:
    """Each unit is trimmed, so the pause Kokoro makes at a mark is sent as silence that
    speaks no characters, between units only: none after the last unit."""
    text = "Sure, it is Paris. It is large."
    events = [e async for e in services[2].synthesize_stream(deltas(text))]
    audio = [e.audio for e in events if e.WhichOneof("kind") == "audio"]
    pauses = [(a.span.start, len(a.audio.pcm16) // 2) for a in audio
              if a.span.start == a.span.end]
    assert pauses == [(len("Sure, "), 2400), (len("Sure, it is Paris. "), 6000)]
    assert all(not any(a.audio.pcm16) for a in audio if a.span.start == a.span.end)
    assert audio[-1].span.end == len(text) + 1 and audio[-1].span.start < audio[-1].span.end
    starts = [a.audio.start_sample for a in audio]  # the pauses take their place in time
    assert all(b.audio.start_sample - a.audio.start_sample == len(a.audio.pcm16) // 2
               for a, b in zip(audio, audio[1:], strict=False))
    assert starts[0] == 0 and events[-1].done.total_samples == len(pcm_of(events)) // 2


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


def pcm_of(events: list[tts_pb2.TtsEvent]) -> bytes:
    return b"".join(e.audio.audio.pcm16 for e in events if e.WhichOneof("kind") == "audio")


async def test_a_reply_that_opens_as_an_earlier_one_did_needs_no_run_for_its_opener() -> None:
    service = TtsService(TtsArgs(intra_op_threads=1, first_unit_max_words=1))
    first, runs = await speak(service)
    assert runs[0][2] == "Sure,"
    again, runs = await speak(service)
    made = [words for _, _, words in runs]
    # the short units came from the cache; the long ones were made again
    assert "Sure," not in made and "the capital" not in made, made
    assert any(len(w.split()) > 2 for w in made), made
    assert pcm_of(again) == pcm_of(first)  # the very audio a run makes
    assert service.cache.hits >= 2


async def second_caller_mid_answer(service: TtsService) -> list[tuple[float, float, str]]:
    """Caller A's answer is under way ("Sure," and "the old" out, "lighthouse keeper walked
    along" being made, the unit after it, due ~3 s after A's first audio, waiting) when
    caller B's answer starts. The engine's runs, in order of their start."""
    runs = timed_runs(service)
    units_out = 0
    two_out = asyncio.Event()

    async def listen(text: str) -> None:
        nonlocal units_out
        async for e in service.synthesize_stream(deltas(text)):
            if e.WhichOneof("kind") == "audio" and e.audio.span_complete:
                units_out += 1
                if units_out == 2:
                    two_out.set()

    a = asyncio.create_task(listen("Sure, the old lighthouse keeper walked along the rocky "
                                   "shore every single morning before dawn."))
    await asyncio.wait_for(two_out.wait(), 60)
    await asyncio.gather(a, listen("Okay, here is one."))
    return sorted(runs)


async def test_a_listener_about_to_run_out_goes_ahead_of_one_with_audio_in_hand() -> None:
    """One synthesis worker: B's second unit, needed in a moment, is made before A's unit
    queued earlier but needed seconds later (first come, first served makes A's first)."""
    service = TtsService(TtsArgs(intra_op_threads=1, synth_workers=1, first_unit_max_words=1,
                                 unit_cache_mb=0))
    made = [w for _, _, w in await second_caller_mid_answer(service)]
    assert made.index("here is") < made.index("the rocky shore every single morning before "
                                              "dawn."), made


async def test_the_openers_are_made_while_the_replica_is_idle() -> None:
    service = TtsService(TtsArgs(intra_op_threads=1, first_unit_max_words=1,
                                 unit_cache_warm=["Hello!", "Sure,", "a b c d"]))
    hello = UnitKey("af_heart", 1.0, "en-us", "Hello!")
    deadline = time.monotonic() + 60
    while hello not in service.cache or UnitKey("af_heart", 1.0, "en-us", "Sure,") \
            not in service.cache:
        assert time.monotonic() < deadline, "the openers were not made"
        await asyncio.sleep(0.2)
    assert len(service.cache) == 2  # "a b c d" is longer than units the cache keeps
    runs = timed_runs(service)
    events = [e async for e in service.synthesize_stream(deltas("Hello! How are you?"))]
    assert pcm_of(events) and "Hello!" not in [w for _, _, w in runs]


def test_the_cache_keeps_short_units_within_its_bytes() -> None:
    cache = UnitCache(max_bytes=3 * 4000, max_words=2)
    audio = np.zeros(1000, np.float32)  # 4000 bytes
    keys = [UnitKey("af_heart", 1.0, "en-us", w) for w in ("A", "B", "C", "D")]
    for k in keys[:3]:
        cache.put(k, audio)
    assert cache.get(keys[0]) is not None  # A is now the most recent
    cache.put(keys[3], audio)  # B, the least recent, makes room
    assert keys[1] not in cache and all(k in cache for k in (keys[0], keys[2], keys[3]))
    long = UnitKey("af_heart", 1.0, "en-us", "three whole words")
    cache.put(long, audio)
    assert long not in cache and cache.get(long) is None
    hit = cache.get(keys[0])
    assert hit is not None and not hit.flags.writeable  # shared: nobody may change it
    assert UnitCache(0, 2).get(keys[0]) is None


def test_a_long_run_gives_its_memory_back_once_it_ends() -> None:
    """onnxruntime's CPU arena keeps what a run needed unless it is shrunk: a replica would
    grow at each new longest reply and never come back down."""
    long = ("People pause while they think, and then they go on with what they wanted to say "
            "about the weather, their plans for the weekend, and the food they like to cook, "
            "the places they would like to visit next summer, and the friends they miss.")
    proc = psutil.Process()

    def growth(engine: KokoroEngine) -> float:
        engine.warmup()
        before = proc.memory_info().rss
        assert len(engine.synthesize(long, "af_heart", 1.0, "en-us")) > 24_000 * 8
        gc.collect()
        return (proc.memory_info().rss - before) / 2**20

    kept = growth(KokoroEngine(TtsArgs(intra_op_threads=1, return_memory=False)))
    given_back = growth(KokoroEngine(TtsArgs(intra_op_threads=1)))
    # twice the limit below (CI saw 143 MB kept once, 150+ elsewhere)
    assert kept > 80, f"the arena kept only {kept:.0f} MB: this test would not see a leak"
    assert given_back < 40, f"a long run left the replica {given_back:.0f} MB bigger"


async def first_hole(service: TtsService, text: str) -> tuple[float, float]:
    """(seconds of audio in the first unit, silence between its end and the next unit's
    first audio, as a listener starting at the first audio would hear it)."""
    arrivals: list[tuple[float, tts_pb2.TtsAudio]] = []
    async for e in service.synthesize_stream(deltas(text)):
        if e.WhichOneof("kind") == "audio":
            arrivals.append((time.monotonic(), e.audio))
    first_end = arrivals[0][1].span.end
    first_s = sum(len(a.audio.pcm16) // 2 for _, a in arrivals if a.span.end == first_end) / 24_000
    second_at = next(t for t, a in arrivals if a.span.end != first_end)
    return first_s, (second_at - arrivals[0][0]) - first_s


async def test_a_short_first_unit_is_held_until_the_next_is_near_so_no_hole_follows() -> None:
    text = "The pharmacy opens at nine in the morning."
    # one-word units are kept, so "The" is; "pharmacy opens" is made each time
    service = TtsService(TtsArgs(intra_op_threads=1, synth_workers=2, first_unit_max_words=1,
                                 unit_cache_max_words=1, unit_cache_warm=["The"]))
    deadline = time.monotonic() + 60
    while UnitKey("af_heart", 1.0, "en-us", "The") not in service.cache:
        assert time.monotonic() < deadline, "the opener was not made"
        await asyncio.sleep(0.1)
    for _ in range(2):  # the replica learns what its runs cost here
        await first_hole(service, "The weather today is sunny and warm.")
    first_s, hole = await first_hole(service, text)
    print(f"sent at once: {first_s:.2f} s of audio, then {hole:.2f} s of silence")
    assert first_s < 0.8 and hole > 0.15, "the first unit sent at once left no hole to close"
    service.args = service.args.model_copy(update={"first_unit_hold_ms": 3000})
    # The hold trusts a prediction: a run slowed by a burst on the box (a CI neighbour)
    # comes later than predicted. Three tries, so one burst is not read as no hold.
    holes: list[float] = []
    while len(holes) < 3 and (not holes or holes[-1] >= 0.15):
        first_s, hole = await first_hole(service, text)
        print(f"held: {first_s:.2f} s of audio, then {hole:.2f} s of silence")
        holes.append(hole)
    assert min(holes) < 0.15, f"{holes} s of silence after the first {first_s:.2f} s"
    assert service.cache.get(UnitKey("af_heart", 1.0, "en-us", "pharmacy opens")) is None


def test_the_op_profile_says_where_a_run_of_the_real_model_goes() -> None:
    from loadtest.bench_tts import op_profile

    shares = op_profile(rounds=1)
    assert abs(sum(shares.values()) - 1) < 1e-6 and min(shares.values()) >= 0
    # the shipped model is the int8 graph: its convolutions are integer ones
    assert "ConvInteger" in shares, list(shares)[:5]
