"""The tools a reply may call.

Tools in the gateway's config run here: a Python function or an HTTP endpoint,
given the model's arguments; what they return is the result the LLM answers from.
A Realtime client's own tools (`session.tools`) are offered to the LLM the same
way, but their calls are handed back to the client, which runs them and sends
the output. A failing tool's error is its result, so the agent can say so.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.config import ToolConfig
from voxray.stage_clients.llm import ToolCall
from voxray.v1 import llm_pb2

log = logging.getLogger(__name__)
MAX_RESULT_CHARS = 8000  # a result past this is cut: it goes into every later prompt


@dataclass(frozen=True)
class ClientTool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}})


def load_function(tool: ToolConfig) -> Callable[..., Any]:
    module, _, name = tool.python.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"gateway.tools[{tool.name}].python {tool.python!r}: {e}") from None
    if not callable(fn):
        raise ValueError(f"gateway.tools[{tool.name}].python {tool.python!r} is not callable")
    return fn  # type: ignore[no-any-return]


class ToolBox:
    def __init__(self, configured: Sequence[ToolConfig] = (), filler: str = "",
                 max_rounds: int = 3) -> None:
        self.filler = filler
        self.max_rounds = max_rounds
        self._configured = {t.name: t for t in configured}
        self._functions = {t.name: load_function(t) for t in configured if t.python}
        self.client: dict[str, ClientTool] = {}  # a Realtime client's, by name

    def __bool__(self) -> bool:
        return bool(self._configured or self.client)

    def specs(self) -> list[llm_pb2.ToolSpec]:
        tools: list[ClientTool | ToolConfig] = [*self._configured.values(),
                                                *self.client.values()]
        return [llm_pb2.ToolSpec(name=t.name, description=t.description,
                                 parameters_json=json.dumps(t.parameters)) for t in tools]

    def runs_here(self, name: str) -> bool:
        """Whether the gateway runs it (else the client that declared it does)."""
        return name in self._configured or name not in self.client

    async def run(self, call: ToolCall) -> str:
        tool = self._configured.get(call.name)
        if tool is None:
            return _error(f"there is no tool called {call.name!r}")
        try:
            args = json.loads(call.arguments or "{}")
        except ValueError:
            return _error("the arguments are not JSON")
        if not isinstance(args, dict):
            return _error("the arguments are not a JSON object")
        try:
            result = await asyncio.wait_for(self._call(tool, args), tool.timeout_s)
        except TimeoutError:
            return _error(f"{call.name} did not answer within {tool.timeout_s:g} s")
        except Exception as e:  # the tool's failure is the agent's to report, not fatal
            log.warning("tool %s failed: %s", call.name, e)
            return _error(f"{call.name} failed: {e}")
        text = result if isinstance(result, str) else json.dumps(result, default=str)
        return text[:MAX_RESULT_CHARS]

    async def _call(self, tool: ToolConfig, args: dict[str, Any]) -> Any:
        if tool.http:
            async with aiohttp.ClientSession() as http, http.post(tool.http, json=args) as res:
                body = await res.text()
                if res.status >= 400:
                    raise RuntimeError(f"HTTP {res.status}: {body[:200]}")
                return body
        fn = self._functions[tool.name]
        if inspect.iscoroutinefunction(fn):
            return await fn(**args)
        return await asyncio.to_thread(fn, **args)


def _error(message: str) -> str:
    return json.dumps({"error": message})
