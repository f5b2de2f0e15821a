"""The gateway's settings: the `gateway:` section of serve_config.yaml (Serve ignores it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TurnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, gt=0, lt=1)
    release: float = Field(0.35, gt=0, lt=1)
    min_speech_ms: int = Field(64, ge=32, le=1000)
    # The end-of-turn wait: silence after speech before the agent answers.
    # It is part of every TTFAT; shorter cuts in on users who pause mid-sentence.
    end_silence_ms: int = Field(240, ge=64, le=3000)
    preroll_ms: int = Field(320, ge=0, le=2000)  # audio before speech start sent to ASR


class BargeInConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interrupt_after_ms: int = Field(800, ge=0, le=5000)
    backchannel_max_words: int = Field(3, ge=0, le=10)
    echo_margin_db: float = Field(12.0, ge=0, le=60)
    threshold_while_speaking: float = Field(0.7, gt=0, lt=1)


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # The Serve gRPC proxy; empty: this config's grpc_options.port on 127.0.0.1.
    stages: str = ""
    max_sessions: int = Field(8, ge=1)
    max_session_s: float = Field(1800, gt=0)
    idle_timeout_s: float = Field(300, gt=0)  # no voice from the user this long ends a session
    # Signalling requires `Authorization: Bearer <token>` when set.
    auth_token: str | None = None
    # ICE host addresses to offer; empty: every interface, loopback included.
    # ["127.0.0.1"] keeps calls on this machine.
    ice_addresses: list[str] = Field(default_factory=list)
    max_sdp_bytes: int = Field(64_000, ge=1000)
    voice: str = "af_heart"
    turn: TurnConfig = Field(default_factory=TurnConfig)
    barge_in: BargeInConfig = Field(default_factory=BargeInConfig)
