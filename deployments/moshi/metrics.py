"""Prometheus metrics of a Moshi replica, observed from the scheduler's tick hook
and from streams ending; Ray exports them with the replica's metrics."""

from __future__ import annotations

from types import TracebackType

from ray.serve.metrics import Counter, Gauge, Histogram

from deployments.moshi.scheduler import TickStats
from deployments.streams import stream_outcome

STEP_MS: list[float] = [2, 5, 10, 20, 40, 60, 80, 100, 150, 250, 500, 1000]


class MoshiMetrics:
    def __init__(self, slots: int) -> None:
        self.step = Histogram("voxray_moshi_step_ms", "Batched step time per 80 ms tick",
                              boundaries=STEP_MS)
        self.active = Gauge("voxray_moshi_active_slots", "Conversations stepped at the last tick")
        self.capacity = Gauge("voxray_moshi_slots", "Batch slots of the replica")
        self.capacity.set(slots)
        self.late = Counter("voxray_moshi_late_frames_total",
                            "Ticks a conversation was stepped with silence (its frame was late)")
        self.overruns = Counter("voxray_moshi_tick_overruns_total", "Steps longer than a tick")
        self.ended = Counter("voxray_moshi_streams_total", "Ended Converse streams by status",
                             tag_keys=("code",))

    def on_tick(self, stats: TickStats) -> None:
        self.step.observe(stats.step_ms)
        self.active.set(stats.active)
        if stats.late:
            self.late.inc(stats.late)
        if stats.overrun:
            self.overruns.inc()

    def stream(self) -> _StreamEnd:
        return _StreamEnd(self)


class _StreamEnd:
    def __init__(self, metrics: MoshiMetrics) -> None:
        self._m = metrics

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._m.ended.inc(tags={"code": stream_outcome(e)})
