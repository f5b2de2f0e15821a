"""Prometheus metrics of the ASR replica, observed from outside the service.

The observer watches requests go in and events come out of a Transcribe
stream, timestamps them, and records latencies; the service computes none.
Ray exports them with every replica's metrics (names prefixed `ray_`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import TracebackType

from ray.serve.metrics import Counter, Gauge, Histogram

from deployments.streams import stream_outcome
from voxray.v1 import asr_pb2

LATENCY_MS: list[float] = [5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000]


class AsrMetrics:
    def __init__(self) -> None:
        self.final_latency = Histogram(
            "voxray_asr_final_latency_ms",
            "end_of_utterance received -> final sent, in the replica", boundaries=LATENCY_MS)
        self.decode = Histogram("voxray_asr_decode_ms", "Model time per decode",
                                boundaries=LATENCY_MS, tag_keys=("kind",))
        self.active = Gauge("voxray_asr_active_streams", "Open Transcribe streams")
        self.ended = Counter("voxray_asr_streams_total", "Ended Transcribe streams by status",
                             tag_keys=("code",))
        self._active = 0

    def stream(self) -> StreamObserver:
        return StreamObserver(self)


class StreamObserver:
    def __init__(self, metrics: AsrMetrics) -> None:
        self._m = metrics
        self._eou_at: dict[int, float] = {}

    async def requests(
        self, stream: AsyncIterator[asr_pb2.AsrRequest]
    ) -> AsyncIterator[asr_pb2.AsrRequest]:
        async for req in stream:
            if req.WhichOneof("kind") == "end_of_utterance":
                self._eou_at[req.meta.seq] = time.monotonic()
            yield req

    def event(self, event: asr_pb2.AsrEvent) -> None:
        kind = event.WhichOneof("kind")
        if kind == "final":
            at = self._eou_at.pop(event.meta.reply_to_seq, None)
            if at is not None:
                self._m.final_latency.observe((time.monotonic() - at) * 1000)
        if kind in ("partial", "final") and event.decode_ms > 0:
            self._m.decode.observe(event.decode_ms, tags={"kind": kind})

    def __enter__(self) -> StreamObserver:
        self._m._active += 1
        self._m.active.set(self._m._active)
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._m._active -= 1
        self._m.active.set(self._m._active)
        self._m.ended.inc(tags={"code": stream_outcome(e)})
