"""The user's side of the ASR stream: what is sent, and the words that come back.

Audio goes to the ASR from the start of a turn (with `preroll_ms` before it)
through its pauses to its end, so a pause and the speech after it stay one
utterance; the turn's end closes the utterance, and its final transcript is
awaited here. The latest partial is kept with the stream sample it reached,
so the turn policy can ask for the words of a pause: the ASR's pause decode,
which covers the speech and a little of the silence after it.

Everything said since an utterance began is kept until its final arrives, so
when the ASR stream fails (a replica died, was drained, or Serve cancelled the
stream) a new stream hears it all again and the awaited final comes from there.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import grpc
import numpy as np

from gateway.audio_in import InChunk
from gateway.vad import CHUNK, SAMPLE_RATE
from voxray.stage_clients.asr import AsrStream

TURN_AUDIO_S = 8  # what the turn model looks at
# A decode that reaches the start of the VAD's last voiced chunk heard the speech: that
# chunk ends 30-60 ms after it (Silero stays above `release` that long), and the ASR's
# pause decode goes on past its own last loud frame into the pause.
PAUSE_HEARD_S = -CHUNK / SAMPLE_RATE


@dataclass(frozen=True)
class Partial:
    utterance: int
    text: str
    audio_end: int  # ASR stream sample the decode reached


class UserSpeech:
    def __init__(self, asr: AsrStream, preroll_ms: int) -> None:
        self.asr = asr
        self._preroll: deque[InChunk] = deque(
            maxlen=max(1, preroll_ms * SAMPLE_RATE // 1000 // CHUNK))
        self._turn_audio: deque[np.ndarray] = deque(maxlen=TURN_AUDIO_S * SAMPLE_RATE // CHUNK)
        self._sending = False
        self._delta = 0  # ASR stream sample - session sample, for the open turn
        self._finals: dict[int, asyncio.Future[str]] = {}
        self._partial: Partial | None = None
        self._partial_came = asyncio.Event()
        self._open_audio: list[np.ndarray] = []  # the open turn's, preroll on
        self._open_start = 0  # session sample of its first chunk
        # closed utterances whose final has not come: (their audio, speech end within it)
        self._unfinal: dict[int, tuple[list[np.ndarray], int]] = {}
        self.language = ""  # the ASR's, for the latest words it heard ("" until it says)

    def add(self, chunk: InChunk) -> None:
        """Every chunk of the user's audio, in order."""
        self._preroll.append(chunk)
        if self._sending:
            self.asr.send_audio(chunk.pcm.tobytes())
            self._turn_audio.append(chunk.pcm)
            self._open_audio.append(chunk.pcm)

    def start_turn(self, preroll: bool = True) -> None:
        """Speech started: send what led up to it (with `preroll`; else from the last
        chunk added), then everything until the turn ends."""
        chunks = list(self._preroll) if preroll else [self._preroll[-1]]
        first = chunks[0]
        self._delta = self.asr.samples_sent - first.start_sample
        self._open_start = first.start_sample
        self._turn_audio.clear()
        self._open_audio = [c.pcm for c in chunks]
        for c in chunks:
            self.asr.send_audio(c.pcm.tobytes())
            self._turn_audio.append(c.pcm)
        self._sending = True

    def end_turn(self, last_voiced_sample: int) -> asyncio.Future[str]:
        """Close the utterance; the future gets its final transcript."""
        self._sending = False
        uid = self.asr.open_utterance
        self.asr.end_utterance(speech_end_sample=last_voiced_sample + self._delta)
        self._unfinal[uid] = (self._open_audio, last_voiced_sample - self._open_start)
        self._open_audio = []
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._finals[uid] = fut
        return fut

    def turn_audio(self) -> np.ndarray:
        """The open turn's audio so far (its last 8 s)."""
        return np.concatenate(self._turn_audio) if self._turn_audio else np.zeros(0, np.int16)

    def words_covering(self, last_voiced_sample: int) -> str | None:
        """The open turn's words, if the latest decode heard it up to that sample."""
        p = self._partial
        need = last_voiced_sample + self._delta + int(PAUSE_HEARD_S * SAMPLE_RATE)
        if self._sending and p is not None and p.utterance == self.asr.open_utterance \
                and p.audio_end >= need:
            return p.text
        return None

    async def pause_words(self, last_voiced_sample: int, within_s: float) -> str | None:
        """The words of the open turn once a decode has heard its pause; None if none
        comes within `within_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            if (words := self.words_covering(last_voiced_sample)) is not None:
                return words
            left = deadline - loop.time()
            if left <= 0:
                return None
            self._partial_came.clear()
            try:
                await asyncio.wait_for(self._partial_came.wait(), left)
            except TimeoutError:
                return None

    def on_partial(self, utterance: int, text: str, audio_end: int, language: str = "") -> None:
        self._partial = Partial(utterance, text.strip(), audio_end)
        if language and text.strip():
            self.language = language
        self._partial_came.set()

    def on_final(self, utterance: int, text: str, language: str = "") -> None:
        self._unfinal.pop(utterance, None)
        if language and text.strip():
            self.language = language
        fut = self._finals.pop(utterance, None)
        if fut is not None and not fut.done():
            fut.set_result(text.strip())

    def replay(self, asr: AsrStream) -> None:
        """Go on on a new stream after the old one failed: each utterance whose final never
        came, closed again, then the open turn so far; their finals come from there."""
        finals, unfinal = self._finals, self._unfinal
        self.asr, self._finals, self._unfinal, self._partial = asr, {}, {}, None
        for uid in sorted(unfinal):
            audio, speech_end = unfinal[uid]
            start = asr.samples_sent
            for pcm in audio:
                asr.send_audio(pcm.tobytes())
            new = asr.open_utterance
            asr.end_utterance(speech_end_sample=start + speech_end)
            self._unfinal[new] = (audio, speech_end)
            if uid in finals:
                self._finals[new] = finals.pop(uid)
        if self._sending:
            self._delta = asr.samples_sent - self._open_start
            for pcm in self._open_audio:
                asr.send_audio(pcm.tobytes())

    def fail(self, error: grpc.aio.AioRpcError) -> None:
        for fut in self._finals.values():
            if not fut.done():
                fut.set_exception(error)
        self._finals.clear()
        self._unfinal.clear()
