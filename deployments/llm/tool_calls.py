"""The calls a reply makes to the client's tools, read by vLLM's parser for the model.

Each model family writes its calls its own way (Hermes/Qwen `<tool_call>{...}`,
Llama 3 JSON, pythonic `[f(x=1)]` ...); vLLM has a parser per family, named by
`tool_parser` in the LLM app's args. While the reply streams, the parser says
which part of the text is speech (streamed at once) and holds back the call; at
the end its full parse gives the calls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from deployments.errors import invalid
from deployments.llm.conversation import ToolCall
from voxray.v1 import llm_pb2


def tool_dicts(specs: Sequence[llm_pb2.ToolSpec]) -> list[dict[str, Any]]:
    """The tools in OpenAI's chat shape (what chat templates and vLLM's parsers read)."""
    out = []
    for i, t in enumerate(specs):
        if not t.name:
            raise invalid(f"tools[{i}].name is empty")
        try:
            params = json.loads(t.parameters_json or '{"type": "object", "properties": {}}')
        except ValueError:
            raise invalid(f"tools[{i}].parameters_json is not JSON") from None
        if not isinstance(params, dict):
            raise invalid(f"tools[{i}].parameters_json is not a JSON Schema object")
        out.append({"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": params}})
    return out


def check_parser(name: str) -> None:
    """Raise ValueError, naming vLLM's parsers, when `name` is not one of them."""
    from vllm.tool_parsers import ToolParserManager

    try:
        ToolParserManager.get_tool_parser(name)
    except KeyError:
        known = sorted({*ToolParserManager.tool_parsers, *ToolParserManager.lazy_parsers})
        raise ValueError(f"tool_parser {name!r} is not one of vLLM's: {', '.join(known)}"
                         ) from None


class ToolCallReader:
    """One reply's output, split into what is said and the calls made."""

    def __init__(self, parser_name: str, tokenizer: Any, tools: list[dict[str, Any]]) -> None:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.tool_parsers import ToolParserManager

        request = ChatCompletionRequest(model="voxray", messages=[], tools=tools,
                                        tool_choice="auto")
        offered: list[Any] = list(request.tools or [])
        self._parser = ToolParserManager.get_tool_parser(parser_name)(tokenizer, offered)
        self._request = cast(ChatCompletionRequest, self._parser.adjust_request(request))
        # Some families mark calls with special tokens: the text must keep them.
        self.skip_special_tokens = bool(self._request.skip_special_tokens)
        self._text = ""
        self._ids: list[int] = []

    def feed(self, delta: str, token_ids: Sequence[int]) -> str:
        """The next piece of the output; the part of it that is speech."""
        before, before_ids = self._text, self._ids
        self._text, self._ids = before + delta, [*before_ids, *token_ids]
        message = self._parser.extract_tool_calls_streaming(
            before, self._text, delta, before_ids, self._ids, list(token_ids), self._request)
        return (message.content or "") if message is not None else ""

    def calls(self) -> list[ToolCall]:
        info = self._parser.extract_tool_calls(self._text, self._request)
        if not info.tools_called:
            return []
        return [ToolCall(c.id, c.function.name, c.function.arguments) for c in info.tool_calls]
