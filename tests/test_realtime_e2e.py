"""The OpenAI Realtime API as an app written for it meets it: the official `openai` SDK,
unchanged but for its URLs, holds a voice conversation with the gateway (WebSocket,
server_vad) on the CPU-default stages of a local Ray cluster."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from openai import AsyncOpenAI

from gateway.server import Gateway
from tests.test_gateway_e2e import start_gateway
from tests.test_tts_serve import transcribe
from tests.waiting import until
from voxray.audio import resample
from voxray.clients.caller import RATE, Heard, SpeakerTrack, load_48k
from voxray.clients.realtime_caller import RealtimeCaller
from voxray.codecs import AudioFormat, Encoder
from voxray.wer import wer

pytestmark = pytest.mark.slow
SPEECH = "tests/data/speech"
TOKEN = "sesame"


@pytest.fixture(scope="module")
async def gateway(serve_grpc: str) -> AsyncIterator[tuple[Gateway, str]]:
    runner, gw, url = await start_gateway(serve_grpc, max_sessions=3, auth_token=TOKEN)
    yield gw, url
    await runner.cleanup()


async def test_the_openai_sdk_holds_a_voice_conversation(gateway: tuple[Gateway, str],
                                                         serve_grpc: str) -> None:
    gw, url = gateway
    caller = RealtimeCaller(url, token=TOKEN)
    await caller.connect()
    try:
        created = caller.of_type("session.created")[0]
        assert created.session.type == "realtime"
        assert caller.of_type("session.updated")[0].session.audio.output.format.rate == 24000

        # turn 1: spoken question, spoken answer
        ttfat, done, since = await caller.say_and_hear(load_48k(f"{SPEECH}/s11.wav"))
        assert ttfat is not None and ttfat > 0
        assert done.response.status == "completed", done
        kinds = [e.type for _, e in caller.events[since:]]
        for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                     "input_audio_buffer.committed",
                     "conversation.item.input_audio_transcription.completed",
                     "response.created", "response.output_audio.delta",
                     "response.output_audio_transcript.delta",
                     "response.output_audio_transcript.done", "response.output_audio.done"):
            assert kind in kinds, (kind, kinds)
        assert kinds.index("input_audio_buffer.speech_started") \
            < kinds.index("input_audio_buffer.committed") < kinds.index("response.created") \
            < kinds.index("response.output_audio.delta") < kinds.index("response.done")
        heard_user = caller.of_type("conversation.item.input_audio_transcription.completed",
                                    since)[0]
        assert wer("hello can you hear me", heard_user.transcript) <= 0.25, heard_user
        said = done.response.output[0].content[0].transcript
        deltas = "".join(e.delta for e in caller.of_type(
            "response.output_audio_transcript.delta", since))
        assert said.strip() and said == deltas
        # the audio deltas are the transcript, spoken
        reply = caller.heard.pcm(since=caller.events[since][0])
        assert len(reply) > RATE // 2
        heard = await transcribe(serve_grpc, resample(reply[: 8 * RATE], RATE, 24000))
        assert wer(" ".join(said.split()[:len(heard.split())]), heard) <= 0.4, (said, heard)

        # turn 2: a long answer, cancelled by the client a second into its audio
        since = len(caller.events)
        caller.mic.say(load_48k(f"{SPEECH}/s18.wav"))
        await caller.wait_event("response.output_audio.delta", 60, since)
        await asyncio.sleep(1.0)
        await caller.conn.response.cancel()
        cancelled_at = asyncio.get_running_loop().time()
        done = await caller.wait_event("response.done", 10, since)
        assert done.response.status == "cancelled", done.response
        assert done.response.status_details.reason == "client_cancelled"
        heard_text = done.response.output[0].content[0].transcript
        full = "".join(e.delta for e in caller.of_type(
            "response.output_audio_transcript.delta", since))
        assert full.startswith(heard_text) and len(heard_text) < len(full), (heard_text, full)
        late = caller.heard.audible_between(cancelled_at + 0.3, cancelled_at + 2.0)
        assert not late, "agent audio went on after response.cancel"
        (call,) = gw.calls.values()
        messages = call.session.context.messages
        assert messages[-1] == ("assistant", heard_text.strip()) or not heard_text.strip()
        # a cancel with nothing under way is an error event, and the session goes on
        await caller.conn.response.cancel()
        error = await caller.wait_event("error", 5, since)
        assert error.error.code == "response_cancel_not_active"
    finally:
        await caller.close()
    await until(lambda: not gw.calls, what="the session ends when the socket closes")


async def test_a_client_that_commits_its_own_turns_and_sends_text(
        gateway: tuple[Gateway, str]) -> None:
    """turn_detection null: the client's commit ends the turn and response.create asks
    for the answer (push-to-talk); a text message item is answered the same way."""
    gw, url = gateway
    caller = RealtimeCaller(url, token=TOKEN, session={"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcmu"}}}}, stream_mic=False)
    await caller.connect()
    try:
        assert caller.of_type("session.updated")[0].session.audio.input.turn_detection is None
        # the whole utterance at once, faster than real time, then commit and ask
        pcm8k = resample(load_48k(f"{SPEECH}/s03.wav"), RATE, 8000)
        since = len(caller.events)
        await caller.conn.input_audio_buffer.append(
            audio=base64.b64encode(Encoder(AudioFormat("pcmu", 8000), 8000)(pcm8k)).decode())
        await caller.conn.input_audio_buffer.commit()
        await caller.conn.response.create()
        done = await caller.wait_event("response.done", 60, since)
        assert done.response.status == "completed", done.response
        heard = caller.of_type("conversation.item.input_audio_transcription.completed", since)
        assert wer("what is the weather going to be like tomorrow morning",
                   heard[0].transcript) <= 0.25, heard
        assert not caller.of_type("input_audio_buffer.speech_started", since)
        assert caller.of_type("response.output_audio.delta", since)
        # an empty buffer cannot be committed
        await caller.conn.input_audio_buffer.commit()
        error = await caller.wait_event("error", 10, since)
        assert error.error.code == "input_audio_buffer_commit_empty"
        # text in, speech out
        since = len(caller.events)
        await caller.conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Say hello."}]})
        await caller.conn.response.create()
        done = await caller.wait_event("response.done", 60, since)
        assert done.response.status == "completed"
        assert caller.of_type("response.output_audio.delta", since)
        # text in, text out: output_modalities ["text"] answers without speech
        since = len(caller.events)
        await caller.conn.session.update(session={"type": "realtime",
                                                  "output_modalities": ["text"]})
        updated = await caller.wait_event("session.updated", 10, since)
        assert updated.session.output_modalities == ["text"]
        await caller.conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Say goodbye."}]})
        await caller.conn.response.create()
        done = await caller.wait_event("response.done", 60, since)
        assert done.response.status == "completed", done.response
        assert done.response.output_modalities == ["text"]
        (content,) = done.response.output[0].content
        deltas = "".join(e.delta for e in caller.of_type("response.output_text.delta", since))
        assert content.type == "output_text" and content.text and content.text == deltas
        assert caller.of_type("response.output_text.done", since)[0].text == content.text
        assert not caller.of_type("response.output_audio.delta", since)
        assert not caller.of_type("response.output_audio_transcript.delta", since)
        (call,) = gw.calls.values()
        roles = [r for r, _ in call.session.context.messages]
        assert roles == ["user", "assistant"] * 3, roles
        assert call.session.context.messages[-1][1].split() == content.text.split()
    finally:
        await caller.close()


async def test_bad_client_events_get_error_events_and_the_session_goes_on(
        gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    ws_url = url.replace("http", "ws") + "/v1/realtime?model=voxray"
    async with aiohttp.ClientSession() as http:
        async with http.get(ws_url) as res:  # no token: refused before the upgrade
            assert res.status == 401
        async with http.ws_connect(ws_url, headers={"Authorization": f"Bearer {TOKEN}"},
                                   max_msg_size=0) as ws:
            first = json.loads((await ws.receive(timeout=10)).data)
            assert first["type"] == "session.created"
            bad = [
                ("{nope", "invalid_json"),
                (json.dumps([1, 2]), "invalid_event"),
                (json.dumps({"type": "no.such.event"}), "unknown_event"),
                (json.dumps({"type": ["session.update"]}), "invalid_event"),
                (json.dumps({"type": "session.update", "session": {"audio": "loud"}}),
                 "invalid_value"),
                (json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}),
                 "invalid_audio"),
                (json.dumps({"type": "input_audio_buffer.append", "audio": "AA=="}),
                 "invalid_audio"),  # 1 byte is no PCM16 sample
                (json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
                    "input": {"format": {"type": "audio/flac"}}}}}), "invalid_value"),
                (json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
                    "input": {"turn_detection": {"type": "server_vad",
                                                 "silence_duration_ms": -5}}}}}),
                 "invalid_value"),
            ]
            for message, code in bad:
                await ws.send_str(message)
                got = json.loads((await ws.receive(timeout=10)).data)
                assert got["type"] == "error" and got["error"]["code"] == code, (message, got)
            await ws.send_bytes(b"\x00\x01")
            got = json.loads((await ws.receive(timeout=10)).data)
            assert got["error"]["code"] == "invalid_message"
            # a good update still works on the same socket
            await ws.send_str(json.dumps({"type": "session.update", "session": {
                "type": "realtime", "instructions": "Be brief.",
                "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "alloy"}}}}))
            got = json.loads((await ws.receive(timeout=10)).data)
            assert got["type"] == "session.updated", got
            assert got["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
            assert got["session"]["instructions"] == "Be brief."
            assert len(gw.calls) == 1
            # an oversized message closes this socket with 1009, and only this one
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": "A" * (2 << 20)}))
            msg = await ws.receive(timeout=10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1009
    await until(lambda: not gw.calls, what="the session ends with its socket")


async def test_the_webrtc_call_flow_with_the_sdk(gateway: tuple[Gateway, str]) -> None:
    """`client.realtime.calls.create(sdp=...)` answers an aiortc offer; the audio rides
    the media tracks and the events the `oai-events` data channel."""
    gw, url = gateway
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic, heard = SpeakerTrack(), Heard()
    events: list[dict[str, Any]] = []
    dc = pc.createDataChannel("oai-events")
    dc.on("message", lambda m: events.append(json.loads(m)))
    listening: list[asyncio.Task[None]] = []

    async def listen(track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                for out in resampler.resample(frame):  # type: ignore[arg-type]
                    heard.add(time.monotonic(), out.to_ndarray().reshape(-1))

    pc.on("track", lambda track: listening.append(asyncio.ensure_future(listen(track))))
    pc.addTrack(mic)
    await pc.setLocalDescription(await pc.createOffer())
    client = AsyncOpenAI(api_key=TOKEN, base_url=url + "/v1")
    answer = await client.realtime.calls.create(sdp=pc.localDescription.sdp, session={
        "type": "realtime", "instructions": "Answer in one short sentence."})
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.text, type="answer"))
    try:
        await until(lambda: pc.connectionState == "connected", what="the media connection")
        await until(lambda: any(e["type"] == "session.created" for e in events),
                    what="session.created on the data channel")
        (call,) = gw.calls.values()
        assert call.session.context.instructions == "Answer in one short sentence."
        _, last = mic.say(load_48k(f"{SPEECH}/s11.wav"))
        sent = await last
        await until(lambda: any(e["type"] == "response.done" for e in events), within_s=60,
                    what="response.done")
        done = next(e for e in events if e["type"] == "response.done")
        assert done["response"]["status"] == "completed"
        kinds = [e["type"] for e in events]
        assert "conversation.item.input_audio_transcription.completed" in kinds
        assert "response.output_audio.delta" not in kinds  # the audio is on the track
        first = heard.first_audible_after(sent)
        assert first is not None and first - sent < 10
        # a bad event on the data channel is an error event, nothing worse
        dc.send("{nope")
        await until(lambda: any(e["type"] == "error" for e in events), what="an error event")
        async with aiohttp.ClientSession() as http, http.post(
                f"{url}/v1/realtime/calls/{call.session.id}/hangup",
                headers={"Authorization": f"Bearer {TOKEN}"}) as res:
            assert res.status == 200
        await until(lambda: not gw.calls, what="the call ends on hangup")
    finally:
        for task in listening:
            task.cancel()
        await pc.close()
