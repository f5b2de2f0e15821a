"""Turn-taking decisions from VAD probabilities: pure logic, no audio, no I/O.

Times are sample offsets in the session's 16 kHz input timeline, so the
decisions replay identically in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import TurnConfig
from gateway.vad import CHUNK, SAMPLE_RATE


@dataclass(frozen=True)
class SpeechStarted:
    start_sample: int  # first sample of the first voiced chunk


@dataclass(frozen=True)
class SpeechEnded:
    start_sample: int
    last_voiced_sample: int  # end of the last voiced chunk: TTFAT counts from here


TurnEvent = SpeechStarted | SpeechEnded


class TurnDetector:
    def __init__(self, params: TurnConfig) -> None:
        self.p = params
        self._voiced_run = 0
        self._run_start = 0
        self._in_speech = False
        self._speech_start = 0
        self._last_voiced = 0
        self._chunk_ms = CHUNK * 1000 // SAMPLE_RATE

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def voiced_ms(self) -> int:
        """From the start of the current speech to its last voiced chunk (pauses included)."""
        if not self._in_speech:
            return 0
        return (self._last_voiced - self._speech_start) * 1000 // SAMPLE_RATE

    def feed(self, prob: float, chunk_start: int, gate: bool = True) -> TurnEvent | None:
        """One VAD chunk; `gate` False marks it unvoiced whatever the model says
        (the echo guard uses it while the agent is speaking)."""
        limit = self.p.release if self._in_speech else self.p.threshold
        voiced = gate and prob >= limit
        end = chunk_start + CHUNK
        if voiced:
            if self._voiced_run == 0:
                self._run_start = chunk_start
            self._voiced_run += 1
            self._last_voiced = end
            if not self._in_speech and self._voiced_run * self._chunk_ms >= self.p.min_speech_ms:
                self._in_speech = True
                self._speech_start = self._run_start
                return SpeechStarted(self._speech_start)
            return None
        self._voiced_run = 0
        silence_ms = (end - self._last_voiced) * 1000 // SAMPLE_RATE
        if self._in_speech and silence_ms >= self.p.end_silence_ms:
            self._in_speech = False
            return SpeechEnded(self._speech_start, self._last_voiced)
        return None
