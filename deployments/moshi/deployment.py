"""Serve wrapper: one replica, one batch of `slots` duplex conversations."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.grpc_util import RayServegRPCContext, gRPCInputStream

from deployments.moshi.config import MoshiArgs
from deployments.moshi.engine import MoshiBatch
from deployments.moshi.metrics import MoshiMetrics
from deployments.moshi.scheduler import TICK_S, DuplexScheduler
from deployments.moshi.service import MoshiService
from deployments.serving import relay_with_status
from voxray.logs import configure_logging
from voxray.v1 import moshi_pb2


@serve.deployment(name="MoshiDeployment")
class MoshiDeployment:
    def __init__(self, args: dict[str, Any]) -> None:
        configure_logging()
        parsed = MoshiArgs.model_validate(args)
        self._metrics = MoshiMetrics(parsed.slots)
        scheduler = DuplexScheduler(MoshiBatch.from_args(parsed), parsed.max_buffered_frames,
                                    on_tick=self._metrics.on_tick)
        self._service = MoshiService(
            scheduler, parsed.max_buffered_frames, math.ceil(parsed.max_unread_s / TICK_S),
            replica_id=serve.get_replica_context().replica_tag)

    async def Converse(  # noqa: N802 - the gRPC method name
        self,
        request_stream: gRPCInputStream[moshi_pb2.MoshiRequest],
        grpc_context: RayServegRPCContext,
    ) -> AsyncIterator[moshi_pb2.MoshiEvent]:
        with self._metrics.stream():
            events = self._service.converse(request_stream)
            async for event in relay_with_status(events, grpc_context):
                yield event  # type: ignore[misc]

    def slots_in_use(self) -> int:
        return self._service.scheduler.in_use

    async def __del__(self) -> None:
        await self._service.scheduler.aclose()


def build_app(args: dict[str, Any]) -> Application:
    """Serve app builder (`import_path` in serve_config.yaml); validates args first.

    A replica holds at most `slots` streams: Serve routes no more to it, and its
    autoscaler sees a full replica as `slots` ongoing requests.
    """
    parsed = MoshiArgs.model_validate(args)
    options = parsed.fixed_deployment_options()["MoshiDeployment"]
    deployment = MoshiDeployment.options(**options)  # type: ignore[attr-defined]
    return deployment.bind(parsed.model_dump())  # type: ignore[no-any-return]
