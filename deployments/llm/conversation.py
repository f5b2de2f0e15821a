"""Check a conversation and fit it into the model's context window.

No engine here: the token counter is passed in, so this is tested alone.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from deployments.errors import StageError, invalid
from deployments.llm.config import LlmArgs
from voxray.v1 import llm_pb2

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's
    tool_call_id: str = ""  # a tool result's

    def as_dict(self) -> dict[str, object]:
        """The message as chat templates read it (OpenAI's shape, arguments parsed)."""
        out: dict[str, object] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": json.loads(c.arguments or "{}")}}
                for c in self.tool_calls]
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    stop: tuple[str, ...]


@dataclass(frozen=True)
class FittedConversation:
    messages: list[Message]
    # Oldest turns left out so the prompt and max_tokens fit the context.
    dropped: int
    prompt_ids: list[int]


# What the system prompt calls a language; others go by their code.
LANGUAGE_NAMES = {
    "en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "ru": "Russian", "uk": "Ukrainian",
    "tr": "Turkish", "ar": "Arabic", "hi": "Hindi", "ja": "Japanese", "zh": "Chinese",
    "ko": "Korean", "sv": "Swedish", "da": "Danish", "no": "Norwegian", "fi": "Finnish",
    "cs": "Czech", "el": "Greek", "he": "Hebrew", "id": "Indonesian", "vi": "Vietnamese",
    "ca": "Catalan", "ro": "Romanian", "hu": "Hungarian",
}


def answer_in(turns: list[Message], language: str) -> list[Message]:
    """`turns` (system prompt first, if any) asking for the answer in `language`."""
    if not language:
        return turns
    if not re.fullmatch(r"[a-z]{2,3}", language):
        raise invalid(f"reply_language {language!r} is not an ISO 639-1 code")
    name = LANGUAGE_NAMES.get(language, f"the language with ISO 639-1 code {language!r}")
    rule = f"The user speaks {name}: always answer in {name}."
    if turns and turns[0].role == "system":
        return [Message("system", f"{turns[0].content}\n{rule}"), *turns[1:]]
    return [Message("system", rule), *turns]


def check_messages(messages: Sequence[Message], args: LlmArgs) -> list[Message]:
    """Validate roles and sizes; put the system prompt first. Raises StageError."""
    if not messages:
        raise invalid("messages is empty: send at least one user message")
    if len(messages) > args.max_messages:
        raise invalid(f"{len(messages)} messages; at most {args.max_messages}")
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise invalid(f"messages[{i}].role {m.role!r} is not one of {', '.join(ROLES)}")
        if m.role == "system" and i > 0:
            raise invalid(f"messages[{i}]: a system message may only come first")
        if len(m.content) > args.max_message_chars:
            raise invalid(f"messages[{i}].content has {len(m.content)} characters; "
                          f"at most {args.max_message_chars}")
        _check_tool_parts(i, m, messages[:i])
    if messages[-1].role not in ("user", "tool"):
        raise invalid(f"the last message must be the user's (or a tool result), not "
                      f"{messages[-1].role!r}")
    if messages[-1].role == "user" and not messages[-1].content.strip():
        raise invalid("the last user message is empty")
    turns = list(messages)
    if turns[0].role == "system":
        if not args.allow_client_system_prompt:
            raise invalid("this deployment does not accept a client system prompt")
        return turns
    return ([Message("system", args.system_prompt)] if args.system_prompt else []) + turns


def _check_tool_parts(i: int, m: Message, before: Sequence[Message]) -> None:
    if m.tool_calls and m.role != "assistant":
        raise invalid(f"messages[{i}]: only an assistant message has tool_calls")
    for c in m.tool_calls:
        try:
            json.loads(c.arguments or "{}")
        except ValueError:
            raise invalid(f"messages[{i}]: the arguments of tool call {c.id!r} are not "
                          f"JSON") from None
    if m.role == "tool":
        called = {c.id for b in before for c in b.tool_calls}
        if m.tool_call_id not in called:
            raise invalid(f"messages[{i}]: tool_call_id {m.tool_call_id!r} answers no "
                          f"earlier tool call")
    elif m.tool_call_id:
        raise invalid(f"messages[{i}]: only a tool message has a tool_call_id")


def from_proto(m: llm_pb2.ChatMessage) -> Message:
    return Message(m.role, m.content, tuple(ToolCall(c.id, c.name, c.arguments)
                                            for c in m.tool_calls), m.tool_call_id)


def fit_context(
    messages: list[Message], encode: Callable[[list[Message]], list[int]],
    budget: int,
) -> FittedConversation:
    """Drop the oldest whole turns until the prompt takes at most `budget` tokens.

    A turn starts at a user message, so the history stays user/assistant
    alternating; the system prompt and the last user message always stay.
    `encode` renders and tokenizes a conversation; the prompt that fits is
    returned, so it is not encoded again.
    """
    head = messages[:1] if messages[0].role == "system" else []
    body = messages[len(head):]
    ids = encode(messages)
    if len(ids) <= budget:
        return FittedConversation(messages, 0, ids)
    starts = [i for i, m in enumerate(body) if m.role == "user" and i > 0]
    # Binary search the earliest turn start that fits: fewer dropped is better.
    lo, hi = 0, len(starts) - 1
    best: tuple[int, list[int]] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        ids = encode(head + body[starts[mid]:])
        if len(ids) <= budget:
            best, hi = (mid, ids), mid - 1
        else:
            lo = mid + 1
    if best is None:
        need = len(encode(head + body[-1:]))
        raise StageError(grpc.StatusCode.OUT_OF_RANGE,
                         f"the system prompt and last message take {need} tokens; "
                         f"with max_tokens the context leaves room for {budget}")
    start = starts[best[0]]
    return FittedConversation(head + body[start:], start, best[1])


def sampling_for(args: LlmArgs, temperature: float | None, top_p: float | None,
                 max_tokens: int | None, seed: int | None,
                 stop: Sequence[str]) -> Sampling:
    """The configured sampling with a request's overrides, range-checked."""
    d = args.sampling
    t = d.temperature if temperature is None else temperature
    p = d.top_p if top_p is None else top_p
    n = d.max_tokens if max_tokens is None else max_tokens
    if not (math.isfinite(t) and 0.0 <= t <= 2.0):
        raise invalid(f"sampling.temperature {t:g} is outside 0-2")
    if not (math.isfinite(p) and 0.0 < p <= 1.0):
        raise invalid(f"sampling.top_p {p:g} is outside (0, 1]")
    if not 1 <= n <= args.max_tokens_limit:
        raise StageError(grpc.StatusCode.OUT_OF_RANGE,
                         f"sampling.max_tokens {n} is outside 1-{args.max_tokens_limit}")
    if len(stop) > args.max_stop_strings:
        raise invalid(f"{len(stop)} stop strings; at most {args.max_stop_strings}")
    if any(not s or len(s) > 64 for s in stop):
        raise invalid("each stop string must have 1-64 characters")
    return Sampling(t, p, n, seed, tuple(stop))
