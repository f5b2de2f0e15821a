"""The LLM as a judge of the user's turn: how likely their message ends where it stops.

The LLM app's `EndOfTurn` scores the conversation with the user's words left
open: the probability that the model's next token closes the message (LiveKit's
turn detector is this idea, with a model tuned for it). It reads the words and
the conversation before them ("John." ends a turn after "What is your name?"),
where the audio model hears only the voice. One prefill, mostly from the
replica's prefix cache: the conversation's earlier turns are already there.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from gateway.session.context import Message
from voxray.stage_clients.llm import chat_message, llm_metadata
from voxray.v1 import common_pb2, llm_pb2, llm_pb2_grpc


async def llm_p_end(channel: grpc.aio.Channel, conversation_id: str, messages: list[Message],
                    within_s: float) -> float | None:
    """The LLM's P(end of turn), or None when it does not answer in time."""
    request = llm_pb2.EndOfTurnRequest(
        meta=common_pb2.Meta(session_id=conversation_id, sent_unix_ns=time.time_ns()),
        conversation_id=conversation_id,
        messages=[chat_message(r, c) for r, c in messages])
    try:
        reply = await asyncio.wait_for(
            llm_pb2_grpc.LlmStub(channel).EndOfTurn(request,
                                                    metadata=llm_metadata(conversation_id)),
            within_s)
    except (TimeoutError, grpc.aio.AioRpcError):
        return None
    return float(reply.p_end)
