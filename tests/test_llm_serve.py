"""The LLM app on a local Ray cluster: real vLLM (CPU) through Serve's gRPC proxy,
two replicas behind the consistent-hash router."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import grpc
import psutil
import pytest
from openai import AsyncOpenAI
from ray import serve

from voxray import runtime
from voxray.stage_auth import stage_channel, stage_token
from voxray.stage_clients.llm import generate, llm_metadata, llm_request, reply_text
from voxray.v1 import llm_pb2, llm_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.own_cluster]

# A long system prompt makes the history span several KV blocks, so cache hits show.
SYSTEM = ("You are a helpful travel assistant for a small tourist office. " * 30).strip()


@pytest.fixture(scope="module")
def llm_app() -> Iterator[runtime.Endpoints]:
    two = {"num_replicas": 2, "autoscaling_config": None}
    try:
        yield runtime.start_local_profile(
            apps=["llm"], overrides=[{"applications": {"llm": {"deployments": {
                "LlmDeployment": two}}}}], timeout_s=400)
    finally:
        runtime.stop()


async def engine_state(conversation_id: str) -> dict[str, int]:
    """The state of the replica that conversation routes to (same hash ring)."""
    handle = serve.get_deployment_handle("LlmDeployment", app_name="llm")
    return await handle.options(session_id=conversation_id).engine_state.remote()  # type: ignore[no-any-return]


async def collect(ch: grpc.aio.Channel, cid: str, question: str,
                  **sampling: float | int) -> list[llm_pb2.LlmEvent]:
    return [e async for e in generate(ch, llm_request(cid, [("user", question)], **sampling))]


def text_of(events: list[llm_pb2.LlmEvent]) -> str:
    return "".join(e.delta.text for e in events if e.WhichOneof("kind") == "delta")


async def test_streams_tokens_from_the_real_engine(llm_app: runtime.Endpoints) -> None:
    """What the engine guarantees, not a 135M model's exact words (they change with the
    CPU's kernels: one machine answered 'L'Alma, la France ...' where another said 'Paris')."""
    question = "What is the capital of France?"
    async with stage_channel(llm_app.grpc) as ch:
        deltas = await collect(ch, "c-paris", question, temperature=0.0, max_tokens=30)
        *text, done = deltas
        assert len(text) >= 3 and all(e.WhichOneof("kind") == "delta" for e in text)
        assert done.WhichOneof("kind") == "done"
        answer = text_of(deltas)
        assert len(re.findall(r"[A-Za-z]{2,}", answer)) >= 2, answer  # words, not bytes
        assert done.done.finish_reason in ("stop", "length")
        in_deltas = sum(e.delta.token_count for e in text)
        assert in_deltas <= done.done.completion_tokens <= in_deltas + 1  # + the silent EOS
        assert done.done.completion_tokens <= 30
        assert done.done.finish_reason != "length" or done.done.completion_tokens == 30
        assert 0 < done.done.ttft_ms < 5000 and done.done.prompt_tokens > 10
        assert [e.meta.seq for e in deltas] == list(range(len(deltas)))
        # On one machine, greedy decoding and a seeded sample each give the same text twice.
        assert text_of(await collect(ch, "c-paris", question, temperature=0.0,
                                     max_tokens=30)) == answer
        seeded = [text_of(await collect(ch, "c-seed", "Tell me a story about a cat.",
                                        temperature=1.0, seed=seed, max_tokens=24))
                  for seed in (7, 7, 8)]
        assert seeded[0] == seeded[1] and seeded[0].strip(), seeded
        capped = await collect(ch, "c-cap", "Tell me a long story about the sea.",
                               temperature=0.0, max_tokens=5)
        assert capped[-1].done.finish_reason == "length"
        assert capped[-1].done.completion_tokens == 5


async def test_cancel_aborts_the_engine_request(llm_app: runtime.Endpoints) -> None:
    cid = "c-cancel"
    before = (await engine_state(cid))["generation_tokens"]
    async with stage_channel(llm_app.grpc) as ch:
        call = generate(ch, llm_request(cid, [("user", "Tell me a very long story about a "
                                                       "dragon and a knight.")],
                                        temperature=0.8, max_tokens=1000))
        got = 0
        async for event in call:
            got += event.WhichOneof("kind") == "delta"
            if got == 3:
                break
        # still generating while we read nothing
        assert (await engine_state(cid))["unfinished"] == 1
        call.cancel()
    deadline = time.monotonic() + 3
    while (state := await engine_state(cid))["unfinished"] and time.monotonic() < deadline:  # noqa: ASYNC110 - polling another process
        await asyncio.sleep(0.05)
    assert state["unfinished"] == 0, state
    await asyncio.sleep(1.0)  # at ~30 tok/s a still-running request would add ~30 tokens
    after = (await engine_state(cid))
    assert after["generation_tokens"] == state["generation_tokens"], (state, after)
    assert after["running"] == 0
    assert 3 <= after["generation_tokens"] - before < 100  # far from max_tokens=1000


async def conversation(ch: grpc.aio.Channel, cid: str, turns: int,
                       affinity: bool = True) -> list[tuple[int, int]]:
    """(prompt_tokens, cached_prompt_tokens) of each turn."""
    history: list[tuple[str, str]] = [("system", SYSTEM)]
    out = []
    for i in range(turns):
        history.append(("user", f"Question {i + 1}: name one thing to see in city number {i}."))
        text, done = await reply_text(generate(
            ch, llm_request(cid, history, seq=i, temperature=0.0, max_tokens=24), affinity))
        history.append(("assistant", text))
        out.append((done.prompt_tokens, done.cached_prompt_tokens))
    return out


async def test_a_conversation_stays_on_one_replica_and_hits_the_prefix_cache(
        llm_app: runtime.Endpoints) -> None:
    handle = serve.get_deployment_handle("LlmDeployment", app_name="llm")
    replicas = {await handle.options(session_id=f"spread-{i}").replica_id.remote()
                for i in range(12)}
    assert len(replicas) == 2  # sessions spread over both replicas
    async with stage_channel(llm_app.grpc) as ch:
        for cid in ("c-affine-1", "c-affine-2"):
            turns = await conversation(ch, cid, 5)
            for (prev_prompt, _), (_, cached) in zip(turns, turns[1:], strict=False):
                # all of the previous prompt but its last, partly filled KV block
                assert cached >= prev_prompt - 128, (cid, turns)


async def test_bad_requests_get_clear_statuses_and_the_replica_keeps_serving(
        llm_app: runtime.Endpoints) -> None:
    cases = [
        ([], {}, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ([("robot", "hi")], {}, grpc.StatusCode.INVALID_ARGUMENT, "role 'robot'"),
        ([("user", "hi")], {"temperature": 50.0}, grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        ([("user", "hi")], {"top_p": float("nan")}, grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        ([("user", "hi")], {"max_tokens": 100_000}, grpc.StatusCode.OUT_OF_RANGE, "max_tokens"),
        ([("user", "word " * 3000)], {}, grpc.StatusCode.OUT_OF_RANGE, "tokens"),
    ]
    async with stage_channel(llm_app.grpc) as ch:
        for messages, sampling, code, needle in cases:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await reply_text(generate(ch, llm_request("c-bad", messages, **sampling)))
            assert e.value.code() == code and needle in (e.value.details() or ""), e.value
        # Too long a history: the oldest turns go, the system prompt stays, and we are told.
        history = [("system", "Answer in one word.")]
        for i in range(40):
            history += [("user", f"Tell me about topic {i}. " + "blah " * 40),
                        ("assistant", "Okay. " + "blah " * 40)]
        history.append(("user", "What is two plus two?"))
        text, done = await reply_text(generate(ch, llm_request("c-bad", history,
                                                               temperature=0.0, max_tokens=8)))
        assert done.dropped_messages > 0 and done.dropped_messages % 2 == 0
        assert done.prompt_tokens + 8 <= 2048 and text


async def test_openai_compatible_http_api(llm_app: runtime.Endpoints) -> None:
    # the stage token is the API key (the API refuses calls without it: test_stage_auth)
    client = AsyncOpenAI(base_url=f"{llm_app.http}/llm/v1", api_key=stage_token())
    models = await client.models.list()
    assert [m.id for m in models.data] == ["voxray-llm"]
    reply = await client.chat.completions.create(
        model="voxray-llm", temperature=0, max_tokens=20,
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    content = reply.choices[0].message.content or ""
    assert len(re.findall(r"[A-Za-z]{2,}", content)) >= 2, content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 20
    # The HTTP API runs the same engine as gRPC: greedy text is the same on both.
    async with stage_channel(llm_app.grpc) as ch:
        assert text_of(await collect(ch, "c-http", "What is the capital of France?",
                                     temperature=0.0, max_tokens=20)) == content
    stream = await client.chat.completions.create(
        model="voxray-llm", messages=[{"role": "user", "content": "Count from one to five."}],
        temperature=0, max_tokens=20, stream=True)
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert len(pieces) > 3 and "".join(pieces).strip()
    with pytest.raises(Exception, match="role 'robot'"):
        await client.chat.completions.create(
            model="voxray-llm", messages=[{"role": "robot", "content": "hi"}])  # type: ignore[list-item,misc]
    await client.close()


async def end_of_turn(ch: grpc.aio.Channel, cid: str,
                      messages: list[tuple[str, str]]) -> llm_pb2.EndOfTurnReply:
    request = llm_pb2.EndOfTurnRequest(conversation_id=cid, messages=[
        llm_pb2.ChatMessage(role=r, content=c) for r, c in messages])
    reply: llm_pb2.EndOfTurnReply = await llm_pb2_grpc.LlmStub(ch).EndOfTurn(
        request, metadata=llm_metadata(cid))
    return reply


async def test_end_of_turn_scores_open_phrases_below_finished_ones(
        llm_app: runtime.Endpoints) -> None:
    """The turn policy's LLM evidence: P(the user's message ends where its words stop).
    Orders of magnitude apart for these pairs, so no CPU's kernels can swap them."""
    pairs = [("What is the capital of", "What is the capital of France?"),
             ("I would like to book a table for", "I would like to book a table for two."),
             ("Can you tell me how to get", "Can you tell me how to get to the station?")]
    async with stage_channel(llm_app.grpc) as ch:
        for open_, finished in pairs:
            a = await end_of_turn(ch, "c-eot", [("user", open_)])
            b = await end_of_turn(ch, "c-eot", [("user", finished)])
            assert 0 <= a.p_end < 0.01 and b.p_end > 10 * max(a.p_end, 1e-3), (open_, a, b)
            assert a.prompt_tokens > 5
        # the conversation's earlier turns are part of the judgement, and cached
        history = [("user", "What should I call you?"), ("assistant", "What is your name?")]
        first = await end_of_turn(ch, "c-eot-h", [*history, ("user", "John")])
        again = await end_of_turn(ch, "c-eot-h", [*history, ("user", "John")])
        assert first.p_end > 0.01 and again.cached_prompt_tokens > 0
        for messages, needle in [([], "empty"), ([("user", "...")], "no words"),
                                 ([("user", "hi"), ("assistant", "hello")], "last message")]:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await end_of_turn(ch, "c-eot-bad", messages)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert needle in (e.value.details() or ""), e.value


async def test_a_reply_in_two_calls_continues_from_its_prefix(
        llm_app: runtime.Endpoints) -> None:
    """Two-call replies (the gateway's `reply_first_tokens`): the second call's prompt ends
    inside the reply the first began, so it goes on from there instead of starting over."""
    question = "Tell me about the history of the city of Rome."
    async with stage_channel(llm_app.grpc) as ch:
        whole = await collect(ch, "c-two", question, temperature=0.0, max_tokens=16)
        first = await collect(ch, "c-two", question, temperature=0.0, max_tokens=5)
        head = text_of(first)
        request = llm_request("c-two", [("user", question)], temperature=0.0, max_tokens=11)
        request.assistant_prefix = head
        rest = [e async for e in generate(ch, request)]
        tail = text_of(rest)
        assert head and tail.strip()
        assert rest[-1].done.prompt_tokens >= first[-1].done.prompt_tokens + 3  # the prefix
        # greedy on one machine: the words after the seam are the one-call answer's
        one, two = text_of(whole).split(), (head + tail).split()
        n = len(head.split()) + 2
        assert two[:n] == one[:n], (one, two)
        assert not tail.lstrip().startswith(head.strip()), (head, tail)  # not said again
        too_long = llm_request("c-two", [("user", question)])
        too_long.assistant_prefix = "x" * 100_000
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await reply_text(generate(ch, too_long))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_reply_language_reaches_the_prompt(llm_app: runtime.Endpoints) -> None:
    question = [("user", "¿Cuál es la capital de España?")]
    async with stage_channel(llm_app.grpc) as ch:
        plain = await reply_text(generate(ch, llm_request("c-lang", question, max_tokens=4)))
        request = llm_request("c-lang", question, max_tokens=4)
        request.reply_language = "es"
        spanish = await reply_text(generate(ch, request))
        # "The user speaks Spanish: always answer in Spanish." in the system prompt
        assert spanish[1].prompt_tokens >= plain[1].prompt_tokens + 8, (plain, spanish)
        request.reply_language = "not a code"
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await reply_text(generate(ch, request))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_tools_reach_the_real_engine_and_a_tool_exchange_is_answered(
        llm_app: runtime.Endpoints) -> None:
    """The CPU profile's LLM reads calls with vLLM's Hermes parser. SmolLM2-135M's chat
    template does not show it the tools, so it answers in words: the request with tools,
    and a conversation holding a tool call and its result, stream an answer."""
    weather = llm_pb2.ToolSpec(name="weather", description="The forecast for a city",
                               parameters_json='{"type": "object", "properties": '
                                               '{"city": {"type": "string"}}}')
    call = llm_pb2.ToolCall(id="call-1", name="weather", arguments='{"city": "Paris"}')
    async with stage_channel(llm_app.grpc) as ch:
        req = llm_request("c-tools", [("user", "What is the weather in Paris?")],
                          temperature=0.0, max_tokens=20)
        req.tools.append(weather)
        text, done = await reply_text(generate(ch, req))
        assert done.finish_reason in ("stop", "length", "tool_calls") and text.strip()
        req = llm_request("c-tools", [("user", "What is the weather in Paris?")],
                          temperature=0.0, max_tokens=20)
        req.messages.extend([llm_pb2.ChatMessage(role="assistant", tool_calls=[call]),
                             llm_pb2.ChatMessage(role="tool", content="sunny, 21 C",
                                                 tool_call_id="call-1")])
        req.tools.append(weather)
        text, done = await reply_text(generate(ch, req))
        assert done.finish_reason in ("stop", "length", "tool_calls") and done.prompt_tokens
        with pytest.raises(grpc.aio.AioRpcError) as e:
            req.messages[-1].tool_call_id = "call-2"
            await reply_text(generate(ch, req))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "call-2" in (e.value.details() or "")


def _niceness(name: str) -> list[int]:
    """The niceness of each process whose title starts with `name`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "nice"]):
        title = (proc.info["cmdline"] or [""])[0]
        if title.startswith(name):
            found.append(proc.info["nice"])
    return found


def test_the_engine_yields_by_its_cpu_nice_from_a_replica_at_nice_0(
        llm_app: runtime.Endpoints) -> None:
    """The local cluster starts Ray's workers at nice 0 (Ray's default is 15, which would
    cap the LLM's cpu_nice of 10 at 19, 4 steps below the TTS it should yield to)."""
    assert _niceness("ray::ServeReplica:llm") == [0, 0]
    engines = _niceness("VLLM::EngineCore") + _niceness("VLLM::Worker")
    assert len(engines) >= 2 and set(engines) == {10}, engines
