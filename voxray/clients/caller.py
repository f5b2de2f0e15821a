"""A WebRTC caller (aiortc) that speaks audio to the gateway and listens to the agent.

Used by `voxray call`, the tests and the load tests. Client-side TTFAT: from
sending the last voiced sample of an utterance to receiving the first audible
sample of the reply (after the client's own jitter buffer, as a person hears it).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import is_rtcp

from voxray.clients.asr_cli import last_voiced_sample
from voxray.paced_track import PacedAudioTrack

RATE = 48_000
FRAME = RATE // 50
AUDIBLE = 328


class SpeakerTrack(PacedAudioTrack):
    """The caller's microphone: queued utterances, silence in between, paced 20 ms frames."""

    def __init__(self) -> None:
        super().__init__(RATE)
        self._pending: np.ndarray = np.zeros(0, np.int16)
        self._marks: list[tuple[int, asyncio.Future[float]]] = []  # (sample, when sent)
        self._sent = 0  # samples sent so far
        self.quiet: deque[bool] = deque(maxlen=500)  # per frame made: nothing audible in it

    def say(self, pcm48: np.ndarray) -> tuple[asyncio.Future[float], asyncio.Future[float]]:
        """Queue an utterance; futures: when its first / last voiced sample went out."""
        loop = asyncio.get_running_loop()
        base = self._sent + len(self._pending)
        voiced = np.nonzero(np.abs(pcm48) > AUDIBLE)[0]
        first_f, last_f = loop.create_future(), loop.create_future()
        self._marks.append((base + int(voiced[0] if len(voiced) else 0), first_f))
        self._marks.append((base + last_voiced_sample(pcm48, frame=960), last_f))
        self._pending = np.concatenate([self._pending, pcm48.astype(np.int16)])
        return first_f, last_f

    @property
    def busy(self) -> bool:
        return len(self._pending) > 0

    def next_frame(self, now: float) -> np.ndarray:
        pcm = np.zeros(FRAME, np.int16)
        take = min(FRAME, len(self._pending))
        pcm[:take] = self._pending[:take]
        self._pending = self._pending[take:]
        self._sent += FRAME
        self.quiet.append(int(np.abs(pcm).max(initial=0)) <= AUDIBLE)
        for mark in [m for m in self._marks if m[0] <= self._sent]:
            self._marks.remove(mark)
            if not mark[1].done():
                mark[1].set_result(now - (self._sent - mark[0]) / RATE)
        return pcm


def drop_rtp(sender: RTCRtpSender, drop: Callable[[], bool], renumber: bool = False) -> None:
    """Asked before each RTP packet the sender sends (not RTCP): True drops it, as a lossy
    network would. `renumber`: the packets sent keep consecutive sequence numbers, as a
    client that sends nothing while its user is quiet (Opus DTX) does: only the RTP
    timestamps show the time between them."""
    transport = sender.transport
    send = transport._send_rtp
    seq: int | None = None

    async def lossy(data: bytes) -> None:
        nonlocal seq
        if is_rtcp(data):
            await send(data)
        elif not drop():
            if renumber and len(data) >= 4:
                seq = int.from_bytes(data[2:4], "big") if seq is None else (seq + 1) % 65536
                data = data[:2] + seq.to_bytes(2, "big") + data[4:]
            await send(data)

    transport._send_rtp = lossy  # type: ignore[method-assign]


@dataclass
class Heard:
    """The agent's audio as received: (arrival time, 48 kHz mono PCM) per frame, and the
    arrival times of the audible ones (kept as they come: a long call has many frames)."""

    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)
    loud: list[float] = field(default_factory=list)

    def add(self, at: float, pcm: np.ndarray) -> None:
        self.frames.append((at, pcm))
        if np.abs(pcm).max(initial=0) > AUDIBLE:
            self.loud.append(at)

    def audible_between(self, since: float, until: float) -> list[float]:
        return self.loud[bisect.bisect_left(self.loud, since):bisect.bisect_right(self.loud,
                                                                                   until)]

    def first_audible_after(self, t: float) -> float | None:
        i = bisect.bisect_left(self.loud, t)
        return self.loud[i] if i < len(self.loud) else None

    def last_audible(self) -> float:
        return self.loud[-1] if self.loud else 0.0

    def pcm(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        parts = [p for at, p in self.frames if since <= at <= until]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)


# Opus DTX (libopus): after 10 quiet frames (200 ms), one packet per 20 frames (400 ms).
DTX_AFTER_FRAMES = 10
DTX_EVERY_FRAMES = 20


class Caller:
    """`mic_loss`: the share of the caller's outgoing audio packets dropped on purpose (a
    lossy uplink, as on Wi-Fi or a phone network), the same packets for a given `seed`.
    `mic_dtx`: send as a client with Opus DTX does, almost nothing while the mic is quiet."""

    def __init__(self, base_url: str, mode: str = "pipeline", token: str | None = None,
                 mic_loss: float = 0.0, seed: int = 0, mic_dtx: bool = False) -> None:
        if not 0.0 <= mic_loss < 1.0:
            raise ValueError(f"mic_loss {mic_loss:g} is outside 0-1")
        if mic_loss and mic_dtx:
            raise ValueError("mic_loss and mic_dtx go one at a time: a DTX caller's packets "
                             "keep consecutive numbers, so its losses would not show")
        self.base_url = base_url.rstrip("/")
        self.mode = mode
        self.token = token
        self.mic_loss = mic_loss
        self.mic_dtx = mic_dtx
        self.mic_packets_dropped = 0
        self._quiet_run = 0  # quiet frames in a row, for DTX
        self._loss = random.Random(seed)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = SpeakerTrack()
        self.heard = Heard()
        self.events: list[dict[str, Any]] = []
        self.location: str | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        dc = self.pc.createDataChannel("events")

        @dc.on("message")
        def on_message(msg: str) -> None:
            event = json.loads(msg)
            event["received_at"] = time.monotonic()
            self.events.append(event)

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._reader = asyncio.ensure_future(self._listen(track))

        sender = self.pc.addTrack(self.mic)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        if self.mic_loss or self.mic_dtx:
            drop_rtp(sender, self._drop_mic_packet, renumber=self.mic_dtx)
        headers = {"Content-Type": "application/sdp"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.base_url}/whip?mode={self.mode}", data=self.pc.localDescription.sdp,
                headers=headers) as res:
            body = await res.text()
            if res.status != 201:
                await self.pc.close()
                raise ConnectionError(f"gateway answered {res.status}: {body.strip()}")
            self.location = res.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        deadline = time.monotonic() + 15
        while self.pc.connectionState != "connected":  # noqa: ASYNC110 - aiortc has no waiter
            if self.pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                await self.hang_up()
                raise ConnectionError("no WebRTC connection to the gateway (ICE failed: "
                                      "no usable candidate pair)")
            await asyncio.sleep(0.05)

    def _drop_mic_packet(self) -> bool:
        if self.mic_dtx:  # the frame this packet carries: packets go in the order made
            quiet = self.mic.quiet.popleft() if self.mic.quiet else False
            self._quiet_run = self._quiet_run + 1 if quiet else 0
            if self._quiet_run > DTX_AFTER_FRAMES and self._quiet_run % DTX_EVERY_FRAMES:
                return True
        if self._loss.random() < self.mic_loss:
            self.mic_packets_dropped += 1
            return True
        return False

    async def _listen(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            for out in resampler.resample(frame):  # type: ignore[arg-type]
                self.heard.add(now, out.to_ndarray().reshape(-1).astype(np.int16))

    async def wait_event(self, kind: str | tuple[str, ...], within_s: float = 30.0,
                         since: int = 0) -> dict[str, Any]:
        """The first event of this type (or types) at or after index `since` of self.events."""
        kinds = (kind,) if isinstance(kind, str) else kind
        deadline = time.monotonic() + within_s
        while True:
            found = next((e for e in self.events[since:] if e["type"] in kinds), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {kind!r} event; last events: {self.events[-5:]}")
            await asyncio.sleep(0.02)

    async def hang_up(self) -> None:
        if self.location:
            async with aiohttp.ClientSession() as http:
                headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                async with http.delete(self.base_url + self.location, headers=headers):
                    pass
        if self._reader:
            self._reader.cancel()
        await self.pc.close()


def load_48k(path: str) -> np.ndarray:
    from voxray.audio import read_audio

    return read_audio(path, RATE)


@dataclass
class TurnResult:
    user_text: str  # the gateway's final transcript
    agent_text: str
    client_ttfat_ms: float | None
    gateway: dict[str, Any]  # the gateway's turn_metrics event (empty if none came)
    reply_pcm: np.ndarray  # from its first audible frame (the wait before it is TTFAT)


async def speak_turn(caller: Caller, pcm48: np.ndarray, within_s: float = 60.0) -> TurnResult:
    """Say one utterance, then listen until the agent's reply is over."""
    start = len(caller.events)
    _, last_sent = caller.mic.say(pcm48)
    sent_at = await last_sent
    deadline = time.monotonic() + within_s
    metrics: dict[str, Any] = {}
    with contextlib.suppress(TimeoutError):
        got = await caller.wait_event(("turn_metrics", "error", "session_ended"), within_s,
                                      since=start)
        if got["type"] == "turn_metrics":
            metrics = got
            await caller.wait_event(("agent_done", "interrupted", "session_ended"),
                                    max(1.0, deadline - time.monotonic()), since=start)
            await asyncio.sleep(0.2)  # the last frames through the jitter buffer
    first = caller.heard.first_audible_after(sent_at)
    new = caller.events[start:]
    return TurnResult(
        user_text=" ".join(e["text"] for e in new if e["type"] == "final"),
        agent_text="".join(e["text"] for e in new if e["type"] == "agent_text"),
        client_ttfat_ms=(first - sent_at) * 1000 if first and metrics else None,
        gateway=metrics,
        reply_pcm=caller.heard.pcm(since=first or sent_at, until=time.monotonic()))


async def let_agent_talk(caller: Caller, prompt48: np.ndarray, talk_s: float,
                         within_s: float = 60.0) -> None:
    """Say prompt48, then return once the agent's reply has played for talk_s."""
    _, last = caller.mic.say(prompt48)
    sent = await last
    deadline = time.monotonic() + within_s
    while (first := caller.heard.first_audible_after(sent)) is None:  # noqa: ASYNC110
        if time.monotonic() > deadline:
            raise TimeoutError(f"no reply; events: {caller.events[-5:]}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(max(0.0, first + talk_s - time.monotonic()))
