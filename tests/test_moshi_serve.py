"""Duplex streams through Serve's gRPC proxy to one Moshi replica (tiny random model, 4 slots)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from ray import serve

from voxray.config import load_config
from voxray.stage_auth import stage_channel
from voxray.stage_clients.moshi import FRAME_SAMPLES, MoshiStream
from voxray.v1 import common_pb2, moshi_pb2

pytestmark = pytest.mark.slow
_moshi = load_config(profiles=["cpu"]).app("moshi")
SLOTS = int(_moshi.args["slots"])
QUEUE = int(_moshi.deployments[0].max_queued_requests or 0)


@pytest.fixture
async def channel(serve_grpc: str) -> AsyncIterator[grpc.aio.Channel]:
    async with stage_channel(serve_grpc) as ch:
        yield ch


async def slots_in_use() -> int:
    handle = serve.get_deployment_handle("MoshiDeployment", app_name="moshi")
    return int(await handle.slots_in_use.remote())


async def wait_slots(expected: int, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while (n := await slots_in_use()) != expected:
        assert time.monotonic() < deadline, f"{n} slots in use, expected {expected}"
        await asyncio.sleep(0.1)


def frame(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(FRAME_SAMPLES) * 3000).astype("<i2").tobytes()


async def talk(stream: MoshiStream, frames: int) -> list[moshi_pb2.MoshiOutput]:
    """Send `frames` frames in real time; collect the outputs until the last one is answered."""
    outs: list[moshi_pb2.MoshiOutput] = []

    async def send() -> None:
        for i in range(frames):
            stream.send_frame(frame(i))
            await asyncio.sleep(0.08)

    sender = asyncio.create_task(send())
    async for out in stream.outputs():
        outs.append(out)
        if out.input_frame_index == frames - 1 or len(outs) >= frames + 10:
            break
    await sender
    return outs


async def test_concurrent_conversations_share_one_replica(channel: grpc.aio.Channel) -> None:
    streams = [MoshiStream(channel, f"duplex-{i}") for i in range(3)]
    opened = await asyncio.gather(*(s.__aenter__() for s in streams))
    try:
        assert len({s.ready.replica_id for s in opened if s.ready}) == 1
        assert sorted(s.ready.slot for s in opened if s.ready) == [0, 1, 2]
        assert await slots_in_use() == 3
        results = await asyncio.gather(*(talk(s, 20) for s in opened))
        for outs in results:
            assert [o.tick for o in outs] == list(range(len(outs)))
            heard = [o.input_frame_index for o in outs if o.input_frame_index >= 0]
            # every frame is heard once, in order, or counted as dropped (a replica that
            # falls behind the clock drops the oldest queued frames, never reorders them)
            assert heard == sorted(set(heard)) and heard[-1] == 19
            assert len(heard) + outs[-1].dropped_frames == 20, (heard, outs[-1])
            assert outs[0].text_token == -1  # the model's acoustic delay
            assert all(o.text_token >= 0 for o in outs[3:])
            audio = np.frombuffer(b"".join(o.audio.pcm16 for o in outs[3:]), "<i2")
            assert len(audio) == FRAME_SAMPLES * (len(outs) - 3) and np.abs(audio).max() > 0
    finally:
        for s in opened:
            s.close_send()
        await asyncio.gather(*(s.__aexit__(None, None, None) for s in opened))
    await wait_slots(0)


async def test_full_replica_refuses_and_a_freed_slot_is_reused_fresh(
        channel: grpc.aio.Channel) -> None:
    holders = [await MoshiStream(channel, f"hold-{i}").__aenter__() for i in range(SLOTS)]
    waiting: list[asyncio.Task[MoshiStream]] = []
    try:
        # Up to max_queued_requests callers wait in Serve's queue...
        waiting = [asyncio.create_task(MoshiStream(channel, f"wait-{i}", ready_within_s=30)
                                       .__aenter__()) for i in range(QUEUE)]
        await asyncio.sleep(1.5)
        assert not any(w.done() for w in waiting)
        # ...any further one is refused at once, with a reason.
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await MoshiStream(channel, "refused").__aenter__()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 5
        # A holder hangs up: a waiting caller gets its slot, starting afresh.
        freed = holders.pop(1)
        assert freed.ready is not None
        freed.close_send()
        done, _ = await asyncio.wait(waiting, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1
        late = done.pop().result()
        assert late.ready is not None and late.ready.slot == freed.ready.slot
        holders.append(late)
        outs = await talk(late, 4)
        assert outs[0].text_token == -1 and outs[0].tick == 0
    finally:
        for s in holders:
            s.cancel()
        for w in waiting:
            w.cancel()
        for w in waiting:
            if w.done() and not w.cancelled() and w.exception() is None:
                w.result().cancel()
    await wait_slots(0)


async def test_vanished_client_frees_its_slot(serve_grpc: str) -> None:
    ch = stage_channel(serve_grpc)
    stream = await MoshiStream(ch, "vanishing").__aenter__()
    stream.send_frame(frame(0))
    await wait_slots(1)
    await ch.close(grace=None)  # the connection drops without a goodbye
    await wait_slots(0)


async def test_bad_frames_end_only_their_stream(channel: grpc.aio.Channel) -> None:
    good = await MoshiStream(channel, "good").__aenter__()
    try:
        for bad in (common_pb2.AudioChunk(pcm16=b"\x01" * 100, sample_rate=24000),
                    common_pb2.AudioChunk(pcm16=frame(1), sample_rate=16000)):
            async with MoshiStream(channel, "bad") as stream:
                stream.send_raw(moshi_pb2.MoshiRequest(frame=moshi_pb2.MoshiFrame(audio=bad)))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in stream.outputs():
                        pass
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "1920 samples" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            call = MoshiStream(channel, "no-start")
            call._queue.put_nowait(moshi_pb2.MoshiRequest(frame=moshi_pb2.MoshiFrame()))
            await call.__aenter__()
        outs = await talk(good, 5)
        assert outs[-1].input_frame_index == 4
    finally:
        good.close_send()
        await good.__aexit__(None, None, None)
    await wait_slots(0)
