"""Bad bytes at the stages: 1000 requests of random and mutated bytes at each stage (ASR,
LLM, TTS, Moshi), spread over its gRPC methods through Serve's proxy, each get a status
with a reason, never a crash: no replica restarts, a call held beside them is answered,
and a good request after them is served.

What parses but is wrong gets INVALID_ARGUMENT from the stage; bytes that do not parse
as the method's request are refused by the proxy's gRPC runtime before any replica sees
them (UNKNOWN, "Unexpected DecodeError: Error parsing message"); in a stream, the proxy ends
the stream at them (and, rarely, the runtime reports INTERNAL)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.protobuf.message import DecodeError, Message

from tests.test_failover_e2e import replicas
from tests.test_gateway_e2e import start_gateway
from voxray import runtime
from voxray.clients.caller import Caller, load_48k
from voxray.stage_auth import stage_channel
from voxray.v1 import asr_pb2, llm_pb2, moshi_pb2, tts_pb2
from voxray.wer import wer

# Its own cluster: what the junk does to a replica must not reach another test's calls.
pytestmark = [pytest.mark.slow, pytest.mark.own_cluster]
PER_STAGE = 1000
STAGES = ("asr", "llm", "tts", "moshi")

# What each streaming method's requests must parse as (see `one`)
STREAM_REQUESTS: dict[str, type[Message]] = {
    "/voxray.v1.Asr/Transcribe": asr_pb2.AsrRequest,
    "/voxray.v1.Tts/SynthesizeStream": tts_pb2.TtsStreamRequest,
    "/voxray.v1.Moshi/Converse": moshi_pb2.MoshiRequest,
}
CUT_OFF = "INTERNAL (a stream cut at its undecodable message)"

# (application, method path, shape, a valid request to mutate)
METHODS: list[tuple[str, str, str, bytes]] = [
    ("asr", "/voxray.v1.Asr/Transcribe", "stream", asr_pb2.AsrRequest(
        start=asr_pb2.AsrStart(sample_rate=16000)).SerializeToString()),
    ("llm", "/voxray.v1.Llm/Generate", "unary_stream", llm_pb2.LlmRequest(
        messages=[llm_pb2.ChatMessage(role="user", content="hi")],
        sampling=llm_pb2.SamplingOverrides(max_tokens=2)).SerializeToString()),
    ("llm", "/voxray.v1.Llm/EndOfTurn", "unary", llm_pb2.EndOfTurnRequest(
        messages=[llm_pb2.ChatMessage(role="user", content="so I was")]).SerializeToString()),
    ("tts", "/voxray.v1.Tts/Synthesize", "unary_stream",
     tts_pb2.TtsRequest(text="Hi.").SerializeToString()),
    ("tts", "/voxray.v1.Tts/SynthesizeStream", "stream", tts_pb2.TtsStreamRequest(
        start=tts_pb2.VoiceOptions()).SerializeToString()),
    ("moshi", "/voxray.v1.Moshi/Converse", "stream", moshi_pb2.MoshiRequest(
        start=moshi_pb2.MoshiStart(sample_rate=24000)).SerializeToString()),
]


def junk(valid: bytes, rng: random.Random) -> bytes:
    how = rng.randrange(4)
    if how == 0:
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 3, 40, 2000])))
    raw = bytearray(valid)
    if how == 1 and raw:  # flipped bytes
        for _ in range(rng.randrange(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif how == 2:  # truncated
        raw = raw[: rng.randrange(len(raw) + 1)]
    else:  # a field of an absurd length or an unknown tag appended
        raw += rng.choice([b"\x0a\xff\xff\xff\xff\x0f", b"\xf8\xff\xff\xff\x0f\x01",
                           b"\x12\x05ab", bytes([0x08]) + b"\xff" * 10])
    return bytes(raw)


async def one(channel: grpc.aio.Channel, app: str, path: str, shape: str,
              messages: list[bytes]) -> str:
    md = (("application", app),)
    try:
        if shape == "unary":
            await channel.unary_unary(path)(messages[0], metadata=md, timeout=20)
        elif shape == "unary_stream":
            async for _ in channel.unary_stream(path)(messages[0], metadata=md, timeout=20):
                pass
        else:
            async def requests() -> AsyncIterator[bytes]:
                for m in messages:
                    yield m

            async for _ in channel.stream_stream(path)(requests(), metadata=md, timeout=20):
                pass
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.UNKNOWN and "DecodeError" in (e.details() or ""):
            return "UNKNOWN (undecodable, refused by the proxy)"
        if e.code() == grpc.StatusCode.INTERNAL and path in STREAM_REQUESTS \
                and not all(parses(STREAM_REQUESTS[path], m) for m in messages):
            # Seen once on CI, for a Transcribe stream: the replica logged one OK more (822)
            # than the client saw (821); the proxy had cut the stream at its bad message
            return CUT_OFF
        if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return e.code().name
        return f"{e.code().name}: {e.details()}"  # named in full if it fails the test
    return "OK"


def parses(request: type[Message], raw: bytes) -> bool:
    try:
        request.FromString(raw)
    except DecodeError:
        return False
    return True


@pytest.fixture(scope="module")
def stages() -> Iterator[runtime.Endpoints]:
    try:
        yield runtime.start_local_profile(timeout_s=400)
    finally:
        runtime.stop()


async def fuzz(grpc_target: str, codes: dict[str, Counter[str]]) -> None:
    rng = random.Random(20261203)
    async with stage_channel(grpc_target) as channel:
        for i in range(PER_STAGE):
            for stage in STAGES:
                methods = [m for m in METHODS if m[0] == stage]
                app, path, shape, valid = methods[i % len(methods)]
                n = 1 if shape != "stream" else rng.choice([1, 2, 4])
                messages = [junk(valid, rng) for _ in range(n)]
                if shape == "stream" and rng.random() < 0.5:
                    messages.insert(0, valid)  # a good start, then junk
                codes[path][await one(channel, app, path, shape, messages)] += 1


async def held_call(url: str) -> None:
    """Two turns of a WebRTC call, each heard and answered, while the junk flies."""
    caller = Caller(url)
    await caller.connect()
    try:
        for wav, said in (("s11", "hello can you hear me"),
                          ("s03", "what is the weather going to be like tomorrow morning")):
            n = len(caller.events)
            caller.mic.say(load_48k(f"tests/data/speech/{wav}.wav"))
            final = await caller.wait_event("final", 120, since=n)
            assert wer(said, final["text"]) <= 0.3, final
            done = await caller.wait_event(("agent_done", "error"), 180, since=n)
            assert done["type"] == "agent_done", caller.events[n:]
    finally:
        await caller.hang_up()


async def test_junk_messages_get_a_status_and_no_replica_restarts(
        stages: runtime.Endpoints) -> None:
    before = {app: set(replicas(f"{app}#")) for app in STAGES}
    codes: dict[str, Counter[str]] = {path: Counter() for _, path, _, _ in METHODS}
    runner, _, url = await start_gateway(stages.grpc)
    try:
        await asyncio.gather(fuzz(stages.grpc, codes), held_call(url))
    finally:
        await runner.cleanup()
    async with stage_channel(stages.grpc) as channel:
        print(f"\n{PER_STAGE} junk requests per stage:",
              {p.rsplit("/", 1)[1]: dict(c) for p, c in codes.items()})
        allowed = {"OK", "INVALID_ARGUMENT", "UNKNOWN (undecodable, refused by the proxy)",
                   CUT_OFF}
        assert all(set(c) <= allowed for c in codes.values()), codes
        assert sum(c[CUT_OFF] for c in codes.values()) <= 10, codes  # the runtime's rare race
        per_stage = Counter({stage: sum(sum(codes[p].values()) for a, p, _, _ in METHODS
                                        if a == stage) for stage in STAGES})
        assert set(per_stage.values()) == {PER_STAGE}, per_stage
        assert sum(c["INVALID_ARGUMENT"] for c in codes.values()) > PER_STAGE // 10, codes
        # still serving, on the same replicas
        stub_reply = await channel.unary_stream("/voxray.v1.Tts/Synthesize")(
            tts_pb2.TtsRequest(text="Still here.").SerializeToString(),
            metadata=(("application", "tts"),), timeout=60).read()
        assert stub_reply is not grpc.aio.EOF
    assert {app: set(replicas(f"{app}#")) for app in before} == before
