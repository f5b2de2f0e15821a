"""What a session needs of the way the agent's audio reaches the caller.

The WebRTC track (gateway/agent_track.py) paces it in 20 ms frames; another
transport may send it as it comes and learn from the client what was heard.
Audio is keyed by reply, and each piece carries the characters of the reply's
text it speaks, so what was heard is known in characters.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Playout(Protocol):
    def push(self, turn: int, pcm: np.ndarray, span_start: int, span_end: int) -> None:
        """Queue 24 kHz PCM16 of reply `turn` that speaks text[span_start:span_end]."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def clear(self) -> None:
        """Drop everything queued (a barge-in)."""

    async def played(self, turn: int) -> None:
        """Until everything of `turn` queued so far has been played (or dropped)."""

    def heard_chars(self, turn: int) -> int:
        """Characters of the reply's text the caller has heard."""

    @property
    def speaking(self) -> bool:
        """Agent audio is queued (playing or paused)."""

    @property
    def paused(self) -> bool: ...

    @property
    def audible(self) -> bool:
        """Agent audio reached the caller within the last few hundred ms."""

    def recent_level_db(self) -> float:
        """Loudest recent output, dBFS: what an echo of it in the mic would follow."""
