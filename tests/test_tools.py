"""Function tools: the gateway's own (Python or HTTP) and a Realtime client's.

The subject is the plumbing, so the model is scripted: a stand-in LLM that calls a
tool when offered one (loadtest/stand_in_stages.py), and, for the LLM app's side, a
scripted engine behind the real service with vLLM's real Hermes parser and the real
SmolLM2 tokenizer. The real engine with tools is in test_llm_serve.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp import web
from pydantic import ValidationError

from deployments.errors import StageError
from deployments.llm.config import LlmArgs
from deployments.llm.conversation import Message, Sampling
from deployments.llm.engine import Chunk
from deployments.llm.service import LlmService
from gateway.config import GatewayConfig, ToolConfig
from gateway.session.tools import ToolBox
from loadtest.stand_in_stages import Script, serve_stand_ins
from tests.test_gateway_e2e import start_gateway
from voxray.clients.realtime_caller import RealtimeCaller
from voxray.paths import models_dir
from voxray.stage_clients.llm import TOOL_CALLS, TOOL_RESULT, ToolCall
from voxray.v1 import llm_pb2

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}},
           "required": ["city"]}
RUNS: list[dict[str, Any]] = []


def weather(city: str) -> dict[str, str]:
    RUNS.append({"city": city})
    return {"city": city, "forecast": "sunny, 21 C"}


async def slow_weather(city: str) -> str:
    await asyncio.sleep(5)
    return "late"


def broken(city: str) -> str:
    raise RuntimeError("the weather service is down")


# -- the gateway's tool box ----------------------------------------------------------------

def test_tool_config_is_checked_where_it_is_written() -> None:
    with pytest.raises(ValidationError, match="exactly one of python and http"):
        ToolConfig(name="w", python="tests.test_tools:weather", http="http://x")
    with pytest.raises(ValidationError, match="object schema"):
        ToolConfig(name="w", python="tests.test_tools:weather", parameters={"type": "string"})
    with pytest.raises(ValidationError, match="name"):
        ToolConfig(name="has space", python="tests.test_tools:weather")
    with pytest.raises(ValidationError, match="given twice"):
        GatewayConfig(tools=[{"name": "w", "python": "tests.test_tools:weather"}] * 2)
    with pytest.raises(ValueError, match=r"gateway.tools\[w\].python 'tests.test_tools:nope'"):
        ToolBox([ToolConfig(name="w", python="tests.test_tools:nope")])


async def test_tools_run_and_their_failures_are_results() -> None:
    async def serve(request: web.Request) -> web.Response:
        args = await request.json()
        if args.get("city") == "Nowhere":
            return web.Response(status=404, text="no such city")
        return web.Response(text=f"rain in {args['city']}")

    app = web.Application()
    app.router.add_post("/weather", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        box = ToolBox([
            ToolConfig(name="weather", python="tests.test_tools:weather", parameters=WEATHER),
            ToolConfig(name="slow", python="tests.test_tools:slow_weather", timeout_s=0.2),
            ToolConfig(name="broken", python="tests.test_tools:broken"),
            ToolConfig(name="remote", http=f"http://127.0.0.1:{port}/weather")])
        assert [s.name for s in box.specs()] == ["weather", "slow", "broken", "remote"]
        assert json.loads(box.specs()[0].parameters_json) == WEATHER

        async def run(name: str, arguments: str) -> str:
            return await box.run(ToolCall("c1", name, arguments))

        assert json.loads(await run("weather", '{"city": "Oslo"}'))["forecast"] == "sunny, 21 C"
        assert await run("remote", '{"city": "Oslo"}') == "rain in Oslo"
        errors = {
            "HTTP 404: no such city": await run("remote", '{"city": "Nowhere"}'),
            "did not answer within 0.2 s": await run("slow", '{"city": "Oslo"}'),
            "the weather service is down": await run("broken", '{"city": "Oslo"}'),
            "no tool called 'missing'": await run("missing", "{}"),
            "not JSON": await run("weather", "{city: Oslo"),
            "not a JSON object": await run("weather", "[1]"),
            "weather failed": await run("weather", '{"town": "Oslo"}'),  # a wrong argument
        }
        for needle, result in errors.items():
            assert needle in json.loads(result)["error"], (needle, result)
    finally:
        await runner.cleanup()


# -- the LLM app's side: vLLM's parser on a scripted engine ---------------------------------

class ScriptedEngine:
    """What the LLM service needs of an engine, saying `output` token by token (the real
    tokenizer's tokens, so the parser sees what it would)."""

    def __init__(self, output: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(models_dir() / "smollm2-135m-instruct")
        self.output = output
        self.prompts: list[str] = []

    def prompt_ids(self, messages: list[Message], tools: Any = None) -> list[int]:
        chat: list[Any] = [m.as_dict() for m in messages]
        text = str(self.tokenizer.apply_chat_template(chat, tools=tools, tokenize=False,
                                                      add_generation_prompt=True))
        self.prompts.append(text)
        return self.text_ids(text)

    def text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def stream(self, prompt_ids: list[int], sampling: Sampling, request_id: str = "",
                     skip_special_tokens: bool = True) -> AsyncIterator[Chunk]:
        ids = self.text_ids(self.output)
        for i, tok in enumerate(ids):
            yield Chunk(str(self.tokenizer.decode([tok])), 1, (tok,),
                        finish_reason="stop" if i == len(ids) - 1 else None,
                        prompt_tokens=len(prompt_ids))


def request(*messages: llm_pb2.ChatMessage, tools: bool = True) -> llm_pb2.LlmRequest:
    return llm_pb2.LlmRequest(conversation_id="c", messages=list(messages), tools=[
        llm_pb2.ToolSpec(name="weather", description="The forecast for a city",
                         parameters_json=json.dumps(WEATHER))] if tools else [])


async def events(service: LlmService, req: llm_pb2.LlmRequest) -> list[llm_pb2.LlmEvent]:
    return [e async for e in service.generate(req)]


async def test_the_llm_app_reads_the_models_calls_with_vllms_parser() -> None:
    said = "Let me look that up."
    engine = ScriptedEngine(said + ' <tool_call>\n{"name": "weather", "arguments": '
                                   '{"city": "Paris"}}\n</tool_call>')
    service = LlmService(LlmArgs(tool_parser="hermes"), engine)  # type: ignore[arg-type]
    user = llm_pb2.ChatMessage(role="user", content="Weather in Paris?")
    out = await events(service, request(user))
    kinds = [e.WhichOneof("kind") for e in out]
    assert kinds[-2:] == ["tool_call", "done"] and set(kinds[:-2]) == {"delta"}
    # the speech before the call streams; the call's markup never reaches the voice
    assert "".join(e.delta.text for e in out if e.delta.text).strip() == said
    call = out[-2].tool_call
    assert call.name == "weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.id and out[-1].done.finish_reason == "tool_calls"

    # the exchange goes back to the model as a chat template renders it
    engine.output = "It is sunny."
    answer = await events(service, request(
        user, llm_pb2.ChatMessage(role="assistant", tool_calls=[call]),
        llm_pb2.ChatMessage(role="tool", content="sunny, 21 C", tool_call_id=call.id)))
    assert answer[-1].done.finish_reason == "stop"
    assert "sunny, 21 C" in engine.prompts[-1]

    # a plain answer with tools offered is just text
    out = await events(service, request(user))
    assert [e.WhichOneof("kind") for e in out][-1] == "done"
    assert out[-1].done.finish_reason == "stop"


async def test_bad_tool_requests_are_refused_by_name() -> None:
    service = LlmService(LlmArgs(tool_parser="hermes"), ScriptedEngine("Hi."))  # type: ignore[arg-type]
    user = llm_pb2.ChatMessage(role="user", content="Hello")
    cases = [
        (request(user, llm_pb2.ChatMessage(role="tool", content="x", tool_call_id="nope")),
         "tool_call_id 'nope' answers no earlier tool call"),
        (request(user, llm_pb2.ChatMessage(role="assistant", tool_calls=[
            llm_pb2.ToolCall(id="a", name="weather", arguments="{oops")])),
         "are not JSON"),
        (llm_pb2.LlmRequest(messages=[user], tools=[llm_pb2.ToolSpec(
            name="w", parameters_json="[1")]), "tools[0].parameters_json is not JSON"),
    ]
    for req, needle in cases:
        with pytest.raises(StageError, match=needle.replace("[", r"\[")):
            await events(service, req)
    plain = LlmService(LlmArgs(), ScriptedEngine("Hi."))  # type: ignore[arg-type]
    with pytest.raises(StageError, match="tool_parser") as e:
        await events(plain, request(user))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


# -- a Realtime client's own tools, through the official SDK --------------------------------

async def test_a_realtime_client_runs_its_own_tool_and_the_agent_answers_from_it() -> None:
    script = Script(tool_call=("lookup_order", '{"order": "A17"}'),
                    tool_answer="Your order {result}.")
    server, target = await serve_stand_ins(script)
    runner, gw, url = await start_gateway(target)
    caller = RealtimeCaller(url, stream_mic=False, session={
        "type": "realtime", "audio": {"input": {"turn_detection": None}},
        "tools": [{"type": "function", "name": "lookup_order",
                   "description": "Where an order is",
                   "parameters": {"type": "object",
                                  "properties": {"order": {"type": "string"}}}}]})
    try:
        await caller.connect()
        updated = caller.of_type("session.updated")[-1]
        assert [t.name for t in updated.session.tools] == ["lookup_order"]
        await caller.conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Where is my order A17?"}]})
        await caller.conn.response.create()
        done = await caller.wait_event("response.done", 60)
        calls = [o for o in done.response.output if o.type == "function_call"]
        assert len(calls) == 1 and calls[0].name == "lookup_order", done.response.output
        assert json.loads(calls[0].arguments) == {"order": "A17"}
        args_done = caller.of_type("response.function_call_arguments.done")[0]
        assert args_done.call_id == calls[0].call_id and args_done.item_id == calls[0].id
        assert script.llm_tools[-1] == ["lookup_order"]  # offered to the LLM

        since = len(caller.events)
        await caller.conn.conversation.item.create(item={
            "type": "function_call_output", "call_id": calls[0].call_id,
            "output": "left the warehouse today"})
        await caller.conn.response.create()
        done = await caller.wait_event("response.done", 60, since)
        said = done.response.output[0].content[0].transcript
        assert said == "Your order left the warehouse today.", done.response
        assert caller.of_type("response.output_audio.delta", since)
        (call,) = gw.calls.values()
        roles = [r for r, _ in call.session.context.messages]  # type: ignore[attr-defined]
        assert roles == ["user", TOOL_CALLS, TOOL_RESULT, "assistant"], roles

        # an output for a call that was never made is refused, and the session goes on
        since = len(caller.events)
        await caller.conn.conversation.item.create(item={
            "type": "function_call_output", "call_id": "call-nope", "output": "x"})
        error = await caller.wait_event("error", 10, since)
        assert "call-nope" in error.error.message

        # items can be read back and taken out of what the LLM reads
        since = len(caller.events)
        await caller.conn.conversation.item.retrieve(item_id=calls[0].id)
        got = await caller.wait_event("conversation.item.retrieved", 10, since)
        assert got.item.type == "function_call" and got.item.call_id == calls[0].call_id
        output_item = next(e.item for e in caller.of_type("conversation.item.added")
                           if e.item.type == "function_call_output")
        for item_id in (output_item.id, calls[0].id, done.response.output[0].id):
            since = len(caller.events)
            await caller.conn.conversation.item.delete(item_id=item_id)
            deleted = await caller.wait_event(("conversation.item.deleted", "error"), 10, since)
            assert deleted.type == "conversation.item.deleted", deleted
            assert deleted.item_id == item_id
        assert [r for r, _ in call.session.context.messages] == ["user"]  # type: ignore[attr-defined]
        since = len(caller.events)
        await caller.conn.conversation.item.delete(item_id=calls[0].id)  # already gone
        error = await caller.wait_event("error", 10, since)
        assert error.error.code == "item_not_found"
    finally:
        await caller.close()
        await runner.cleanup()
        await server.stop(None)


# -- the gateway's tools in a spoken turn -----------------------------------------------------

@pytest.mark.parametrize("kind", ["python", "http"])
async def test_a_spoken_question_runs_a_gateway_tool_once_and_the_answer_uses_it(
        kind: str) -> None:
    from tests.test_session import SAMPLES, Call

    async def serve(request: web.Request) -> web.Response:
        RUNS.append(await request.json())
        return web.Response(text="cloudy, 14 C")

    http = web.Application()
    http.router.add_post("/weather", serve)
    runner = web.AppRunner(http)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    where = {"python": "tests.test_tools:weather"} if kind == "python" else \
        {"http": f"http://127.0.0.1:{port}/weather"}
    tool = ToolConfig(name="weather", description="The forecast", parameters=WEATHER,
                      **where)  # type: ignore[arg-type]
    script = Script(asr_texts=["What's the weather like in Paris today?"],
                    tool_call=("weather", '{"city": "Paris"}'))
    RUNS.clear()
    try:
        async with Call(script, gateway={"tools": [tool], "tool_filler": "One moment."}) as call:
            await call.say(SAMPLES["q01"].pcm())
            await call.wait("agent_done", within_s=30)
            texts = "".join(e["text"] for _, e in call.of("agent_text"))
            result = "sunny, 21 C" if kind == "python" else "cloudy, 14 C"
            assert texts.startswith("One moment. It says ") and result in texts, texts
            # the speculative reply asked for the tool during the pause, but it ran once,
            # after the turn was committed
            assert RUNS == [{"city": "Paris"}]
            (_, called), = call.of("tool_called")
            assert called["detail"]["tools"] == ["weather"]
            roles = [r for r, _ in call.session.context.messages]
            assert roles == ["user", TOOL_CALLS, TOOL_RESULT, "assistant"]
            assert call.session.context.messages[-1][1] == texts.strip()
            assert call.audible  # and it was spoken
    finally:
        await runner.cleanup()
