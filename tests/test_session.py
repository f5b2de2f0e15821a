"""A pipeline session without Ray or WebRTC: real speech through the real Silero VAD and Smart
Turn model, stand-in stages on a real local gRPC server (loadtest/stand_in_stages.py), the
agent's track read as aiortc would. The subject is the session: speculation, continuations
and recovery; the real models are in the Serve tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from gateway import events as ev
from gateway.audio_in import InChunk, level_db
from gateway.config import GatewayConfig, RetryConfig, TurnConfig
from gateway.session.pipeline import PipelineSession
from gateway.smart_turn import SharedSmartTurn
from gateway.vad import CHUNK, SAMPLE_RATE
from loadtest.stand_in_stages import Script, serve_stand_ins
from loadtest.turnset import samples
from voxray.stage_auth import stage_channel

SAMPLES = {s.id: s for s in samples()}


class Call:
    """One session fed in real time: `say` queues speech, silence flows in between."""

    def __init__(self, script: Script, reply_first_tokens: int = 0,
                 retry: RetryConfig | None = None, gateway: dict[str, Any] | None = None,
                 **turn: Any) -> None:
        self.script = script
        self.retry = retry or RetryConfig(backoff_ms=50)
        self.turn = turn
        self.gateway = gateway or {}
        self.first_tokens = reply_first_tokens
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.audible: list[float] = []  # when an audible agent frame went out
        self._pending: list[np.ndarray] = []
        self._said_done: list[asyncio.Future[float]] = []

    async def __aenter__(self) -> Call:
        self.server, target = await serve_stand_ins(self.script)
        self.channel = stage_channel(target)
        self.model = SharedSmartTurn()
        cfg = GatewayConfig(turn=TurnConfig(**self.turn), stage_retry=self.retry,
                            reply_first_tokens=self.first_tokens, **self.gateway)
        self.session = PipelineSession(cfg, self.channel, self._send, self.model)
        self._tasks = [asyncio.create_task(self.session.run_chunks(self._chunks())),
                       asyncio.create_task(self._listen())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks)
        await self.channel.close()
        await self.server.stop(None)
        self.model.close()

    def _send(self, event: ev.Event) -> None:
        self.events.append((time.monotonic(), dict(vars(event))))

    def say(self, pcm16: np.ndarray) -> asyncio.Future[float]:
        """Queue speech; the future gets the time its last sample went in."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending.append(pcm16)
        self._said_done.append(fut)
        return fut

    async def _chunks(self) -> AsyncIterator[InChunk]:
        start, n = time.monotonic(), 0
        buf = np.zeros(0, np.int16)
        ends: list[tuple[int, asyncio.Future[float]]] = []  # stream sample where a say ends
        noise = np.random.default_rng(0)
        while True:
            await asyncio.sleep(max(0.0, start + (n + 1) * CHUNK / SAMPLE_RATE - time.monotonic()))
            if len(buf) < CHUNK and self._pending:
                buf = np.concatenate([buf, self._pending.pop(0)])
                ends.append((n * CHUNK + len(buf), self._said_done.pop(0)))
            pcm = np.zeros(CHUNK, np.int16)
            take = min(CHUNK, len(buf))
            pcm[:take] = buf[:take]
            buf = buf[take:]
            pcm = (pcm + noise.normal(0, 20, CHUNK)).astype(np.int16)  # a mic's floor
            chunk = InChunk(pcm, n * CHUNK, time.monotonic(), level_db(pcm))
            # the time its last sample really went in, however late a busy loop runs
            for end, fut in [e for e in ends if e[0] <= (n + 1) * CHUNK]:
                ends.remove((end, fut))
                fut.done() or fut.set_result(chunk.arrived)
            yield chunk
            n += 1

    async def _listen(self) -> None:
        while True:
            frame = await self.session.track.recv()
            if np.abs(frame.to_ndarray()).max() > 328:
                self.audible.append(time.monotonic())

    def of(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.events if e["type"] == kind]

    async def wait(self, kind: str, within_s: float = 20, count: int = 1) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while len(self.of(kind)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {kind}: {[e['type'] for _, e in self.events]}")
            await asyncio.sleep(0.02)
        return self.of(kind)[count - 1][1]


def speech(key: str) -> np.ndarray:
    return SAMPLES[key].pcm()


def last_voiced_at(key: str, said_at: float) -> float:
    """When the sample's last voiced instant went in, from when its last sample did."""
    s = SAMPLES[key]
    return said_at - (len(s.pcm()) / SAMPLE_RATE - s.last_voiced_s)


async def test_a_finished_question_plays_the_reply_prepared_during_the_pause() -> None:
    script = Script(asr_texts=["What time does the pharmacy close today?"])
    async with Call(script) as call:
        spoke = last_voiced_at("q01", await call.say(speech("q01")))
        metrics = await call.wait("turn_metrics")
        await call.wait("agent_done")
        assert metrics["speculation"] == "hit", metrics
        assert metrics["reply_started_at_ms"] < metrics["end_of_turn_ms"]  # began in the pause
        assert len(script.llm_calls) == 1
        (final_at, final), = call.of("final")
        assert final["text"] == "What time does the pharmacy close today?"
        # nothing of the prepared reply reached the caller before the turn ended
        assert min(call.audible) >= final_at and min(call.audible) > spoke + 0.2
        assert all(t >= final_at for t, _ in call.of("agent_text"))
        judged = call.of("pause_judged")[-1][1]
        assert judged["words"] == final["text"] and 0 <= judged["evidence"]["audio"] <= 1
        assert judged["model_ms"] > 0
        assert call.session.context.messages == [
            ("user", final["text"]), ("assistant", script.answer)]


async def test_speech_after_a_pause_continues_the_turn_and_the_guess_goes_unheard() -> None:
    whole = "My flight was cancelled and I need to find another one for tomorrow."
    script = Script(asr_texts=["My flight was cancelled and...", whole])
    p03 = SAMPLES["p03"]
    async with Call(script) as call:
        said = await call.say(p03.pcm())
        metrics = await call.wait("turn_metrics")
        await call.wait("agent_done")
        assert min(call.audible) > last_voiced_at("p03", said), "the agent cut in"
        first, second = [e for _, e in call.of("pause_judged")][:2]
        assert first["words"].endswith("and...") and first["wait_ms"] > 1200 + 200, first
        # the reply guessed at the first pause was thrown away, unheard and unrecorded
        assert len(script.llm_calls) == 2 and metrics["wasted_llm_tokens"] > 0, metrics
        assert script.llm_calls[0][-1] == ("user", "My flight was cancelled and...")
        assert [e["text"] for _, e in call.of("final")] == [whole]
        assert call.session.context.messages == [("user", whole), ("assistant", script.answer)]
        replies = {e["turn"] for _, e in call.of("agent_text")}
        assert replies == {metrics["turn"]}
        assert second["words"] == whole


async def test_a_pause_whose_words_come_late_is_not_judged_on_the_audio_alone() -> None:
    """The ASR is busy: the pause decode's "and..." comes well after evidence_wait_ms. The
    turn waits for those words rather than end on the sound of the pause."""
    whole = "My flight was cancelled and I need to find another one for tomorrow."
    script = Script(asr_texts=["My flight was cancelled and...", whole], partial_delay_s=1.0)
    async with Call(script, evidence_wait_ms=300) as call:
        said = await call.say(SAMPLES["p03"].pcm())
        await call.wait("turn_metrics", within_s=30)
        await call.wait("agent_done", within_s=30)
        first = call.of("pause_judged")[0][1]
        assert first["words"].endswith("and...") and first["words_ms"] > 300, first
        assert [e["text"] for _, e in call.of("final")] == [whole]
        assert min(call.audible) > last_voiced_at("p03", said), "the agent cut in"


async def test_a_reply_whose_llm_fails_midway_goes_on_where_it_stopped() -> None:
    """The LLM replica dies three words into the answer: a new call continues the
    generated text (assistant_prefix), and the caller hears the whole answer once."""
    script = Script(asr_texts=["What time does the pharmacy close today?"], fail_llm_after=3)
    async with Call(script, speculative="off") as call:
        await call.say(speech("q01"))
        await call.wait("agent_done")
        ((_, retry),) = call.of("stage_retry")
        assert retry["detail"]["stage"] == "llm" and retry["detail"]["attempt"] == 1
        assert [p for p, _, _ in script.llm_requests] == ["", "Sure, here is"]
        assert script.tts_texts == [script.answer]  # one TTS stream, every word once
        assert "".join(e["text"] for _, e in call.of("agent_text")) == script.answer
        assert not call.of("error")
        assert call.session.context.messages[-1] == ("assistant", script.answer)


async def test_a_tts_stream_that_fails_midway_is_replaced_from_where_the_audio_stopped(
        ) -> None:
    script = Script(asr_texts=["What time does the pharmacy close today?"],
                    fail_tts_after_chunks=3)
    async with Call(script, speculative="off") as call:
        await call.say(speech("q01"))
        await call.wait("agent_done")
        ((_, retry),) = call.of("stage_retry")
        assert retry["detail"]["stage"] == "tts"
        failed, replacement = script.tts_texts
        assert failed.startswith("Sure, here is what")
        assert replacement == script.answer[len("Sure, here is"):]  # the rest, once
        assert not call.of("error")
        assert call.session.context.messages[-1] == ("assistant", script.answer)


async def test_a_reply_whose_llm_fails_past_its_retries_says_why_and_the_next_turn_works(
        ) -> None:
    script = Script(asr_texts=["What time does the pharmacy close today?",
                               "What is the capital of Canada?"], fail_llm_after=3)
    async with Call(script, retry=RetryConfig(attempts=0), speculative="off") as call:
        await call.say(speech("q01"))
        error = await call.wait("error")
        assert error["detail"]["stage"] == "llm" and "UNAVAILABLE" in error["message"], error
        # what was generated before the failure was still spoken, and is what was heard
        assert script.tts_texts == ["Sure, here is"]
        await asyncio.sleep(0.5)
        await call.say(speech("q05"))
        await call.wait("agent_done")
        assert not call.of("agent_paused")  # the next question is not taken for a barge-in
        assert call.session.context.messages == [
            ("user", "What time does the pharmacy close today?"),
            ("assistant", "Sure, here is"),
            ("user", "What is the capital of Canada?"),
            ("assistant", script.answer)]


async def test_going_on_before_a_word_of_the_reply_was_heard_joins_the_turn() -> None:
    first = "My flight was cancelled and..."
    rest = "I need to find another one for tomorrow."
    # The 1.2 s pause outlasts max_silence_ms, so the turn ends; a slow LLM means no
    # word of the reply has been heard when the user goes on.
    script = Script(asr_texts=[first, rest], word_delay_s=1.0)
    async with Call(script, max_silence_ms=700) as call:
        await call.say(speech("p03"))
        metrics = await call.wait("turn_metrics", within_s=40)
        assert metrics["joined"] is True, metrics
        interrupted = call.of("interrupted")
        assert interrupted and interrupted[0][1]["heard"] == ""
        assert [e["text"] for _, e in call.of("final")] == [first, rest]
        assert script.llm_calls[-1][-1] == ("user", f"{first} {rest}")
        await call.wait("agent_done", within_s=40)
        assert call.session.context.messages == [
            ("user", f"{first} {rest}"), ("assistant", script.answer)]


async def test_a_final_that_comes_after_the_user_went_on_is_not_answered_over_them() -> None:
    first = "My flight was cancelled and..."
    rest = "I need to find another one for tomorrow."
    # The turn ends inside the 1.2 s pause, but the final arrives only after the user
    # has started the next phrase.
    script = Script(asr_texts=[first, rest], final_delay_s=1.0)
    async with Call(script, max_silence_ms=500, speculative="off") as call:
        said = await call.say(speech("p03"))
        metrics = await call.wait("turn_metrics", within_s=40)
        assert min(call.audible) > last_voiced_at("p03", said), "the agent talked over the user"
        assert metrics["joined"] is True and not call.of("agent_paused")
        assert len(script.llm_calls) == 1 and script.llm_calls[0][-1] == ("user",
                                                                           f"{first} {rest}")


async def test_a_reply_in_two_calls_waits_for_its_first_audio_before_the_rest() -> None:
    """reply_first_tokens: the LLM leaves the cores to the first unit's synthesis."""
    script = Script(asr_texts=["What is the capital of Canada?"])
    async with Call(script, reply_first_tokens=3) as call:
        await call.say(speech("q05"))
        await call.wait("agent_done")
        (first, limit, _), (prefix, _, asked_at) = script.llm_requests
        assert (first, limit) == ("", 3) and prefix == "Sure, here is"
        assert asked_at >= script.tts_first_audio[0]  # the rest only once that audio came
        assert script.tts_texts == [script.answer]  # one reply, spoken whole
        assert call.session.context.messages[-1] == ("assistant", script.answer)


@pytest.mark.parametrize("speculative", ["llm", "off"])
async def test_other_speculation_modes_answer_the_same(speculative: str) -> None:
    script = Script(asr_texts=["What is the capital of Canada?"])
    async with Call(script, speculative=speculative) as call:
        await call.say(speech("q05"))
        metrics = await call.wait("turn_metrics")
        await call.wait("agent_done")
        assert metrics["speculation"] == ("hit" if speculative == "llm" else "none")
        assert script.tts_texts == [script.answer]
        assert call.session.context.messages[-1] == ("assistant", script.answer)


async def test_when_the_asr_retries_are_spent_the_session_stays_and_the_next_words_work(
        ) -> None:
    """No retries left: the turn under way is lost, and the caller is told so; the session
    stays open, and the next thing said opens a new stream and is answered."""
    text = "What time does the pharmacy close today?"
    script = Script(asr_texts=[text] * 4, fail_asr_after_audio=40)
    async with Call(script, retry=RetryConfig(attempts=0)) as call:
        await call.say(speech("q01"))
        error = await call.wait("error")
        assert error["detail"]["stage"] == "asr" and "say it again" in error["message"]
        assert not call.session.closed.is_set() and not call.of("turn_metrics")
        # (speech after a pause in that utterance opens a new stream already, and may be
        # answered): once the call is quiet, the same question again
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.5:
            if call.session.turns.in_turn or call.session.reply is not None:
                quiet_since = time.monotonic()
            await asyncio.sleep(0.05)
        again = time.monotonic()
        await call.say(speech("q01"))
        deadline = time.monotonic() + 30
        while not [t for t, _ in call.of("agent_done") if t > again]:
            assert time.monotonic() < deadline, [e["type"] for _, e in call.events]
            await asyncio.sleep(0.05)
        (_, final), *_ = [(t, e) for t, e in call.of("final") if t > again]
        assert final["text"] == text
        assert len(call.of("error")) == 1  # the lost turn, said once
        assert len(script.asr_samples) >= 2 and not call.of("stage_retry")
        assert call.session.context.messages[-2:] == [("user", text), ("assistant", script.answer)]


async def test_a_failed_asr_stream_is_replaced_and_the_turn_heard_again() -> None:
    """The ASR replica dies mid-utterance: a new stream hears the whole utterance again
    (from its preroll on), its final answers the turn, and the caller is told."""
    text = "What time does the pharmacy close today?"
    script = Script(asr_texts=[text] * 4, fail_asr_after_audio=40)  # ~1.3 s into the turn
    async with Call(script) as call:
        await call.say(speech("q01"))
        metrics = await call.wait("turn_metrics")
        await call.wait("agent_done")
        ((_, retry),) = call.of("stage_retry")
        assert retry["detail"] == {"stage": "asr", "attempt": 1}
        assert [e["text"] for _, e in call.of("final")] == [text] and not call.of("error")
        assert metrics["ttfat_ms"] > 0
        first, second = script.asr_samples
        assert first == 40 * CHUNK  # what the failed stream had heard
        assert second >= (SAMPLES["q01"].last_voiced_s - 0.3) * SAMPLE_RATE  # all of it again
        assert call.session.context.messages == [("user", text), ("assistant", script.answer)]
