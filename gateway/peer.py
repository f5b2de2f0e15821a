"""A session's WebRTC peer connection (aiortc): the offer answered, the caller's audio
track taken, the agent's track sent, data channels handed on, the end reported."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from gateway import media_guard
from gateway.call_host import Call
from gateway.mic_jitter import use_mic_jitter_buffer

media_guard.install()


class BadOffer(ValueError):
    """An offer this gateway cannot answer (the client's fault: a 400)."""


async def answer_offer(sdp: str, call: Call, outbound: MediaStreamTrack, reorder_packets: int,
                       on_channel: Callable[[object], None],
                       on_failed: Callable[[str], Awaitable[None]]
                       ) -> tuple[RTCPeerConnection, MediaStreamTrack]:
    """(the peer connection, the caller's audio track); BadOffer for an offer it cannot
    use. `call.connected` is set when media is up."""
    if "m=audio" not in sdp:
        raise BadOffer("the offer has no audio media section")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic: list[MediaStreamTrack] = []

    @pc.on("datachannel")
    def on_datachannel(dc: object) -> None:
        on_channel(dc)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not mic:
            mic.append(track)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState == "connected":
            call.connected = True
        if pc.connectionState in ("failed", "closed"):
            await on_failed(f"connection {pc.connectionState}")

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if not mic:
            raise BadOffer("no audio track in the offer")
        for receiver in pc.getReceivers():
            call.mic_buffer = use_mic_jitter_buffer(receiver, reorder_packets) or call.mic_buffer
        pc.addTrack(outbound)
        await pc.setLocalDescription(await pc.createAnswer())
    except BadOffer:
        await _close(pc)
        raise
    except Exception as e:  # aiortc raises ValueError, and others, on an offer it cannot use
        await _close(pc)
        raise BadOffer(str(e) or type(e).__name__) from e
    except BaseException:
        await _close(pc)
        raise
    return pc, mic[0]


async def _close(pc: RTCPeerConnection) -> None:
    """Close a connection a bad offer left half made (closing it can fail the same way)."""
    with contextlib.suppress(Exception):
        await pc.close()
