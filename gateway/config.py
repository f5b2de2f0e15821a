"""The gateway's settings: the `gateway:` section of serve_config.yaml (Serve ignores it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from voxray.config import ServeConfig

BACKCHANNELS = frozenset({
    "uh-huh", "uh", "huh", "mm-hm", "mhm", "mm", "hmm", "um", "okay", "ok", "yeah", "yes",
    "yep", "right", "sure", "i", "see", "got", "it", "alright", "cool", "nice", "ah", "oh",
})


EvidenceKind = Literal["audio", "words", "llm"]
DEFAULT_EVIDENCE: tuple[EvidenceKind, ...] = ("audio", "words", "llm")


class TurnConfig(BaseModel):
    """When the user's turn ends: VAD, then the turn policy (gateway/session/turn_policy.py)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, gt=0, lt=1)  # a VAD chunk is voiced at or above this
    release: float = Field(0.35, gt=0, lt=1)  # ...and, once speech began, down to this
    min_speech_ms: int = Field(64, ge=32, le=1000)  # voiced this long before speech starts
    preroll_ms: int = Field(320, ge=0, le=2000)  # audio before speech start sent to ASR
    # After this much silence the pause is judged (and a speculative reply starts).
    min_silence_ms: int = Field(200, ge=64, le=3000)
    # However unfinished the user sounds, the turn ends after this much silence.
    max_silence_ms: int = Field(2000, ge=100, le=10_000)
    # What the judgement weighs: "audio" (the Smart Turn model on the turn's audio),
    # "words" (the ASR's pause decode: a trailing "and", "to", "um" ...), "llm" (the
    # LLM app's probability that the user's message ends where the words stop).
    evidence: list[EvidenceKind] = Field(default_factory=lambda: list(DEFAULT_EVIDENCE))
    # Weights of each kind of evidence in the log-odds sum.
    audio_weight: float = Field(0.5, ge=0, le=5)
    words_weight: float = Field(1.0, ge=0, le=5)
    llm_weight: float = Field(1.0, ge=0, le=5)
    # Smart Turn ONNX file; empty: the one `voxray models prepare` extracts.
    turn_model: str = ""
    turn_model_threads: int = Field(1, ge=1, le=16)
    # Niceness of the turn model's thread. On a box shared with the stage replicas
    # (Ray runs them at 15) its verdict can wait; the reply being made cannot.
    turn_model_nice: int = Field(19, ge=0, le=19)
    # After min_silence_ms, how long to wait for the LLM's verdict before judging without
    # it. The pause decode's words are waited for up to max_silence_ms (they are what the
    # reply answers); without "words" in `evidence`, this long.
    evidence_wait_ms: int = Field(800, ge=0, le=3000)
    # Prepare the answer while the pause is judged: "llm" starts the LLM on the pause
    # decode's words, "llm+tts" also synthesizes; the audio is held until the turn ends.
    speculative: Literal["off", "llm", "llm+tts"] = "llm+tts"
    # A user who goes on speaking before any whole word of the agent's reply was heard
    # is finishing the previous turn: join the words to it rather than start a new one.
    join_continuations: bool = True

    @model_validator(mode="after")
    def _check(self) -> TurnConfig:
        if self.release >= self.threshold:
            raise ValueError(f"release ({self.release}) must be below threshold "
                             f"({self.threshold})")
        if self.min_silence_ms >= self.max_silence_ms:
            raise ValueError(f"min_silence_ms ({self.min_silence_ms}) must be below "
                             f"max_silence_ms ({self.max_silence_ms})")
        if len(set(self.evidence)) != len(self.evidence):
            raise ValueError(f"evidence lists a kind twice: {self.evidence}")
        return self


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


class RetryConfig(BaseModel):
    """How a failed stage stream is replaced: up to `attempts` new streams, waiting
    `backoff_ms` before the first and doubling up to `max_backoff_ms`, none after
    `deadline_s` from the first failure (long enough for Serve to start a replica)."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(10, ge=0, le=50)
    backoff_ms: int = Field(250, ge=0, le=10_000)
    max_backoff_ms: int = Field(4000, ge=0, le=60_000)
    deadline_s: float = Field(60.0, gt=0, le=600)

    def wait_s(self, attempt: int) -> float:
        """Before the `attempt`-th new stream (from 1)."""
        return min(self.backoff_ms * 2 ** (attempt - 1), self.max_backoff_ms) / 1000


class ToolConfig(BaseModel):
    """A function the agent may call: the LLM decides when; the gateway runs it and the
    LLM answers from its result. Give exactly one of `python` and `http`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    # JSON Schema of the arguments (an object schema).
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}})
    # "package.module:function", called with the arguments as keywords (an async
    # function is awaited, a plain one runs in a thread); its return value is the result.
    python: str = Field("", pattern=r"^$|^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    # An http(s) URL, POSTed the arguments as JSON; the response body is the result.
    http: str = Field("", pattern=r"^$|^https?://")
    timeout_s: float = Field(10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _check(self) -> ToolConfig:
        if bool(self.python) == bool(self.http):
            raise ValueError(f"tool {self.name!r}: give exactly one of python and http")
        if self.parameters.get("type") != "object":
            raise ValueError(f"tool {self.name!r}: parameters must be an object schema "
                             '({"type": "object", ...})')
        return self


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # The Serve gRPC proxy; empty: this config's grpc_options.port on 127.0.0.1.
    stages: str = ""
    max_sessions: int = Field(8, ge=1)
    # Gateways side by side (gateway/peers.py): several processes share `port`
    # (reuse_port), each also listens on private_host:private_port, and `peers` are the
    # others' private URLs. A full one passes an offer to a peer with room.
    reuse_port: bool = False
    private_host: str = "127.0.0.1"
    private_port: int | None = Field(None, ge=1, le=65535)
    peers: list[str] = Field(default_factory=list)
    peer_poll_s: float = Field(1.0, gt=0, le=60)
    # A call may last as long as it likes (empty: no cap); the idle timeout still ends
    # one nobody speaks in.
    max_session_s: float | None = Field(None, gt=0)
    idle_timeout_s: float = Field(300, gt=0)  # no voice from the user this long ends a session
    # An answered offer whose media (ICE, DTLS) is not up this long after it ends.
    connect_timeout_s: float = Field(20, gt=0, le=300)
    # Signalling requires `Authorization: Bearer <token>` when set.
    auth_token: str | None = None
    # New sessions (WHIP offers, Realtime and Twilio sockets) one client address may
    # open per minute: one client cannot take every slot.
    offers_per_minute: int = Field(30, ge=1, le=10_000)
    # ICE host addresses to offer; empty: every interface, loopback included.
    # ["127.0.0.1"] keeps calls on this machine.
    ice_addresses: list[str] = Field(default_factory=list)
    max_sdp_bytes: int = Field(64_000, ge=1000)
    # The largest WebSocket message (Twilio, the Realtime API) taken; a larger one
    # closes that socket with 1009 (about 20 s of 24 kHz PCM16 audio in base64).
    max_message_bytes: int = Field(1 << 20, ge=4096, le=64 << 20)
    # The caller's audio is decoded as each packet arrives; a packet after a missing one
    # waits until this many have come after the gap (20 ms each), then the missing one is
    # given up (aiortc's own buffer holds 4, and about 15 once a packet is lost).
    mic_reorder_packets: int = Field(1, ge=0, le=8)
    voice: str = "af_heart"
    # The voice that answers in each language the ASR hears (with its `language: auto`);
    # English and any language not here get `voice`, and an event says so.
    voices: dict[str, str] = Field(default_factory=lambda: {
        "es": "ef_dora", "fr": "ff_siwis", "it": "if_sara", "pt": "pf_dora",
        "hi": "hf_alpha", "ja": "jf_alpha", "zh": "zf_xiaobei"})
    # The conversation the LLM is sent: the newest whole turns within this many
    # characters (the LLM app fits them into its context and adds its system prompt),
    # so a call of hours costs each turn the same.
    history_max_chars: int = Field(16_000, ge=200)
    # LLM tokens per spoken reply; empty: the LLM app's own sampling.max_tokens.
    reply_max_tokens: int | None = Field(None, ge=1, le=4096)
    # Ask the LLM for this many tokens first, and for the rest once the first unit's
    # audio is made, so the LLM leaves the cores to that unit (a box where the LLM and
    # TTS share CPUs). 0: one call.
    reply_first_tokens: int = Field(0, ge=0, le=256)
    # The call log (one line per session start and end, turn, error): logfmt or JSON.
    log_format: Literal["kv", "json"] = "kv"
    # Duplex mode: how long signalling waits for a free Moshi slot before a 503.
    duplex_connect_s: float = Field(10.0, gt=0, le=120)
    stage_retry: RetryConfig = Field(default_factory=RetryConfig)
    # Functions the agent may call (the LLM app needs its tool_parser set).
    tools: list[ToolConfig] = Field(default_factory=list)
    # Said when a reply calls a tool before it has said anything (empty: nothing).
    tool_filler: str = ""
    # Tool calls one reply may make in a row before it answers with what it has.
    max_tool_rounds: int = Field(3, ge=1, le=10)
    turn: TurnConfig = Field(default_factory=TurnConfig)
    barge_in: BargeInConfig = Field(default_factory=BargeInConfig)


    @model_validator(mode="after")
    def _unique_tools(self) -> GatewayConfig:
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tools: a name is given twice: {names}")
        return self


def gateway_config(config: ServeConfig) -> GatewayConfig:
    """The `gateway:` section of a loaded config, validated at load."""
    section = config.section("gateway")
    assert isinstance(section, GatewayConfig)
    return section


def local_gateway_config(**settings: Any) -> GatewayConfig:
    """The CPU profile's gateway settings on a free loopback port, with `settings` on top
    (the gateway tests and benches run what `voxray up` runs)."""
    from voxray.config import load_config, resolve_profiles
    from voxray.runtime import free_port

    base = gateway_config(load_config(profiles=resolve_profiles(None))).model_dump()
    base |= {"host": "127.0.0.1", "port": free_port(), "ice_addresses": ["127.0.0.1"]}
    return GatewayConfig.model_validate(base | settings)
