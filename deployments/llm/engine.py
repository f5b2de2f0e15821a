"""vLLM's async engine (AsyncLLM) behind a small streaming interface; no Ray here.

One engine serves many conversations at once (continuous batching); each
call of `stream` is one engine request, aborted when its consumer stops.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployments.llm.config import LlmArgs
from deployments.llm.conversation import Message, Sampling
from voxray.paths import models_dir

log = logging.getLogger(__name__)

_MARK = "\u2063voxray-open-turn\u2063"  # an invisible separator no user types
DEFAULT_MODEL_DIR = "smollm2-135m-instruct"


def model_path(args: LlmArgs) -> str:
    if args.model:
        return args.model
    path = models_dir() / DEFAULT_MODEL_DIR
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no model; run `voxray models prepare`")
    return str(path)


@dataclass
class Chunk:
    text: str
    token_count: int
    token_ids: tuple[int, ...] = ()
    # Set on the last chunk only.
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0


class EngineCounters:
    """What the engine core reports each step (a vLLM stat logger).

    Tests and metrics read it to see that an aborted request really stopped
    using the engine, not only that its client stopped reading.
    """

    def __init__(self) -> None:
        self.generation_tokens = 0
        self.running = 0
        self.waiting = 0
        self.steps = 0

    def factory(self) -> Any:
        from vllm.v1.metrics.loggers import StatLoggerBase

        counters = self

        class _Logger(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats: Any, iteration_stats: Any,
                       mm_cache_stats: Any = None, engine_idx: int = 0) -> None:
                counters.steps += 1
                if scheduler_stats is not None:
                    counters.running = scheduler_stats.num_running_reqs
                    counters.waiting = scheduler_stats.num_waiting_reqs
                if iteration_stats is not None:
                    counters.generation_tokens += iteration_stats.num_generation_tokens

            def log_engine_initialized(self) -> None:
                pass

        return _Logger


def engine_kwargs(args: LlmArgs, path: str) -> dict[str, Any]:
    """vLLM's AsyncEngineArgs from the app's args (its engine_kwargs win)."""
    kwargs: dict[str, Any] = {
        "model": path, "served_model_name": [args.served_model_name], "dtype": args.dtype,
        "max_model_len": args.max_model_len,
        "tensor_parallel_size": args.tensor_parallel_size,
        "enforce_eager": args.enforce_eager,
        "enable_prefix_caching": args.enable_prefix_caching,
        "max_num_seqs": args.max_num_seqs, "disable_log_stats": False,
    }
    if args.block_size:
        kwargs["block_size"] = args.block_size
    if args.device == "cuda":
        kwargs["gpu_memory_utilization"] = args.gpu_memory_utilization
    if args.uses_gpu_group:
        # Ray's executor: its workers go on the GPU bundles of the replica's placement
        # group (derived_deployment_options); the default, multiprocessing, would look
        # for the GPUs inside this one actor, which holds none.
        kwargs["distributed_executor_backend"] = "ray"
    return kwargs | args.engine_kwargs


class VllmEngine:
    def __init__(self, args: LlmArgs, ray_metrics: bool = False) -> None:
        """ray_metrics: export vLLM's own metrics (TTFT, tokens, prefix-cache hits)
        through Ray's Prometheus endpoint, as ray.serve.llm does; needs Ray."""
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.args = args
        path = model_path(args)
        if args.tool_parser:
            from deployments.llm.tool_calls import check_parser

            check_parser(args.tool_parser)
        if args.device == "cpu":
            # GiB of KV cache; unset, vLLM on CPU reserves most of the RAM.
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(args.kv_cache_gib)
            if args.cpu_nice:
                os.nice(args.cpu_nice)  # the engine's processes inherit it
        engine_args = AsyncEngineArgs(**engine_kwargs(args, path))
        self.counters = EngineCounters()
        t0 = time.monotonic()
        loggers = [self.counters.factory()]
        if ray_metrics:
            from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

            loggers.append(RayPrometheusStatLogger)
        self.engine = AsyncLLM.from_engine_args(engine_args, stat_loggers=loggers)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        log.info("vLLM engine for %s ready in %.1f s", Path(path).name, time.monotonic() - t0)

    def prompt_ids(self, messages: list[Message],
                   tools: list[dict[str, Any]] | None = None) -> list[int]:
        chat: list[Any] = [m.as_dict() for m in messages]
        text = self.tokenizer.apply_chat_template(
            chat, tools=list(tools or []) or None, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def open_turn_ids(self, messages: list[Message]) -> tuple[list[int], set[int]]:
        """The conversation rendered up to the end of the last message's words, left
        open, and the tokens that would close it here: the template's end-of-turn
        token and sentence ends. Works for any chat template: the message is marked,
        rendered closed, and cut at the mark."""
        last = messages[-1]
        marked = [*messages[:-1], Message(last.role, last.content + _MARK)]
        chat: list[Any] = [m.as_dict() for m in marked]
        text = str(self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=False, tokenize=False))
        cut = text.rindex(_MARK)
        encode = self.tokenizer(text[cut + len(_MARK):], add_special_tokens=False)
        closing = set(encode["input_ids"][:1]) | self._sentence_end_ids()
        return list(self.tokenizer(text[:cut], add_special_tokens=False)["input_ids"]), closing

    def _sentence_end_ids(self) -> set[int]:
        ids = set()
        base = self.tokenizer("word", add_special_tokens=False)["input_ids"]
        for mark in (".", "?", "!"):
            ended = self.tokenizer("word" + mark, add_special_tokens=False)["input_ids"]
            if ended[:len(base)] == base and len(ended) == len(base) + 1:
                ids.add(ended[-1])
        return ids

    async def next_token_p(self, prompt_ids: list[int], tokens: set[int],
                           request_id: str = "") -> tuple[float, int]:
        """P(the next token is one of `tokens`) from the top-20 log-probs, and how many
        prompt tokens came from the prefix cache."""
        from vllm import SamplingParams, TokensPrompt

        request_id = request_id or uuid.uuid4().hex
        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=20)
        (prompt,) = await self.engine.renderer.render_cmpl_async(
            [TokensPrompt(prompt_token_ids=prompt_ids)])
        last = None
        async for out in self.engine.generate(prompt, params, request_id=request_id):
            last = out
        if last is None or not last.outputs[0].logprobs:
            return 0.0, 0
        top = last.outputs[0].logprobs[0]
        p = sum(math.exp(lp.logprob) for tok, lp in top.items() if tok in tokens)
        return min(1.0, p), int(last.num_cached_tokens or 0)

    async def stream(self, prompt_ids: list[int], sampling: Sampling,
                     request_id: str = "", skip_special_tokens: bool = True
                     ) -> AsyncIterator[Chunk]:
        """Generate; stopping iteration (or cancelling) aborts the engine request."""
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        request_id = request_id or uuid.uuid4().hex
        d = self.args.sampling
        params = SamplingParams(
            max_tokens=sampling.max_tokens, temperature=sampling.temperature,
            top_p=sampling.top_p, top_k=d.top_k, repetition_penalty=d.repetition_penalty,
            seed=sampling.seed, stop=list(sampling.stop) or None,
            skip_special_tokens=skip_special_tokens, output_kind=RequestOutputKind.DELTA)
        (prompt,) = await self.engine.renderer.render_cmpl_async(
            [TokensPrompt(prompt_token_ids=prompt_ids)])
        finished = False
        try:
            async for out in self.engine.generate(prompt, params, request_id=request_id):
                completion = out.outputs[0]
                finished = out.finished
                yield Chunk(
                    text=completion.text, token_count=len(completion.token_ids),
                    token_ids=tuple(completion.token_ids),
                    finish_reason=(completion.finish_reason or "stop") if finished else None,
                    prompt_tokens=len(prompt_ids),
                    cached_prompt_tokens=out.num_cached_tokens or 0)
        finally:
            if not finished:
                # generate() aborts when cancelled, but not when its consumer
                # just stops iterating; abort here covers both.
                await asyncio.shield(self.engine.abort(request_id))

    def unfinished_requests(self) -> int:
        return int(self.engine.get_num_unfinished_requests())

    async def check_health(self) -> None:
        await self.engine.check_health()

    def shutdown(self) -> None:
        self.engine.shutdown()
