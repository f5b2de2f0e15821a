"""The TTS protocol: text (whole, or deltas as an LLM streams them) in, spoken units out.

Each unit of text is synthesised on its own and sent as soon as it is ready,
so the first audio depends only on the first unit, which the splitter keeps
short. Units run on a shared pool, most urgent first: a stream's first unit,
then the unit whose listener runs out of audio soonest (its deadline), so a
caller near the end of its audio goes ahead of one with seconds in hand. A long
text never holds the pool for more than one unit at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import NamedTuple

import grpc
import numpy as np

from deployments.decode_pool import URGENT, DecodePool
from deployments.errors import StageError, invalid
from deployments.streams import Stamper
from deployments.tts.config import TtsArgs
from deployments.tts.engine import SAMPLE_RATE, Cancel, KokoroEngine, SynthesisCancelled
from deployments.tts.text import Unit, UnitSplitter, normalize, pause_after, speakable
from deployments.tts.unit_cache import UnitCache, UnitKey
from deployments.tts.unit_cost import UnitCost
from voxray.v1 import common_pb2, tts_pb2

log = logging.getLogger(__name__)


# Kokoro names a voice by its language's letter (af_heart, ef_dora, jf_alpha ...);
# this is the espeak-ng language its text is phonemised in.
VOICE_LANGUAGES = {"a": "en-us", "b": "en-gb", "e": "es", "f": "fr-fr", "h": "hi", "i": "it",
                   "j": "ja", "p": "pt-br", "z": "cmn"}


# Kokoro speaks about 15 characters of English a second at speed 1.0: what a unit not
# made yet is taken to add to its stream's audio.
SPOKEN_S_PER_CHAR = 0.065


def unit_deadline(playing_since: float | None, now: float, audio_s: float,
                  pending_chars: int, speed: float) -> float:
    """When a stream's listener runs out of audio unless its next unit is ready: the
    audio sent so far plays from its first sample (taken as now before any is sent),
    then the units before this one, made or being made, from their length in text."""
    start = now if playing_since is None else playing_since
    return start + audio_s + pending_chars * SPOKEN_S_PER_CHAR / speed


class _Voice:
    def __init__(self, voice: str, speed: float, language: str) -> None:
        self.voice, self.speed, self.language = voice, speed, language


class _Scheduled(NamedTuple):
    chars: int
    at: float  # time.monotonic() when it was asked for
    task: asyncio.Task[np.ndarray]


class _Queued(NamedTuple):
    unit: Unit
    start: int  # of its span: unspeakable text before it joins it
    reply_to: int
    chars: int
    pause: int  # samples of silence after it, if another unit follows
    task: asyncio.Task[np.ndarray]


class TtsService:
    def __init__(self, args: TtsArgs, replica_id: str = "local") -> None:
        self.args = args
        self.replica_id = replica_id
        self.engine = KokoroEngine(args)
        self.engine.warmup()
        self.pool = DecodePool(args.synth_workers, name="tts-synth")
        self.units_synthesized = 0  # work done, for observers and tests
        self.cache = UnitCache(int(args.unit_cache_mb * 2**20), args.unit_cache_max_words)
        self.cost = UnitCost()
        if args.unit_cache_warm and self.cache.max_bytes:
            threading.Thread(target=self._warm, name="tts-cache-warm", daemon=True).start()

    def _warm(self) -> None:
        """Make the openers of `unit_cache_warm` one at a time, each when no stream has
        work queued or running, so warming never holds up a unit someone waits for."""
        a = self.args
        t0, made = time.monotonic(), 0
        english = a.language.startswith("en")
        for text in a.unit_cache_warm:
            key = UnitKey(a.voice, a.speed, a.language, normalize(text, english))
            if not self.cache.holds(key) or key in self.cache or not speakable(key.words):
                continue
            while self.pool.load.level:
                time.sleep(0.2)
            try:
                self.cache.put(key, self.engine.synthesize(key.words, a.voice, a.speed, a.language))
            except Exception as e:  # an opener espeak-ng cannot say: skip it
                log.warning("unit cache: cannot make %r: %s", text, e)
                continue
            made += 1
        log.info("unit cache: %d openers made in %.1f s", made, time.monotonic() - t0)

    def _voice(self, opts: tts_pb2.VoiceOptions) -> _Voice:
        voice = opts.voice or self.args.voice
        if voice not in self.engine.voices:
            english = sorted(v for v in self.engine.voices if v[:2] in ("af", "am", "bf", "bm"))
            raise invalid(f"unknown voice {voice!r}; English voices: {', '.join(english)}")
        speed = opts.speed if opts.HasField("speed") else self.args.speed
        if not 0.5 <= speed <= 2.0:
            raise invalid(f"speed {speed:g} is outside 0.5-2.0")
        language = opts.language or (self.args.language if voice[:1] in ("a", "b")
                                     else VOICE_LANGUAGES.get(voice[:1], self.args.language))
        if voice[:1] in ("a", "b") and language not in ("en-us", "en-gb"):
            raise invalid(f"language {language!r} does not fit English voice {voice!r}")
        return _Voice(voice, speed, language)

    def _splitter(self) -> UnitSplitter:
        return UnitSplitter(self.args.first_unit_max_words, self.args.max_unit_chars)

    async def synthesize(self, request: tts_pb2.TtsRequest) -> AsyncIterator[tts_pb2.TtsEvent]:
        if not request.text.strip():
            raise invalid("text is empty")
        if len(request.text) > self.args.max_text_chars:
            raise invalid(f"text has {len(request.text)} characters; the limit is "
                          f"max_text_chars={self.args.max_text_chars}")
        if not speakable(normalize(request.text)):
            raise invalid("text has nothing speakable (only symbols or markup)")
        voice = self._voice(request.voice)
        splitter = self._splitter()
        units = splitter.feed(request.text) + splitter.flush()

        async def source() -> AsyncIterator[tuple[Unit, int]]:
            for unit in units:
                yield unit, request.meta.seq

        async for event in self._speak(source(), voice, Stamper(request.meta.session_id)):
            yield event

    async def synthesize_stream(
        self, requests: AsyncIterator[tts_pb2.TtsStreamRequest]
    ) -> AsyncIterator[tts_pb2.TtsEvent]:
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") != "start":
            raise invalid("the first request of a SynthesizeStream call must be `start`")
        voice = self._voice(first.start)
        splitter = self._splitter()

        async def units() -> AsyncIterator[tuple[Unit, int]]:
            # Pulled only when the previous unit is spoken: reading requests costs
            # CPU in this replica, which would slow the synthesis under way.
            async for req in requests:
                kind = req.WhichOneof("kind")
                if kind == "text":
                    if len(splitter.text) + len(req.text) > self.args.max_text_chars:
                        raise invalid(f"text passed max_text_chars={self.args.max_text_chars}")
                    ready = splitter.feed(req.text)
                elif kind == "flush":
                    ready = splitter.flush()
                else:
                    raise invalid(f"unexpected `{kind}` request after start")
                for unit in ready:
                    yield unit, req.meta.seq
            if getattr(requests, "is_cancelled", lambda: False)():
                return  # the caller went away (Serve ends the stream on a cancel)
            for unit in splitter.flush():
                yield unit, first.meta.seq

        stamp = Stamper(first.meta.session_id)
        yield tts_pb2.TtsEvent(meta=stamp.meta(first.meta.seq), ready=tts_pb2.TtsReady(
            replica_id=self.replica_id, voice=voice.voice))
        async for event in self._speak(units(), voice, stamp):
            yield event

    async def _speak(
        self, units: AsyncIterator[tuple[Unit, int]], voice: _Voice, stamp: Stamper
    ) -> AsyncIterator[tts_pb2.TtsEvent]:
        """Units are synthesised up to `units_ahead` at a time, as soon as each one's text
        is complete, and sent in order: the next unit is made while the one before it is
        still being made or played, so short early units leave no silence after them. A unit
        that ends with a mark is followed by that mark's pause when another unit follows."""
        samples = 0
        spoken_until = 0
        step = SAMPLE_RATE * self.args.max_message_ms // 1000
        ahead: asyncio.Queue[_Queued | None] = asyncio.Queue()
        in_flight = asyncio.Semaphore(self.args.units_ahead)
        last_seq = 0
        scheduled: list[_Scheduled] = []  # what the first unit's hold looks at
        all_scheduled = asyncio.Event()
        playing_since: float | None = None  # when this stream's first audio went out
        pending_chars = 0  # of units scheduled whose audio has not gone out yet

        async def schedule() -> None:
            nonlocal last_seq, pending_chars
            span_start: int | None = None  # unspeakable text joins the next spoken span
            first = True
            try:
                async for unit, reply_to in units:
                    last_seq = reply_to
                    start = unit.start if span_start is None else span_start
                    words = normalize(unit.text, voice.language.startswith("en"))
                    if not speakable(words):
                        span_start = start
                        continue
                    span_start = None
                    await in_flight.acquire()
                    now = time.monotonic()
                    priority = URGENT if first else unit_deadline(
                        playing_since, now, samples / SAMPLE_RATE, pending_chars, voice.speed)
                    task = asyncio.ensure_future(self._synthesize(words, voice, priority))
                    first = False
                    pending_chars += len(words)
                    scheduled.append(_Scheduled(len(words), now, task))
                    pause = pause_after(words, self.args.sentence_pause_ms,
                                        self.args.clause_pause_ms) / 1000 / voice.speed
                    ahead.put_nowait(_Queued(unit, start, reply_to, len(words),
                                             round(pause * SAMPLE_RATE), task))
            finally:  # a bad request ends the queue too, and is re-raised below
                all_scheduled.set()
                ahead.put_nowait(None)

        def messages(pcm: np.ndarray, span: common_pb2.TextSpan,
                     reply_to: int) -> list[tts_pb2.TtsEvent]:
            nonlocal samples
            out = []
            for i in range(0, max(len(pcm), 1), step):
                piece = pcm[i : i + step]
                chunk = common_pb2.AudioChunk(pcm16=piece.tobytes(),
                                              sample_rate=SAMPLE_RATE, start_sample=samples)
                samples += len(piece)
                out.append(tts_pb2.TtsEvent(meta=stamp.meta(reply_to), audio=tts_pb2.TtsAudio(
                    audio=chunk, span=span, span_complete=i + step >= len(pcm))))
            return out

        scheduler = asyncio.create_task(schedule())
        try:
            while (item := await ahead.get()) is not None:
                audio = await item.task
                if samples == 0 and self.args.first_unit_hold_ms:
                    await self._hold_first(len(audio) / SAMPLE_RATE, scheduled, all_scheduled)
                pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
                if playing_since is None:
                    playing_since = time.monotonic()
                for event in messages(pcm, common_pb2.TextSpan(start=item.start,
                                                               end=item.unit.end), item.reply_to):
                    yield event
                last = all_scheduled.is_set() and ahead.qsize() <= 1  # only the end marker
                if item.pause and not last:
                    # the mark's pause, as silence that speaks no characters (a listener who
                    # interrupts in it has heard the whole unit); not after the last unit
                    end = common_pb2.TextSpan(start=item.unit.end, end=item.unit.end)
                    for event in messages(np.zeros(item.pause, "<i2"), end, item.reply_to):
                        yield event
                spoken_until = item.unit.end
                pending_chars -= item.chars
                in_flight.release()
            await scheduler  # re-raise a StageError from the request side
        finally:
            scheduler.cancel()
            while not ahead.empty():  # units made ahead that nobody will hear
                if (left := ahead.get_nowait()) is not None:
                    left.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await scheduler
        yield tts_pb2.TtsEvent(meta=stamp.meta(last_seq), done=tts_pb2.TtsDone(
            total_samples=samples, characters_spoken=spoken_until))

    async def _hold_first(self, playing_s: float, scheduled: list[_Scheduled],
                          all_scheduled: asyncio.Event) -> None:
        """Hold the first unit's audio until the unit after it is predicted to be ready
        before the first has played out (or `first_unit_hold_ms` has passed): a one-word
        first unit, cached or not, would otherwise leave a hole while the next is made."""
        began = time.monotonic()
        limit = began + self.args.first_unit_hold_ms / 1000
        while (now := time.monotonic()) < limit:
            if len(scheduled) > 1:
                after = scheduled[1]
                if after.task.done() or \
                        after.at + self.cost.predict(after.chars) - now <= playing_s:
                    break
            elif all_scheduled.is_set():
                break  # the first unit is the whole text
            await asyncio.sleep(0.02)
        if (held := time.monotonic() - began) > 0.02:
            log.info("first unit (%.0f ms of audio) held %.0f ms for the next to be near",
                     playing_s * 1000, held * 1000)

    async def _synthesize(self, words: str, voice: _Voice, priority: float) -> np.ndarray:
        key = UnitKey(voice.voice, voice.speed, voice.language, words)
        if (cached := self.cache.get(key)) is not None:
            if priority == URGENT:
                log.info("first unit (%d words): from the cache", len(words.split()))
            return cached
        cancel = Cancel()
        asked = time.monotonic()
        began = asked

        def run() -> np.ndarray:
            nonlocal began
            began = time.monotonic()
            return self.engine.synthesize(words, voice.voice, voice.speed, voice.language, cancel)

        try:
            audio: np.ndarray = await self.pool.run(priority, run)
        except asyncio.CancelledError:
            cancel.cancel()  # stops an ONNX run already under way
            raise
        except SynthesisCancelled:
            raise asyncio.CancelledError() from None
        except RuntimeError as e:  # espeak-ng refusing a language, for one
            raise StageError(grpc.StatusCode.INVALID_ARGUMENT, f"cannot speak: {e}") from None
        self.units_synthesized += 1
        self.cost.observe(len(words), time.monotonic() - asked)
        self.cache.put(key, audio)
        if priority == URGENT:  # what the caller waits for: its wait and its run, apart
            # (not its words: what an agent says stays out of the logs)
            log.info("first unit (%d words): waited %.0f ms for a worker, made in %.0f ms",
                     len(words.split()), (began - asked) * 1000, (time.monotonic() - began) * 1000)
        return audio
