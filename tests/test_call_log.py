"""The gateway's call log: one parseable line per session start/end, turn and error."""

from __future__ import annotations

import io
import json
import logging
import shlex
from collections.abc import Iterator

import pytest

from gateway import call_log
from gateway import events as ev


@pytest.fixture(autouse=True)
def restore_logger() -> Iterator[None]:
    log = call_log.log
    saved = (list(log.handlers), log.propagate, log.level)
    yield
    log.handlers[:], log.propagate, log.level = saved[0], saved[1], saved[2]


def lines(fmt: str) -> list[str]:
    out = io.StringIO()
    call_log.configure(fmt)
    handler = call_log.log.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    call_log.session_started("s1", "pipeline", "127.0.0.1")
    call_log.session_event("s1", ev.TurnMetrics("turn_metrics", turn=1, ttfat_ms=812.4,
                                                asr_final_ms=70.2, speculation="hit"))
    call_log.session_event("s1", ev.AgentText("agent_text", 1, "not logged"))
    call_log.session_event("s1", ev.error("tts", 'UNAVAILABLE: replica "tts#1" died'))
    call_log.session_ended("s1", "pipeline", "ended by the client", 0.0, mic_lost=3, mic_late=1)
    return out.getvalue().splitlines()


def test_key_value_lines_parse_back() -> None:
    got = [dict(kv.split("=", 1) for kv in shlex.split(line)) for line in lines("kv")]
    assert [g["event"] for g in got] == ["session_start", "turn", "error", "session_end"]
    start, turn, error, end = got
    assert start["session"] == "s1" and start["remote"] == "127.0.0.1" and start["level"] == "info"
    assert turn["ttfat_ms"] == "812" and turn["asr_final_ms"] == "70"
    assert turn["speculation"] == "hit"
    assert error["level"] == "info" and error["stage"] == "tts"
    assert error["message"] == 'UNAVAILABLE: replica "tts#1" died'
    assert end["reason"] == "ended by the client" and float(end["duration_s"]) > 0
    assert (end["mic_lost"], end["mic_late"]) == ("3", "1")


def test_json_lines() -> None:
    got = [json.loads(line) for line in lines("json")]
    assert [g["event"] for g in got] == ["session_start", "turn", "error", "session_end"]
    assert got[1]["ttfat_ms"] == 812 and got[1]["turn"] == 1 and got[0]["mode"] == "pipeline"


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="kv, json"):
        call_log.configure("xml")
