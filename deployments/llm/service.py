"""The LLM protocol: a conversation in, text deltas out, one engine request per call."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from deployments.errors import invalid
from deployments.llm.config import LlmArgs
from deployments.llm.conversation import (
    Message,
    Sampling,
    answer_in,
    check_messages,
    fit_context,
    from_proto,
    sampling_for,
)
from deployments.llm.engine import Chunk, VllmEngine
from deployments.llm.tool_calls import ToolCallReader, tool_dicts
from deployments.streams import Stamper
from voxray.v1 import llm_pb2

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    prompt_ids: list[int]
    sampling: Sampling
    dropped: int


class LlmService:
    def __init__(self, args: LlmArgs, engine: VllmEngine) -> None:
        self.args = args
        self.engine = engine

    async def prepare(self, messages: list[Message], sampling: Sampling,
                      assistant_prefix: str = "", reply_language: str = "",
                      tools: list[dict[str, object]] | None = None) -> Prepared:
        """Check, fit into the context and tokenize (off the event loop). With an
        assistant prefix, the prompt ends inside the reply it begins."""
        turns = answer_in(check_messages(messages, self.args), reply_language)
        if len(assistant_prefix) > self.args.max_message_chars:
            raise invalid(f"assistant_prefix has {len(assistant_prefix)} characters; at most "
                          f"{self.args.max_message_chars}")
        budget = self.args.max_model_len - sampling.max_tokens
        prefix = self.engine.text_ids(assistant_prefix) if assistant_prefix else []

        def encode(ms: list[Message]) -> list[int]:
            return self.engine.prompt_ids(ms, tools) + prefix

        fitted = await asyncio.to_thread(fit_context, turns, encode, budget)
        if fitted.dropped:
            log.info("dropped %d oldest messages to fit %d tokens", fitted.dropped, budget)
        return Prepared(fitted.prompt_ids, sampling, fitted.dropped)

    def sampling(self, o: llm_pb2.SamplingOverrides) -> Sampling:
        return sampling_for(
            self.args,
            temperature=o.temperature if o.HasField("temperature") else None,
            top_p=o.top_p if o.HasField("top_p") else None,
            max_tokens=o.max_tokens if o.HasField("max_tokens") else None,
            seed=o.seed if o.HasField("seed") else None,
            stop=list(o.stop))

    async def warmup(self) -> None:
        t0 = time.monotonic()
        messages = [llm_pb2.ChatMessage(role="user", content="Hello there")]
        async for _ in self.generate(llm_pb2.LlmRequest(
                messages=messages, sampling=llm_pb2.SamplingOverrides(max_tokens=2))):
            pass
        await self.end_of_turn(llm_pb2.EndOfTurnRequest(messages=messages))
        log.info("LLM warm in %.2f s", time.monotonic() - t0)

    async def end_of_turn(self, request: llm_pb2.EndOfTurnRequest) -> llm_pb2.EndOfTurnReply:
        """P(the user's message ends where its words stop), on its lowercased words."""
        stamp = Stamper(request.meta.session_id or request.conversation_id)
        messages = [Message(m.role, m.content) for m in request.messages]
        turns = check_messages(messages, self.args)
        if turns[-1].role != "user":
            raise invalid("the last message must be the user's words so far")
        words = " ".join(re.findall(r"[\w']+", turns[-1].content.lower()))
        if not words:
            raise invalid("the last user message has no words")
        turns[-1] = Message(turns[-1].role, words)
        closing: set[int] = set()

        def encode(ms: list[Message]) -> list[int]:
            ids, ends = self.engine.open_turn_ids(ms)
            closing.update(ends)
            return ids

        fitted = await asyncio.to_thread(fit_context, turns, encode, self.args.max_model_len - 1)
        request_id = f"{request.conversation_id or 'anon'}-eot-{uuid.uuid4().hex[:12]}"
        p, cached = await self.engine.next_token_p(fitted.prompt_ids, closing, request_id)
        return llm_pb2.EndOfTurnReply(meta=stamp.meta(request.meta.seq), p_end=p,
                                      prompt_tokens=len(fitted.prompt_ids),
                                      cached_prompt_tokens=cached)

    def tool_reader(self, request: llm_pb2.LlmRequest) -> ToolCallReader | None:
        if not request.tools:
            return None
        if not self.args.tool_parser:
            raise invalid("this LLM deployment reads no tool calls: set "
                          "applications[llm].args.tool_parser to vLLM's parser for the model")
        return ToolCallReader(self.args.tool_parser, self.engine.tokenizer,
                              tool_dicts(request.tools))

    async def generate(self, request: llm_pb2.LlmRequest) -> AsyncIterator[llm_pb2.LlmEvent]:
        t0 = time.monotonic()
        stamp = Stamper(request.meta.session_id or request.conversation_id)
        reply_to = request.meta.seq
        messages = [from_proto(m) for m in request.messages]
        reader = self.tool_reader(request)
        prepared = await self.prepare(messages, self.sampling(request.sampling),
                                      request.assistant_prefix, request.reply_language,
                                      tool_dicts(request.tools) if reader else None)
        request_id = f"{request.conversation_id or 'anon'}-{uuid.uuid4().hex[:12]}"
        ttft_ms = 0.0
        tokens = 0
        last: Chunk | None = None
        async for chunk in self.engine.stream(
                prepared.prompt_ids, prepared.sampling, request_id,
                skip_special_tokens=reader.skip_special_tokens if reader else True):
            last = chunk
            tokens += chunk.token_count
            said = reader.feed(chunk.text, chunk.token_ids) if reader else chunk.text
            if said:
                if not ttft_ms:
                    ttft_ms = (time.monotonic() - t0) * 1000
                yield llm_pb2.LlmEvent(meta=stamp.meta(reply_to), delta=llm_pb2.TextDelta(
                    text=said, token_count=chunk.token_count))
        assert last is not None and last.finish_reason is not None
        finish = last.finish_reason
        for call in reader.calls() if reader else []:
            finish = "tool_calls"
            yield llm_pb2.LlmEvent(meta=stamp.meta(reply_to), tool_call=llm_pb2.ToolCall(
                id=call.id, name=call.name, arguments=call.arguments))
        yield llm_pb2.LlmEvent(meta=stamp.meta(reply_to), done=llm_pb2.LlmDone(
            finish_reason=finish, prompt_tokens=last.prompt_tokens,
            completion_tokens=tokens, cached_prompt_tokens=last.cached_prompt_tokens,
            dropped_messages=prepared.dropped, ttft_ms=ttft_ms))
