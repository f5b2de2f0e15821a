"""An ASR-shaped servicer that answers each request at once: it measures transport, not models."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve import Application

from voxray.v1 import asr_pb2, asr_pb2_grpc, common_pb2


class EchoAsr(asr_pb2_grpc.AsrServicer):
    async def Transcribe(  # noqa: N802 - the gRPC method name
        self, request_stream: AsyncIterator[asr_pb2.AsrRequest], context: Any = None
    ) -> AsyncIterator[asr_pb2.AsrEvent]:
        async for req in request_stream:
            meta = common_pb2.Meta(session_id=req.meta.session_id, seq=req.meta.seq,
                                   sent_unix_ns=time.time_ns(), reply_to_seq=req.meta.seq)
            yield asr_pb2.AsrEvent(meta=meta, partial=asr_pb2.Transcript(
                audio_end_sample=len(req.audio.pcm16) // 2))


@serve.deployment(name="EchoDeployment")
class EchoDeployment(EchoAsr):
    pass


def build_app(args: dict[str, Any]) -> Application:
    return EchoDeployment.bind()  # type: ignore[attr-defined,no-any-return]
