"""A pipeline session: the user's audio -> VAD and turns -> ASR -> LLM -> TTS -> the agent track.

This class only routes events between the parts (turn detector, barge-in
rules, ASR stream, reply task, track); each part does its own job.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
from aiortc.mediastreams import MediaStreamTrack

from gateway import events as ev
from gateway.agent_track import AgentAudioTrack
from gateway.agent_turn import Reply, run_reply
from gateway.asr_client import AsrStream
from gateway.audio_in import InChunk, chunks_16k
from gateway.barge_in import is_backchannel, may_be_user
from gateway.config import GatewayConfig
from gateway.turns import SpeechEnded, SpeechStarted, TurnDetector
from gateway.vad import CHUNK, SAMPLE_RATE, SileroVad

log = logging.getLogger(__name__)


class PipelineSession:
    def __init__(self, config: GatewayConfig, channel: grpc.aio.Channel,
                 send: Callable[[ev.Event], None]) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.cfg = config
        self.channel = channel
        self.send = send
        self.track = AgentAudioTrack(on_first_audible=self._first_audible)
        self.history: list[tuple[str, str]] = []
        self.last_voice_at = time.monotonic()
        self.turns = TurnDetector(config.turn)
        self.barge = config.barge_in
        self.vad = SileroVad()
        self._preroll: deque[InChunk] = deque(
            maxlen=max(1, config.turn.preroll_ms * SAMPLE_RATE // 1000 // CHUNK))
        self._asr: AsrStream | None = None
        self._asr_delta = 0  # ASR timeline sample - session timeline sample
        self._sending_asr = False
        self._finals: dict[int, asyncio.Future[str]] = {}
        self._utterance = 0
        self._reply: Reply | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._turn_marks: dict[int, dict[str, float]] = {}
        self._barge_started: float | None = None  # speech over the agent began (arrival time)
        self._tasks: set[asyncio.Task[object]] = set()
        self._turn = 0
        self._arrivals: dict[int, float] = {}  # end sample of a chunk -> its arrival time
        self.closed = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self, mic: MediaStreamTrack) -> None:
        """Until the mic track ends or the session is closed."""
        async with AsrStream(self.channel, self.id) as asr:
            self._asr = asr
            pump = self._spawn(self._asr_events(asr))
            try:
                async for chunk in chunks_16k(mic):
                    self._on_chunk(chunk)
                    if self.closed.is_set():
                        break
            finally:
                pump.cancel()
                await self.close()

    async def close(self) -> None:
        self.closed.set()
        if self._reply_task is not None:
            self._reply_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *( [self._reply_task] if self._reply_task else []),
                             return_exceptions=True)
        self.track.stop()

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> asyncio.Task[object]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- input: VAD, turns, ASR audio ----------------------------------------------------

    def _agent_busy(self) -> bool:
        return self._reply_task is not None and not self._reply_task.done() or self.track.speaking

    def _on_chunk(self, chunk: InChunk) -> None:
        prob = self.vad(chunk.pcm)
        audible = time.monotonic() - self.track.last_audio_at < 0.4
        gate = may_be_user(chunk.level_db, prob, self.track.recent_level_db(), audible,
                           self.barge)
        event = self.turns.feed(prob, chunk.start_sample, gate)
        self._preroll.append(chunk)
        if isinstance(event, SpeechStarted):
            self.last_voice_at = chunk.arrived
            self._speech_started(event)
        elif self._sending_asr and self._asr is not None:
            self._asr.send_audio(chunk.pcm.tobytes())
        if self.turns.in_speech:
            self.last_voice_at = chunk.arrived
            self._arrivals[chunk.start_sample + CHUNK] = chunk.arrived
        if isinstance(event, SpeechEnded):
            self._speech_ended(event, chunk)
        if (self._barge_started is not None and self.track.paused_at
                and self.turns.voiced_ms >= self.barge.interrupt_after_ms):
            self._interrupt()  # too long for a backchannel, whatever it says

    def _speech_started(self, event: SpeechStarted) -> None:
        assert self._asr is not None
        self._arrivals = {}
        first = self._preroll[0]
        self._asr_delta = self._asr.samples_sent - first.start_sample
        for c in self._preroll:  # the voiced run and what came just before it
            self._asr.send_audio(c.pcm.tobytes())
            self._arrivals[c.start_sample + CHUNK] = c.arrived
        self._sending_asr = True
        if self._agent_busy():
            self.track.pause()  # at once; resume or cancel is decided later
            self._barge_started = self._arrivals.get(event.start_sample + CHUNK,
                                                     self._preroll[-1].arrived)
            stop_ms = (time.monotonic() - self._barge_started) * 1000
            self.send(ev.Info("agent_paused", "user speech over the agent",
                              {"stop_ms": round(stop_ms, 1)}))

    def _speech_ended(self, event: SpeechEnded, chunk: InChunk) -> None:
        assert self._asr is not None
        self._sending_asr = False
        last_voiced_at = self._arrivals.get(event.last_voiced_sample, chunk.arrived)
        uid = self._utterance
        self._utterance += 1
        self._asr.end_utterance(speech_end_sample=event.last_voiced_sample + self._asr_delta)
        decided = time.monotonic()
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._finals[uid] = fut
        self._spawn(self._after_utterance(uid, fut, {"last_voiced": last_voiced_at,
                                                     "decided": decided}))

    async def _asr_events(self, asr: AsrStream) -> None:
        try:
            async for e in asr:
                kind = e.WhichOneof("kind")
                if kind == "partial":
                    self.send(ev.transcript(e.partial.text, final=False))
                elif kind == "final":
                    fut = self._finals.pop(e.utterance_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(e.final.text.strip())
        except grpc.aio.AioRpcError as e:
            if not self.closed.is_set():
                self.send(ev.error("asr", f"{e.code().name}: {e.details()}"))
                log.warning("session %s: ASR stream failed: %s", self.id, e.details())
                self.closed.set()  # the mic loop ends the session

    # -- turns ---------------------------------------------------------------------------

    async def _after_utterance(self, uid: int, fut: asyncio.Future[str],
                               marks: dict[str, float]) -> None:
        try:
            text = await asyncio.wait_for(fut, timeout=10)
        except TimeoutError:
            self.send(ev.error("asr", "no final transcript within 10 s; say it again"))
            text = ""
        marks["final"] = time.monotonic()
        if text:
            self.send(ev.transcript(text, final=True))
        pending_barge = self._barge_started is not None
        if pending_barge and (not text or is_backchannel(text, self.barge)):
            self._barge_started = None
            self.track.resume()
            self.send(ev.Info("agent_resumed", "backchannel, not an interruption",
                              {"heard": text}))
            return
        if not text:
            return
        if self._agent_busy():
            self._interrupt()
        self.history.append(("user", text))
        self._start_reply(marks)

    def _start_reply(self, marks: dict[str, float]) -> None:
        self._turn += 1
        turn = self._turn
        reply = self._reply = Reply(turn)
        self._turn_marks[turn] = marks

        def on_text(delta: str) -> None:
            self.send(ev.AgentText("agent_text", turn, delta))

        async def go() -> None:
            try:
                await run_reply(self.channel, self.track, self.id, list(self.history), reply,
                                self.cfg.voice, on_text)
                self.history.append(("assistant", reply.text))
                await self.track.played(turn)
                if self._reply is reply:  # not interrupted
                    self.send(ev.Info("agent_done", "the answer has been played", {"turn": turn}))
            except grpc.aio.AioRpcError as e:
                self.send(ev.error("reply", f"{e.code().name}: {e.details()}"))
                if self.history and self.history[-1][0] == "user":
                    self.history.pop()  # keep user/assistant alternation for the next turn

        self._reply_task = asyncio.create_task(go())

    def _interrupt(self) -> None:
        """A real interruption: stop the reply, keep only what the user heard."""
        reply, task = self._reply, self._reply_task
        self._barge_started = None
        if reply is None or task is None:
            self.track.clear()
            return
        heard = reply.text[: self.track.heard_chars(reply.turn)].rstrip()
        task.cancel()
        self.track.clear()
        if self.history and self.history[-1] == ("assistant", reply.text):
            self.history.pop()  # the reply was all generated, but not all heard
        if heard:
            self.history.append(("assistant", heard))
        self.send(ev.Interrupted("interrupted", reply.turn, heard))
        self._reply = None

    def _first_audible(self, turn: int, sent_at: float) -> None:
        marks = self._turn_marks.pop(turn, None)
        reply = self._reply
        if marks is None or reply is None or reply.times is None:
            return
        t = reply.times
        m = ev.TurnMetrics(
            "turn_metrics", turn,
            ttfat_ms=(sent_at - marks["last_voiced"]) * 1000,
            end_of_turn_ms=(marks["decided"] - marks["last_voiced"]) * 1000,
            asr_final_ms=(marks["final"] - marks["decided"]) * 1000,
            llm_first_token_ms=(t.llm_first_token - t.started) * 1000,
            tts_first_audio_ms=(t.tts_first_audio - t.llm_first_token) * 1000,
            playout_ms=(sent_at - t.tts_first_audio) * 1000)
        self.send(m)
