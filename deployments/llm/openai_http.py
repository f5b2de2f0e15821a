"""An OpenAI-compatible chat API over the same engine, for existing tools.

`POST {route_prefix}/v1/chat/completions` (streamed with `"stream": true` or
whole) and `GET {route_prefix}/v1/models`. Send `x-session-id` to keep a
conversation on one replica (prefix cache), as the gRPC `session_id` does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.errors import StageError
from deployments.llm.conversation import Message, Sampling, sampling_for
from deployments.llm.service import LlmService


class _Part(BaseModel):
    type: str
    text: str = ""


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[_Part] | None = ""

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content if p.type == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send many optional fields
    model: str = ""
    messages: list[_ChatMessage] = Field(default_factory=list)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}},
                        status_code=status)


def list_models(svc: LlmService) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": svc.args.served_model_name, "object": "model",
                                        "created": 0, "owned_by": "voxray"}]}


async def chat_completions(svc: LlmService, request: Request) -> JSONResponse | StreamingResponse:
    try:
        body = ChatRequest.model_validate(await request.json())
    except (ValidationError, ValueError) as e:
        return _error(400, f"bad request body: {e}")
    if body.model and body.model != svc.args.served_model_name:
        return _error(404, f"model {body.model!r} is not served here; "
                           f"use {svc.args.served_model_name!r}", "not_found_error")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    try:
        sampling = _sampling(svc, body, stop)
        prepared = await svc.prepare([Message(m.role, m.text()) for m in body.messages],
                                     sampling)
    except StageError as e:
        return _error(400, e.details)
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    chunks = svc.engine.stream(prepared.prompt_ids, prepared.sampling, cid)
    created = int(time.time())
    name = svc.args.served_model_name
    if body.stream:
        return StreamingResponse(_sse(chunks, cid, created, name), media_type="text/event-stream")
    text: list[str] = []
    finish, prompt_tokens, cached, completion_tokens = "stop", 0, 0, 0
    async for c in chunks:
        text.append(c.text)
        completion_tokens += c.token_count
        if c.finish_reason:
            finish, prompt_tokens, cached = c.finish_reason, c.prompt_tokens, c.cached_prompt_tokens
    return JSONResponse({
        "id": cid, "object": "chat.completion", "created": created, "model": name,
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": "".join(text)}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": cached}},
        "voxray": {"dropped_messages": prepared.dropped}})


def _sampling(svc: LlmService, body: ChatRequest, stop: list[str]) -> Sampling:
    return sampling_for(svc.args, body.temperature, body.top_p,
                        body.max_completion_tokens or body.max_tokens, body.seed, stop)


async def _sse(chunks: AsyncIterator[Any], cid: str, created: int,
               model: str) -> AsyncIterator[str]:
    def event(delta: dict[str, str], finish: str | None) -> str:
        return "data: " + json.dumps({
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

    yield event({"role": "assistant", "content": ""}, None)
    try:
        async for c in chunks:
            if c.text:
                yield event({"content": c.text}, None)
            if c.finish_reason:
                yield event({}, c.finish_reason)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield "data: [DONE]\n\n"
