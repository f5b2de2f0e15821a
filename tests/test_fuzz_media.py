"""Bad bytes after signalling: junk UDP datagrams (random, RTP-, RTCP-, STUN- and
DTLS-shaped) from a raw socket at the gateway's negotiated media ports, and junk
messages on a Realtime call's `oai-events` data channel. Each junk message gets an
`error` event; both calls stay connected and the WHIP caller beside them is answered."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from gateway import media_guard
from tests.test_gateway_e2e import start_gateway
from tests.waiting import until
from voxray.clients.caller import Caller, load_48k, speak_turn
from voxray.ice import offer_only

N = 1000


def media_ports(sdp: str) -> set[int]:
    """The gateway's UDP ports on 127.0.0.1 from its SDP answer's candidates."""
    return {int(m.group(1)) for m in re.finditer(
        r"a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 (\d+) typ host", sdp, flags=re.I)}


def datagram(rng: random.Random) -> bytes:
    def noise(n: int) -> bytes:
        return bytes(rng.randrange(256) for _ in range(n))

    how = rng.randrange(5)
    if how == 0:
        return noise(rng.choice([0, 1, 12, 200, 1400]))
    if how == 1:  # RTP: version 2, Opus's payload type or any, a random SSRC
        return struct.pack("!BBHII", 0x80, rng.choice([111, 0, 96, 127, 255]),
                           rng.randrange(65536), rng.randrange(2**32),
                           rng.randrange(2**32)) + noise(rng.randrange(300))
    if how == 2:  # RTCP: sender report .. app, lengths that lie
        return struct.pack("!BBH", 0x80 | rng.randrange(32), rng.randrange(200, 205),
                           rng.randrange(65536)) + noise(rng.randrange(100))
    if how == 3:  # STUN: a binding request with a wrong length or garbage attributes
        return struct.pack("!HHI", rng.choice([1, 0x101, 0x111]), rng.randrange(65536),
                           0x2112A442) + noise(12) + noise(rng.randrange(80))
    return bytes([22, 0xFE, 0xFD]) + noise(rng.randrange(200))  # DTLS-shaped


EVENT_TYPES = ["session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
               "conversation.item.create", "conversation.item.truncate",
               "conversation.item.delete", "response.create", "response.cancel"]


def event_message(rng: random.Random) -> str | bytes:
    kinds = [*EVENT_TYPES, "nope", ""]
    junk_values: list[Any] = [None, 1, -1, 2**70, "x" * 500, [], {}, [1, {}], True, "\u0000",
                              {"type": "message", "content": 5}]
    how = rng.randrange(5)
    if how == 0:
        return bytes(rng.randrange(256) for _ in range(rng.choice([1, 10, 400])))
    if how == 1:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(1, 200)))
    event: dict[str, Any] = {"type": rng.choice(kinds + [1, None])}
    for _ in range(rng.randrange(4)):
        event[rng.choice(["session", "audio", "item", "item_id", "response", "event_id",
                          "content_index", "audio_end_ms", "previous_item_id"])] = \
            rng.choice(junk_values)
    text = json.dumps(event)
    if how == 2:  # cut short
        return text[: rng.randrange(len(text))]
    return text


def is_event(message: str | bytes) -> bool:
    try:
        event = json.loads(message) if isinstance(message, str) else None
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("type") in EVENT_TYPES


async def test_an_empty_datagram_or_a_strangers_junk_does_not_end_a_connection() -> None:
    """Two aiortc peers (no gateway): one empty datagram at a connected peer's port ended
    its DTLS transport, and its call, before `gateway.media_guard`; a stranger's DTLS- and
    RTP-shaped bytes are dropped further on."""
    media_guard.install()
    offer_only(["127.0.0.1"])  # as the test gateways do
    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got: list[str] = []
    dc = offerer.createDataChannel("events")
    answerer.on("datachannel", lambda ch: ch.on("message", got.append))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        await until(lambda: dc.readyState == "open", what="the data channel")
        for port in media_ports(answerer.localDescription.sdp):
            for data in (b"", bytes([22, 0xFE, 0xFD]) + b"\x00" * 40, b"\x80" * 20):
                sock.sendto(data, ("127.0.0.1", port))
        await asyncio.sleep(0.5)
        dc.send("still here")
        await until(lambda: got == ["still here"], within_s=10, what="a message after the junk")
        assert answerer.connectionState == "connected"
    finally:
        sock.close()
        await offerer.close()
        await answerer.close()


@pytest.mark.slow
async def test_junk_at_the_media_ports_and_on_the_data_channel_harms_no_call(
        serve_grpc: str) -> None:
    runner, gw, url = await start_gateway(serve_grpc, max_sessions=3, reply_max_tokens=12)
    rng = random.Random(20261203)
    whip = Caller(url)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    events: list[dict[str, Any]] = []
    dc = pc.createDataChannel("oai-events")
    dc.on("message", lambda m: events.append(json.loads(m)))
    pc.addTransceiver("audio", direction="sendrecv")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await whip.connect()
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http, http.post(
                f"{url}/v1/realtime/calls", data=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"}) as res:
            assert res.status == 201, await res.text()
            answer = await res.text()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await until(lambda: pc.connectionState == "connected" and dc.readyState == "open",
                    what="the Realtime call's media and data channel")
        ports = media_ports(answer) | media_ports(whip.pc.remoteDescription.sdp)
        assert len(ports) >= 2, ports
        for _ in range(N):
            for port in ports:
                sock.sendto(datagram(rng), ("127.0.0.1", port))
        before = len(events)
        must_fail = 0  # not text, not JSON, not an object, or no known type
        for _ in range(N):
            message = event_message(rng)
            must_fail += not is_event(message)
            dc.send(message)
        assert must_fail > N // 2
        await until(lambda: sum(e["type"] == "error" for e in events[before:]) >= must_fail,
                    within_s=60, what=f"an error event for each of the {must_fail} messages "
                    f"that are no event (the channel is {dc.readyState})")
        # the Realtime call still takes a good event
        dc.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "instructions": "Be brief."}}))
        await until(lambda: any(e["type"] == "session.updated" for e in events[before:]),
                    within_s=20, what="session.updated after the junk")
        # and the caller beside it is answered
        turn = await speak_turn(whip, load_48k("tests/data/speech/s11.wav"), 90)
        assert turn.gateway and turn.client_ttfat_ms, whip.events[-8:]
        assert pc.connectionState == "connected" and len(gw.calls) == 2
        assert not [e for e in whip.events if e["type"] in ("error", "session_ended")]
    finally:
        sock.close()
        await whip.hang_up()
        await pc.close()
        await runner.cleanup()
