"""One log line per session start and end, per turn and per error, for log tools.

Lines go to the `voxray.calls` logger at INFO with their fields in the record;
`configure` picks how they are written: `kv` (logfmt: `key=value`, values with
spaces quoted) or `json` (one object per line).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from gateway import events as ev

log = logging.getLogger("voxray.calls")
FORMATS = ("kv", "json")
_STAGES = ("end_of_turn_ms", "asr_final_ms", "llm_first_token_ms", "tts_first_audio_ms",
           "playout_ms")


def _logfmt(value: object) -> str:
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    if not text or any(c in text for c in ' ="\\\n'):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level":
                  record.levelname.lower(), "event": record.getMessage(),
                  **getattr(record, "fields", {})}
        return " ".join(f"{k}={_logfmt(v)}" for k, v in fields.items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": round(record.created, 3), "level": record.levelname.lower(),
                           "event": record.getMessage(), **getattr(record, "fields", {})})


def configure(fmt: str = "kv") -> None:
    """Write the call log to stderr in `fmt` (idempotent)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    for old in list(log.handlers):
        log.removeHandler(old)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _line(what: str, **fields: Any) -> None:
    log.info(what, extra={"fields": fields})


def session_started(session_id: str, mode: str, remote: str) -> None:
    _line("session_start", session=session_id, mode=mode, remote=remote)


def session_ended(session_id: str, mode: str, reason: str, started: float,
                  mic_lost: int | None = None, mic_late: int | None = None) -> None:
    """`mic_lost`, `mic_late`: the caller's audio packets that never came or came too late
    to use (WebRTC calls), a lossy network's mark on what the ASR heard."""
    packets = {} if mic_lost is None else {"mic_lost": mic_lost, "mic_late": mic_late or 0}
    _line("session_end", session=session_id, mode=mode, reason=reason,
          duration_s=round(time.monotonic() - started, 1), **packets)


def session_event(session_id: str, event: ev.Event) -> None:
    """The events worth a line: a turn's figures, an error."""
    if isinstance(event, ev.TurnMetrics):
        _line("turn", session=session_id, turn=event.turn, ttfat_ms=round(event.ttfat_ms),
              **{k: round(getattr(event, k)) for k in _STAGES},
              speculation=event.speculation, p_finished=round(event.p_finished, 2))
    elif event.type == "error" and isinstance(event, ev.Info):
        log.info("error", extra={"fields": {"session": session_id,
                                            "stage": event.detail.get("stage", ""),
                                            "message": event.message}})
