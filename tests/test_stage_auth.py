"""Who may call the stages: each stage's gRPC methods and the LLM's OpenAI-compatible API
refuse a call without the stage token or with a wrong one, and serve the right one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import grpc
import pytest

from voxray import runtime
from voxray.stage_auth import stage_channel, stage_token
from voxray.stage_clients.llm import llm_request
from voxray.v1 import asr_pb2, asr_pb2_grpc, llm_pb2, llm_pb2_grpc, tts_pb2, tts_pb2_grpc

pytestmark = pytest.mark.slow


async def _asr_requests() -> AsyncIterator[asr_pb2.AsrRequest]:
    yield asr_pb2.AsrRequest(start=asr_pb2.AsrStart(sample_rate=16000))
    await asyncio.sleep(0.2)


def calls(channel: grpc.aio.Channel) -> dict[str, Callable[[], Any]]:
    """One call of each stage method, started on `channel`; each returns its first reply."""
    async def first(call: Any) -> Any:
        async for event in call:
            return event
        return None

    return {
        "asr.Transcribe": lambda: first(asr_pb2_grpc.AsrStub(channel).Transcribe(
            _asr_requests(), metadata=(("application", "asr"),))),
        "tts.Synthesize": lambda: first(tts_pb2_grpc.TtsStub(channel).Synthesize(
            tts_pb2.TtsRequest(text="Hi."), metadata=(("application", "tts"),))),
        "llm.Generate": lambda: first(llm_pb2_grpc.LlmStub(channel).Generate(
            llm_request("auth", [("user", "Hi")], max_tokens=2),
            metadata=(("application", "llm"),))),
        "llm.EndOfTurn": lambda: llm_pb2_grpc.LlmStub(channel).EndOfTurn(
            llm_pb2.EndOfTurnRequest(messages=[llm_pb2.ChatMessage(role="user",
                                                                   content="Hi")]),
            metadata=(("application", "llm"),)),
    }


async def test_every_stage_refuses_a_call_without_the_token(serve_app: runtime.Endpoints
                                                            ) -> None:
    assert stage_token(), "the local profile runs with a stage token"
    for channel in (grpc.aio.insecure_channel(serve_app.grpc),
                    stage_channel(serve_app.grpc, token="not-the-token")):
        async with channel:
            for name, call in calls(channel).items():
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await asyncio.wait_for(call(), 60)
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, (name, e.value)
                assert "stage token" in (e.value.details() or ""), name
    async with stage_channel(serve_app.grpc) as channel:
        for name, call in calls(channel).items():
            assert await asyncio.wait_for(call(), 60) is not None, name


async def test_the_openai_api_wants_the_token_as_a_bearer(serve_app: runtime.Endpoints
                                                          ) -> None:
    url = f"{serve_app.http}/llm/v1/chat/completions"
    body = {"model": "voxray-llm", "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 2}
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            async with http.post(url, json=body, headers=headers) as res:
                assert res.status == 401, await res.text()
                assert "stage token" in (await res.json())["error"]["message"]
            async with http.get(f"{serve_app.http}/llm/v1/models", headers=headers) as res:
                assert res.status == 401
        good = {"Authorization": f"Bearer {stage_token()}"}
        async with http.post(url, json=body, headers=good) as res:
            assert res.status == 200, await res.text()
            assert (await res.json())["choices"][0]["message"]["content"] is not None
