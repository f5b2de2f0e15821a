"""Client of the LLM app: one Generate call per agent turn, cancelled on barge-in."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from voxray.v1 import common_pb2, llm_pb2, llm_pb2_grpc

# A conversation is (role, content) pairs. A tool exchange rides in it as two roles
# of JSON content, so every layer that keeps, trims or joins turns handles it as-is:
TOOL_CALLS = "assistant_tool_calls"  # {"text": said before, "calls": [{id, name, arguments}]}
TOOL_RESULT = "tool"  # {"call_id": ..., "output": ...}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


def tool_calls_message(text: str, calls: Sequence[ToolCall]) -> tuple[str, str]:
    return TOOL_CALLS, json.dumps({"text": text, "calls": [vars(c) for c in calls]})


def tool_result_message(call_id: str, output: str) -> tuple[str, str]:
    return TOOL_RESULT, json.dumps({"call_id": call_id, "output": output})


def chat_message(role: str, content: str) -> llm_pb2.ChatMessage:
    if role == TOOL_CALLS:
        said = json.loads(content)
        return llm_pb2.ChatMessage(role="assistant", content=said["text"], tool_calls=[
            llm_pb2.ToolCall(**c) for c in said["calls"]])
    if role == TOOL_RESULT:
        result = json.loads(content)
        return llm_pb2.ChatMessage(role="tool", content=result["output"],
                                   tool_call_id=result["call_id"])
    return llm_pb2.ChatMessage(role=role, content=content)


def llm_metadata(conversation_id: str) -> tuple[tuple[str, str], ...]:
    # `session_id` is the key Serve's consistent-hash router hashes, so every
    # turn of a conversation reaches the replica holding its prefix cache.
    return (("application", "llm"), ("session_id", conversation_id))


def llm_request(conversation_id: str, messages: Sequence[tuple[str, str]], seq: int = 0,
                **sampling: Any) -> llm_pb2.LlmRequest:
    return llm_pb2.LlmRequest(
        meta=common_pb2.Meta(session_id=conversation_id, seq=seq, sent_unix_ns=time.time_ns()),
        conversation_id=conversation_id,
        messages=[chat_message(r, c) for r, c in messages],
        sampling=llm_pb2.SamplingOverrides(**sampling))


def generate(channel: grpc.aio.Channel, request: llm_pb2.LlmRequest,
             affinity: bool = True) -> grpc.aio.UnaryStreamCall:
    """Start a Generate call; iterate it for events, `.cancel()` it to abort the answer."""
    meta = llm_metadata(request.conversation_id) if affinity else (("application", "llm"),)
    return llm_pb2_grpc.LlmStub(channel).Generate(request, metadata=meta)


async def reply_text(call: AsyncIterator[llm_pb2.LlmEvent]) -> tuple[str, llm_pb2.LlmDone]:
    parts: list[str] = []
    async for event in call:
        if event.WhichOneof("kind") == "delta":
            parts.append(event.delta.text)
        elif event.WhichOneof("kind") == "done":
            return "".join(parts), event.done
    raise RuntimeError("the LLM stream ended without a done event")
