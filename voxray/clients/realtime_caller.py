"""A voice client of the gateway's OpenAI-Realtime-compatible API, built on the official
`openai` SDK unchanged (`AsyncOpenAI(base_url=..., websocket_base_url=...)`,
`client.realtime.connect(model=...)`), as an app written for OpenAI's API would be.

It streams a microphone in real time (20 ms `input_audio_buffer.append`, silence
between utterances, as a person's mic does), plays the `response.output_audio.delta`
audio as it comes, and keeps every server event with its arrival time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from voxray.clients.caller import RATE, Heard, SpeakerTrack
from voxray.codecs import AudioFormat, Decoder, Encoder

PCM24 = AudioFormat("pcm16", 24_000)


class RealtimeCaller:
    def __init__(self, base_url: str, token: str | None = None, model: str = "voxray",
                 session: dict[str, Any] | None = None, stream_mic: bool = True) -> None:
        base = base_url.rstrip("/")
        self.client = AsyncOpenAI(api_key=token or "no-token", base_url=base + "/v1",
                                  websocket_base_url=base.replace("http", "ws", 1) + "/v1")
        self.model = model
        self.session = session or {"type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000},
                      "turn_detection": {"type": "server_vad"}},
            "output": {"format": {"type": "audio/pcm", "rate": 24000}}}}
        self.mic = SpeakerTrack()  # 48 kHz, paced; 24 kHz PCM16 on the wire
        self.heard = Heard()  # the agent's audio as it arrived, 48 kHz
        self.events: list[tuple[float, Any]] = []  # (arrival, SDK event object)
        self._stream_mic = stream_mic  # False: the caller appends audio itself
        self._manager: Any = None
        self.conn: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        self._manager = self.client.realtime.connect(model=self.model)
        self.conn = await self._manager.__aenter__()
        await self.conn.session.update(session=self.session)
        self._tasks = [asyncio.ensure_future(self._listen())]
        if self._stream_mic:
            self._tasks.append(asyncio.ensure_future(self._speak()))
        await self.wait_event("session.updated", 10)

    async def _speak(self) -> None:
        encode = Encoder(PCM24, RATE)
        while True:
            pcm = await self.mic.next_pcm()
            await self.conn.input_audio_buffer.append(
                audio=base64.b64encode(encode(pcm)).decode())

    def output_format(self) -> AudioFormat:
        fmt = self.session.get("audio", {}).get("output", {}).get("format") or {}
        codec = {"audio/pcmu": "pcmu", "audio/pcma": "pcma"}.get(fmt.get("type", ""))
        return AudioFormat(codec, 8000) if codec else PCM24  # type: ignore[arg-type]

    async def _listen(self) -> None:
        decode = Decoder(self.output_format(), RATE)
        async for event in self.conn:
            now = time.monotonic()
            self.events.append((now, event))
            if event.type in ("response.output_audio.delta", "response.audio.delta"):
                self.heard.add(now, decode(base64.b64decode(event.delta)))

    def of_type(self, kind: str, since: int = 0) -> list[Any]:
        return [e for _, e in self.events[since:] if e.type == kind]

    async def wait_event(self, kind: str | tuple[str, ...], within_s: float = 60.0,
                         since: int = 0) -> Any:
        kinds = (kind,) if isinstance(kind, str) else kind
        deadline = time.monotonic() + within_s
        while True:
            found = next((e for _, e in self.events[since:] if e.type in kinds), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {kind!r}; last: {[e.type for _, e in self.events[-8:]]}")
            await asyncio.sleep(0.02)

    async def say_and_hear(self, pcm48: np.ndarray, within_s: float = 60.0
                           ) -> tuple[float | None, Any, int]:
        """Say an utterance and wait for the response it gets: (client TTFAT in ms, the
        response.done event, the index of the first event after the utterance)."""
        since = len(self.events)
        _, last = self.mic.say(pcm48)
        sent = await last
        done = await self.wait_event("response.done", within_s, since)
        first = self.heard.first_audible_after(sent)
        return ((first - sent) * 1000 if first is not None else None), done, since

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._manager is not None:
            with contextlib.suppress(Exception):
                await self._manager.__aexit__(None, None, None)
