"""When a failed stage stream is worth a new one, and how long to keep trying.

A stream that ends UNAVAILABLE (its replica died or was drained), CANCELLED (Serve
cancelled it), or the like may work on a new stream: Serve routes that to a healthy
or new replica. A stream the stage refused (a bad request) would be refused again.
"""

from __future__ import annotations

import time

import grpc

from gateway.config import RetryConfig

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                       grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                       grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED})


class Retrier:
    """Bounded retries with backoff within a deadline from the first failure; a stream
    that works again (`worked`) resets them."""

    def __init__(self, config: RetryConfig) -> None:
        self.cfg = config
        self.attempt = 0
        self._first_failed_at = 0.0

    def worked(self) -> None:
        self.attempt = 0

    def wait_s(self, error: grpc.aio.AioRpcError) -> float | None:
        """How long to wait before the next stream; None: give up (and say why)."""
        now = time.monotonic()
        if not self.attempt:
            self._first_failed_at = now
        if (error.code() not in RETRYABLE or self.attempt >= self.cfg.attempts
                or now - self._first_failed_at >= self.cfg.deadline_s):
            return None
        self.attempt += 1
        return self.cfg.wait_s(self.attempt)
