"""A phone call as Twilio Media Streams delivers it, to test and bench the `/twilio` route.

Written from Twilio's protocol description (Media Streams, WebSocket messages):
it sends `connected`, `start` (a streamSid, audio/x-mulaw at 8000 Hz), 20 ms
`media` messages in real time with sequenceNumber, chunk and timestamp, then
`stop`. What the server sends back is played in real time as a phone would:
`media` is queued, a `mark` is echoed once the audio before it has played, and
`clear` drops what is queued (its marks are echoed at once, as Twilio does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections import deque
from typing import Any

import aiohttp
import numpy as np

from voxray.clients.caller import RATE, Heard, SpeakerTrack
from voxray.codecs import AudioFormat, Decoder, Encoder

MULAW = AudioFormat("pcmu", 8000)
FRAME = RATE // 50


class TwilioCaller:
    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url  # ws://host:port/twilio
        self.token = token
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.mic = SpeakerTrack()  # 48 kHz, paced; mu-law 8 kHz on the wire
        self.heard = Heard()  # as played, 48 kHz
        self.clears: list[float] = []  # when a `clear` came
        self.marks_echoed: list[str] = []
        self.closed: tuple[int | None, str] | None = None  # the server's close code, reason
        self._queue: deque[np.ndarray | str] = deque()  # audio to play, and marks
        self._seq = 0
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(self.url)
        params = {"token": self.token} if self.token else {}
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send({"event": "start", "start": {
            "streamSid": self.stream_sid, "accountSid": "AC" + "0" * 32,
            "callSid": "CA" + uuid.uuid4().hex, "tracks": ["inbound"],
            "customParameters": params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
            "streamSid": self.stream_sid})
        self._tasks = [asyncio.ensure_future(t()) for t in (self._speak, self._listen,
                                                             self._play)]

    async def send(self, msg: dict[str, Any]) -> None:
        assert self._ws is not None
        self._seq += 1
        await self._ws.send_str(json.dumps(msg | {"sequenceNumber": str(self._seq)}))

    async def _speak(self) -> None:
        encode = Encoder(MULAW, RATE)
        chunk = 0
        while True:
            pcm = await self.mic.next_pcm()
            chunk += 1
            await self.send({"event": "media", "streamSid": self.stream_sid, "media": {
                "track": "inbound", "chunk": str(chunk), "timestamp": str(chunk * 20),
                "payload": base64.b64encode(encode(pcm)).decode()}})

    async def _listen(self) -> None:
        assert self._ws is not None
        decode = Decoder(MULAW, RATE)
        pending: np.ndarray = np.zeros(0, np.int16)
        while True:
            raw = await self._ws.receive()
            if raw.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                self.closed = (self._ws.close_code, str(raw.extra or ""))
                return
            if raw.type != aiohttp.WSMsgType.TEXT:
                continue
            msg = json.loads(raw.data)
            if msg["event"] == "media":
                pending = np.concatenate([pending, decode(base64.b64decode(
                    msg["media"]["payload"]))])
                while len(pending) >= FRAME:
                    self._queue.append(pending[:FRAME])
                    pending = pending[FRAME:]
            elif msg["event"] == "mark":
                self._queue.append(msg["mark"]["name"])
            elif msg["event"] == "clear":
                self.clears.append(time.monotonic())
                marks = [m for m in self._queue if isinstance(m, str)]
                self._queue.clear()
                pending = pending[:0]
                for name in marks:
                    await self._echo(name)

    async def _echo(self, name: str) -> None:
        self.marks_echoed.append(name)
        await self.send({"event": "mark", "streamSid": self.stream_sid,
                         "mark": {"name": name}})

    async def _play(self) -> None:
        """A phone's playout: a 20 ms frame each 20 ms, silence when nothing is queued."""
        start = time.monotonic()
        n = 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))
            while self._queue and isinstance(self._queue[0], str):
                await self._echo(str(self._queue.popleft()))
            frame = self._queue.popleft() if self._queue else np.zeros(FRAME, np.int16)
            assert isinstance(frame, np.ndarray)
            self.heard.add(time.monotonic(), frame)

    async def say_and_hear(self, pcm48: np.ndarray, within_s: float = 60.0,
                           quiet_s: float = 1.5) -> tuple[float | None, np.ndarray]:
        """Say an utterance; (client TTFAT in ms, the reply as played) once the agent has
        been quiet for quiet_s after it spoke (None and silence if it did not)."""
        _, last = self.mic.say(pcm48)
        sent = await last
        deadline = time.monotonic() + within_s
        while (first := self.heard.first_audible_after(sent)) is None:  # noqa: ASYNC110
            if time.monotonic() > deadline or self.closed is not None:
                return None, np.zeros(0, np.int16)
            await asyncio.sleep(0.05)
        while time.monotonic() - self.heard.last_audible() < quiet_s:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return (first - sent) * 1000, self.heard.pcm(since=first)

    async def hang_up(self) -> None:
        with contextlib.suppress(Exception):
            await self.send({"event": "stop", "streamSid": self.stream_sid,
                             "stop": {"accountSid": "AC" + "0" * 32}})
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
