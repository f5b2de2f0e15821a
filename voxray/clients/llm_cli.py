"""`voxray llm`: chat with the LLM app from a terminal, tokens printed as they stream."""

from __future__ import annotations

import sys
import time

import grpc

from voxray.stage_auth import stage_channel
from voxray.stage_clients.llm import generate, llm_request


async def chat(prompt: str, target: str, conversation: str, max_tokens: int | None) -> int:
    sampling = {"max_tokens": max_tokens} if max_tokens else {}
    async with stage_channel(target) as ch:
        t0 = time.perf_counter()
        first = 0.0
        try:
            async for ev in generate(ch, llm_request(conversation, [("user", prompt)], **sampling)):
                if ev.WhichOneof("kind") == "delta":
                    first = first or time.perf_counter()
                    print(ev.delta.text, end="", flush=True)
                else:
                    d = ev.done
                    print(f"\n[{d.finish_reason}; first token {(first - t0) * 1000:.0f} ms; "
                          f"{d.prompt_tokens} prompt + {d.completion_tokens} completion tokens]")
        except grpc.aio.AioRpcError as e:
            print(f"\nvoxray llm: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0
