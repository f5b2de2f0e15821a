"""Serve wrapper around TtsService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.grpc_util import RayServegRPCContext, gRPCInputStream

from deployments.serving import relay_with_status
from deployments.tts.config import TtsArgs
from deployments.tts.service import TtsService
from voxray.logs import configure_logging
from voxray.v1 import tts_pb2


@serve.deployment(name="TtsDeployment")
class TtsDeployment:
    def __init__(self, args: dict[str, Any]) -> None:
        configure_logging()
        ctx = serve.get_replica_context()
        self._service = TtsService(TtsArgs.model_validate(args), replica_id=ctx.replica_tag)

    async def Synthesize(  # noqa: N802 - the gRPC method name
        self, request: tts_pb2.TtsRequest, grpc_context: RayServegRPCContext
    ) -> AsyncIterator[tts_pb2.TtsEvent]:
        async for event in relay_with_status(self._service.synthesize(request), grpc_context):
            yield event  # type: ignore[misc]

    async def SynthesizeStream(  # noqa: N802 - the gRPC method name
        self,
        request_stream: gRPCInputStream[tts_pb2.TtsStreamRequest],
        grpc_context: RayServegRPCContext,
    ) -> AsyncIterator[tts_pb2.TtsEvent]:
        events = self._service.synthesize_stream(request_stream)
        async for event in relay_with_status(events, grpc_context):
            yield event  # type: ignore[misc]

    def record_autoscaling_stats(self) -> dict[str, float]:
        """For deployments.autoscaling.LoadPolicy: synthesis jobs queued or running over the
        workers, averaged since the last report."""
        return {"load": self._service.pool.load.share()}

    def units_synthesized(self) -> int:
        return self._service.units_synthesized


def build_app(args: dict[str, Any]) -> Application:
    """Serve app builder (`import_path` in serve_config.yaml); validates args first."""
    return TtsDeployment.bind(TtsArgs.model_validate(args).model_dump())  # type: ignore[attr-defined,no-any-return]
