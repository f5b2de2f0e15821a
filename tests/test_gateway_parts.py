"""The gateway's parts without Ray: real Silero VAD on real speech, turn and barge-in
decisions, the agent track's pacing and what-was-heard accounting."""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import generate_latest

from gateway.agent_track import FRAME, RATE, AgentAudioTrack
from gateway.config import BargeInConfig, TurnConfig
from gateway.metrics import GatewayMetrics
from gateway.session.barge_in import is_backchannel, may_be_user
from gateway.session.events import PauseStarted, SpeechStarted, TurnEnded
from gateway.session.turn_taker import QUIET_AGENT, AgentLevel, TurnTaker
from gateway.vad import CHUNK, SileroVad
from loadtest.bench_gateway import late_buckets, quantile
from voxray.audio import read_audio
from voxray.clients.asr_cli import last_voiced_sample

SPEECH = "tests/data/speech"


def run_turns(pcm: np.ndarray, params: TurnConfig | None = None,
              agent: AgentLevel = QUIET_AGENT) -> list[object]:
    """Turn events, each pause judged "finished" at once (so a pause ends the turn)."""
    turns = TurnTaker(params or TurnConfig(), BargeInConfig(), SileroVad())
    out: list[object] = []
    for start in range(0, len(pcm) - CHUNK + 1, CHUNK):
        for e in turns.feed(pcm[start:start + CHUNK], start, -20.0, agent):
            out.append(e)
            if isinstance(e, PauseStarted):
                out += turns.judge(0)
    return [e for e in out if not isinstance(e, PauseStarted)]


def test_vad_turns_on_real_speech() -> None:
    speech = read_audio(f"{SPEECH}/s02.wav", 16000)
    silence = np.zeros(16000, np.int16)
    pcm = np.concatenate([silence, speech, silence])
    events = run_turns(pcm)
    assert [type(e) for e in events] == [SpeechStarted, TurnEnded], events
    start, end = events
    assert isinstance(start, SpeechStarted) and isinstance(end, TurnEnded)
    loud = np.nonzero(np.abs(pcm) > 500)[0]
    assert abs(start.start_sample - loud[0]) < 0.15 * 16000
    # the VAD's end of speech is within 100 ms of where the energy says it is
    assert abs(end.last_voiced_sample - last_voiced_sample(pcm)) < 0.1 * 16000
    assert run_turns(silence) == []
    noise = (np.random.default_rng(0).normal(0, 300, 32000)).astype(np.int16)
    assert run_turns(noise) == []  # steady noise is not speech


def trim(pcm: np.ndarray) -> np.ndarray:
    loud = np.nonzero(np.abs(pcm) > 300)[0]
    return pcm[loud[0]:loud[-1] + 1]


def test_two_sentences_with_a_short_pause_are_one_turn() -> None:
    a, b = (trim(read_audio(f"{SPEECH}/{n}.wav", 16000)) for n in ("s11", "s19"))
    pause = np.zeros(int(0.12 * 16000), np.int16)
    pcm = np.concatenate([np.zeros(8000, np.int16), a, pause, b, np.zeros(16000, np.int16)])
    assert len(run_turns(pcm)) == 2  # one start, one end: 120 ms is not a pause
    assert len(run_turns(pcm, TurnConfig(min_silence_ms=64))) > 2


def test_the_agents_echo_is_not_speech() -> None:
    pcm = np.concatenate([read_audio(f"{SPEECH}/s02.wav", 16000), np.zeros(16000, np.int16)])
    assert run_turns(pcm, agent=AgentLevel(audible=True, level_db=0.0)) == []
    assert len(run_turns(pcm, agent=AgentLevel(audible=True, level_db=-25.0))) == 2


def test_echo_guard_and_backchannels() -> None:
    p = BargeInConfig()
    agent_db = -20.0
    assert not may_be_user(agent_db - 20, 0.95, agent_db, True, p)  # its own echo, quieter
    assert may_be_user(agent_db - 3, 0.95, agent_db, True, p)  # the user, speaking up
    assert not may_be_user(agent_db, 0.6, agent_db, True, p)  # the VAD is not sure enough
    assert may_be_user(-60, 0.55, agent_db, False, p)  # agent silent: no guard
    for text in ("Okay.", "uh-huh", "Mm-hm, yeah.", "", "Right, I see."):
        assert is_backchannel(text, p), text
    for text in ("Wait, stop.", "No, I meant Tuesday", "okay okay okay okay"):
        assert not is_backchannel(text, p), text


async def test_agent_track_paces_pauses_and_counts_what_was_heard() -> None:
    firsts: list[tuple[int, float]] = []
    track = AgentAudioTrack(on_first_audible=lambda turn, at: firsts.append((turn, at)))
    tone = (np.sin(np.arange(RATE // 5) / 5) * 8000).astype(np.int16)  # 200 ms
    silence = np.zeros(RATE // 10, np.int16)
    track.push(1, silence, 0, 0)  # leading silence is not audible
    track.push(1, tone, 0, 10)
    track.push(1, tone, 10, 20)
    t0 = time.monotonic()
    frames = [await track.recv() for _ in range(20)]  # 400 ms
    # paced on the wall clock, not as fast as asked (a busy box may only make it slower)
    assert time.monotonic() - t0 >= 0.38
    assert all(f.samples == FRAME and f.sample_rate == RATE for f in frames)
    assert [f.pts for f in frames] == [frames[0].pts + i * FRAME for i in range(20)]
    assert firsts and firsts[0][0] == 1 and firsts[0][1] >= t0 + 0.09
    assert track.heard_chars(1) == 10 + 10 * (RATE // 10) // len(tone)  # half the second unit
    track.pause()
    paused = [await track.recv() for _ in range(5)]
    assert all(not np.abs(f.to_ndarray()).any() for f in paused)
    assert track.speaking
    track.resume()
    rest = [await track.recv() for _ in range(5)]
    assert np.abs(rest[0].to_ndarray()).max() > 1000
    assert track.heard_chars(1) == 20 and not track.speaking
    track.push(2, tone, 0, 50)
    assert np.abs((await track.recv()).to_ndarray()).max() > 1000  # 20 ms of the 200 ms
    track.clear()
    assert not track.speaking and track.heard_chars(2) == 5  # a tenth of 50 characters stays heard
    assert not np.abs((await track.recv()).to_ndarray()).any()  # the rest is dropped
    track.stop()


async def test_a_frame_held_up_by_a_busy_loop_is_reported_late_and_measured() -> None:
    metrics = GatewayMetrics()
    track = AgentAudioTrack()
    track.on_late = metrics.frame_late.observe
    for _ in range(3):
        await track.recv()
    time.sleep(0.06)  # noqa: ASYNC251 - the event loop blocked, as by work on it
    for _ in range(5):
        await track.recv()
    text = generate_latest(metrics.registry).decode()
    buckets = late_buckets(text)
    assert buckets[float("inf")] == 7  # every frame after the first
    # the held-up frame was at least 40 ms late; the ones after it caught up
    assert buckets[float("inf")] - buckets[20.0] >= 1
    assert quantile({}, buckets, 0.99) > 20
    assert quantile({}, buckets, 0.3) < 20
    assert quantile(buckets, buckets, 0.5) is None  # no frames between the scrapes
