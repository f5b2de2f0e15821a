"""An outbound audio track that sends 20 ms PCM16 mono frames paced on the wall clock."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack


class PacedAudioTrack(MediaStreamTrack):
    """Subclasses say what each frame holds (`next_frame`); this class says when.

    The sender must neither run ahead nor fall behind real time: a late frame
    is sent at once, and the next ones catch up to the schedule.
    """

    kind = "audio"

    def __init__(self, rate: int) -> None:
        super().__init__()
        self.rate = rate
        self.frame_samples = rate // 50
        self._start: float | None = None
        self._pts = 0
        # told how late (ms) each frame went out against its schedule: the pacing jitter
        # that the event loop's other work adds
        self.on_late: Callable[[float], None] | None = None

    def next_frame(self, now: float) -> np.ndarray:
        """The next frame_samples of int16 PCM; `now` is when it goes out."""
        raise NotImplementedError

    async def next_pcm(self) -> np.ndarray:
        """The next frame, when it is due: for a transport that sends PCM itself."""
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += self.frame_samples
            due = self._start + self._pts / self.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self.on_late is not None:
                self.on_late(max(0.0, time.monotonic() - due) * 1000)
        return self.next_frame(time.monotonic())

    async def recv(self) -> av.AudioFrame:
        pcm = await self.next_pcm()
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.rate)
        return frame
