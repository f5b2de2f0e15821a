"""A session's audio over a message transport (a WebSocket: Twilio, the Realtime API).

In: the client's audio, in its own format and rate, as the session's 16 kHz chunks,
each stamped with when its message arrived. Out: the agent's paced 20 ms frames
(the same track and clock a WebRTC call uses, so what was sent is what was heard),
encoded for the client, only while a reply speaks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np

from gateway.agent_track import AgentAudioTrack
from gateway.audio_in import InChunk, level_db
from gateway.vad import CHUNK, SAMPLE_RATE
from voxray.codecs import AudioFormat, BadAudio, Decoder, Encoder

__all__ = ["AudioFormat", "BadAudio", "InboundAudio", "send_agent_audio"]


class InboundAudio:
    """Messages of the client's audio -> the session's chunks, on one timeline."""

    def __init__(self, fmt: AudioFormat) -> None:
        self._decode = Decoder(fmt, SAMPLE_RATE)
        self._pending: np.ndarray = np.zeros(0, np.int16)
        self._queue: asyncio.Queue[InChunk | Callable[[], None] | None] = asyncio.Queue()
        self._produced = 0

    def reformat(self, fmt: AudioFormat) -> None:
        """Take `fmt` from here on (a resampler's state does not carry across)."""
        if fmt != self._decode.fmt:
            self._decode = Decoder(fmt, SAMPLE_RATE)
            self._pending = self._pending[:0]

    def clear(self) -> None:
        """Drop audio received but not yet made into a chunk."""
        self._pending = self._pending[:0]

    def push(self, data: bytes) -> None:
        """One message's audio (BadAudio if it is not in the format)."""
        self.push_pcm(self._decode(data))

    def push_pcm(self, pcm: np.ndarray) -> None:
        """16 kHz PCM16."""
        arrived = time.monotonic()
        self._pending = np.concatenate([self._pending, pcm])
        while len(self._pending) >= CHUNK:
            pcm, self._pending = self._pending[:CHUNK], self._pending[CHUNK:]
            self._queue.put_nowait(InChunk(pcm, self._produced, arrived, level_db(pcm)))
            self._produced += CHUNK

    def flush(self) -> None:
        """Make what was received into a chunk, padded with silence."""
        if len(self._pending):
            pad = np.zeros(CHUNK - len(self._pending), np.int16)
            self.push_pcm(np.concatenate([self._pending, pad]))
            self._pending = self._pending[:0]

    def then(self, action: Callable[[], None]) -> None:
        """Run `action` once the session has taken every chunk received so far (a
        client's commit applies to the audio it sent before it)."""
        self._queue.put_nowait(action)

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def chunks(self) -> AsyncIterator[InChunk]:
        while (item := await self._queue.get()) is not None:
            if isinstance(item, InChunk):
                yield item
            else:
                item()


async def send_agent_audio(track: AgentAudioTrack, fmt: AudioFormat,
                           send: Callable[[int, bytes], Awaitable[None]],
                           stopped: Callable[[int], Awaitable[None]] | None = None) -> None:
    """Until cancelled: each 20 ms frame a reply speaks, when it is due, as
    send(reply, bytes); stopped(reply) when its audio stops (played out, paused or
    dropped)."""
    encode = Encoder(fmt, track.rate)
    speaking: int | None = None
    while True:
        pcm = await track.next_pcm()
        reply = track.frame_reply
        if speaking is not None and reply != speaking and stopped is not None:
            await stopped(speaking)
        speaking = reply
        if reply is not None:
            await send(reply, encode(pcm))
