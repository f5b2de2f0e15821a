"""A caller who speaks Spanish, then German, then English, over WebRTC with the CPU
profile (Whisper base, `language: auto`): each final says its language, each answer
comes in that language's voice, and a language without a voice falls back to the
default voice with an event that says so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.server import Gateway
from tests import speech
from tests.test_gateway_e2e import start_gateway
from voxray.clients.caller import Caller, load_48k
from voxray.wer import wer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def gateway(serve_grpc: str) -> AsyncIterator[tuple[Gateway, str]]:
    runner, gw, url = await start_gateway(serve_grpc, reply_max_tokens=12)
    yield gw, url
    await runner.cleanup()


async def turn(caller: Caller, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Say one file; its final and its turn's metrics once the answer has been heard."""
    n = len(caller.events)
    _, last_sent = caller.mic.say(load_48k(path))
    await last_sent
    final = await caller.wait_event("final", 40, since=n)
    metrics = await caller.wait_event("turn_metrics", 40, since=n)
    deadline = time.monotonic() + 20
    while not caller.heard.audible_between(time.monotonic() - 30, time.monotonic()):
        assert time.monotonic() < deadline, "no answer was heard"
        await asyncio.sleep(0.05)
    await caller.wait_event(("agent_done", "interrupted"), 60, since=n)
    return final, metrics


async def test_each_language_is_answered_in_its_voice(gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    caller = Caller(url)
    await caller.connect()
    try:
        final, metrics = await turn(caller, "tests/data/languages/es1.wav")
        _, text = speech.languages()["es1"]
        assert final["language"] == "es", final
        assert wer(speech.unaccented(text), speech.unaccented(final["text"])) <= 0.5, final
        assert (metrics["language"], metrics["voice"]) == ("es", gw.cfg.voices["es"])
        assert not [e for e in caller.events if e["type"] == "voice_fallback"]

        final, metrics = await turn(caller, "tests/data/languages/de1.wav")
        assert final["language"] == "de", final
        assert (metrics["language"], metrics["voice"]) == ("de", gw.cfg.voice)
        (fallback,) = [e for e in caller.events if e["type"] == "voice_fallback"]
        assert fallback["detail"] == {"language": "de", "voice": gw.cfg.voice}

        final, metrics = await turn(caller, "tests/data/speech/s11.wav")
        assert final["language"] == "en" and metrics["voice"] == gw.cfg.voice
        assert wer(speech.references()["s11"], final["text"]) <= 0.3, final
        assert not [e for e in caller.events if e["type"] == "error"], caller.events
    finally:
        await caller.hang_up()
