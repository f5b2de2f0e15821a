"""Client of the LLM app: one Generate call per agent turn, cancelled on barge-in."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from voxray.v1 import common_pb2, llm_pb2, llm_pb2_grpc


def llm_metadata(conversation_id: str) -> tuple[tuple[str, str], ...]:
    # `session_id` is the key Serve's consistent-hash router hashes, so every
    # turn of a conversation reaches the replica holding its prefix cache.
    return (("application", "llm"), ("session_id", conversation_id))


def llm_request(conversation_id: str, messages: Sequence[tuple[str, str]], seq: int = 0,
                **sampling: Any) -> llm_pb2.LlmRequest:
    return llm_pb2.LlmRequest(
        meta=common_pb2.Meta(session_id=conversation_id, seq=seq, sent_unix_ns=time.time_ns()),
        conversation_id=conversation_id,
        messages=[llm_pb2.ChatMessage(role=r, content=c) for r, c in messages],
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
        else:
            return "".join(parts), event.done
    raise RuntimeError("the LLM stream ended without a done event")
