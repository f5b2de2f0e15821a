"""The gateway's Prometheus metrics (served on its own /metrics).

Sessions compute nothing for them: `observe` watches the events a session
sends its client and records what they carry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway import events as ev

STAGES = ("end_of_turn", "asr_final", "llm_first_token", "tts_first_audio")
# event type -> turn outcome
OUTCOMES = {"agent_done": "completed", "interrupted": "interrupted",
            "agent_resumed": "backchannel"}

LATE_MS = (1, 2, 5, 10, 20, 50, 100, 250)
MS = (50, 100, 150, 200, 300, 400, 500, 600, 800, 1000, 1250, 1500, 2000, 3000, 5000, 10000)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttfat = Histogram("voxray_ttfat_ms", "End of user speech (last voiced frame) to the "
                               "first audible agent sample sent", buckets=MS, registry=r)
        self.stage = Histogram("voxray_turn_stage_ms", "Time to first result per stage",
                               ["stage"], buckets=MS, registry=r)
        self.barge_in_stop = Histogram("voxray_barge_in_stop_ms", "User speech start to agent "
                                       "audio paused", buckets=MS, registry=r)
        self.sessions = Gauge("voxray_sessions", "Open sessions", ["mode"], registry=r)
        self.refused = Counter("voxray_sessions_refused_total", "Sessions refused", ["reason"],
                               registry=r)
        self.ended = Counter("voxray_sessions_ended_total", "Sessions ended", ["reason"],
                             registry=r)
        self.turns = Counter("voxray_turns_total", "Agent turns by outcome", ["outcome"],
                             registry=r)
        self.speculation = Counter("voxray_speculation_total", "Answered turns by how the reply "
                                   "prepared during the pause fared (hit, miss, none)",
                                   ["outcome"], registry=r)
        self.wasted_tokens = Counter("voxray_speculation_wasted_llm_tokens_total",
                                     "LLM tokens of speculative replies thrown away", registry=r)
        self.wasted_audio = Counter("voxray_speculation_wasted_tts_seconds_total",
                                    "TTS audio of speculative replies thrown away", registry=r)
        self.turn_model = Histogram("voxray_turn_model_ms", "The end-of-turn audio model's "
                                    "compute per pause judged", buckets=MS, registry=r)
        self.frame_late = Histogram("voxray_frame_late_ms", "How late each outbound 20 ms "
                                    "audio frame went out against its schedule (pacing jitter)",
                                    buckets=LATE_MS, registry=r)
        self.pause_wait = Histogram("voxray_pause_wait_ms", "Silence the turn policy asked for "
                                    "before a pause ends the turn", buckets=MS, registry=r)

    def observe(self, event: ev.Event) -> None:
        if isinstance(event, ev.TurnMetrics):
            self.ttfat.observe(event.ttfat_ms)
            for stage in STAGES:
                self.stage.labels(stage).observe(getattr(event, f"{stage}_ms"))
            self.speculation.labels(event.speculation).inc()
            self.wasted_tokens.inc(event.wasted_llm_tokens)
            self.wasted_audio.inc(event.wasted_tts_s)
        elif isinstance(event, ev.PauseJudged):
            if event.model_ms > 0:
                self.turn_model.observe(event.model_ms)
            self.pause_wait.observe(event.wait_ms)
        elif event.type == "agent_paused" and isinstance(event, ev.Info):
            self.barge_in_stop.observe(float(event.detail["stop_ms"]))
        elif event.type == "error" and isinstance(event, ev.Info):
            self.turns.labels(f"failed_{event.detail.get('stage', 'unknown')}").inc()
        if event.type in OUTCOMES:
            self.turns.labels(OUTCOMES[event.type]).inc()
