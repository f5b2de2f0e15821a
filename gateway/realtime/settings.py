"""A Realtime API session's settings: `session.update` in (the GA shape, `type:
"realtime"` with `audio.input/output`, or the beta flat one), and the session object
that `session.created` / `session.updated` send back, in the client's shape.

Shapes as in the `openai` package's types (openai/types/realtime/): audio formats
`audio/pcm` (24 kHz), `audio/pcmu`, `audio/pcma` (8 kHz), beta `pcm16`,
`g711_ulaw`, `g711_alaw`; turn_detection `server_vad`, `semantic_vad` or null.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.config import TurnConfig
from voxray.codecs import AudioFormat

PCM24 = AudioFormat("pcm16", 24_000)
_GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}
_BETA_FORMATS = {"pcm16": "pcm16", "g711_ulaw": "pcmu", "g711_alaw": "pcma"}
# OpenAI's voices: not Kokoro's; a session asking for one gets the gateway's voice.
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer",
                           "verse", "marin", "cedar", "fable", "onyx", "nova"})
# semantic_vad's eagerness -> the longest silence a turn that sounds unfinished waits
EAGERNESS_MAX_SILENCE_MS = {"low": 4000, "medium": 2000, "auto": 2000, "high": 1000}


class BadSetting(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass
class Settings:
    input_format: AudioFormat = PCM24
    output_format: AudioFormat = PCM24
    voice: str = ""  # empty: the gateway's
    instructions: str = ""
    turn_detection: dict[str, Any] | None = field(
        default_factory=lambda: {"type": "server_vad"})
    temperature: float | None = None
    max_output_tokens: int | None = None  # None: "inf" (the gateway's own limit)
    tools: list[dict[str, Any]] = field(default_factory=list)  # the client's functions
    model: str = "voxray"
    text_only: bool = False  # output_modalities ["text"]: answers in text, not speech

    def turn_config(self, base: TurnConfig) -> TurnConfig:
        """The gateway's turn taking, as this session's turn_detection tunes it."""
        td = self.turn_detection or {}
        update: dict[str, Any] = {}
        if td.get("type") == "semantic_vad":
            update["max_silence_ms"] = EAGERNESS_MAX_SILENCE_MS[td.get("eagerness") or "auto"]
        elif td.get("type") == "server_vad":
            if td.get("silence_duration_ms") is not None:
                update["min_silence_ms"] = int(td["silence_duration_ms"])
            if td.get("prefix_padding_ms") is not None:
                update["preroll_ms"] = int(td["prefix_padding_ms"])
        merged = base.model_dump() | update
        if merged["min_silence_ms"] >= merged["max_silence_ms"]:
            merged["max_silence_ms"] = merged["min_silence_ms"] + 100
        return TurnConfig.model_validate(merged)


def _format(value: Any, param: str, beta: bool) -> AudioFormat:
    if beta or isinstance(value, str):
        codec = _BETA_FORMATS.get(value) if isinstance(value, str) else None
        if codec is None:
            raise BadSetting(param, f"{value!r}: one of {sorted(_BETA_FORMATS)}")
    else:
        if not isinstance(value, dict) or value.get("type") not in _GA_FORMATS:
            raise BadSetting(param, f"{value!r}: type is one of {sorted(_GA_FORMATS)}")
        codec = _GA_FORMATS[value["type"]]
        rate = value.get("rate", 24_000)
        if codec == "pcm16" and rate != 24_000:
            raise BadSetting(param, f"rate {rate!r}: audio/pcm is 24000 Hz")
    return PCM24 if codec == "pcm16" else AudioFormat(codec, 8000)  # type: ignore[arg-type]


def _turn_detection(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("server_vad", "semantic_vad"):
        raise BadSetting(param, f"{value!r}: type is server_vad or semantic_vad, or null")
    if value.get("eagerness") not in (None, *EAGERNESS_MAX_SILENCE_MS):
        raise BadSetting(param + ".eagerness", f"{value['eagerness']!r}")
    for key in ("silence_duration_ms", "prefix_padding_ms"):
        if value.get(key) is not None and not (isinstance(value[key], int)
                                               and 0 <= value[key] <= 10_000):
            raise BadSetting(f"{param}.{key}", f"{value[key]!r}: 0-10000 ms")
    return dict(value)


def _object(value: Any, param: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadSetting(param, f"{value!r}: an object")
    return value


def updated(current: Settings, session: Any, beta: bool) -> Settings:
    """`current` with a session.update's `session` applied (BadSetting names the key)."""
    if not isinstance(session, dict):
        raise BadSetting("session", "an object")
    new = replace(current)
    audio = _object(session.get("audio"), "session.audio")
    inp = _object(audio.get("input"), "session.audio.input")
    out = _object(audio.get("output"), "session.audio.output")
    if "input_audio_format" in session:
        new.input_format = _format(session["input_audio_format"],
                                   "session.input_audio_format", True)
    if "format" in inp:
        new.input_format = _format(inp["format"], "session.audio.input.format", False)
    if "output_audio_format" in session:
        new.output_format = _format(session["output_audio_format"],
                                    "session.output_audio_format", True)
    if "format" in out:
        new.output_format = _format(out["format"], "session.audio.output.format", False)
    for param, holder in (("session.turn_detection", session),
                          ("session.audio.input.turn_detection", inp)):
        if "turn_detection" in holder:
            new.turn_detection = _turn_detection(holder["turn_detection"], param)
    voice = out.get("voice", session.get("voice"))
    if voice is not None:
        if not isinstance(voice, str) or not voice:
            raise BadSetting("session.audio.output.voice", f"{voice!r}: a voice name")
        new.voice = "" if voice in OPENAI_VOICES else voice
    if "instructions" in session:
        if not isinstance(session["instructions"], str):
            raise BadSetting("session.instructions", "a string")
        new.instructions = session["instructions"]
    if "temperature" in session:
        t = session["temperature"]
        if not isinstance(t, int | float) or not 0 <= t <= 2:
            raise BadSetting("session.temperature", f"{t!r}: 0-2")
        new.temperature = float(t)
    for key in ("max_output_tokens", "max_response_output_tokens"):
        if key in session:
            n = session[key]
            if n == "inf" or n is None:
                new.max_output_tokens = None
            elif isinstance(n, int) and 1 <= n <= 4096:
                new.max_output_tokens = n
            else:
                raise BadSetting(f"session.{key}", f"{n!r}: 1-4096 or \"inf\"")
    if "output_modalities" in session:
        kinds = session["output_modalities"]
        if kinds not in (["audio"], ["text"]):
            raise BadSetting("session.output_modalities", f'{kinds!r}: ["audio"] or ["text"]')
        new.text_only = kinds == ["text"]
    if "modalities" in session:  # beta: ["text"], or ["audio", "text"]
        kinds = session["modalities"]
        if not isinstance(kinds, list) or not kinds or \
                not all(k in ("audio", "text") for k in kinds):
            raise BadSetting("session.modalities", f'{kinds!r}: ["text"] or ["audio", "text"]')
        new.text_only = "audio" not in kinds
    if "tools" in session:
        new.tools = _tools(session["tools"])
    if isinstance(session.get("model"), str):
        new.model = session["model"]
    return new


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise BadSetting("session.tools", "a list of function tools")
    out = []
    for i, t in enumerate(tools):
        param = f"session.tools[{i}]"
        if not isinstance(t, dict) or t.get("type", "function") != "function":
            raise BadSetting(param, "a function tool ({\"type\": \"function\", ...}); "
                                    "others are not supported")
        name, params = t.get("name"), t.get("parameters") or {"type": "object"}
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise BadSetting(f"{param}.name", f"{name!r}: 1-64 letters, digits, _ or -")
        if not isinstance(params, dict) or params.get("type") != "object":
            raise BadSetting(f"{param}.parameters", "an object JSON Schema")
        out.append({"type": "function", "name": name,
                    "description": str(t.get("description") or ""), "parameters": params})
    return out


def _format_out(fmt: AudioFormat, beta: bool) -> Any:
    if beta:
        return {"pcm16": "pcm16", "pcmu": "g711_ulaw", "pcma": "g711_alaw"}[fmt.codec]
    if fmt.codec == "pcm16":
        return {"type": "audio/pcm", "rate": fmt.rate}
    return {"type": f"audio/{fmt.codec}"}


def described(s: Settings, session_id: str, voice: str, beta: bool) -> dict[str, Any]:
    """The session object of session.created / session.updated."""
    tokens: int | str = s.max_output_tokens or "inf"
    if beta:
        return {"id": session_id, "object": "realtime.session", "model": s.model,
                "modalities": ["text"] if s.text_only else ["audio", "text"],
                "instructions": s.instructions,
                "voice": voice, "input_audio_format": _format_out(s.input_format, True),
                "output_audio_format": _format_out(s.output_format, True),
                "turn_detection": s.turn_detection, "tools": s.tools,
                "temperature": s.temperature if s.temperature is not None else 0.8,
                "max_response_output_tokens": tokens}
    return {"type": "realtime", "id": session_id, "object": "realtime.session",
            "model": s.model, "output_modalities": modalities(s),
            "instructions": s.instructions,
            "audio": {"input": {"format": _format_out(s.input_format, False),
                                "turn_detection": s.turn_detection},
                      "output": {"format": _format_out(s.output_format, False),
                                 "voice": voice}},
            "tools": s.tools, "tool_choice": "auto", "max_output_tokens": tokens}


def modalities(s: Settings) -> list[str]:
    """What a response is made of (GA's output_modalities)."""
    return ["text"] if s.text_only else ["audio"]
