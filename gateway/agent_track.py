"""The agent's outbound audio track: paced 20 ms frames from queued speech.

It knows what was heard: each queued segment carries the end of the text
span it speaks, and a segment counts as heard once its last sample went out.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voxray.paced_track import PacedAudioTrack

RATE = 24_000
FRAME = RATE // 50  # 20 ms
AUDIBLE = 328  # |sample| above about -40 dBFS counts as audible
ECHO_TAIL_S = 0.4  # a room's echo of the agent and the caller's jitter buffer


@dataclass
class Segment:
    turn: int
    pcm: np.ndarray  # int16 at RATE
    span_start: int  # characters of the turn's text this audio speaks
    span_end: int
    pos: int = 0  # samples already sent


class AgentAudioTrack(PacedAudioTrack):
    def __init__(self, on_first_audible: Callable[[int, float], None] | None = None) -> None:
        super().__init__(RATE)
        self.frame_reply: int | None = None  # the reply the last frame spoke (None: silence)
        # Called when queued audio is dropped (a barge-in): a transport with its own
        # playback buffer (a phone line) drops that too.
        self.on_clear: Callable[[], None] | None = None
        self._queue: deque[Segment] = deque()
        self._drained: dict[int, asyncio.Future[None]] = {}
        self._paused = False
        self._on_first_audible = on_first_audible
        self._audible_turns: set[int] = set()
        self.heard: dict[int, int] = {}  # turn -> characters heard so far
        self.paused_at: float | None = None
        self._levels: deque[tuple[float, float]] = deque(maxlen=25)  # (sent at, dBFS)
        self.last_audio_at = 0.0  # when the last non-silent frame went out
        # per reply, its pieces on its own audio timeline: (first sample, end, span)
        self._timeline: OrderedDict[int, list[tuple[int, int, int, int]]] = OrderedDict()

    def push(self, turn: int, pcm: np.ndarray, span_start: int, span_end: int) -> None:
        self._queue.append(Segment(turn, pcm, span_start, span_end))
        pieces = self._timeline.setdefault(turn, [])
        start = pieces[-1][1] if pieces else 0
        pieces.append((start, start + len(pcm), span_start, span_end))
        while len(self._timeline) > 8:
            self._timeline.popitem(last=False)

    def chars_at(self, turn: int, sample: int) -> int:
        """Characters of the reply's text spoken by its first `sample` samples (a client
        that played that much of it heard this much)."""
        for start, end, span_start, span_end in self._timeline.get(turn, []):
            if sample < end:
                part = max(0, sample - start) / max(1, end - start)
                return span_start + int((span_end - span_start) * part)
        pieces = self._timeline.get(turn)
        return pieces[-1][3] if pieces else 0

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            self.paused_at = time.monotonic()

    def resume(self) -> None:
        self._paused = False
        self.paused_at = None

    def clear(self) -> None:
        for seg in self._queue:  # what was heard of a cut segment stays heard
            if seg.pos:
                self.heard[seg.turn] = max(self.heard.get(seg.turn, 0), self.heard_chars(seg.turn))
        self._queue.clear()
        self.resume()
        for turn in list(self._drained):
            self._settle(turn)
        if self.on_clear is not None:
            self.on_clear()

    async def played(self, turn: int) -> None:
        """Until every segment of `turn` queued so far has been sent (or dropped)."""
        if any(seg.turn == turn for seg in self._queue):
            fut = self._drained.setdefault(turn, asyncio.get_running_loop().create_future())
            await asyncio.shield(fut)

    def _settle(self, turn: int) -> None:
        fut = self._drained.pop(turn, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def recent_level_db(self, window_s: float = 0.4) -> float:
        """Loudest frame sent in the last window: what an echo of it would follow."""
        since = time.monotonic() - window_s
        return max((db for t, db in self._levels if t >= since), default=-100.0)

    @property
    def speaking(self) -> bool:
        """Agent audio is queued (playing or paused)."""
        return bool(self._queue)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def audible(self) -> bool:
        """Agent audio went out within the last 400 ms (its echo may still be in the mic)."""
        return time.monotonic() - self.last_audio_at < ECHO_TAIL_S

    def heard_chars(self, turn: int) -> int:
        """Characters of the turn's text that were played, the segment under way
        counted in proportion to the samples sent."""
        heard = self.heard.get(turn, 0)
        for seg in self._queue:
            if seg.turn == turn and seg.pos:
                heard = max(heard, seg.span_start
                            + (seg.span_end - seg.span_start) * seg.pos // max(1, len(seg.pcm)))
        return heard

    def _next_samples(self) -> tuple[np.ndarray, int | None]:
        out = np.zeros(FRAME, np.int16)
        filled = 0
        turn = None
        while not self._paused and filled < FRAME and self._queue:
            seg = self._queue[0]
            take = min(FRAME - filled, len(seg.pcm) - seg.pos)
            out[filled:filled + take] = seg.pcm[seg.pos:seg.pos + take]
            filled += take
            seg.pos += take
            turn = seg.turn
            if seg.pos >= len(seg.pcm):
                self._queue.popleft()
                self.heard[seg.turn] = max(self.heard.get(seg.turn, 0), seg.span_end)
                if not any(s.turn == seg.turn for s in self._queue):
                    self._settle(seg.turn)
        return out, turn

    def next_frame(self, now: float) -> np.ndarray:
        pcm, turn = self._next_samples()
        self.frame_reply = turn
        if turn is not None and np.abs(pcm).max() > AUDIBLE:
            self.last_audio_at = now
            if turn not in self._audible_turns:
                self._audible_turns.add(turn)
                if self._on_first_audible is not None:
                    self._on_first_audible(turn, now)
        x = pcm.astype(np.float32) / 32768.0
        self._levels.append((now, float(10 * np.log10(np.mean(x * x) + 1e-10))))
        return pcm
