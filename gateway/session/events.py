"""The typed events a pipeline session's parts exchange.

Turn events are placed on the session's 16 kHz input timeline (sample
offsets), so the turn taker replays identically in tests; reply events carry
`at`, the time.monotonic() when they happened. The observer turns both into
metrics; nothing in the data path computes its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def _now() -> float:
    return time.monotonic()


# -- the user's side: from the turn taker -------------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    start_sample: int  # first sample of the first voiced chunk


@dataclass(frozen=True)
class PauseStarted:
    """min_silence_ms of silence after speech: the pause is judged from here."""

    last_voiced_sample: int
    at_sample: int


@dataclass(frozen=True)
class SpeechResumed:
    """The user spoke again during a pause: the same turn goes on."""

    start_sample: int


@dataclass(frozen=True)
class TurnEnded:
    start_sample: int
    last_voiced_sample: int  # end of the last voiced chunk: TTFAT counts from here
    at_sample: int  # where the decision fell
    silence_ms: int  # the silence that ended it


TurnEvent = SpeechStarted | PauseStarted | SpeechResumed | TurnEnded


# -- decisions and the agent's side: timestamped -----------------------------------------


@dataclass(frozen=True)
class PauseJudged:
    """The turn policy's verdict on a pause."""

    p_finished: float
    wait_ms: int  # silence it asks for before the turn ends
    cost_ms: float  # compute spent on the evidence (the audio model's run)
    evidence: dict[str, float]  # p per kind of evidence used
    words: str
    words_ms: float  # pause start -> the pause decode's words (-1: none came in time)
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class TurnHeard:
    """An ended turn's final transcript (empty: nothing was made out of it)."""

    text: str
    language: str = ""
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class TurnCommitted:
    """The turn ended and its final transcript is in; the answer to it is decided."""

    reply: int  # the reply that answers it
    text: str  # the whole user turn, joined continuations included
    last_voiced_at: float  # arrival of the last voiced sample
    decided_at: float  # the turn taker ended the turn
    final_at: float  # the final transcript arrived
    speculation: str  # "hit" (the held answer plays), "miss" (restarted), "none"
    joined: bool  # a continuation of the previous turn
    language: str = ""  # the user's, as the ASR heard it
    voice: str = ""  # the voice that answers
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class ReplyProgress:
    """A reply reached a milestone: started, first_token, first_audio (an audible chunk
    back from TTS), first_audible (its first audible sample sent to the caller),
    tools_called (an LLM call ended calling tools), llm_done, done."""

    reply: int
    stage: str
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class ToolsCalled:
    """A committed reply runs the gateway's tools the LLM called."""

    reply: int
    names: tuple[str, ...]
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class ReplyDiscarded:
    """A speculative reply thrown away: what it cost."""

    reply: int
    reason: str  # "resumed" (the user went on), "miss" (the final differed), "closed"
    llm_tokens: int
    tts_audio_s: float
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class StageRetried:
    """A stage stream failed and a new one was opened (`attempt` from 1)."""

    stage: str  # "asr", "llm" or "tts"
    attempt: int
    code: str  # the failed stream's status, e.g. UNAVAILABLE
    reply: int | None = None  # the reply it was making (llm, tts)
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class AgentPaused:
    """The user spoke over the agent: its audio was paused."""

    speech_at: float  # arrival of the first voiced sample
    at: float = field(default_factory=_now)


SessionEvent = (PauseJudged | TurnHeard | TurnCommitted | ReplyProgress | ReplyDiscarded
                | AgentPaused | StageRetried | ToolsCalled)
