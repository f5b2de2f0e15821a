"""Load a Moshi checkpoint (Mimi codec, LM, text tokenizer) with Kyutai's own loaders.

`model` is a Hugging Face repo (`kyutai/moshiko-pytorch-bf16`: downloads on
first use) or a local folder laid out like one: `config.json` naming the files
(`moshi_name`, `mimi_name`, `tokenizer_name`, optional `mimi_config_name`),
or, without a config.json, the 7B's default file names. Both go through
`moshi.models.loaders.CheckpointInfo`, so the tiny test checkpoint made by
`make_tiny_checkpoint` loads exactly like the real one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from moshi.models import LMModel, MimiModel, loaders
from sentencepiece import SentencePieceProcessor

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class MoshiModels:
    mimi: MimiModel
    lm: LMModel
    tokenizer: SentencePieceProcessor
    lm_gen_config: dict[str, Any]


def checkpoint_info(model: str, revision: str | None = None) -> loaders.CheckpointInfo:
    folder = Path(model)
    if not folder.is_dir():
        return loaders.CheckpointInfo.from_hf_repo(model, revision=revision)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    mimi_config = config.get("mimi_config_name")
    # Paths, not names: hf_get hands Paths back untouched, so nothing is downloaded.
    return loaders.CheckpointInfo.from_hf_repo(
        str(folder),
        moshi_weights=folder / config.get("moshi_name", loaders.MOSHI_NAME),
        mimi_weights=folder / config.get("mimi_name", loaders.MIMI_NAME),
        tokenizer=folder / config.get("tokenizer_name", loaders.TEXT_TOKENIZER_NAME),
        config_path=config_path if config_path.is_file() else _legacy_config(folder),
        mimi_config_path=folder / mimi_config if mimi_config else None,
    )


def _legacy_config(folder: Path) -> Path:
    """A config.json for a local copy of a repo that has none (moshiko): the 7B's."""
    path = folder / ".voxray-config.json"
    if not path.is_file():
        path.write_text(json.dumps(loaders._lm_kwargs))
    return path


def load(model: str, device: str, dtype: str, revision: str | None = None) -> MoshiModels:
    info = checkpoint_info(model, revision)
    mimi = info.get_mimi(device=device)
    lm = info.get_moshi(device=device, dtype=DTYPES[dtype])
    return MoshiModels(mimi, lm, info.get_text_tokenizer(), dict(info.lm_gen_config))


# A scaled-down Moshi: same classes and codec framing (24 kHz, 1920-sample
# frames, 8 codebooks per stream), small widths and depths.
TINY_MIMI: dict[str, Any] = {
    "sample_rate": 24000, "channels": 1, "frame_rate": 12.5,
    "seanet": {**loaders._seanet_kwargs, "dimension": 64, "n_filters": 4},
    "quantizer": {**loaders._quantizer_kwargs, "dimension": 16, "n_q": 8, "bins": 64,
                  "input_dimension": 64, "output_dimension": 64},
    "transformer": {**loaders._transformer_kwargs, "d_model": 64, "num_heads": 2, "num_layers": 1,
                    "dim_feedforward": 128, "input_dimension": 64, "output_dimensions": [64]},
}
TINY_LM: dict[str, Any] = {
    **loaders._lm_kwargs, "dim": 64, "text_card": 48, "card": 64, "num_heads": 2,
    "num_layers": 2, "hidden_scale": 2, "context": 250, "depformer_dim": 32,
    "depformer_dim_feedforward": 64, "depformer_num_heads": 2, "depformer_num_layers": 1,
}
_CORPUS = """hello there how are you doing today
i am fine thank you and you
what time does the museum open on sunday
the weather is nice so let us go for a walk
can you tell me a short story about a cat
sure the cat sat on the mat and looked at the moon
"""


def make_tiny_checkpoint(dst: Path, seed: int = 0) -> Path:
    """Write a randomly initialised tiny Moshi checkpoint folder (~2 MB, a few seconds)."""
    from safetensors.torch import save_file
    from sentencepiece import SentencePieceTrainer

    if (dst / "config.json").is_file():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(seed)
    mimi = loaders.get_mimi(None, TINY_MIMI, device="cpu")
    lm = loaders.get_moshi_lm(None, lm_kwargs=TINY_LM, device="cpu", dtype=torch.float32)
    for module, name in ((mimi, "mimi.safetensors"), (lm, "model.safetensors")):
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp / name))
    (tmp / "corpus.txt").write_text(_CORPUS * 20)
    # Moshi's ids: 0 unk, 3 text padding, the rest pieces; as in Kyutai's tokenizer.
    SentencePieceTrainer.train(
        input=str(tmp / "corpus.txt"), model_prefix=str(tmp / "tokenizer"),
        vocab_size=TINY_LM["text_card"],
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, model_type="unigram", minloglevel=2)
    (tmp / "corpus.txt").unlink()
    (tmp / "tokenizer.vocab").unlink()
    (tmp / "mimi_config.json").write_text(json.dumps(TINY_MIMI, indent=1))
    config = {**TINY_LM, "moshi_name": "model.safetensors", "mimi_name": "mimi.safetensors",
              "tokenizer_name": "tokenizer.model", "mimi_config_name": "mimi_config.json"}
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


def random_models(size: str, device: str, dtype: str, seed: int = 0) -> MoshiModels:
    """Kyutai's Moshi (`size="full"`: the 7B LM and Mimi with their default configs) or
    the tiny test shapes, with random weights made on `device`: the same compute and
    memory as a checkpoint of that size, nothing to download. No tokenizer (the
    benchmark reads no text)."""
    torch.manual_seed(seed)
    mimi_config, lm_kwargs = (None, loaders._lm_kwargs) if size == "full" else (TINY_MIMI, TINY_LM)
    mimi = loaders.get_mimi(None, mimi_config, device=device)
    lm = loaders.get_moshi_lm(None, lm_kwargs=lm_kwargs, device=device, dtype=DTYPES[dtype])
    return MoshiModels(mimi.eval(), lm.eval(), SentencePieceProcessor(), {})
