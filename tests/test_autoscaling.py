"""Each stage scales on its own: load makes only the bottleneck deployment scale up, and when
the load goes it scales back down without dropping a stream.

The ASR and TTS applications of the CPU profile (real models) run on their own local cluster
with short autoscaling delays; TTS is made the bottleneck (`target_ongoing_requests: 1`).
Load is driven with raw gRPC streams through Serve's gRPC proxy, the calls the gateway makes:
per "session" one ASR `Transcribe` stream (the gateway holds one per call) and one TTS
`SynthesizeStream` (the gateway opens one per reply), both held open, so each stays one
ongoing request for as long as the test needs; this keeps the 2 cores for Serve rather than
for WebRTC callers. Replica counts come from
`serve.status()`. `loadtest/bench_autoscale.py` does the same with WebRTC callers and the
whole pipeline, for longer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from loadtest.harness.replicas import serve_replicas
from voxray import runtime
from voxray.config import merge
from voxray.stage_auth import stage_channel
from voxray.stage_clients.asr import AsrStream
from voxray.v1 import tts_pb2, tts_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.own_cluster]

FAST = {"upscale_delay_s": 1, "downscale_delay_s": 4, "look_back_period_s": 2,
        "metrics_interval_s": 0.5, "min_replicas": 1, "max_replicas": 2}
OVERLAY = {"applications": {
    "asr": {"deployments": {"AsrDeployment": {
        "autoscaling_config": FAST | {"target_ongoing_requests": 4}}}},
    "tts": {"deployments": {"TtsDeployment": {
        "max_ongoing_requests": 4, "graceful_shutdown_timeout_s": 60,
        "autoscaling_config": FAST | {"target_ongoing_requests": 1}}}},
}}
ASR, TTS = "asr/AsrDeployment", "tts/TtsDeployment"


@pytest.fixture(scope="module")
def stages() -> Iterator[runtime.Endpoints]:
    try:
        yield runtime.start_local_profile(apps=["asr", "tts"], overrides=[OVERLAY],
                                          timeout_s=240)
    finally:
        runtime.stop()


class Session:
    """A session's ASR stream and a (long) reply's TTS stream, held open."""

    def __init__(self, channel: grpc.aio.Channel, sid: str) -> None:
        self.asr = AsrStream(channel, sid)
        self.tts_queue: asyncio.Queue[tts_pb2.TtsStreamRequest | None] = asyncio.Queue()
        self.tts_queue.put_nowait(tts_pb2.TtsStreamRequest(start=tts_pb2.VoiceOptions()))
        self.tts = tts_pb2_grpc.TtsStub(channel).SynthesizeStream(
            self._tts_requests(), metadata=(("application", "tts"),))
        self.tts_events: list[Any] = []

    async def _tts_requests(self) -> AsyncIterator[tts_pb2.TtsStreamRequest]:
        while (r := await self.tts_queue.get()) is not None:
            yield r

    async def open(self) -> None:
        await self.asr.__aenter__()
        ready = await asyncio.wait_for(anext(aiter(self.asr)), 120)
        assert ready.WhichOneof("kind") == "ready"
        ready = await asyncio.wait_for(anext(aiter(self.tts)), 120)
        assert ready.WhichOneof("kind") == "ready"

    async def finish(self) -> tuple[int, grpc.StatusCode, grpc.StatusCode]:
        """Speak a sentence on the TTS stream and half-close both: the audio samples
        received and each stream's final status (OK unless it was dropped)."""
        self.tts_queue.put_nowait(tts_pb2.TtsStreamRequest(text="All done, thank you."))
        self.tts_queue.put_nowait(None)
        samples = 0
        async for ev in self.tts:
            if ev.WhichOneof("kind") == "audio":
                samples += len(ev.audio.audio.pcm16) // 2
        self.asr.close_send()
        async for _ in self.asr:
            pass
        asr_call = self.asr._call
        assert asr_call is not None
        return samples, await asr_call.code(), await self.tts.code()


class Watch:
    """serve.status() sampled every 0.25 s on a thread."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[str, dict[str, int]]]] = []
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def until(self, what: str, cond: Any, within_s: float) -> float:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            states = await asyncio.to_thread(serve_replicas)
            self.samples.append((self.now(), states))
            if cond(states):
                return self.now()
            await asyncio.sleep(0.25)
        raise AssertionError(f"{what}: not within {within_s} s; last {self.samples[-1]}")

    def most(self, dep: str, state: str = "RUNNING") -> int:
        return max(s[dep].get(state, 0) for _, s in self.samples)

    def ever_other_than_running(self, dep: str) -> bool:
        return any(set(s[dep]) - {"RUNNING"} for _, s in self.samples)


def running(states: dict[str, dict[str, int]], dep: str) -> int:
    return states[dep].get("RUNNING", 0)


async def test_only_the_bottleneck_scales_up_then_back_down_dropping_nothing(
        stages: runtime.Endpoints) -> None:
    watch = Watch()
    await watch.until("both stages at one replica",
                      lambda s: s[ASR] == {"RUNNING": 1} and s[TTS] == {"RUNNING": 1}, 30)
    async with stage_channel(stages.grpc) as channel:
        # Ramp: three sessions, one a second. TTS holds 3 streams at a target of 1 per
        # replica (wants 3, capped at max 2); ASR holds 3 at a target of 4 (wants 1).
        sessions = []
        load_at = watch.now()
        for i in range(3):
            s = Session(channel, f"s{i}")
            await s.open()
            sessions.append(s)
            await asyncio.sleep(1.0)
        up_at = await watch.until("TTS scaled up to 2",
                                  lambda s: running(s, TTS) == 2, 60)
        # hold the load a while: ASR, under its target, must not move
        hold_until = time.monotonic() + 6
        while time.monotonic() < hold_until:
            await watch.until("sample", lambda s: True, 1)
            await asyncio.sleep(0.5)
        assert watch.most(ASR) == 1 and not watch.ever_other_than_running(ASR), watch.samples

        # A session opened now goes to the new replica (Serve routes to the less busy of
        # two). Then the load goes: the first three end, the new one stays open through
        # the scale-down, which stops the newer replica: it must drain, not cut, the stream.
        late = Session(channel, "late")
        await late.open()
        results = [await s.finish() for s in sessions]
        low_at = watch.now()
        down_at = await watch.until("TTS back to 1 RUNNING",
                                    lambda s: running(s, TTS) == 1, 60)
        # A replica with no stream stops at once; one holding the open stream drains:
        # it stays STOPPING, serving that stream, until the stream ends.
        stopping_since = watch.now()
        await asyncio.sleep(3)
        await watch.until("sample", lambda s: True, 1)
        draining = "STOPPING" in watch.samples[-1][1][TTS]
        results.append(await late.finish())
        ended_at = watch.now()
        gone_at = await watch.until("the stopped replica gone",
                                    lambda s: s[TTS] == {"RUNNING": 1}, 90)
        # Not stuck after the drain (cf. Ray issue 61551): it goes once its stream ended,
        # long before graceful_shutdown_timeout_s (60 s) would have it killed.
        assert draining, watch.samples[-5:]
        assert gone_at - ended_at < 15, watch.samples[-5:]
    assert len(results) == 4
    for samples, asr_code, tts_code in results:
        assert (asr_code, tts_code) == (grpc.StatusCode.OK, grpc.StatusCode.OK)
        assert samples > 24_000 * 0.5  # half a second of speech or more: nothing cut
    assert watch.most(ASR) == 1 and not watch.ever_other_than_running(ASR)
    print(f"\nTTS scale-up {up_at - load_at:.1f} s after the first session "
          f"(upscale_delay_s {FAST['upscale_delay_s']}), scale-down {down_at - low_at:.1f} s "
          f"after the load dropped (downscale_delay_s {FAST['downscale_delay_s']}); the last "
          f"stream held the draining replica {ended_at - stopping_since:.1f} s, which went "
          f"{gone_at - ended_at:.1f} s after the stream ended")


LOAD_POLICY = {"policy_function": "deployments.autoscaling:LoadPolicy",
               "policy_kwargs": {"metric": "load", "target": 0.5}}


async def test_tts_on_the_load_policy_scales_on_synthesis_where_streams_would_not(
        stages: runtime.Endpoints) -> None:
    # One stream against a target of 100 streams per replica: Serve's rule never scales;
    # the replica's reported synthesis load (text fed faster than it is spoken) does.
    overlay = merge(OVERLAY, {"applications": {"tts": {"deployments": {"TtsDeployment": {
        "autoscaling_config": {"target_ongoing_requests": 100, "policy": LOAD_POLICY}}}}}})
    await asyncio.to_thread(runtime.start_local_profile, apps=["asr", "tts"],
                            overrides=[overlay], timeout_s=240)
    watch = Watch()
    await watch.until("TTS at one replica", lambda s: s[TTS] == {"RUNNING": 1}, 90)
    async with stage_channel(stages.grpc) as channel:
        s = Session(channel, "busy")
        ready = await asyncio.wait_for(anext(aiter(s.tts)), 120)
        assert ready.WhichOneof("kind") == "ready"
        heard = 0

        async def listen() -> None:
            nonlocal heard
            async for ev in s.tts:
                if ev.WhichOneof("kind") == "audio":
                    heard += len(ev.audio.audio.pcm16) // 2

        listening = asyncio.create_task(listen())
        for _ in range(12):  # more words than a minute of synthesis here gets through
            s.tts_queue.put_nowait(tts_pb2.TtsStreamRequest(
                text="Here is one more sentence for the speaker to say, and then another. "))
        up_at = await watch.until("TTS scaled up to 2 on its load",
                                  lambda st: running(st, TTS) == 2, 90)
        assert heard > 0  # it was speaking, not stuck
        s.tts_queue.put_nowait(None)
        await asyncio.wait_for(listening, 300)
        assert await s.tts.code() == grpc.StatusCode.OK
    await watch.until("TTS back to 1 once idle", lambda st: running(st, TTS) == 1, 90)
    print(f"\nTTS at 1 stream scaled to 2 replicas on its load {up_at:.1f} s in")
