"""The turn observer: timestamped session events -> the data channel's `turn_metrics`,
`pause_judged` and `agent_paused` (with the barge-in stop time).

It only watches. Each committed turn is matched with the progress of the
reply that answers it; when that reply's first audible sample goes out, the
turn's figures are sent (and the gateway's Prometheus metrics observe them
there). Speculative replies thrown away are charged to the turn they were
made for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import events as ev
from gateway.session.events import (
    AgentPaused,
    PauseJudged,
    ReplyDiscarded,
    ReplyProgress,
    SessionEvent,
    ToolsCalled,
    TurnCommitted,
)


@dataclass
class _Reply:
    started: float
    milestones: dict[str, float] = field(default_factory=dict)
    turn: TurnCommitted | None = None
    wasted_tokens: int = 0
    wasted_s: float = 0.0
    verdict: PauseJudged | None = None
    reported: bool = False


class TurnObserver:
    def __init__(self, send: Callable[[ev.Event], None]) -> None:
        self._send = send
        self._replies: dict[int, _Reply] = {}
        self._wasted_tokens = 0
        self._wasted_s = 0.0
        self._verdict: PauseJudged | None = None

    def __call__(self, event: SessionEvent) -> None:
        if isinstance(event, AgentPaused):
            self._send(ev.Info("agent_paused", "user speech over the agent",
                               {"stop_ms": round((event.at - event.speech_at) * 1000, 1)}))
        elif isinstance(event, PauseJudged):
            self._verdict = event
            self._send(ev.PauseJudged("pause_judged", event.p_finished, event.wait_ms,
                                      round(event.cost_ms, 1),
                                      {k: round(v, 3) for k, v in event.evidence.items()},
                                      event.words, round(event.words_ms, 1)))
        elif isinstance(event, ToolsCalled):
            self._send(ev.Info("tool_called", f"running {', '.join(event.names)}",
                               {"turn": event.reply, "tools": list(event.names)}))
        elif isinstance(event, ReplyDiscarded):
            self._wasted_tokens += event.llm_tokens
            self._wasted_s += event.tts_audio_s
            self._replies.pop(event.reply, None)
        elif isinstance(event, ReplyProgress):
            if event.stage == "started":
                self._replies[event.reply] = _Reply(event.at)
                for old in [r for r in self._replies if r < event.reply - 8]:
                    del self._replies[old]  # long gone
            r = self._replies.get(event.reply)
            if r is not None:
                r.milestones.setdefault(event.stage, event.at)
                self._maybe_report(event.reply, r)
        elif isinstance(event, TurnCommitted):
            r = self._replies.get(event.reply)
            if r is not None:
                r.turn, r.verdict = event, self._verdict
                r.wasted_tokens, r.wasted_s = self._wasted_tokens, self._wasted_s
                self._maybe_report(event.reply, r)
            self._wasted_tokens, self._wasted_s, self._verdict = 0, 0.0, None

    def _maybe_report(self, reply: int, r: _Reply) -> None:
        t, m = r.turn, r.milestones
        if t is None or r.reported or "first_audible" not in m:
            return
        r.reported = True
        token = m.get("first_token", r.started)
        audio = m.get("first_audio", token)
        ready = max(audio, t.final_at)  # audio in, and the turn ended: it may play
        base = t.last_voiced_at
        verdict = r.verdict
        self._send(ev.TurnMetrics(
            "turn_metrics", reply,
            ttfat_ms=(m["first_audible"] - base) * 1000,
            end_of_turn_ms=(t.decided_at - base) * 1000,
            asr_final_ms=(t.final_at - t.decided_at) * 1000,
            reply_started_at_ms=(r.started - base) * 1000,
            llm_first_token_ms=(token - r.started) * 1000,
            tts_first_audio_ms=(audio - token) * 1000,
            held_ms=max(0.0, t.final_at - audio) * 1000,
            playout_ms=(m["first_audible"] - ready) * 1000,
            speculation=t.speculation,
            wasted_llm_tokens=r.wasted_tokens,
            wasted_tts_s=round(r.wasted_s, 3),
            p_finished=round(verdict.p_finished, 3) if verdict else -1.0,
            joined=t.joined, language=t.language, voice=t.voice))
