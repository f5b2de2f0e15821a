"""Arguments of the TTS application (`applications[tts].args` in serve_config.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TtsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Folder with kokoro-v1.0.int8.onnx (or `model_file`) and voices-v1.0.npz;
    # empty: <VOXRAY_MODELS_DIR or <repo>/models>/kokoro-v1.0, made by `voxray models prepare`.
    model_dir: str = ""
    model_file: str = "kokoro-v1.0.int8.onnx"
    voices_file: str = "voices-v1.0.npz"
    # onnxruntime execution provider: cpu, or cuda (onnxruntime-gpu on the GPU nodes).
    device: Literal["cpu", "cuda"] = "cpu"
    device_index: int = 0
    intra_op_threads: int = Field(2, ge=1, le=64)
    # onnxruntime's intra-op threads spin while they wait for work between operators: quick on
    # cores of their own, CPU taken from the replicas beside them on a shared box.
    intra_op_spinning: bool = True
    # Syntheses run concurrently on this many threads (one session, shared).
    synth_workers: int = Field(1, ge=1, le=16)
    # Units of one stream synthesised at once (with synth_workers >= this): the next
    # unit is made while the one before it is; 1 makes them one after another.
    units_ahead: int = Field(2, ge=1, le=8)
    voice: str = "af_heart"
    speed: float = Field(1.0, ge=0.5, le=2.0)
    language: str = "en-us"
    # The first unit is cut at the first clause mark or after this many words,
    # so the first audio comes fast; later units are whole sentences.
    first_unit_max_words: int = Field(2, ge=1, le=20)
    max_unit_chars: int = Field(300, ge=20, le=2000)
    # The first unit's audio waits up to this long for the unit after it to be predicted
    # ready before the first has played out (from the times of this replica's own recent
    # runs), so a short first unit leaves no hole after it; 0 sends it at once.
    first_unit_hold_ms: int = Field(0, ge=0, le=5000)
    # onnxruntime gives back the memory a run took once it ends (its CPU arena shrinks), so a
    # replica stays near its idle size instead of keeping what its largest runs needed
    # (a 30-minute soak's replica: 330-590 MB and no growth, against 1.2 GB and growing).
    return_memory: bool = True
    # Audio of units of up to `unit_cache_max_words` words is kept (per voice, speed and
    # language; least recently used out first), so a reply that opens as an earlier one
    # did ("Sure,", "I") has its first audio without a synthesis; 0 turns it off.
    unit_cache_mb: float = Field(16, ge=0, le=4096)
    unit_cache_max_words: int = Field(2, ge=1, le=8)
    # Units made for the cache in the default voice while the replica is idle after it
    # starts: the openers a reply's first unit most often is.
    unit_cache_warm: list[str] = Field(default_factory=list, max_length=1000)
    # Texts longer than this are refused; shorter ones are spoken unit by unit.
    max_text_chars: int = Field(50_000, ge=100)
    # Silence sent after a unit that ends a sentence (. ! ? ...) or a clause (, ; : -), when
    # another unit follows: each unit is synthesised alone and trimmed, which drops the pause
    # Kokoro makes at a full stop inside one text. kokoro-onnx's own defaults when it joins
    # pieces; scaled by 1/speed.
    sentence_pause_ms: int = Field(250, ge=0, le=2000)
    clause_pause_ms: int = Field(100, ge=0, le=2000)
    # Audio of a unit is sent in messages of at most this length.
    max_message_ms: int = Field(500, ge=20, le=5000)
