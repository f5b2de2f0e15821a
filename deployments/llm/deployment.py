"""Serve wrapper: gRPC `Llm.Generate` and the OpenAI-compatible HTTP API, one engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve import Application
from ray.serve.grpc_util import RayServegRPCContext

from deployments.llm.config import LLM_DEPLOYMENT, LlmArgs
from deployments.llm.engine import VllmEngine
from deployments.llm.openai_http import chat_completions, list_models
from deployments.llm.service import LlmService
from deployments.serving import relay_with_status, reply_with_status
from voxray.logs import configure_logging
from voxray.stage_auth import MISSING, accepts
from voxray.v1 import llm_pb2

api = FastAPI(title="voxray LLM (OpenAI-compatible)")


def _refused(request: Request) -> JSONResponse | None:
    """401 for a request without the stage token (`Authorization: Bearer ...`)."""
    if accepts(request.headers.get("authorization")):
        return None
    return JSONResponse({"error": {"type": "invalid_request_error", "code": "invalid_api_key",
                                   "message": MISSING}}, status_code=401,
                        headers={"WWW-Authenticate": "Bearer"})


@serve.deployment(name=LLM_DEPLOYMENT)
@serve.ingress(api)
class LlmDeployment:
    async def __init__(self, args: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits it
        configure_logging()
        parsed = LlmArgs.model_validate(args)
        self._service = LlmService(parsed, VllmEngine(parsed, ray_metrics=True))
        await self._service.warmup()  # the first requests compile; no caller should wait

    @api.get("/v1/models", response_model=None)
    def models(self, request: Request) -> dict[str, Any] | JSONResponse:
        return _refused(request) or list_models(self._service)

    @api.post("/v1/chat/completions", response_model=None)
    async def chat(self, request: Request) -> JSONResponse | StreamingResponse:
        return _refused(request) or await chat_completions(self._service, request)

    async def Generate(  # noqa: N802 - the gRPC method name
        self, request: llm_pb2.LlmRequest, grpc_context: RayServegRPCContext
    ) -> AsyncIterator[llm_pb2.LlmEvent]:
        async for event in relay_with_status(self._service.generate(request), grpc_context):
            yield event  # type: ignore[misc]

    async def EndOfTurn(  # noqa: N802 - the gRPC method name
        self, request: llm_pb2.EndOfTurnRequest, grpc_context: RayServegRPCContext
    ) -> llm_pb2.EndOfTurnReply:
        return await reply_with_status(self._service.end_of_turn(request), grpc_context)

    async def check_health(self) -> None:
        await self._service.engine.check_health()

    def engine_state(self) -> dict[str, int]:
        """For tests and operators: is the engine still working on anything?"""
        c = self._service.engine.counters
        return {"unfinished": self._service.engine.unfinished_requests(),
                "running": c.running, "waiting": c.waiting,
                "generation_tokens": c.generation_tokens}

    def replica_id(self) -> str:
        return str(serve.get_replica_context().replica_tag)

    def __del__(self) -> None:
        if getattr(self, "_service", None) is not None:
            self._service.engine.shutdown()


def build_app(args: dict[str, Any]) -> Application:
    """Serve app builder (`import_path` in serve_config.yaml); validates args first."""
    return LlmDeployment.bind(LlmArgs.model_validate(args).model_dump())  # type: ignore[attr-defined,no-any-return]
