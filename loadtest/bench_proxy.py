"""What Serve's gRPC proxy adds per message on a bidirectional stream.

The same echo servicer is called four ways, with 100 ms of PCM16 audio per
message, one message in flight at a time (send, await its reply):
  inprocess  its async generator, called directly
  grpc       a plain grpc.aio server in this process (no Ray)
  proxy      a Serve app behind Serve's default Python gRPC proxy
  direct     a Serve app with RAY_SERVE_ENABLE_DIRECT_INGRESS=1 + HAProxy
Each Serve mode runs in a fresh subprocess (the flags are read at Ray start).

    python -m loadtest.bench_proxy [--messages 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
import numpy as np
import psutil

from loadtest.echo_app import EchoAsr
from loadtest.harness.stats import write_json
from voxray import runtime
from voxray.stage_auth import stage_channel
from voxray.v1 import asr_pb2, asr_pb2_grpc, common_pb2

PAYLOAD = bytes(3200)  # 100 ms of 16 kHz PCM16


def _request(seq: int) -> asr_pb2.AsrRequest:
    return asr_pb2.AsrRequest(meta=common_pb2.Meta(session_id="bench", seq=seq),
                              audio=common_pb2.AudioChunk(pcm16=PAYLOAD, sample_rate=16000))


async def _ping_pong(
    open_stream: Callable[[AsyncIterator[asr_pb2.AsrRequest]], AsyncIterator[asr_pb2.AsrEvent]],
    messages: int,
) -> list[float]:
    queue: asyncio.Queue[asr_pb2.AsrRequest | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[asr_pb2.AsrRequest]:
        while (r := await queue.get()) is not None:
            yield r

    replies = open_stream(requests()).__aiter__()
    rtts = []
    for seq in range(messages + 20):  # the first 20 warm up
        t0 = time.perf_counter()
        queue.put_nowait(_request(seq))
        reply = await replies.__anext__()
        assert reply.meta.reply_to_seq == seq
        if seq >= 20:
            rtts.append((time.perf_counter() - t0) * 1000)
    queue.put_nowait(None)
    return rtts


def _ray_cpu_s() -> float:
    total = 0.0
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if "ray::" in cmd or "haproxy" in (p.info["name"] or ""):
                t = p.cpu_times()
                total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


async def run_local(mode: str, messages: int) -> dict[str, float]:
    servicer = EchoAsr()
    if mode == "inprocess":
        return _summary(await _ping_pong(servicer.Transcribe, messages))
    server = grpc.aio.server()
    asr_pb2_grpc.add_AsrServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with stage_channel(f"127.0.0.1:{port}") as ch:
            return _summary(await _ping_pong(asr_pb2_grpc.AsrStub(ch).Transcribe, messages))
    finally:
        await server.stop(None)


async def run_serve(mode: str, messages: int) -> dict[str, float]:
    from voxray.config import ServeConfig

    port = runtime.free_port()
    config = ServeConfig.model_validate({
        "http_options": {"host": "127.0.0.1", "port": runtime.free_port()},
        "grpc_options": {"port": port, "grpc_servicer_functions": [
            "voxray.v1.asr_pb2_grpc.add_AsrServicer_to_server"]},
        "applications": [{"name": "echo", "route_prefix": "/echo",
                          "import_path": "loadtest.echo_app:build_app",
                          "deployments": [{"name": "EchoDeployment",
                                           "ray_actor_options": {"num_cpus": 0.1}}]}],
    })
    runtime.start(config, num_cpus=4, direct_ingress=mode == "direct", progress=lambda _: None)
    await asyncio.sleep(5)  # let proxies settle before timing
    try:
        async with stage_channel(f"127.0.0.1:{port}") as ch:
            stub = asr_pb2_grpc.AsrStub(ch)

            def call(it: AsyncIterator[asr_pb2.AsrRequest]) -> AsyncIterator[asr_pb2.AsrEvent]:
                return stub.Transcribe(it, metadata=(("application", "echo"),))

            await _ping_pong(call, 50)
            cpu0 = _ray_cpu_s()
            rtts = await _ping_pong(call, messages)
            cpu = _ray_cpu_s() - cpu0
        out = _summary(rtts)
        out["ray_cpu_ms_per_msg"] = cpu * 1000 / (messages + 20)
        return out
    finally:
        runtime.stop()


def _summary(rtts: list[float]) -> dict[str, float]:
    a = np.array(rtts)
    return {"messages": len(a), "rtt_p50_ms": float(np.percentile(a, 50)),
            "rtt_p95_ms": float(np.percentile(a, 95)), "rtt_mean_ms": float(a.mean())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--mode", help=argparse.SUPPRESS)  # one Serve mode, in a subprocess
    ns = ap.parse_args()
    if ns.mode:
        runner: Callable[[str, int], Coroutine[Any, Any, dict[str, float]]] = (
            run_serve if ns.mode in ("proxy", "direct") else run_local)
        print(json.dumps(asyncio.run(runner(ns.mode, ns.messages))))
        return 0
    results: dict[str, dict[str, float]] = {}
    for mode in ("inprocess", "grpc", "proxy", "direct"):
        run = subprocess.run([sys.executable, "-m", "loadtest.bench_proxy", "--mode", mode,
                              "--messages", str(ns.messages)], capture_output=True, text=True,
                             check=False)
        if run.returncode != 0:
            print(f"{mode}: failed\n{run.stderr[-2000:]}", file=sys.stderr)
            continue
        results[mode] = json.loads(run.stdout.strip().splitlines()[-1])
    base = results.get("inprocess", {}).get("rtt_p50_ms", 0.0)
    print(f"{'mode':10} {'p50 ms':>8} {'p95 ms':>8} {'added p50':>10} {'Ray CPU ms/msg':>15}")
    for mode, r in results.items():
        cpu = r.get("ray_cpu_ms_per_msg")
        print(f"{mode:10} {r['rtt_p50_ms']:8.2f} {r['rtt_p95_ms']:8.2f} "
              f"{r['rtt_p50_ms'] - base:10.2f} {'' if cpu is None else f'{cpu:15.2f}'}")
    print("(round trip per 100 ms audio message; 'added' is versus calling the code in-process)")
    if ns.json:
        write_json(ns.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
