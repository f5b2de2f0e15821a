"""A replica dies mid-call: the ASR replica is killed (`ray.kill`, as in a lost node)
while the caller is speaking. The gateway opens a new stream, Serve starts a new
replica, the utterance is heard again and answered; the call goes on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
import ray
from ray import serve

from gateway.server import Gateway
from gateway.session.pipeline import PipelineSession
from gateway.session.reply import ReplyHandle
from tests.test_gateway_e2e import start_gateway
from tests.waiting import until
from voxray.clients.caller import Caller, let_agent_talk, load_48k
from voxray.wer import wer

pytestmark = pytest.mark.slow
SPEECH = "tests/data/speech"


@pytest.fixture(scope="module")
async def gateway(serve_grpc: str) -> AsyncIterator[tuple[Gateway, str]]:
    runner, gw, url = await start_gateway(serve_grpc, reply_max_tokens=12)
    yield gw, url
    await runner.cleanup()


def replicas(deployment: str = "asr#AsrDeployment") -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if f"SERVE_REPLICA::{deployment}" in a["name"]]


def asr_replicas() -> list[str]:
    return replicas()


async def recovered(app: str, victim: str, deployment: str, within_s: float = 120) -> None:
    started = time.monotonic()
    while serve.status().applications[app].status.value != "RUNNING":
        assert time.monotonic() - started < within_s, f"the {app} app did not recover"
        await asyncio.sleep(1)
    assert replicas(deployment) and victim not in replicas(deployment)


async def test_the_asr_replica_dies_mid_utterance_and_the_turn_is_answered(
        gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    (victim,) = asr_replicas()
    caller = Caller(url)
    await caller.connect()
    try:
        n = len(caller.events)
        _, last_sent = caller.mic.say(load_48k(f"{SPEECH}/s03.wav"))
        await caller.wait_event("partial", 20, since=n)  # mid-utterance: the ASR is at work
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        await last_sent
        retry = await caller.wait_event("stage_retry", 30, since=n)
        assert retry["detail"]["stage"] == "asr"
        final = await caller.wait_event("final", 120, since=n)
        assert wer("what is the weather going to be like tomorrow morning", final["text"]) <= 0.3
        metrics = await caller.wait_event("turn_metrics", 60, since=n)
        assert metrics["ttfat_ms"] > 0
        assert not [e for e in caller.events[n:] if e["type"] == "error"], caller.events[n:]
        await caller.wait_event(("agent_done", "interrupted"), 60, since=n)
        # and the call goes on: the next turn on the new replica
        n = len(caller.events)
        caller.mic.say(load_48k(f"{SPEECH}/s11.wav"))
        final = await caller.wait_event("final", 60, since=n)
        assert wer("hello can you hear me", final["text"]) <= 0.3
    finally:
        await caller.hang_up()
    await until(lambda: not gw.calls, what="the session ends on hang-up")
    await recovered("asr", victim, "asr#AsrDeployment")


async def test_the_tts_replica_dies_mid_reply_and_the_answer_goes_on(serve_grpc: str) -> None:
    """Killed while a long answer plays: a new TTS stream speaks the rest from where the
    audio stopped; the caller hears a gap, then the rest, and the history keeps it all."""
    runner, gw, url = await start_gateway(serve_grpc, reply_max_tokens=80)
    (victim,) = replicas("tts#TtsDeployment")
    caller = Caller(url)
    await caller.connect()
    try:
        n = len(caller.events)
        await let_agent_talk(caller, load_48k(f"{SPEECH}/s18.wav"), 0.3)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        retry = await caller.wait_event("stage_retry", 30, since=n)
        assert retry["detail"]["stage"] == "tts", retry
        await the_answer_went_on(caller, gw, n, 150)
        # the rest of the answer was heard after the new replica came up
        assert caller.heard.audible_between(retry["received_at"] + 0.5, time.monotonic())
        await answered_again(caller)
    finally:
        await caller.hang_up()
        await runner.cleanup()
    await recovered("tts", victim, "tts#TtsDeployment")


async def test_the_llm_replica_dies_mid_reply_and_the_answer_goes_on(serve_grpc: str) -> None:
    """Killed while it writes a long answer: the gateway asks the replica Serve starts
    instead to continue from the text generated so far. The caller hears a gap, then the
    rest; the history keeps the whole answer; the next turn is answered."""
    # a new vLLM replica takes a while to load on a CPU: retry for as long
    runner, gw, url = await start_gateway(serve_grpc, reply_max_tokens=120, stage_retry={
        "attempts": 50, "deadline_s": 240, "max_backoff_ms": 2000})
    (victim,) = replicas("llm#LlmDeployment")
    actor = ray.get_actor(victim, namespace="serve")
    caller = Caller(url)
    await caller.connect()
    try:
        n = len(caller.events)
        caller.mic.say(load_48k(f"{SPEECH}/s18.wav"))
        # The kill lands while tokens are coming (the reply may still be speculative:
        # the agent's first words can reach the caller after the whole answer is written).
        (session,) = [c.session for c in gw.calls.values()]
        assert isinstance(session, PipelineSession)

        def writing() -> ReplyHandle | None:
            return next((r for r in (session.spec, session.reply)
                         if r is not None and r.generating and r.llm_tokens >= 2), None)

        await until(lambda: writing() is not None, within_s=60, what="the LLM writing")
        ray.kill(actor, no_restart=True)
        reply = writing()
        assert reply is not None, "the answer was finished before the kill"
        written = reply.text
        retry = await caller.wait_event("stage_retry", 30, since=n)
        assert retry["detail"]["stage"] == "llm", retry
        said = await the_answer_went_on(caller, gw, n, 300)
        # continued, not started again: what was written before the kill begins the answer
        assert said.strip().startswith(written.strip()), (written, said)
        assert caller.heard.audible_between(retry["received_at"], time.monotonic())
        await answered_again(caller)
    finally:
        await caller.hang_up()
        await runner.cleanup()
    await recovered("llm", victim, "llm#LlmDeployment", within_s=300)


async def the_answer_went_on(caller: Caller, gw: Gateway, n: int, within_s: float) -> str:
    """The reply under way at a kill was finished, and the history holds all of it."""
    done = await caller.wait_event(("agent_done", "interrupted", "error"), within_s, since=n)
    assert done["type"] == "agent_done", caller.events[n:]
    said = "".join(e["text"] for e in caller.events[n:] if e["type"] == "agent_text")
    (session,) = [c.session for c in gw.calls.values()]
    assert session.context.messages[-1] == ("assistant", said.strip())
    return said


async def answered_again(caller: Caller) -> None:
    """The call goes on: the next turn is heard and answered in speech."""
    n = len(caller.events)
    caller.mic.say(load_48k(f"{SPEECH}/s11.wav"))
    final = await caller.wait_event("final", 60, since=n)
    assert wer("hello can you hear me", final["text"]) <= 0.3
    done = await caller.wait_event(("agent_done", "error"), 120, since=n)
    assert done["type"] == "agent_done", caller.events[n:]
    assert caller.heard.audible_between(final["received_at"], time.monotonic())


async def test_the_moshi_replica_dies_mid_call_and_a_new_conversation_goes_on(
        serve_grpc: str) -> None:
    """Duplex: the Moshi replica is killed while the caller talks with it. The gateway
    takes a slot on the replica Serve starts instead, says so, and the audio flows again."""
    runner, gw, url = await start_gateway(serve_grpc, stage_retry={
        "attempts": 50, "deadline_s": 240, "max_backoff_ms": 2000})
    (victim,) = replicas("moshi#MoshiDeployment")
    caller = Caller(url, mode="duplex")
    await caller.connect()
    try:
        await caller.wait_event("duplex_ready", 10)
        caller.mic.say(load_48k(f"{SPEECH}/s03.wav"))
        await asyncio.sleep(1.0)
        n = len(caller.events)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        retry = await caller.wait_event("stage_retry", 30, since=n)
        assert retry["detail"]["stage"] == "moshi"
        restarted = await caller.wait_event("duplex_restarted", 240, since=n)
        assert restarted["detail"]["slot"] in range(4)
        assert len(gw.calls) == 1
        # the new conversation is heard: Moshi's (loud, random) voice arrives again
        at = time.monotonic()
        caller.mic.say(load_48k(f"{SPEECH}/s11.wav"))
        await until(lambda: int((np.abs(caller.heard.pcm(since=at).astype(np.int32)) > 300)
                                .sum()) > 24_000, within_s=30,
                    what="Moshi's voice after the restart")
        assert not [e for e in caller.events[n:] if e["type"] == "error"], caller.events[n:]
    finally:
        await caller.hang_up()
        await runner.cleanup()
    await recovered("moshi", victim, "moshi#MoshiDeployment")
