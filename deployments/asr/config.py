"""Arguments of the ASR application (`applications[asr].args` in serve_config.yaml)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AsrArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A name voxray prepares locally ("base", "tiny.en"), a CTranslate2 model
    # directory, or a faster-whisper model name/repo (production, with a hub).
    model: str = "base"
    # Where `voxray models prepare` puts model files; empty: VOXRAY_MODELS_DIR or <repo>/models.
    models_dir: str = ""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    device_index: int = 0
    compute_type: str = "int8"
    cpu_threads: int = Field(2, ge=1)
    # Decodes run concurrently on this many threads (GPU: >1 to batch sessions).
    decode_workers: int = Field(1, ge=1, le=16)
    # An ISO 639-1 code, or "auto": each decode detects the language from its audio
    # (multilingual models only) and the transcript says which it heard.
    language: str = Field("en", pattern=r"^(auto|[a-z]{2,3})$")
    # With "auto": the languages it may detect (empty: any of Whisper's 99). Naming
    # the few the callers speak keeps a robotic or accented English from being heard
    # as, say, Vietnamese.
    languages: list[str] = Field(default_factory=list)
    partial_beam_size: int = Field(1, ge=1, le=10)
    final_beam_size: int = Field(5, ge=1, le=10)
    # "trimmed": encoder sees the audio + window_pad_s (fast on CPU);
    # "padded": faster-whisper's usual 30 s window (Whisper's training setup).
    window: Literal["trimmed", "padded"] = "trimmed"
    window_pad_s: float = Field(1.0, ge=0.0, le=10.0)
    # Silence appended on end of utterance; helps Whisper finish the last word.
    flush_pad_s: float = Field(0.5, ge=0.0, le=2.0)
    # A partial is decoded after this much new voiced audio (if no decode is running).
    partial_interval_s: float = Field(0.4, ge=0.1, le=10.0)
    # After this much quiet following speech, decode at once: if the user has
    # finished, that decode is the final and end of utterance costs no decode.
    pause_decode_s: float = Field(0.1, ge=0.02, le=2.0)
    # Audio quieter than this (dBFS RMS) counts as quiet when the client gives
    # no speech_end_sample; the gateway's VAD gives one.
    quiet_dbfs: float = Field(-45.0, le=0.0)
    # Past this much open audio, sentences on which two partials agree are
    # committed and their audio dropped, bounding each decode's cost.
    commit_after_s: float = Field(6.0, ge=1.0, le=25.0)
    # Words must end this long before the newest audio to be committed.
    commit_margin_s: float = Field(1.0, ge=0.0, le=5.0)
    word_timestamps: bool = True
    no_speech_threshold: float = Field(0.6, ge=0.0, le=1.0)
    max_utterance_s: float = Field(30.0, gt=0)
    max_chunk_ms: int = Field(1000, ge=20, le=10_000)

    @model_validator(mode="after")
    def _check(self) -> AsrArgs:
        if self.device == "cpu" and self.compute_type in ("float16", "int8_float16", "bfloat16"):
            raise ValueError(f"compute_type {self.compute_type!r} needs device cuda")
        for code in self.languages:
            if not re.fullmatch(r"[a-z]{2,3}", code):
                raise ValueError(f"languages: {code!r} is not an ISO 639-1 code")
        if self.model.endswith(".en") and self.language not in ("en", "auto"):
            raise ValueError(f"language {self.language!r}: Whisper {self.model!r} knows "
                             "English only")
        return self
