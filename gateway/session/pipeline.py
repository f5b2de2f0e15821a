"""A pipeline session: the user's audio -> turns -> ASR -> LLM -> TTS -> the agent's playout.

The session only routes events between its parts:

    chunks --> TurnTaker --(speech started / pause / resumed / turn ended)--> here
    UserSpeech: audio to the ASR stream, partials and finals back
    at a pause: the evidence (audio model, pause words, LLM) -> TurnPolicy -> TurnTaker.judge
                and a speculative ReplyHandle on the pause words, its audio held
    turn ended: final transcript -> the held reply plays (same words) or a new one starts
    ChatContext: what was committed and heard;  TurnObserver: events -> turn_metrics

Barge-in: speech while the agent talks pauses its audio at once; a backchannel
("okay") resumes it, anything longer than `interrupt_after_ms` or any other
finished turn interrupts it, and the context keeps what was heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
from aiortc.mediastreams import MediaStreamTrack

from gateway import events as ev
from gateway.agent_track import AgentAudioTrack
from gateway.audio_in import InChunk, chunks_16k
from gateway.config import GatewayConfig, TurnConfig
from gateway.session.barge_in import is_backchannel
from gateway.session.context import ChatContext, Message
from gateway.session.events import (
    AgentPaused,
    PauseJudged,
    PauseStarted,
    ReplyProgress,
    SessionEvent,
    SpeechResumed,
    SpeechStarted,
    StageRetried,
    TurnCommitted,
    TurnEnded,
    TurnEvent,
    TurnHeard,
)
from gateway.session.llm_judge import llm_p_end
from gateway.session.observer import TurnObserver
from gateway.session.reply import ReplyHandle
from gateway.session.retry import RETRYABLE, Retrier
from gateway.session.tools import ToolBox
from gateway.session.turn_policy import Evidence, TurnPolicy
from gateway.session.turn_taker import AgentLevel, TurnTaker
from gateway.session.user_speech import UserSpeech
from gateway.smart_turn import SharedSmartTurn
from gateway.vad import CHUNK, SileroVad
from voxray.stage_clients.asr import AsrStream
from voxray.stage_clients.llm import tool_calls_message

log = logging.getLogger(__name__)
FINAL_WITHIN_S = 10.0
# Quiet this long before a decode's words are guessed at: about when the ASR's own
# pause decode starts, and longer than the gaps between words.
EARLY_GUESS_SILENCE_MS = 96


def _same_words(a: list[Message], b: list[Message]) -> bool:
    """Two conversations that differ at most in case and punctuation: a speculative reply
    made for one answers the other."""
    def norm(messages: list[Message]) -> list[tuple[str, str]]:
        return [(r, " ".join(re.findall(r"[\w']+", c.lower()))) for r, c in messages]
    return norm(a) == norm(b)


class ArrivalClock:
    """When each input sample arrived: turn events carry samples, metrics need times."""

    def __init__(self, keep: int = 2000) -> None:
        self._at: OrderedDict[int, float] = OrderedDict()
        self._keep = keep

    def note(self, end_sample: int, arrived: float) -> None:
        self._at[end_sample] = arrived
        while len(self._at) > self._keep:
            self._at.popitem(last=False)

    def at(self, end_sample: int, default: float) -> float:
        return self._at.get(end_sample, default)


class PipelineSession:
    def __init__(self, config: GatewayConfig, channel: grpc.aio.Channel,
                 send: Callable[[ev.Event], None],
                 turn_model: SharedSmartTurn | None = None) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.cfg = config
        self.channel = channel
        self.send = send
        self.track = AgentAudioTrack(on_first_audible=self._first_audible)
        self.context = ChatContext(config.history_max_chars)
        self.tools = ToolBox(config.tools, config.tool_filler, config.max_tool_rounds)
        self._no_voice: set[str] = set()  # languages told to have no voice of their own
        self.end_reason = ""  # why a stage ended the session, if one did
        self.turn_cfg = config.turn
        self.turns = TurnTaker(config.turn, config.barge_in, SileroVad())
        self.policy = TurnPolicy(config.turn)
        self.observer = TurnObserver(send)
        self.turn_model = turn_model
        self.last_voice_at = time.monotonic()
        self.closed = asyncio.Event()
        self.speech: UserSpeech | None = None
        self.reply: ReplyHandle | None = None  # committed: playing, or being made
        self.spec: ReplyHandle | None = None  # prepared for the pause being judged
        self._spec_until = 0  # the last voiced sample of the words it answers
        self._clock = ArrivalClock()
        self._judging: asyncio.Task[object] | None = None
        self._barge_started: float | None = None  # speech over the agent began (arrival)
        self._replies = 0
        self._tasks: set[asyncio.Task[object]] = set()
        self._said: OrderedDict[int, str] = OrderedDict()  # recent replies, as recorded
        # A transport that reports the conversation itself (the Realtime API) listens
        # here: every turn event and session event, as it happens.
        self.listeners: list[Callable[[TurnEvent | SessionEvent], None]] = []
        # Per-session settings a client may change (the Realtime API's session.update).
        self.voice: str | None = None  # one voice whatever the language
        self.speak = True  # False: replies in text only (a Realtime text session)
        self.reply_max_tokens = config.reply_max_tokens
        self.temperature: float | None = None
        self.manual = False  # the client ends its turns (set_manual)
        self._manual_open = False
        self._manual_end = 0
        self._pending_finals: list[asyncio.Task[object]] = []
        self._asr_recovering_until = 0.0  # a failed ASR stream is being replaced until then
        self._speech_again = asyncio.Event()  # the user started speaking (ASR retries spent)
        self._asr_down: grpc.aio.AioRpcError | None = None  # until the next speech

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self, mic: MediaStreamTrack) -> None:
        """Until the mic track ends or the session is closed."""
        await self.run_chunks(chunks_16k(mic))

    async def run_chunks(self, chunks: AsyncIterator[InChunk]) -> None:
        """The user's audio from any transport, as 16 kHz chunks on one timeline."""
        async with contextlib.AsyncExitStack() as streams:
            asr = await streams.enter_async_context(AsrStream(self.channel, self.id))
            self.speech = UserSpeech(asr, self.turn_cfg.preroll_ms)
            pump = self._spawn(self._asr_events(asr, streams))
            feeding = asyncio.ensure_future(self._feed_all(chunks))
            closed = asyncio.ensure_future(self.closed.wait())
            try:
                # closed by a failed stage, the mic may be sending nothing at all (a
                # client that never connected its media): do not wait for its next chunk
                await asyncio.wait({feeding, closed}, return_when=asyncio.FIRST_COMPLETED)
                if feeding.done():
                    feeding.result()
            finally:
                feeding.cancel()
                closed.cancel()
                pump.cancel()
                await self.close()
        if self.end_reason:
            raise ev.SessionEnded(self.end_reason)

    async def _feed_all(self, chunks: AsyncIterator[InChunk]) -> None:
        async for chunk in chunks:
            self.feed(chunk)
            if self.closed.is_set():
                return

    async def close(self) -> None:
        self.closed.set()
        for reply in (self.spec, self.reply):
            if reply is not None:
                reply.cancel("closed")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *(r.finished for r in (self.spec, self.reply)
                                             if r is not None and r.active),
                             return_exceptions=True)
        self.track.stop()

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> asyncio.Task[object]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def retune(self, turn: TurnConfig) -> None:
        """Take turns by `turn` from here on; only between turns."""
        if self.turns.in_turn or self._agent_busy():
            raise RuntimeError("turn taking changes only between turns")
        self.turn_cfg = self.turns.p = turn
        self.policy = TurnPolicy(turn)

    def _emit(self, event: SessionEvent) -> None:
        for listen in self.listeners:
            listen(event)
        self.observer(event)
        if isinstance(event, StageRetried):
            self._retried(event)
        if isinstance(event, ReplyProgress) and self.spec is not None \
                and event.reply == self.spec.id and event.stage in self._ready_stages():
            self._route(self.turns.release())  # the answer is ready: the turn may end

    def _ready_stages(self) -> tuple[str, ...]:
        # (a reply that calls tools first is as ready as it gets before it is committed)
        return ("first_token" if self.turn_cfg.speculative == "llm" else "first_audio",
                "tools_called")

    # -- input ---------------------------------------------------------------------------

    def _agent_busy(self) -> bool:
        return self.reply is not None and self.reply.active or self.track.speaking

    def feed(self, chunk: InChunk) -> None:
        """One 32 ms chunk of the user's audio, in order."""
        assert self.speech is not None
        if self.manual:
            self._feed_manual(chunk)
            return
        agent = AgentLevel(self.track.audible, self.track.recent_level_db())
        events = self.turns.feed(chunk.pcm, chunk.start_sample, chunk.level_db, agent)
        self._clock.note(chunk.start_sample + CHUNK, chunk.arrived)
        self.speech.add(chunk)
        if self.turns.in_turn:
            self.last_voice_at = chunk.arrived
        self._route(events)
        if self.spec is not None and self.turns.last_voiced_sample > self._spec_until:
            self._drop_spec("resumed")  # the user said more than the words it answers
        self._speculate_early()
        if (self._barge_started is not None and self.track.paused
                and self.turns.voiced_ms >= self.cfg.barge_in.interrupt_after_ms):
            self._interrupt()  # too long for a backchannel, whatever it says

    def _route(self, events: list[TurnEvent]) -> None:
        for e in events:
            self._emit_turn(e)
            if isinstance(e, SpeechStarted):
                self._speech_started(e)
            elif isinstance(e, PauseStarted):
                self._judging = self._spawn(self._judge_pause(e))
            elif isinstance(e, SpeechResumed):
                self._stop_judging("resumed")
            elif isinstance(e, TurnEnded):
                self._turn_ended(e)

    def _speech_started(self, e: SpeechStarted) -> None:
        assert self.speech is not None
        self._speech_again.set()
        self.speech.start_turn()
        if self._agent_busy():
            self.track.pause()  # at once; resume or interrupt is decided later
            self._barge_started = self._clock.at(e.start_sample + CHUNK, time.monotonic())
            self._emit(AgentPaused(self._barge_started))

    def _stop_judging(self, reason: str) -> None:
        if self._judging is not None:
            self._judging.cancel()
            self._judging = None
        self._drop_spec(reason)

    def _drop_spec(self, reason: str) -> None:
        """The speculative reply answers words the user has gone on from: drop it unheard."""
        if self.spec is not None:
            self.spec.cancel(reason)
            self.spec = None
            self._route(self.turns.release())

    # -- a pause: judge it, and prepare the answer ----------------------------------------

    def _join(self) -> bool:
        """Whether the next user turn continues the last one (nothing of the agent heard)."""
        return self.turn_cfg.join_continuations and bool(self.context.last_user())

    async def _judge_pause(self, e: PauseStarted) -> None:
        assert self.speech is not None
        cfg = self.turn_cfg
        wait_s = cfg.evidence_wait_ms / 1000
        audio: asyncio.Task[tuple[float, float]] | None = None
        if "audio" in cfg.evidence and self.turn_model is not None:
            audio = asyncio.ensure_future(self.turn_model.p_finished(self.speech.turn_audio()))
        t0 = time.monotonic()
        try:
            # Without the words there is nothing to answer yet, and a verdict on audio alone
            # cuts off a speaker whose words come late: a slow ASR waits, the LLM does not.
            words_wait_s = ((cfg.max_silence_ms - cfg.min_silence_ms) / 1000
                            if "words" in cfg.evidence else wait_s)
            words = await self.speech.pause_words(e.last_voiced_sample, words_wait_s)
            words_ms = (time.monotonic() - t0) * 1000 if words is not None else -1.0
            if words and cfg.speculative != "off" and not self._agent_busy():
                # (over the agent, the context changes when it is interrupted: no guess)
                self._speculate(words)
            p_end = None
            if words and "llm" in cfg.evidence:
                # Beside the speculative reply's first token, not after it: the LLM app
                # batches the two short prefills, and once the answer's first audio is made
                # it waits for this verdict (one caller, bench_call: held ~190 ms p50).
                p_end = await llm_p_end(self.channel, self.id,
                                        self.context.with_user(words, self._join()), wait_s)
            p_audio, cost = await self._audio_verdict(audio)
        except asyncio.CancelledError:
            if audio is not None:
                audio.cancel()
            raise
        verdict = self.policy.judge(Evidence(audio=p_audio, words=words, llm=p_end,
                                             language=self.speech.language or "en"))
        self._emit(PauseJudged(verdict.p_finished, verdict.wait_ms, cost, verdict.parts,
                               words or "", words_ms))
        self._judging = None
        self._route(self.turns.judge(verdict.wait_ms))

    def _speculate_early(self) -> None:
        """The ASR decodes at the first ~100 ms of quiet (its pause decode): if that decode
        heard all the speech so far, prepare the answer now, before the pause is judged."""
        assert self.speech is not None
        if (self.turn_cfg.speculative == "off" or self.spec is not None or self._agent_busy()
                or not self.turns.in_turn or self.turns.silence_ms < EARLY_GUESS_SILENCE_MS):
            return
        words = self.speech.words_covering(self.turns.last_voiced_sample)
        if words:
            self._speculate(words)

    async def _audio_verdict(self, audio: asyncio.Task[tuple[float, float]] | None
                             ) -> tuple[float | None, float]:
        if audio is None:
            return None, 0.0
        try:
            return await audio
        except Exception:  # a broken model file must not stall the turn: judge without it
            log.exception("session %s: the turn model failed", self.id)
            return None, 0.0

    def _speculate(self, words: str) -> None:
        messages = self.context.with_user(words, self._join())
        if self.spec is not None and _same_words(self.spec.messages, messages):
            return
        self._drop_spec("miss")
        self._spec_until = self.turns.last_voiced_sample
        spec = self.spec = self._new_reply(messages, speculative=True)
        self.turns.hold()

        def ended(_: object) -> None:
            if self.spec is spec:  # failed before its answer was ready: stop holding
                self._route(self.turns.release())

        spec.finished.add_done_callback(ended)

    def _voice_for(self, language: str) -> str:
        """The configured voice for the user's language; the default voice, said once per
        language, for one without a voice."""
        voice = self.voice or self.cfg.voices.get(language)
        if voice is not None:
            return voice
        if language and not language.startswith("en") and language not in self._no_voice:
            self._no_voice.add(language)
            self.send(ev.Info("voice_fallback", f"no voice for language {language!r} in "
                              f"gateway.voices; answering with {self.cfg.voice}",
                              {"language": language, "voice": self.cfg.voice}))
        return self.cfg.voice

    def _new_reply(self, messages: list[Message], speculative: bool) -> ReplyHandle:
        assert self.speech is not None
        self._replies += 1
        language = self.speech.language
        reply = ReplyHandle(
            self._replies, self.channel, self.id, messages, voice=self._voice_for(language),
            language=language,
            playout=self.track, on_text=self._agent_text, on_event=self._emit,
            speculative=self.turn_cfg.speculative if speculative else "off",
            max_tokens=self.reply_max_tokens, first_tokens=self.cfg.reply_first_tokens,
            temperature=self.temperature, retry=self.cfg.stage_retry, tools=self.tools,
            speak=self.speak)
        reply.start()
        return reply

    def _agent_text(self, reply: int, delta: str) -> None:
        self.send(ev.AgentText("agent_text", reply, delta))

    # -- the end of a turn ------------------------------------------------------------------

    def _turn_ended(self, e: TurnEnded) -> None:
        assert self.speech is not None
        if self._judging is not None:
            self._judging.cancel()  # max_silence_ms came first
            self._judging = None
        decided = time.monotonic()
        last_voiced_at = self._clock.at(e.last_voiced_sample, decided)
        final = self.speech.end_turn(e.last_voiced_sample)
        if self._asr_down is not None:  # lost with the stream, and the caller was told
            final.set_exception(self._asr_down)
        spec, self.spec = self.spec, None  # prepared for this turn
        self._spawn(self._commit(final, spec, last_voiced_at, decided))

    async def _commit(self, final: asyncio.Future[str], spec: ReplyHandle | None,
                      last_voiced_at: float, decided_at: float) -> None:
        assert self.speech is not None
        try:
            text = await self._final(final)
        except TimeoutError:
            self.send(ev.error("asr", f"no final transcript within {FINAL_WITHIN_S:g} s; "
                                      "say it again"))
            text = ""
        except grpc.aio.AioRpcError:
            text = ""  # the stream failed; _asr_events said so
        final_at = time.monotonic()
        self._emit(TurnHeard(text, self.speech.language))
        if text:
            self.send(ev.transcript(text, True, self.speech.language))
        if self._barge_started is not None and (not text or is_backchannel(text,
                                                                           self.cfg.barge_in)):
            self._barge_started = None
            self.track.resume()
            self.send(ev.Info("agent_resumed", "backchannel, not an interruption",
                              {"heard": text}))
            if spec is not None:
                spec.cancel("backchannel")
            return
        if not text:
            if spec is not None:
                spec.cancel("miss")
            return
        if self._agent_busy():
            self._interrupt()
        joined = self._join()
        if self.turns.in_turn:
            # The user is already speaking again (the final came late): answering now
            # would talk over them; their next words continue this turn.
            self.context.commit_user(text, joined)
            if spec is not None:
                spec.cancel("resumed")
            return
        messages = self.context.with_user(text, joined)
        if spec is not None and spec.failure is None and _same_words(spec.messages, messages) \
                and spec.language == self.speech.language:
            reply, speculation = spec, "hit"
        else:
            if spec is not None:
                spec.cancel("miss")
            reply, speculation = self._new_reply(messages, speculative=False), \
                ("miss" if spec is not None else "none")
        self.context.commit_user(text, joined)
        self.reply = reply
        self._emit(TurnCommitted(reply.id, self.context.last_user(), last_voiced_at,
                                 decided_at, final_at, speculation, joined, reply.language,
                                 reply.voice))
        reply.commit()  # (after TurnCommitted: what it held is this turn's answer)
        self._spawn(self._follow(reply))

    async def _follow(self, reply: ReplyHandle) -> None:
        """Record what the caller heard of a committed reply, and say when it is over."""
        with contextlib.suppress(asyncio.CancelledError):
            await reply.finished
        if reply.outcome in ("done", "failed") and self.reply is reply:
            self.reply = None
            said = reply.text if reply.outcome == "done" else reply.heard()
            self.context.add(reply.tool_exchange)
            self.context.agent_heard(said)
            if reply.client_calls:
                self.context.add([tool_calls_message("", reply.client_calls)])
            self._said[reply.id] = said.strip()
            while len(self._said) > 8:
                self._said.popitem(last=False)
            if reply.failure is not None:
                f = reply.failure
                self.send(ev.error(f.stage, f"the reply failed ({f.message}); "
                                            "what was said is kept, so say it again"))
            else:
                calls = [{"call_id": c.id, "name": c.name, "arguments": c.arguments}
                         for c in reply.client_calls]
                self.send(ev.Info("agent_done", "the answer has been played",
                                  {"turn": reply.id} | ({"tool_calls": calls} if calls else {})))

    def _interrupt(self, heard_chars: int | None = None) -> None:
        """A real interruption: stop the reply, keep only what the user heard."""
        reply, self.reply = self.reply, None
        self._barge_started = None
        if reply is None:
            self.track.clear()
            return
        heard = reply.interrupt(heard_chars)
        self.context.add(reply.tool_exchange)
        self.context.agent_heard(heard)
        self.send(ev.Interrupted("interrupted", reply.id, heard))

    # -- a client's own commands (the Realtime API) --------------------------------------

    def set_manual(self, manual: bool) -> None:
        """With `manual`, the client says when its turn ends (`commit_audio`), and asks
        for the answer (`respond`): no VAD turns, no barge-in. Only between turns."""
        if manual != self.manual and (self.turns.in_turn or self._manual_open):
            raise RuntimeError("turn taking changes only between turns")
        self.manual = manual

    def _feed_manual(self, chunk: InChunk) -> None:
        assert self.speech is not None
        self._clock.note(chunk.start_sample + CHUNK, chunk.arrived)
        self.last_voice_at = chunk.arrived
        self.speech.add(chunk)
        if not self._manual_open:
            self.speech.start_turn(preroll=False)
            self._manual_open = True
        self._manual_end = chunk.start_sample + CHUNK

    def commit_audio(self) -> bool:
        """The client ends its turn (manual turns): its audio since the last commit is
        transcribed and enters the conversation. False if no audio came since."""
        assert self.speech is not None
        if not self._manual_open:
            return False
        self._manual_open = False
        final = self.speech.end_turn(self._manual_end)
        self._emit_turn(TurnEnded(self._manual_end, self._manual_end, self._manual_end, 0))
        self._pending_finals = [t for t in self._pending_finals if not t.done()]
        self._pending_finals.append(self._spawn(self._take_final(final)))
        return True

    def discard_audio(self) -> None:
        """Drop the audio since the last commit (manual turns)."""
        assert self.speech is not None
        if self._manual_open:
            self._manual_open = False
            self.speech.end_turn(self._manual_end).cancel()

    def _emit_turn(self, e: TurnEvent) -> None:
        for listen in self.listeners:
            listen(e)

    async def _take_final(self, final: asyncio.Future[str]) -> None:
        assert self.speech is not None
        try:
            text = await self._final(final)
        except (TimeoutError, grpc.aio.AioRpcError):
            text = ""
        self._emit(TurnHeard(text, self.speech.language))
        if text:
            self.send(ev.transcript(text, True, self.speech.language))
            self.context.commit_user(text)

    def respond(self) -> None:
        """Answer the conversation as it stands (a client asked; no turn ended), once the
        turns it committed are transcribed."""
        pending, self._pending_finals = self._pending_finals, []
        self._spawn(self._respond_after(pending))

    async def _respond_after(self, pending: list[asyncio.Task[object]]) -> None:
        await asyncio.gather(*pending, return_exceptions=True)
        if self._agent_busy():
            self._interrupt()
        self._drop_spec("closed")
        now = time.monotonic()
        reply = self.reply = self._new_reply(self.context.for_reply(), speculative=False)
        self._emit(TurnCommitted(reply.id, self.context.last_user(), now, now, now, "none",
                                 False, reply.language, reply.voice))
        self._spawn(self._follow(reply))

    def cancel_reply(self) -> int | None:
        """Stop the reply being made or played, keeping what was heard: its id, or None
        when there is none."""
        reply = self.reply
        if reply is None or not (reply.active or self.track.speaking):
            return None
        self._interrupt()
        return reply.id

    def truncate(self, reply_id: int, audio_ms: int) -> None:
        """The client played only the first `audio_ms` of a reply's audio."""
        chars = self.track.chars_at(reply_id, audio_ms * self.track.rate // 1000)
        reply = self.reply
        if reply is not None and reply.id == reply_id:
            self._interrupt(chars)
            return
        said = self._said.get(reply_id)
        if said is not None:
            n = chars if chars >= len(said) or not said[chars:chars + 1].isalnum() \
                else said.rfind(" ", 0, chars) + 1
            self.context.truncate_agent(said, said[:n])

    def _first_audible(self, reply: int, sent_at: float) -> None:
        self._emit(ReplyProgress(reply, "first_audible", sent_at))

    async def _asr_events(self, asr: AsrStream, streams: contextlib.AsyncExitStack) -> None:
        """The ASR's events; a failed stream is replaced (bounded retries with backoff,
        within `stage_retry.deadline_s`) and what it had not finalised is heard again."""
        assert self.speech is not None
        retrier = Retrier(self.cfg.stage_retry)
        while True:
            try:
                async for e in asr:
                    kind = e.WhichOneof("kind")
                    if kind == "partial":
                        self.speech.on_partial(e.utterance_id, e.partial.text,
                                               e.partial.audio_end_sample, e.partial.language)
                        self.send(ev.transcript(e.partial.text, False, e.partial.language))
                        self._speculate_early()
                    elif kind == "final":
                        retrier.worked()
                        self._asr_recovering_until = 0.0
                        self.speech.on_final(e.utterance_id, e.final.text, e.final.language)
                # ended without an error while the session goes on (a drained replica)
                error = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                             grpc.aio.Metadata(), "the ASR stream ended")
            except grpc.aio.AioRpcError as e:
                error = e
            if self.closed.is_set():
                return
            wait = retrier.wait_s(error)
            if wait is None:
                if not await self._asr_spent(error):
                    return
                retrier = Retrier(self.cfg.stage_retry)  # the user spoke: a new budget
                wait = 0.0
            else:
                log.warning("session %s: ASR stream failed (%s: %s); new stream, try %d",
                            self.id, error.code().name, error.details(), retrier.attempt)
                self._retried(StageRetried("asr", retrier.attempt, error.code().name))
            self._asr_recovering_until = max(self._asr_recovering_until, time.monotonic()
                                             + self.cfg.stage_retry.deadline_s)
            await asyncio.sleep(wait)
            asr = await streams.enter_async_context(AsrStream(self.channel, self.id))
            self.speech.replay(asr)

    async def _asr_spent(self, error: grpc.aio.AioRpcError) -> bool:
        """The ASR retries are spent: what was said is lost, and the caller is told. A
        stream the stage refused ends the session (it would be refused again); otherwise
        the session stays open and the next speech tries again (True, once it starts)."""
        assert self.speech is not None
        self.speech.fail(error)
        self._asr_recovering_until = 0.0
        log.warning("session %s: ASR stream failed: %s", self.id, error.details())
        if error.code() not in RETRYABLE:
            self.send(ev.error("asr", f"{error.code().name}: {error.details()}"))
            self.end_reason = f"asr stage failed: {error.code().name}"
            self.closed.set()  # ends the session
            return False
        self.send(ev.error("asr", f"{error.code().name}: {error.details()}; what you said "
                                  "was not heard: say it again (your next words open a new "
                                  "stream)"))
        self._asr_down = error
        self._speech_again.clear()
        await self._speech_again.wait()
        self._asr_down = None
        return True

    async def _final(self, final: asyncio.Future[str]) -> str:
        """A turn's final transcript within FINAL_WITHIN_S, or longer while a failed ASR
        stream is being replaced (a new replica may take that long to start, and then
        hears the turn again)."""
        deadline = time.monotonic() + FINAL_WITHIN_S
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(final),
                                              max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                if self._asr_recovering_until <= time.monotonic():
                    final.cancel()
                    raise
                deadline = self._asr_recovering_until + FINAL_WITHIN_S

    def _retried(self, e: StageRetried) -> None:
        said = {"asr": "what you said is sent again", "llm": "the answer goes on",
                "tts": "the answer goes on"}[e.stage]
        detail: dict[str, object] = {"stage": e.stage, "attempt": e.attempt}
        if e.reply is not None:
            detail["turn"] = e.reply
        self.send(ev.Info("stage_retry", f"the {e.stage.upper()} stream failed ({e.code}); "
                          f"{said}", detail))
