"""Mimi + Moshi's LM stepping a fixed batch of conversation slots; no Ray, no asyncio.

Every slot is one row of one streaming batch. A tick encodes each active
slot's 80 ms of user audio, runs one LM step and decodes the agent's audio.
Inactive rows are masked out of every state update (the streaming modules'
exec mask), and a slot that changes hands has only its own row reset, so one
conversation never sees another's state.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from moshi.models import LMGen
from moshi.utils.compile import no_compile, no_cuda_graph

from deployments.moshi.checkpoint import MoshiModels, load
from deployments.moshi.config import MoshiArgs
from voxray.paths import models_dir

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000


@dataclass
class TickResult:
    pcm: np.ndarray          # [slots, frame_size] float32; zeros where a slot is not producing
    text_tokens: np.ndarray  # [slots] int64; -1 where a slot is not producing
    step_ms: float


class MoshiBatch:
    def __init__(self, models: MoshiModels, args: MoshiArgs) -> None:
        self.slots = args.slots
        self.mimi = models.mimi
        self.frame_size = int(self.mimi.frame_size)
        self._tokenizer = models.tokenizer
        self._compile = args.torch_compile
        self._graphs = args.cuda_graphs
        self._device = next(models.lm.parameters()).device
        if args.seed is not None:
            torch.manual_seed(args.seed)
        sampling = {"use_sampling": not args.greedy, "temp": args.temperature,
                    "temp_text": args.text_temperature, "top_k": args.top_k,
                    "top_k_text": args.top_k_text}
        # Out-of-sync support: the LM answers every row every step, marking rows
        # still inside their own acoustic delay, instead of one global warm-up.
        self.lm_gen = LMGen(models.lm, support_out_of_sync=True,
                            **{**models.lm_gen_config, **sampling})
        self._silent_text = {0, models.lm.text_padding_token_id, models.lm.end_of_text_padding_id}
        self._streaming = contextlib.ExitStack()  # for the replica's life (or until close)
        self._streaming.enter_context(self.mimi.streaming(self.slots))
        self._streaming.enter_context(self.lm_gen.streaming(self.slots))

    @classmethod
    def from_args(cls, args: MoshiArgs) -> MoshiBatch:
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        device = f"cuda:{args.device_index}" if args.device == "cuda" else "cpu"
        model = args.model or str(models_dir() / "moshi-tiny")
        started = time.monotonic()
        batch = cls(load(model, device, args.dtype, args.revision), args)
        log.info("moshi %s loaded on %s in %.1f s, %d slots", model, device,
                 time.monotonic() - started, args.slots)
        batch.warmup(args.warmup_steps)
        return batch

    def warmup(self, steps: int) -> None:
        if steps <= 0:
            return
        everyone = np.ones(self.slots, dtype=bool)
        silence = np.zeros((self.slots, self.frame_size), dtype=np.float32)
        for _ in range(steps):
            self.step(silence, everyone, np.zeros(self.slots, dtype=bool))
        self.step(silence, np.zeros(self.slots, dtype=bool), everyone)  # back to a clean state

    @torch.no_grad()
    def step(self, frames: np.ndarray, active: np.ndarray, reset: np.ndarray) -> TickResult:
        """One tick: rows in `reset` start afresh, then `active` rows advance by one frame."""
        started = time.perf_counter()
        with contextlib.ExitStack() as options:
            if not self._compile:
                options.enter_context(no_compile())
            if not self._graphs:
                options.enter_context(no_cuda_graph())
            if reset.any():
                mask = torch.from_numpy(reset).to(self._device)
                self.mimi.reset_streaming(mask)
                self.lm_gen.reset_streaming(mask)
            act = torch.from_numpy(active).to(self._device)
            x = torch.from_numpy(frames).to(self._device, torch.float32)[:, None, :]
            self.mimi.set_exec_mask(act)
            codes = self.mimi.encode(x)
            self.lm_gen.set_exec_mask(act)
            tokens = self.lm_gen.step(codes)
            assert tokens is not None  # never None with support_out_of_sync
            tokens = tokens[:, :, 0]
            producing = act & (tokens[:, 1:] >= 0).all(dim=1)
            self.mimi.set_exec_mask(producing)
            audio_codes = torch.where(producing[:, None], tokens[:, 1:], 0)[:, :, None]
            pcm = self.mimi.decode(audio_codes)[:, 0].float()
            pcm = torch.where(producing[:, None], pcm, 0.0).cpu().numpy()
            text = torch.where(producing, tokens[:, 0], -1).cpu().numpy()
        return TickResult(pcm, text, (time.perf_counter() - started) * 1000)

    def close(self) -> None:
        """Leave streaming mode, so the same models can be batched again (another slot
        count, in the benchmark)."""
        self._streaming.close()

    def text_piece(self, token: int) -> str:
        if token < 0 or token in self._silent_text or token >= self._tokenizer.vocab_size():
            return ""
        if self._tokenizer.is_control(token) or self._tokenizer.is_unknown(token):
            return ""  # <s>, </s>, <unk>: not words
        return str(self._tokenizer.id_to_piece(token)).replace("\u2581", " ")
