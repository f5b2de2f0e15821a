"""Serve wrapper around AsrService: one replica serves many Transcribe streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.grpc_util import RayServegRPCContext, gRPCInputStream

from deployments.asr.config import AsrArgs
from deployments.asr.metrics import AsrMetrics
from deployments.asr.service import AsrService
from deployments.serving import relay_with_status
from voxray.logs import configure_logging
from voxray.v1 import asr_pb2


@serve.deployment(name="AsrDeployment")
class AsrDeployment:
    def __init__(self, args: dict[str, Any]) -> None:
        configure_logging()
        ctx = serve.get_replica_context()
        self._service = AsrService(AsrArgs.model_validate(args), replica_id=ctx.replica_tag)
        self._metrics = AsrMetrics()

    async def Transcribe(  # noqa: N802 - the gRPC method name
        self,
        request_stream: gRPCInputStream[asr_pb2.AsrRequest],
        grpc_context: RayServegRPCContext,
    ) -> AsyncIterator[asr_pb2.AsrEvent]:
        with self._metrics.stream() as observed:
            events = self._service.transcribe(observed.requests(request_stream))
            async for event in relay_with_status(events, grpc_context):
                observed.event(event)  # type: ignore[arg-type]
                yield event  # type: ignore[misc]


def build_app(args: dict[str, Any]) -> Application:
    """Serve app builder (`import_path` in serve_config.yaml); validates args first."""
    return AsrDeployment.bind(AsrArgs.model_validate(args).model_dump())  # type: ignore[attr-defined,no-any-return]
