"""Is the user's speech over the agent an interruption, a backchannel, or echo?

Pure decisions; the session acts on them. Speech pauses the agent at once;
then it is either resumed (a short "uh-huh") or cancelled (a real turn).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BACKCHANNELS = frozenset({
    "uh-huh", "uh", "huh", "mm-hm", "mhm", "mm", "hmm", "um", "okay", "ok", "yeah", "yes",
    "yep", "right", "sure", "i", "see", "got", "it", "alright", "cool", "nice", "ah", "oh",
})


@dataclass
class BargeInParams:
    # Speech over the agent that lasts this long is an interruption, whatever it says.
    interrupt_after_ms: int = 800
    # Shorter speech is a backchannel if it has at most this many words, all backchannel words.
    backchannel_max_words: int = 3
    backchannel_words: frozenset[str] = field(default_factory=lambda: BACKCHANNELS)
    # While the agent is audible, mic audio quieter than the agent's output minus this
    # many dB is taken as its echo and cannot start a barge-in (no reliance on the
    # browser's echo canceller alone).
    echo_margin_db: float = 12.0
    # ... and the VAD must be this sure.
    threshold_while_speaking: float = 0.7


def is_backchannel(text: str, p: BargeInParams) -> bool:
    words = re.findall(r"[a-z]+(?:-[a-z]+)?", text.lower())
    return len(words) <= p.backchannel_max_words and all(w in p.backchannel_words for w in words)


def may_be_user(mic_db: float, vad_prob: float, agent_db: float, agent_audible: bool,
                p: BargeInParams) -> bool:
    """The echo guard: can this mic chunk count as the user's voice?"""
    if not agent_audible:
        return True
    return vad_prob >= p.threshold_while_speaking and mic_db >= agent_db - p.echo_margin_db
