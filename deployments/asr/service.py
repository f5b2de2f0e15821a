"""The ASR stream protocol: validates requests, drives a StreamingTranscriber,
emits AsrEvents. gRPC-shaped but Ray-free, so it is tested in-process too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
import numpy as np

from deployments.asr.config import AsrArgs
from deployments.asr.engine import SAMPLE_RATE, UNSURE_LANGUAGE_P, Hypothesis, WhisperEngine
from deployments.asr.streaming import DecodeJob, StreamingTranscriber, TranscriptUpdate
from deployments.decode_pool import BACKGROUND, URGENT, DecodePool
from deployments.errors import StageError, invalid
from deployments.streams import Stamper
from voxray.v1 import asr_pb2, common_pb2

log = logging.getLogger(__name__)


class _Input:
    """Reads the request stream into the transcriber; wakes the decode loop."""

    def __init__(self, transcriber: StreamingTranscriber, args: AsrArgs) -> None:
        self.t = transcriber
        self.args = args
        self.wake = asyncio.Event()
        self.last_seq = 0
        self.finished = False
        self.cancelled = False  # the caller went away (not a half-close)

    async def consume(self, requests: AsyncIterator[asr_pb2.AsrRequest]) -> None:
        max_bytes = 2 * SAMPLE_RATE * self.args.max_chunk_ms // 1000
        try:
            async for req in requests:
                self.last_seq = req.meta.seq
                kind = req.WhichOneof("kind")
                if kind == "audio":
                    self._audio(req.audio, max_bytes)
                elif kind == "end_of_utterance":
                    eou = req.end_of_utterance
                    end = eou.speech_end_sample if eou.HasField("speech_end_sample") else None
                    try:
                        self.t.end_utterance(eou.utterance_id, req.meta.seq, end)
                    except ValueError as e:
                        raise invalid(str(e)) from None
                elif kind == "start":
                    raise invalid("`start` may only be the first request of a stream")
                else:
                    raise invalid("request has no audio, start or end_of_utterance")
                self.wake.set()
        finally:
            self.finished = True
            self.cancelled = bool(getattr(requests, "is_cancelled", lambda: False)())
            self.wake.set()

    def _audio(self, chunk: common_pb2.AudioChunk, max_bytes: int) -> None:
        if chunk.sample_rate not in (0, SAMPLE_RATE):
            raise invalid(f"audio sample_rate is {chunk.sample_rate}; this stream is 16000 Hz")
        n = len(chunk.pcm16)
        if n % 2:
            raise invalid(f"audio chunk has {n} bytes; PCM16 needs an even count")
        if n > max_bytes:
            raise invalid(
                f"audio chunk of {n // 2} samples exceeds max_chunk_ms={self.args.max_chunk_ms}"
            )
        pcm = np.frombuffer(chunk.pcm16, dtype="<i2").astype(np.float32) / 32768.0
        try:
            self.t.add_audio(pcm)
        except OverflowError as e:
            raise StageError(grpc.StatusCode.OUT_OF_RANGE, str(e)) from None


class AsrService:
    """One per replica: a model, a decode pool, many concurrent streams."""

    def __init__(self, args: AsrArgs, replica_id: str = "local") -> None:
        self.args = args
        self.replica_id = replica_id
        self.engine = WhisperEngine(args)
        self.engine.warmup()
        self.pool = DecodePool(args.decode_workers, name="asr-decode")

    def _start(self, req: asr_pb2.AsrRequest) -> tuple[bool, str]:
        """The stream's options: partials on or off, and the language to decode in
        ("": detect it per decode)."""
        if req.WhichOneof("kind") != "start":
            raise invalid("the first request of a Transcribe stream must be `start`")
        if req.start.sample_rate != SAMPLE_RATE:
            raise invalid(f"start.sample_rate is {req.start.sample_rate}; send 16000 Hz PCM16")
        try:
            language = self.engine.language(req.start.language)
        except ValueError as e:
            raise invalid(f"start.language: {e}") from None
        return req.start.partials if req.start.HasField("partials") else True, language

    async def transcribe(
        self, requests: AsyncIterator[asr_pb2.AsrRequest]
    ) -> AsyncIterator[asr_pb2.AsrEvent]:
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        partials, language = self._start(first)
        heard = ""  # with "auto": the language the stream was last clearly heard in
        a = self.args
        t = StreamingTranscriber(
            max_utterance_s=a.max_utterance_s,
            partial_interval_s=a.partial_interval_s,
            pause_decode_s=a.pause_decode_s,
            quiet_dbfs=a.quiet_dbfs,
            commit_after_s=a.commit_after_s,
            commit_margin_s=a.commit_margin_s,
            flush_pad_s=a.flush_pad_s,
            partials=partials,
            commit=a.word_timestamps,
        )
        inp = _Input(t, a)
        stamp = Stamper(first.meta.session_id)
        reader = asyncio.create_task(inp.consume(requests))
        try:
            yield asr_pb2.AsrEvent(meta=stamp.meta(first.meta.seq), ready=asr_pb2.AsrReady(
                model=self.engine.model_path, replica_id=self.replica_id))
            while True:
                job = t.next_job(inp.last_seq)
                if job is None:
                    if reader.done():
                        reader.result()  # re-raise a StageError from the input side
                        if t.has_open_audio and not inp.cancelled:
                            # Nothing said is dropped: a half-close finalizes open speech.
                            t.end_utterance(t.open.utterance_id, inp.last_seq)
                            continue
                        return
                    inp.wake.clear()
                    await inp.wake.wait()
                    continue
                hyp = job.reuse.hypothesis if job.reuse else await self._decode(
                    job, language, heard)
                if not language and hyp.language_probability >= UNSURE_LANGUAGE_P \
                        and len(job.audio) >= SAMPLE_RATE:
                    heard = hyp.language  # what this caller speaks, for unclear short turns
                update = t.apply(job, hyp, self.engine.is_silence(hyp))
                if update is not None:
                    yield _event(update, stamp.meta(job.reply_to_seq),
                                 decode_ms=0.0 if job.reuse else hyp.decode_ms,
                                 language=hyp.language)
                if reader.done() and reader.exception() is not None:
                    reader.result()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _decode(self, job: DecodeJob, language: str, likely: str) -> Hypothesis:
        beam = self.args.final_beam_size if job.final else self.args.partial_beam_size

        def run() -> Hypothesis:
            return self.engine.decode(job.audio, prompt=job.prompt, beam_size=beam,
                                      with_words=self.args.word_timestamps, language=language,
                                      likely=likely)

        return await self.pool.run(URGENT if job.urgent else BACKGROUND, run)  # type: ignore[no-any-return]


def _event(u: TranscriptUpdate, meta: common_pb2.Meta, decode_ms: float,
           language: str = "") -> asr_pb2.AsrEvent:
    msg = asr_pb2.Transcript(
        text=u.text,
        language=language,
        stable_text=u.stable_text,
        audio_start_sample=u.start_sample,
        audio_end_sample=u.end_sample,
        words=[
            asr_pb2.Word(text=w.text, start_s=w.start_sample / SAMPLE_RATE,
                         end_s=w.end_sample / SAMPLE_RATE, probability=w.probability)
            for w in u.words
        ],
    )
    event = asr_pb2.AsrEvent(meta=meta, utterance_id=u.utterance_id, decode_ms=decode_ms)
    (event.final if u.final else event.partial).CopyFrom(msg)
    return event
