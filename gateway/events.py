"""Events the gateway sends on a session's data channel, as JSON objects with a `type`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any


class SessionEnded(Exception):
    """A stage ended the conversation; the message is the session's end reason."""


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
    language: str = ""  # ISO 639-1 code the ASR heard (empty: not said)


@dataclass
class AgentText(Event):
    turn: int = 0
    text: str = ""  # a delta of the agent's answer as the LLM streams it


@dataclass
class TurnMetrics(Event):
    """One answered turn. Times are ms; `*_at_ms` fields count from the user's last voiced
    sample, the others are the stage's own duration."""

    turn: int = 0
    ttfat_ms: float = 0.0  # last voiced sample -> first audible agent sample sent
    end_of_turn_ms: float = 0.0  # last voiced sample -> the turn taker ended the turn
    asr_final_ms: float = 0.0  # end of turn -> final transcript
    reply_started_at_ms: float = 0.0  # the LLM call began (before the end of turn if speculative)
    llm_first_token_ms: float = 0.0  # LLM call -> its first token
    tts_first_audio_ms: float = 0.0  # first token -> first audible TTS chunk back
    held_ms: float = 0.0  # audio ready before the turn ended: held this long
    playout_ms: float = 0.0  # audio ready and the turn ended -> its first sample sent
    speculation: str = "none"  # "hit": the prepared answer played; "miss": restarted; "none"
    wasted_llm_tokens: int = 0  # of speculative replies thrown away during this turn
    wasted_tts_s: float = 0.0
    p_finished: float = -1.0  # the turn policy's last verdict (-1: none)
    joined: bool = False  # continued the previous user turn
    language: str = ""  # what the user spoke, as the ASR heard it
    voice: str = ""  # the TTS voice that answered


@dataclass
class PauseJudged(Event):
    """The turn policy's verdict on a pause in the user's speech."""

    p_finished: float = 0.0
    wait_ms: int = 0  # silence asked for before the turn ends
    model_ms: float = 0.0  # the audio model's compute
    evidence: dict[str, float] = field(default_factory=dict)
    words: str = ""
    words_ms: float = -1.0  # pause start -> the ASR's pause decode (-1: none in time)


@dataclass
class Interrupted(Event):
    turn: int = 0
    heard: str = ""  # what the user heard of the answer: all the history keeps


@dataclass
class Info(Event):
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def transcript(text: str, final: bool, language: str = "") -> Transcript:
    return Transcript("final" if final else "partial", text, final, language)


def error(stage: str, message: str) -> Info:
    return Info("error", message, {"stage": stage})
