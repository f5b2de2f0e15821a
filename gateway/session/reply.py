"""A reply handle: one agent reply, from its LLM call through its TTS stream to the playout.

A reply is speculative (prepared while the user's pause is judged: its text and
audio are held, nothing reaches the caller), committed (what it says is
played), cancelled (a speculative one thrown away silently, or a committed one
interrupted: `interrupt()` returns what the caller heard), or finished.

    handle = ReplyHandle(...); handle.start()
    handle.commit()            # a speculative reply: play what is held, then the rest
    await handle.finished      # "done", "interrupted", "cancelled" or "failed"

Cancelling cancels both gRPC calls: the LLM replica aborts the engine request,
the TTS replica stops its synthesis. A failing stage ends the reply with
`failure` set; what was generated before the failure is still spoken.

With tools, the LLM may call some instead of (or after) saying something: once
the reply is committed (a tool acts on the world; a guess must not), the
gateway's own tools run and a new LLM call answers from their results, in the
same reply; a client's tools end the reply with `client_calls` for the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import numpy as np

from gateway.config import RetryConfig
from gateway.session.context import Message
from gateway.session.events import (
    ReplyDiscarded,
    ReplyProgress,
    SessionEvent,
    StageRetried,
    ToolsCalled,
)
from gateway.session.playout import Playout
from gateway.session.retry import Retrier
from gateway.session.tools import ToolBox
from voxray.stage_clients.llm import (
    ToolCall,
    generate,
    llm_request,
    tool_calls_message,
    tool_result_message,
)
from voxray.v1 import common_pb2, tts_pb2, tts_pb2_grpc

TTS_RATE = 24_000
FIRST_AUDIO_WAIT_S = 3.0  # a TTS that has not spoken by then: go on with the text anyway
AUDIBLE = 328  # |sample| above about -40 dBFS


@dataclass(frozen=True)
class Failure:
    stage: str  # "llm" or "tts"
    message: str


@dataclass
class _Held:
    pcm: np.ndarray
    span_start: int
    span_end: int


class ReplyHandle:
    def __init__(
        self, reply_id: int, channel: grpc.aio.Channel, conversation_id: str,
        messages: list[Message], *, voice: str, playout: Playout,
        on_text: Callable[[int, str], None], on_event: Callable[[SessionEvent], None],
        speculative: str = "off", max_tokens: int | None = None, first_tokens: int = 0,
        language: str = "", temperature: float | None = None,
        retry: RetryConfig | None = None, tools: ToolBox | None = None, speak: bool = True,
    ) -> None:
        """speak: False for a text-only reply (a Realtime session whose output modality is
        text): no TTS stream, and the text as it is sent is what the user got."""
        self.id = reply_id
        self.language = language  # the user's: the LLM is asked to answer in it
        self.voice = voice
        self.messages = messages  # what it answers
        self.text = ""  # everything the LLM said so far
        self.state = "speculative" if speculative != "off" else "committed"
        self.failure: Failure | None = None
        self.llm_tokens = 0
        self.tts_audio_s = 0.0
        self._channel = channel
        self._cid = conversation_id
        self._voice = voice
        self._playout = playout
        self._on_text = on_text
        self._on_event = on_event
        self._speak = speak
        self._tts_early = speak and speculative != "llm"  # synthesize while speculative
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._retry = retry or RetryConfig(attempts=0)
        self._tools = tools if tools else None
        self._calls: list[ToolCall] = []  # the last LLM call's
        # the calls made and their results, for the next LLM call and the chat context
        self.tool_exchange: list[Message] = []
        self.client_calls: list[ToolCall] = []  # for the client to run
        self._round_start = 0  # where the text of the current LLM round begins
        # reply characters the TTS has sent audio for; a new TTS stream starts there
        self._tts_covered = 0
        self._tts_offset = 0  # where the current TTS stream's text starts in the reply
        # Two-call replies need the TTS stream open while the first call runs.
        self._first_tokens = first_tokens if self._tts_early else 0
        self._held_text: list[str] = []
        self._held_audio: list[_Held] = []
        self._committed = asyncio.Event()
        self._llm_done = False
        self._first: set[str] = set()
        self._reached: dict[str, asyncio.Event] = {}
        self._tts_q: asyncio.Queue[tts_pb2.TtsStreamRequest | None] | None = None
        self._tts_task: asyncio.Task[None] | None = None
        self._seq = 0
        self._task: asyncio.Task[str] | None = None
        self.outcome = ""
        if self.state == "committed":
            self._committed.set()

    # -- control ---------------------------------------------------------------------------

    def start(self) -> None:
        self._milestone("started")
        self._task = asyncio.create_task(self._run())

    @property
    def finished(self) -> asyncio.Task[str]:
        assert self._task is not None, "start() first"
        return self._task

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def generating(self) -> bool:
        """The LLM is writing it now: a token came and the last call has not ended."""
        return self.llm_tokens > 0 and not self._llm_done

    @property
    def speculative(self) -> bool:
        return self.state == "speculative"

    def commit(self) -> None:
        """Play it: the held text and audio go out now, the rest as it comes."""
        if self.state != "speculative":
            return
        self.state = "committed"
        for delta in self._held_text:
            self._on_text(self.id, delta)
        for h in self._held_audio:
            self._playout.push(self.id, h.pcm, h.span_start, h.span_end)
        self._held_text.clear()
        self._held_audio.clear()
        if self._speak and self._tts_task is None and self.active:
            self._open_tts()
        self._committed.set()

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop it. A speculative reply vanishes without a trace but its cost."""
        if self.state == "speculative":
            self._on_event(ReplyDiscarded(self.id, reason, self.llm_tokens, self.tts_audio_s))
        self.state = "cancelled"
        self.outcome = self.outcome or reason
        if self._task is not None:
            self._task.cancel()

    def heard(self, chars: int | None = None) -> str:
        """The whole words of the text that the caller has heard so far (or of its first
        `chars` characters)."""
        if self.state == "speculative":
            return ""
        played = self._playout.heard_chars(self.id) if self._speak else len(self.text)
        n = min(played if chars is None else min(chars, played), len(self.text))
        if 0 < n < len(self.text) and self.text[n].isalnum():
            n = self.text.rfind(" ", 0, n) + 1  # a word cut in half was not heard
        return self.text[:n].rstrip()

    def interrupt(self, heard_chars: int | None = None) -> str:
        """A barge-in: stop, drop its queued audio, and say what was heard (all that was
        played, or the first `heard_chars` of it where the client says so)."""
        heard = self.heard(heard_chars)
        self.cancel("interrupted")
        self._playout.clear()
        return heard

    # -- the calls --------------------------------------------------------------------------

    async def reached(self, stage: str) -> None:
        """Until the reply has reached a milestone (see ReplyProgress)."""
        await self._reached.setdefault(stage, asyncio.Event()).wait()

    def _milestone(self, stage: str) -> None:
        if stage not in self._first:
            self._first.add(stage)
            self._reached.setdefault(stage, asyncio.Event()).set()
            self._on_event(ReplyProgress(self.id, stage))

    def _tts_send(self, **kind: object) -> None:
        assert self._tts_q is not None
        self._tts_q.put_nowait(tts_pb2.TtsStreamRequest(
            meta=common_pb2.Meta(session_id=self._cid, seq=self._seq,
                                 sent_unix_ns=time.time_ns()), **kind))  # type: ignore[arg-type]
        self._seq += 1

    def _open_tts(self) -> None:
        self._tts_task = asyncio.create_task(self._read_tts())

    def _new_tts_queue(self) -> asyncio.Queue[tts_pb2.TtsStreamRequest | None]:
        """A TTS stream's requests: the voice, the text not yet spoken, and what the LLM
        says from here on (`_tts_send` feeds the newest queue)."""
        queue = self._tts_q = asyncio.Queue()
        self._tts_offset = self._tts_covered
        self._tts_send(start=tts_pb2.VoiceOptions(voice=self._voice))
        if self.text[self._tts_offset:]:
            self._tts_send(text=self.text[self._tts_offset:])
        if self._llm_done:
            queue.put_nowait(None)
        return queue

    @staticmethod
    async def _tts_requests(queue: asyncio.Queue[tts_pb2.TtsStreamRequest | None]
                            ) -> AsyncIterator[tts_pb2.TtsStreamRequest]:
        while (req := await queue.get()) is not None:
            yield req

    async def _read_tts(self) -> None:
        """The reply's audio. A failed stream is replaced (stage_retry) by one that
        speaks the text from where the audio stopped: the caller hears a gap."""
        retrier = Retrier(self._retry)
        while True:
            call = tts_pb2_grpc.TtsStub(self._channel).SynthesizeStream(
                self._tts_requests(self._new_tts_queue()), metadata=(("application", "tts"),))
            try:
                async for event in call:
                    if event.WhichOneof("kind") == "audio":
                        retrier.worked()
                        self._tts_audio(event.audio)
                return
            except grpc.aio.AioRpcError as e:
                wait = retrier.wait_s(e)
                if wait is None:
                    raise
                self._on_event(StageRetried("tts", retrier.attempt, e.code().name, self.id))
                await asyncio.sleep(wait)
            finally:
                call.cancel()

    def _tts_audio(self, audio: tts_pb2.TtsAudio) -> None:
        pcm = np.frombuffer(audio.audio.pcm16, "<i2")
        self.tts_audio_s += len(pcm) / TTS_RATE
        if np.abs(pcm).max(initial=0) > AUDIBLE:
            self._milestone("first_audio")
        start, end = audio.span.start + self._tts_offset, audio.span.end + self._tts_offset
        self._tts_covered = max(self._tts_covered, end)
        if self.state == "speculative":
            self._held_audio.append(_Held(pcm, start, end))
        else:
            self._playout.push(self.id, pcm, start, end)

    async def _read_llm(self) -> None:
        """The answer's text. With `first_tokens`, in two calls: the first few tokens (the
        first unit's words), then, once that unit's audio is made, the rest as a
        continuation of the same reply. The LLM idles while the first unit is
        synthesised, which on a small box is what the caller waits for."""
        try:
            finish = await self._llm_retrying(self._first_tokens or self._max_tokens)
            if self._first_tokens and finish == "length" and self._tts_task is not None \
                    and (self._max_tokens is None or self.llm_tokens < self._max_tokens):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.reached("first_audio"), FIRST_AUDIO_WAIT_S)
                left = None if self._max_tokens is None else self._max_tokens - self.llm_tokens
                await self._llm_retrying(left)
            await self._run_tools()
        finally:
            self._llm_done = True
            self._milestone("llm_done")
            if self._tts_q is not None:
                self._tts_q.put_nowait(None)  # half-close: TTS speaks the rest, then ends

    async def _llm_retrying(self, max_tokens: int | None) -> str:
        """One Generate call continuing the reply's text; a failed one is issued again
        (stage_retry) as a continuation of what it had generated. (Continuing, rather
        than regenerating and skipping what was played: the words already heard stay
        the start of the answer, and only the prefix is prefilled again.)"""
        retrier = Retrier(self._retry)
        tokens_before = self.llm_tokens
        while True:
            left = None if max_tokens is None else \
                max(1, max_tokens - (self.llm_tokens - tokens_before))
            try:
                return await self._llm_call(self.text[self._round_start:], left)
            except grpc.aio.AioRpcError as e:
                wait = retrier.wait_s(e)
                if wait is None:
                    raise
                self._on_event(StageRetried("llm", retrier.attempt, e.code().name, self.id))
                await asyncio.sleep(wait)

    async def _llm_call(self, prefix: str, max_tokens: int | None) -> str:
        """Stream one Generate call's deltas into the reply; its finish reason."""
        request = llm_request(self._cid, [*self.messages, *self.tool_exchange], seq=self.id,
                              **({"max_tokens": max_tokens} if max_tokens else {}),
                              **({"temperature": self._temperature}
                                 if self._temperature is not None else {}))
        request.assistant_prefix = prefix
        if self._tools is not None:
            request.tools.extend(self._tools.specs())
        request.reply_language = self.language
        call = generate(self._channel, request)
        finish = ""
        self._calls = []
        try:
            async for event in call:
                kind = event.WhichOneof("kind")
                if kind == "done":
                    finish = event.done.finish_reason
                elif kind == "tool_call":
                    c = event.tool_call
                    self._calls.append(ToolCall(c.id, c.name, c.arguments))
                else:
                    self._milestone("first_token")
                    self.llm_tokens += event.delta.token_count
                    self._say(event.delta.text)
        finally:
            call.cancel()
        if self._calls:
            self._milestone("tools_called")
        return finish

    def _say(self, delta: str) -> None:
        self.text += delta
        if self.state == "speculative":
            self._held_text.append(delta)
        else:
            self._on_text(self.id, delta)
        if self._tts_q is not None:
            self._tts_send(text=delta)

    async def _run_tools(self) -> None:
        """Run the gateway's tools the LLM called and answer from their results, up to
        max_rounds; a client's tools are left for the client."""
        rounds = 0
        while self._calls and self._tools is not None:
            calls, self._calls = self._calls, []
            await self._committed.wait()
            if not all(self._tools.runs_here(c.name) for c in calls):
                self.client_calls = calls
                return
            if rounds == self._tools.max_rounds:
                return  # it keeps calling: what it said so far is the answer
            rounds += 1
            if self._tools.filler and not self.text.strip():
                self._say(self._tools.filler)
            self._on_event(ToolsCalled(self.id, tuple(c.name for c in calls)))
            results = await asyncio.gather(*(self._tools.run(c) for c in calls))
            self.tool_exchange.append(tool_calls_message("", calls))
            self.tool_exchange += [tool_result_message(c.id, r)
                                   for c, r in zip(calls, results, strict=True)]
            if self.text and not self.text[-1].isspace():
                self._say(" ")
            self._round_start = len(self.text)
            await self._llm_retrying(self._max_tokens)

    async def _run(self) -> str:
        """The reply's outcome: "done" or "failed"; cancelled, it raises CancelledError
        and `outcome` is the reason given to cancel()."""
        try:
            if self._tts_early or self._speak and self.state == "committed":
                self._open_tts()
            try:
                await self._read_llm()
            except grpc.aio.AioRpcError as e:
                self.failure = Failure("llm", f"{e.code().name}: {e.details()}")
                if not self.text:
                    return self._end("failed")
            await self._committed.wait()
            if self._tts_task is not None:
                try:
                    await self._tts_task
                except grpc.aio.AioRpcError as e:
                    self.failure = self.failure or Failure("tts", f"{e.code().name}: "
                                                                  f"{e.details()}")
            await self._playout.played(self.id)
            self._milestone("done")
            return self._end("failed" if self.failure else "done")
        finally:
            if self._tts_task is not None and not self._tts_task.done():
                self._tts_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await self._tts_task

    def _end(self, outcome: str) -> str:
        self.outcome = self.outcome or outcome
        return self.outcome
