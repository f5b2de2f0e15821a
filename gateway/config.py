"""The gateway's settings: the `gateway:` section of serve_config.yaml (Serve ignores it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

BACKCHANNELS = frozenset({
    "uh-huh", "uh", "huh", "mm-hm", "mhm", "mm", "hmm", "um", "okay", "ok", "yeah", "yes",
    "yep", "right", "sure", "i", "see", "got", "it", "alright", "cool", "nice", "ah", "oh",
})


class TurnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, gt=0, lt=1)  # a VAD chunk is voiced at or above this
    release: float = Field(0.35, gt=0, lt=1)  # ...and, once speech began, down to this
    min_speech_ms: int = Field(64, ge=32, le=1000)  # voiced this long before speech starts
    # The end-of-turn wait: silence after speech before the agent answers.
    # It is part of every TTFAT; shorter cuts in on users who pause mid-sentence.
    end_silence_ms: int = Field(240, ge=64, le=3000)
    preroll_ms: int = Field(320, ge=0, le=2000)  # audio before speech start sent to ASR


class BargeInConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Speech over the agent that lasts this long is an interruption, whatever it says.
    interrupt_after_ms: int = Field(800, ge=0, le=5000)
    # Shorter speech is a backchannel if it has at most this many words, all backchannel words.
    backchannel_max_words: int = Field(3, ge=0, le=10)
    backchannel_words: frozenset[str] = BACKCHANNELS
    # While the agent is audible, mic audio quieter than the agent's output minus this many
    # dB is taken as its echo and cannot start a barge-in (no reliance on the browser's
    # echo canceller alone); and the VAD must be at least threshold_while_speaking sure.
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
    # Duplex mode: how long signalling waits for a free Moshi slot before a 503.
    duplex_connect_s: float = Field(10.0, gt=0, le=120)
    turn: TurnConfig = Field(default_factory=TurnConfig)
    barge_in: BargeInConfig = Field(default_factory=BargeInConfig)
