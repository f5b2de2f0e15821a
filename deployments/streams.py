"""What the stage services share about their streams; no Ray here, so a service runs
and is tested without it."""

from __future__ import annotations

import time

from deployments.errors import StageError
from voxray.v1 import common_pb2


class Stamper:
    """Numbers one stream's events and stamps their Meta."""

    def __init__(self, session_id: str, first_seq: int = 0) -> None:
        self._session_id = session_id
        self._seq = first_seq

    def meta(self, reply_to_seq: int) -> common_pb2.Meta:
        meta = common_pb2.Meta(session_id=self._session_id, seq=self._seq,
                               sent_unix_ns=time.time_ns(), reply_to_seq=reply_to_seq)
        self._seq += 1
        return meta


def stream_outcome(error: BaseException | None) -> str:
    """How a stream ended, for metrics: OK, a StageError's code, CANCELLED or INTERNAL."""
    if error is None:
        return "OK"
    if isinstance(error, StageError):
        return error.code.name
    if isinstance(error, GeneratorExit | StopAsyncIteration):
        return "CANCELLED"
    return "INTERNAL"
