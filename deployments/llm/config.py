"""Arguments of the LLM application (`applications[llm].args` in serve_config.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from voxray.config import PlacementStrategy

LLM_DEPLOYMENT = "LlmDeployment"


class SamplingDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1)  # -1: off
    repetition_penalty: float = Field(1.0, gt=0.0, le=2.0)
    max_tokens: int = Field(200, ge=1)


class LlmArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A Hugging Face model name (GPU nodes with hub access) or a local folder;
    # empty: <VOXRAY_MODELS_DIR or <repo>/models>/smollm2-135m-instruct,
    # made by `voxray models prepare`.
    model: str = ""
    # The name clients see (OpenAI `model` field).
    served_model_name: str = "voxray-llm"
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    max_model_len: int = Field(2048, ge=64)
    tensor_parallel_size: int = Field(1, ge=1, le=8)
    # cuda, with tensor_parallel_size (times engine_kwargs' pipeline_parallel_size) over 1:
    # how the replica's placement group of one bundle per GPU is laid out. STRICT_PACK: all
    # on one node (tensor parallelism over NVLink, not the network); PACK lets a group
    # that fits nowhere whole span nodes, as pipeline stages may.
    placement_strategy: PlacementStrategy = "STRICT_PACK"
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=0.99)  # cuda only
    kv_cache_gib: int = Field(1, ge=1, le=512)  # cpu only (VLLM_CPU_KVCACHE_SPACE)
    # cpu only: run the engine at this niceness. The LLM outpaces speech many times
    # over, so on a shared CPU it should yield to ASR and TTS, whose delays users hear.
    cpu_nice: int = Field(0, ge=0, le=19)
    enable_prefix_caching: bool = True
    # KV cache block in tokens (default: vLLM's, 16 on GPU, 128 on CPU). The
    # prefix cache hits whole blocks only, so smaller blocks leave less of a
    # conversation's history to recompute each turn.
    block_size: int | None = Field(None, ge=16, le=256)
    # CUDA graphs shorten decode steps on GPU; eager mode starts faster (CPU).
    enforce_eager: bool = True
    max_num_seqs: int = Field(64, ge=1, le=1024)
    # Any other vLLM engine argument (as ray.serve.llm's engine_kwargs), e.g.
    # {quantization: fp8, kv_cache_dtype: fp8}; they win over the fields above.
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    system_prompt: str = (
        "You are a friendly voice assistant. Your answers are spoken aloud, so keep them "
        "short and conversational: one to three sentences, no lists, no markdown."
    )
    # vLLM's tool-call parser for the model's way of writing calls ("hermes" for Qwen2.5
    # and Hermes models, "llama3_json", "mistral", "pythonic" ...). Empty: a request that
    # offers tools is refused (the model's calls could not be read).
    tool_parser: str = ""
    # A client's own system message replaces system_prompt when this is true.
    allow_client_system_prompt: bool = True
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    # A request may lower max_tokens but not go past this.
    max_tokens_limit: int = Field(1024, ge=1)
    max_messages: int = Field(512, ge=1)
    max_message_chars: int = Field(32_000, ge=1)
    max_stop_strings: int = Field(8, ge=0)

    @property
    def world_size(self) -> int:
        """GPUs one replica's engine runs on."""
        return self.tensor_parallel_size * int(self.engine_kwargs.get("pipeline_parallel_size", 1))

    @property
    def uses_gpu_group(self) -> bool:
        return self.device == "cuda" and self.world_size > 1

    def derived_deployment_options(
            self, given: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Deployment options these args imply, for the ones the config leaves unset.

        A replica whose engine spans GPUs gets them as a placement group, as
        ray.serve.llm does: vLLM's Ray executor takes the replica's group and puts one
        worker on each GPU bundle; the replica itself (bundle 0) holds no GPU."""
        if not self.uses_gpu_group:
            return {}
        actor = dict(given.get(LLM_DEPLOYMENT, {}).get("ray_actor_options") or {})
        if actor.get("num_gpus"):
            raise ValueError(
                f"deployments[{LLM_DEPLOYMENT}].ray_actor_options.num_gpus: must be 0 or unset "
                f"when the engine spans {self.world_size} GPUs (tensor_parallel_size "
                f"{self.tensor_parallel_size}): its workers take them from the replica's "
                f"placement group, one bundle per GPU, not {actor['num_gpus']}")
        gpu: dict[str, float] = {"GPU": 1.0}
        if actor.get("accelerator_type"):
            gpu[f"accelerator_type:{actor['accelerator_type']}"] = 0.001
        first = gpu | {"CPU": float(actor.get("num_cpus", 1))} | dict(actor.get("resources") or {})
        if actor.get("memory"):
            first["memory"] = float(actor["memory"])
        return {LLM_DEPLOYMENT: {
            "placement_group_bundles": [first] + [dict(gpu) for _ in range(self.world_size - 1)],
            "placement_group_strategy": self.placement_strategy}}

    @model_validator(mode="after")
    def _limits_fit(self) -> LlmArgs:
        backend = self.engine_kwargs.get("distributed_executor_backend", "ray")
        if self.uses_gpu_group and backend != "ray":
            raise ValueError(f"engine_kwargs.distributed_executor_backend must be 'ray' (or "
                             f"unset) for an engine over {self.world_size} GPUs, whose "
                             f"workers go on the replica's placement group, not {backend!r}")
        if self.sampling.max_tokens > self.max_tokens_limit:
            raise ValueError(f"sampling.max_tokens ({self.sampling.max_tokens}) exceeds "
                             f"max_tokens_limit ({self.max_tokens_limit})")
        if self.max_tokens_limit >= self.max_model_len:
            raise ValueError(f"max_tokens_limit ({self.max_tokens_limit}) leaves no room for a "
                             f"prompt in max_model_len ({self.max_model_len})")
        return self
