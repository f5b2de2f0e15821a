"""Is the user's speech over the agent an interruption, a backchannel, or echo?

Pure decisions; the session acts on them. Speech pauses the agent at once;
then it is either resumed (a short "uh-huh") or cancelled (a real turn).
"""

from __future__ import annotations

import re

from gateway.config import BargeInConfig


def is_backchannel(text: str, p: BargeInConfig) -> bool:
    words = re.findall(r"[a-z]+(?:-[a-z]+)?", text.lower())
    return len(words) <= p.backchannel_max_words and all(w in p.backchannel_words for w in words)


def may_be_user(mic_db: float, vad_prob: float, agent_db: float, agent_audible: bool,
                p: BargeInConfig) -> bool:
    """The echo guard: can this mic chunk count as the user's voice?"""
    if not agent_audible:
        return True
    return vad_prob >= p.threshold_while_speaking and mic_db >= agent_db - p.echo_margin_db
