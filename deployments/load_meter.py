"""How busy a replica's workers were: the time-averaged share of their capacity in use.

A stage reports it to Serve's autoscaler (`record_autoscaling_stats`); the average since the
last report, not the level at that instant, so a burst between two reports is seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class LoadMeter:
    def __init__(self, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = capacity
        self._clock = clock
        self._level = 0
        self._since = self._changed = clock()
        self._area = 0.0  # level x seconds since the last report

    def add(self, n: int) -> None:
        """n more (or, negative, fewer) jobs waiting or running."""
        now = self._clock()
        self._area += self._level * (now - self._changed)
        self._changed = now
        self._level += n

    @property
    def level(self) -> int:
        return self._level

    def share(self) -> float:
        """The mean level over capacity since the last call (over 1: work is queueing)."""
        self.add(0)
        now = self._changed
        span = now - self._since
        mean = self._area / span if span > 0 else float(self._level)
        self._area, self._since = 0.0, now
        return mean / self._capacity
