"""How long a unit takes to make on this replica, learned from its own runs.

Kokoro makes about 0.4 s of lead-in silence (later trimmed) for every unit, so a
run's time is a large fixed part plus a part per character. Runs are timed by the
wall clock from the moment they are asked for, so the estimate carries whatever
the replica shares its cores with (an LLM decoding, an ASR pass) at the time.
"""

from __future__ import annotations

import threading


class UnitCost:
    """seconds = fixed + per_char * characters, fitted by least squares over recent runs,
    each older run weighing `1 - 1/memory` as much as the one after it. Until runs are
    seen, a prior measured on an idle two-core box answers (and fades as they come)."""

    PRIOR = ((4, 0.56), (40, 1.1))  # (characters, seconds): one word, eight words

    def __init__(self, memory: int = 20) -> None:
        if memory < 2:
            raise ValueError("memory must be at least 2 runs")
        self._decay = 1.0 - 1.0 / memory
        self._sums = [0.0] * 5  # weight, x, y, x*x, x*y
        self._lock = threading.Lock()  # observed from the synthesis threads
        for chars, seconds in self.PRIOR:
            self.observe(chars, seconds)

    def observe(self, chars: int, seconds: float) -> None:
        x, y = float(chars), float(seconds)
        with self._lock:
            self._sums = [s * self._decay + v
                          for s, v in zip(self._sums, (1.0, x, y, x * x, x * y), strict=True)]

    def predict(self, chars: int) -> float:
        with self._lock:
            w, sx, sy, sxx, sxy = self._sums
        spread = w * sxx - sx * sx
        per_char = max((w * sxy - sx * sy) / spread, 0.0) if spread > 1e-9 * w * w else 0.0
        fixed = (sy - per_char * sx) / w
        if fixed < 0:  # a line through the origin, then: no run takes negative time
            fixed, per_char = 0.0, sxy / sxx if sxx > 0 else 0.0
        return fixed + per_char * chars
