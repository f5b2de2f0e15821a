"""The turn taker: VAD scores, the echo gate and the turn policy's verdicts -> turn events.

Pure state: it is fed chunks (with their VAD score) and verdicts, and returns
typed events placed on the session's 16 kHz timeline; no I/O, no clock.

    idle --voiced min_speech_ms--> speaking --silent min_silence_ms--> pausing
    pausing --voiced min_speech_ms--> speaking (SpeechResumed: the same turn goes on)
    pausing --silence reaches the wait, and not held--> idle (TurnEnded)

While pausing the wait is max_silence_ms until the policy judges the pause
(`judge`), then what the policy asked for. `hold` keeps the turn open past
that wait until `release` (the session holds it while a speculative answer is
being made, since ending the turn sooner would not make the answer come
sooner), never past max_silence_ms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gateway.config import BargeInConfig, TurnConfig
from gateway.session.barge_in import may_be_user
from gateway.session.events import (
    PauseStarted,
    SpeechResumed,
    SpeechStarted,
    TurnEnded,
    TurnEvent,
)
from gateway.vad import CHUNK, SAMPLE_RATE


@dataclass(frozen=True)
class AgentLevel:
    """What the echo gate needs to know of the agent's output at this moment."""

    audible: bool  # agent audio went out in the last few hundred ms
    level_db: float  # the loudest of it


QUIET_AGENT = AgentLevel(False, -100.0)


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


class TurnTaker:
    def __init__(self, turn: TurnConfig, barge: BargeInConfig,
                 vad: Callable[[np.ndarray], float]) -> None:
        self.p = turn
        self.barge = barge
        self.vad = vad
        self._state = "idle"
        self._voiced_run = 0
        self._run_start = 0
        self._speech_start = 0
        self._last_voiced = 0
        self._now = 0  # end of the last chunk fed
        self._wait_ms = turn.max_silence_ms
        self._held = False
        self.last_prob = 0.0

    @property
    def in_turn(self) -> bool:
        """Between speech start and the end of the turn (pauses included)."""
        return self._state != "idle"

    @property
    def pausing(self) -> bool:
        return self._state == "pausing"

    @property
    def voiced_ms(self) -> int:
        """From the start of the current turn to its last voiced chunk (pauses included)."""
        return _ms(self._last_voiced - self._speech_start) if self.in_turn else 0

    @property
    def turn_start_sample(self) -> int:
        return self._speech_start

    @property
    def last_voiced_sample(self) -> int:
        return self._last_voiced

    @property
    def silence_ms(self) -> int:
        return _ms(self._now - self._last_voiced)

    def feed(self, pcm: np.ndarray, start_sample: int, level_db: float,
             agent: AgentLevel = QUIET_AGENT) -> list[TurnEvent]:
        """One VAD chunk of the user's audio."""
        prob = self.last_prob = self.vad(pcm)
        gate = may_be_user(level_db, prob, agent.level_db, agent.audible, self.barge)
        limit = self.p.threshold if self._state == "idle" else self.p.release
        voiced = gate and prob >= limit
        self._now = end = start_sample + CHUNK
        if voiced:
            if self._voiced_run == 0:
                self._run_start = start_sample
            self._voiced_run += 1
            if self._state == "speaking":
                self._last_voiced = end
            elif _ms(self._voiced_run * CHUNK) >= self.p.min_speech_ms:
                self._last_voiced = end
                if self._state == "idle":
                    self._state = "speaking"
                    self._held = False
                    self._speech_start = self._run_start
                    return [SpeechStarted(self._run_start)]
                self._state = "speaking"  # pausing: the same turn goes on
                return [SpeechResumed(self._run_start)]
            return []
        self._voiced_run = 0
        if self._state == "speaking" and self.silence_ms >= self.p.min_silence_ms:
            self._state = "pausing"
            self._wait_ms = self.p.max_silence_ms
            return [PauseStarted(self._last_voiced, end)]
        return self._maybe_end()

    def judge(self, wait_ms: int) -> list[TurnEvent]:
        """The policy's verdict on the current pause: end after this much silence."""
        if self._state != "pausing":
            return []
        self._wait_ms = max(self.p.min_silence_ms, min(wait_ms, self.p.max_silence_ms))
        return self._maybe_end()

    def hold(self) -> None:
        """Keep this turn's pauses from ending it (until `release`, or max_silence_ms)."""
        if self._state != "idle":
            self._held = True

    def release(self) -> list[TurnEvent]:
        self._held = False
        return self._maybe_end()

    def _maybe_end(self) -> list[TurnEvent]:
        if self._state != "pausing":
            return []
        silence = self.silence_ms
        if silence >= self.p.max_silence_ms or (silence >= self._wait_ms and not self._held):
            self._state = "idle"
            return [TurnEnded(self._speech_start, self._last_voiced, self._now, silence)]
        return []
