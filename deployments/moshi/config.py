"""Arguments of the Moshi application (`applications[moshi].args` in serve_config.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MoshiArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A Hugging Face repo (kyutai/moshiko-pytorch-bf16; needs hub access) or a local
    # folder; empty: <VOXRAY_MODELS_DIR or <repo>/models>/moshi-tiny, the randomly
    # initialised test model made by `voxray models prepare` (babbles noise).
    model: str = ""
    revision: str | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    device_index: int = Field(0, ge=0)
    # The LM's weights and activations; Mimi runs in float32.
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    # Conversations stepped together in one batch per replica. The deployment's
    # max_ongoing_requests is set to this: a replica never holds more streams.
    slots: int = Field(8, ge=1, le=256)
    # Input frames waiting per stream before the oldest are dropped (jitter
    # buffer: 3 absorbs 240 ms of bursty arrival; each one adds 80 ms of lag).
    max_buffered_frames: int = Field(3, ge=1, le=50)
    # Sampling, shared by all slots of a replica (one batched sample per tick).
    greedy: bool = False
    temperature: float = Field(0.8, gt=0, le=2)
    text_temperature: float = Field(0.7, gt=0, le=2)
    top_k: int = Field(250, ge=1)
    top_k_text: int = Field(25, ge=1)
    seed: int | None = None
    # Kyutai's lazy torch.compile of the LM's hot paths: worth it on GPUs; on CPU
    # the first step would spend ~5-15 s compiling.
    torch_compile: bool = True
    # Kyutai's CUDA graphs of the LM's step (GPU only): one graph launch per tick
    # instead of hundreds of kernels.
    cuda_graphs: bool = True
    torch_threads: int | None = Field(None, ge=1, le=64)
    # Steps run at start-up so the first caller does not pay for lazy initialisation.
    warmup_steps: int = Field(4, ge=0, le=100)
    # A stream whose client stops reading for this long is ended (its slot freed).
    max_unread_s: float = Field(5.0, gt=0, le=60)

    def fixed_deployment_options(self) -> dict[str, dict[str, int]]:
        """Options the deployment takes from these args; a config may not set them otherwise."""
        return {"MoshiDeployment": {"max_ongoing_requests": self.slots}}
