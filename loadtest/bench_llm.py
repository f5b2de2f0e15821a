"""LLM benchmark through Serve's gRPC proxy with the CPU profile (real vLLM).

Part 1, one replica: time to first token (client-side: call start -> first
delta) and decode tokens/s per stream, with 1 and then 4 concurrent streams.
Part 2, two replicas: conversations of 5 turns, each turn's prompt carrying
the whole history (a ~600-token caller context, then per turn a ~40-token
question and an answer of up to 80 tokens); TTFT of turn 5 when the turns
carry the conversation's session_id (consistent-hash affinity) versus not.

    python -m loadtest.bench_llm [--rounds 8] [--conversations 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass

import grpc

from loadtest.harness.stats import write_json
from voxray import runtime
from voxray.stage_auth import stage_channel
from voxray.stage_clients.llm import generate, llm_request

QUESTIONS = [
    "What is the capital of France?", "Why is the sky blue?",
    "Give me a tip for sleeping better.", "How do I boil an egg?",
    "What should I pack for a weekend hike?", "Suggest a name for a grey cat.",
    "How far is the moon?", "What is a good stretch for my back?",
]


@dataclass
class Turn:
    ttft_ms: float
    tokens: int
    tok_per_s: float
    cached: int
    prompt: int


async def one_call(ch: grpc.aio.Channel, cid: str, messages: list[tuple[str, str]],
                   max_tokens: int, affinity: bool = True) -> tuple[Turn, str]:
    t0 = time.perf_counter()
    first = 0.0
    text: list[str] = []
    call = generate(ch, llm_request(cid, messages, temperature=0.0, max_tokens=max_tokens),
                    affinity)
    async for ev in call:
        if ev.WhichOneof("kind") == "delta":
            first = first or time.perf_counter()
            text.append(ev.delta.text)
        else:
            done = ev.done
    end = time.perf_counter()
    n = done.completion_tokens
    rate = (n - 1) / (end - first) if n > 1 and end > first else 0.0
    return Turn((first - t0) * 1000, n, rate, done.cached_prompt_tokens,
                done.prompt_tokens), "".join(text)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def summary(turns: list[Turn]) -> dict[str, float]:
    ttft = [t.ttft_ms for t in turns]
    return {"n": len(turns), "ttft_p50_ms": pct(ttft, 50), "ttft_p95_ms": pct(ttft, 95),
            "tok_per_s_per_stream": statistics.mean(t.tok_per_s for t in turns)}


async def concurrency(target: str, streams: int, rounds: int) -> list[Turn]:
    out: list[Turn] = []
    async with stage_channel(target) as ch:
        await one_call(ch, "warm", [("user", "Hi")], 8)
        for r in range(rounds):
            calls = [one_call(ch, f"b{r}-{i}", [("user", QUESTIONS[(r + i) % len(QUESTIONS)])], 64)
                     for i in range(streams)]
            out += [t for t, _ in await asyncio.gather(*calls)]
    return out


WORDS = ("garden window river morning ticket coffee market yellow travel station music "
         "winter doctor letter kitchen mountain bicycle library summer painting").split()


def profile(rng: random.Random) -> str:
    # Different for every conversation (and run), so only a replica that
    # served this conversation before can hold its history in the prefix cache.
    return " ".join(rng.choice(WORDS) for _ in range(500))


async def conversations(target: str, n: int, affinity: bool) -> list[Turn]:
    """Turn 1 carries a ~600-token per-caller context; each turn adds a spoken
    question (~40 tokens) and an answer of up to 80 tokens."""
    fifth: list[Turn] = []
    rng = random.Random()
    async with stage_channel(target) as ch:
        for i in range(n):
            cid = f"conv-{uuid.uuid4().hex[:8]}"
            history = [("system", "You are a helpful assistant. Answer in one sentence. "
                                  f"Caller notes: {profile(rng)}")]
            for turn in range(5):
                said = " ".join(rng.choice(WORDS) for _ in range(25))
                history.append(("user", f"I was thinking about {said}. "
                                        f"{QUESTIONS[(i + turn) % len(QUESTIONS)]}"))
                result, text = await one_call(ch, cid, history, 80, affinity)
                history.append(("assistant", text))
            fifth.append(result)
    return fifth


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--conversations", type=int, default=12)
    ap.add_argument("--json", help="write the results here too")
    ns = ap.parse_args()
    report: dict[str, object] = {}
    one = {"applications": {"llm": {"deployments": {"LlmDeployment": {
        "num_replicas": 1, "autoscaling_config": None}}}}}
    try:
        ep = runtime.start_local_profile(["llm"], [one], timeout_s=600)
        for streams in (1, 4):
            s = summary(asyncio.run(concurrency(ep.grpc, streams, ns.rounds)))
            report[f"{streams}_streams"] = s
            print(f"{streams} concurrent: TTFT p50 {s['ttft_p50_ms']:.0f} ms, "
                  f"p95 {s['ttft_p95_ms']:.0f} ms; {s['tok_per_s_per_stream']:.1f} tok/s per "
                  f"stream, {s['tok_per_s_per_stream'] * streams:.0f} aggregate", flush=True)
    finally:
        runtime.stop()
    two = {"applications": {"llm": {"deployments": {"LlmDeployment": {
        "num_replicas": 2, "autoscaling_config": None}}}}}
    try:
        ep = runtime.start_local_profile(["llm"], [two], timeout_s=600)
        for affinity in (True, False):
            turns = asyncio.run(conversations(ep.grpc, ns.conversations, affinity))
            key = "turn5_with_affinity" if affinity else "turn5_without_affinity"
            s = summary(turns) | {"prompt_tokens": statistics.mean(t.prompt for t in turns),
                                  "cached_tokens": statistics.mean(t.cached for t in turns)}
            report[key] = s
            print(f"turn 5, {'with' if affinity else 'without'} affinity, 2 replicas: TTFT p50 "
                  f"{s['ttft_p50_ms']:.0f} ms, mean {statistics.mean(t.ttft_ms for t in turns):.0f}"
                  f" ms; prompt {s['prompt_tokens']:.0f} tokens, {s['cached_tokens']:.0f} cached",
                  flush=True)
    finally:
        runtime.stop()
    if ns.json:
        write_json(ns.json, {k: v if isinstance(v, dict) else asdict(v)  # type: ignore[call-overload]
                             for k, v in report.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
