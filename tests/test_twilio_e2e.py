"""A phone call through Twilio Media Streams (`/twilio`), with a client that plays
Twilio's part of the protocol, on the CPU-default stages of a local Ray cluster."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest

from gateway.server import Gateway
from tests.test_gateway_e2e import start_gateway
from tests.test_tts_serve import transcribe
from tests.waiting import until
from voxray.audio import resample
from voxray.clients.caller import RATE, load_48k
from voxray.clients.twilio_caller import TwilioCaller
from voxray.wer import wer

pytestmark = pytest.mark.slow
SPEECH = "tests/data/speech"


@pytest.fixture(scope="module")
async def gateway(serve_grpc: str) -> AsyncIterator[tuple[Gateway, str]]:
    runner, gw, url = await start_gateway(serve_grpc, max_sessions=3, auth_token="sesame",
                                          reply_max_tokens=24)
    yield gw, url.replace("http", "ws", 1) + "/twilio"
    await runner.cleanup()


async def test_a_phone_call_is_answered_in_speech_and_a_barge_in_clears_twilio(
        gateway: tuple[Gateway, str], serve_grpc: str) -> None:
    gw, url = gateway
    phone = TwilioCaller(url, token="sesame")
    await phone.connect()
    try:
        began = time.monotonic()
        ttfat, _ = await phone.say_and_hear(load_48k(f"{SPEECH}/s11.wav"))
        assert ttfat is not None and ttfat > 0, phone.closed
        (call,) = gw.calls.values()
        assert call.mode == "twilio"
        # the whole reply played (a slow unit can leave a gap inside it)
        await until(lambda: len(call.session.context.messages) >= 2, within_s=90,
                    what="the turn kept")
        await asyncio.sleep(0.5)
        played = phone.heard.pcm(since=began)
        voiced = np.flatnonzero(np.abs(played) > 328)
        reply = played[voiced[0]:] if len(voiced) else played
        said = call.session.context.messages
        assert said[0][0] == "user" and wer("hello can you hear me", said[0][1]) <= 0.25, said
        # what the phone played is the agent's text, spoken (through mu-law at 8 kHz)
        heard = await transcribe(serve_grpc, resample(reply[: 8 * RATE], RATE, 24000))
        agent = said[1][1]
        assert len(heard.split()) >= min(2, len(agent.split())), (agent, heard)
        assert wer(" ".join(agent.split()[:len(heard.split())]), heard) <= 0.5, (agent, heard)
        # (reply ids count speculative replies too: the first answer is not always reply-1)
        await until(lambda: any(m.startswith("reply-") for m in phone.marks_echoed),
                    what="the reply's mark echoed")

        # a long answer, then the caller talks over it: the gateway sends `clear`
        phone.mic.say(load_48k(f"{SPEECH}/s18.wav"))
        n_clears = len(phone.clears)
        await until(lambda: call.session.reply is not None and call.session.track.speaking,
                    within_s=60, what="the agent answering the second question")
        await asyncio.sleep(1.0)
        first_voiced, _ = phone.mic.say(load_48k(f"{SPEECH}/s25.wav"))
        spoke_at = await first_voiced
        await until(lambda: len(phone.clears) > n_clears, within_s=10,
                    what="a `clear` on the barge-in")
        assert phone.clears[-1] - spoke_at < 2.0
        await asyncio.sleep(0.5)
        assert not phone.heard.audible_between(phone.clears[-1] + 0.2, phone.clears[-1] + 1.0)
        assert any(r == "assistant" for r, _ in call.session.context.messages[2:])
    finally:
        await phone.hang_up()
    await until(lambda: not gw.calls, what="the call ends on `stop`")


async def _closed_with(url: str, *messages: str | bytes) -> tuple[int | None, str]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        for m in messages:
            await (ws.send_bytes(m) if isinstance(m, bytes) else ws.send_str(m))
        msg = await ws.receive(timeout=10)
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
        return ws.close_code, str(msg.extra or "")


def _start(**start: object) -> str:
    base = {"streamSid": "MZbad", "mediaFormat": {"encoding": "audio/x-mulaw",
                                                  "sampleRate": 8000, "channels": 1},
            "customParameters": {"token": "sesame"}}
    return json.dumps({"event": "start", "start": base | start, "streamSid": "MZbad"})


async def test_bad_streams_are_closed_with_a_reason_and_a_live_call_goes_on(
        gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    phone = TwilioCaller(url, token="sesame")
    await phone.connect()
    try:
        await until(lambda: len(gw.calls) == 1, what="the live call")
        cases = [
            (("{not json",), 1007, "not JSON"),
            ((b"\x00\xff" * 10,), 1003, "text"),
            ((json.dumps({"event": "media"}),), 1008, "expected `start`"),
            ((_start(customParameters={}),), 1008, "token"),
            ((_start(mediaFormat={"encoding": "audio/x-l16", "sampleRate": 16000}),), 1003,
             "mulaw"),
            ((_start(), json.dumps({"event": "media", "media": {"payload": "%%%"}})), 1007,
             "bad message"),
            ((_start(), json.dumps({"event": "media", "media": "not an object"})), 1007,
             "bad message"),
            ((_start(), json.dumps({"event": "media", "media": {
                "payload": base64.b64encode(b"x" * (2 << 20)).decode()}})), 1009, ""),
        ]
        for messages, code, reason in cases:
            got_code, got_reason = await _closed_with(url, *messages)
            assert got_code == code and reason in got_reason, (messages[-1][:80], got_code,
                                                               got_reason)
        await until(lambda: len(gw.calls) == 1, what="the refused streams leave no call")
        ttfat, _ = await phone.say_and_hear(load_48k(f"{SPEECH}/s11.wav"))
        assert ttfat is not None, "the live call was harmed"
    finally:
        await phone.hang_up()
