"""Events the gateway sends on a session's data channel, as JSON objects with a `type`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Event:
    type: str
    at_unix_ms: float = field(default_factory=lambda: time.time() * 1000, init=False)

    def json(self) -> str:
        return json.dumps(asdict(self))


@dataclass
class Transcript(Event):
    text: str = ""
    final: bool = False


@dataclass
class AgentText(Event):
    turn: int = 0
    text: str = ""  # a delta of the agent's answer as the LLM streams it


@dataclass
class TurnMetrics(Event):
    turn: int = 0
    ttfat_ms: float = 0.0
    end_of_turn_ms: float = 0.0  # last voiced frame -> end of turn decided
    asr_final_ms: float = 0.0  # end of turn -> final transcript
    llm_first_token_ms: float = 0.0
    tts_first_audio_ms: float = 0.0  # first LLM token -> first audible TTS chunk
    playout_ms: float = 0.0  # first audible TTS chunk -> its first sample sent on the track


@dataclass
class Interrupted(Event):
    turn: int = 0
    heard: str = ""  # what the user heard of the answer: all the history keeps


@dataclass
class Info(Event):
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def transcript(text: str, final: bool) -> Transcript:
    return Transcript("final" if final else "partial", text, final)


def error(stage: str, message: str) -> Info:
    return Info("error", message, {"stage": stage})
