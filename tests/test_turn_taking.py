"""The turn taker, the turn policy and the Smart Turn model, without Ray: scripted VAD scores
for the state machine, the real Silero VAD and Smart Turn on the turn test set."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.config import BargeInConfig, TurnConfig
from gateway.session.events import PauseStarted, SpeechResumed, SpeechStarted, TurnEnded
from gateway.session.turn_policy import (
    P_WORDS_LONE_CLAUSE,
    P_WORDS_OPEN,
    P_WORDS_UNFINISHED,
    Evidence,
    TurnPolicy,
    words_p_finished,
)
from gateway.session.turn_taker import AgentLevel, TurnTaker
from gateway.smart_turn import SmartTurn
from gateway.vad import CHUNK, SAMPLE_RATE, SileroVad
from loadtest.turnset import samples
from voxray.config import ConfigError, load_config

MS = CHUNK * 1000 // SAMPLE_RATE  # 32 ms per chunk


class Scripted:
    """A VAD that says what the test wants: the chunk's first sample holds the score."""

    def __call__(self, pcm: np.ndarray) -> float:
        return float(pcm[0]) / 100


def chunks(*runs: tuple[float, int]) -> list[np.ndarray]:
    """(VAD score, milliseconds) runs as chunks for the Scripted VAD."""
    out = []
    for score, ms in runs:
        out += [np.full(CHUNK, int(score * 100), np.int16)] * (ms // MS)
    return out


def feed(taker: TurnTaker, pcms: list[np.ndarray], start: int = 0,
         agent: AgentLevel | None = None) -> list[tuple[int, object]]:
    """(chunk index, event) for every event."""
    out = []
    for i, pcm in enumerate(pcms):
        kw = {"agent": agent} if agent else {}
        for e in taker.feed(pcm, (start + i) * CHUNK, -20.0, **kw):
            out.append((start + i, e))
    return out


def taker(**turn: object) -> TurnTaker:
    return TurnTaker(TurnConfig(**turn), BargeInConfig(), Scripted())  # type: ignore[arg-type]


def test_a_pause_is_judged_and_speech_after_it_continues_the_turn() -> None:
    t = taker(min_silence_ms=192, max_silence_ms=2000)
    events = feed(t, chunks((0.0, 320), (0.9, 640), (0.1, 256), (0.9, 320), (0.1, 2400)))
    kinds = [type(e) for _, e in events]
    assert kinds == [SpeechStarted, PauseStarted, SpeechResumed, PauseStarted, TurnEnded]
    (i0, start), (i1, pause), _, (i3, _), (i4, end) = events
    assert isinstance(start, SpeechStarted) and start.start_sample == 10 * CHUNK
    assert isinstance(pause, PauseStarted) and pause.last_voiced_sample == 30 * CHUNK
    assert (i1 + 1 - 30) * MS >= 192  # judged after min_silence_ms of silence
    # no verdict came: the turn ends at max_silence_ms, and covers both phrases
    assert isinstance(end, TurnEnded) and end.start_sample == 10 * CHUNK
    assert end.silence_ms >= 2000 and end.last_voiced_sample == (i3 - 6 + 1) * CHUNK


def test_the_verdict_sets_the_wait_and_a_hold_keeps_the_turn_open() -> None:
    t = taker(min_silence_ms=192, max_silence_ms=1600)
    speech = chunks((0.9, 640))
    feed(t, speech)
    pause = feed(t, chunks((0.1, 224)), start=len(speech))
    assert [type(e) for _, e in pause] == [PauseStarted]
    assert t.judge(400) == []  # 224 ms of silence so far
    n = len(speech) + len(chunks((0.1, 224)))
    t.hold()
    later = feed(t, chunks((0.1, 640)), start=n)
    assert later == []  # past the wait, but held (the prepared answer is not ready)
    (ended,) = t.release()
    assert isinstance(ended, TurnEnded) and ended.silence_ms >= 400
    # a held pause still ends at max_silence_ms
    t2 = taker(min_silence_ms=192, max_silence_ms=960)
    feed(t2, speech)
    feed(t2, chunks((0.1, 224)), start=len(speech))
    t2.judge(300)
    t2.hold()
    ends = feed(t2, chunks((0.1, 960)), start=n)
    assert [type(e) for _, e in ends] == [TurnEnded]
    assert ends[0][1].silence_ms >= 960  # type: ignore[attr-defined]
    # a verdict asking for less than min_silence_ms is held to it, more than max to max
    t3 = taker(min_silence_ms=192, max_silence_ms=960)
    feed(t3, speech)
    feed(t3, chunks((0.1, 224)), start=len(speech))
    assert [type(e) for e in t3.judge(10)] == [TurnEnded]


def test_the_echo_gate_keeps_the_agents_own_voice_from_starting_a_turn() -> None:
    t = taker()
    loud_agent = AgentLevel(audible=True, level_db=-5.0)  # mic at -20 dB: 15 dB below it
    assert feed(t, chunks((0.9, 640)), agent=loud_agent) == []
    quiet_agent = AgentLevel(audible=True, level_db=-30.0)
    assert [type(e) for _, e in feed(t, chunks((0.9, 640)), start=20, agent=quiet_agent)] \
        == [SpeechStarted]


@pytest.mark.parametrize("sample", samples("paused"), ids=lambda s: s.id)
def test_real_speech_each_pause_is_seen_and_continued(sample: object) -> None:
    """The real VAD on the paused set: every pause is judged, and, waited for, the speech
    after it continues the same turn."""
    from loadtest.turnset import TurnSample

    assert isinstance(sample, TurnSample)
    pcm = sample.pcm()
    t = TurnTaker(TurnConfig(), BargeInConfig(), SileroVad())
    events = []
    for i in range(0, len(pcm) - CHUNK + 1, CHUNK):
        events += t.feed(pcm[i:i + CHUNK], i, -30.0)
    end = len(pcm) // CHUNK * CHUNK
    events += [e for k in range(80) for e in t.feed(np.zeros(CHUNK, np.int16), end + k * CHUNK,
                                                    -90.0)]
    kinds = [type(e) for e in events]
    n = len(sample.pauses_s)
    assert kinds == [SpeechStarted] + [PauseStarted, SpeechResumed] * n + [PauseStarted,
                                                                           TurnEnded], kinds
    pauses = [e for e in events if isinstance(e, PauseStarted)]
    for p, end in zip(pauses, [*sample.phrase_ends_s, sample.last_voiced_s], strict=True):
        assert abs(p.last_voiced_sample / SAMPLE_RATE - end) < 0.2, (p, end)


@pytest.mark.parametrize("words", [
    "I'd like to book a table for", "My flight was cancelled and...", "So, um,",
    "Can you tell me how to get-", "I need to send it to my",
    "Before we start, could you check whether", "I was wondering if", "Um",
    "Quiero reservar una mesa para", "Je voudrais aller à la gare et",
    "Ich möchte einen Tisch für", "Vorrei prenotare un tavolo per",
])
def test_words_that_leave_a_sentence_open(words: str) -> None:
    lang = {"Qu": "es", "Je": "fr", "Ic": "de", "Vo": "it"}.get(words[:2], "en")
    assert words_p_finished(words, lang) == P_WORDS_UNFINISHED, words


@pytest.mark.parametrize("words,lang", [
    ("If it rains tomorrow.", "en"), ("Before we start.", "en"), ("When I get home", "en"),
    ("Once you're done.", "en"), ("Bevor wir anfangen.", "de"), ("Antes de que llegue.", "es"),
])
def test_a_lone_clause_leaves_the_sentence_open_whatever_its_end_mark(words: str,
                                                                        lang: str) -> None:
    """Whisper writes a full stop at a pause; the clause still wants its main clause."""
    assert words_p_finished(words, lang) == P_WORDS_LONE_CLAUSE, words


@pytest.mark.parametrize("words,low,high", [
    ("What time does the pharmacy close today?", 0.8, 1.0),
    ("I think so.", 0.6, 0.8),
    ("Where are you from?", P_WORDS_OPEN, P_WORDS_OPEN),  # a question may end in "from"
    ("Set an alarm for six thirty tomorrow", P_WORDS_OPEN, P_WORDS_OPEN),
    ("If it rains tomorrow, should I still go to the beach?", 0.8, 1.0),
    # Answers, not opened clauses: "When do you close?" "Before noon."
    ("Before noon.", 0.6, 0.8), ("After the meeting.", 0.6, 0.8), ("Since then.", 0.6, 0.8),
    ("Before we start, could you check my order?", 0.8, 1.0),
    ("¿Dónde está la estación?", 0.8, 1.0),
])
def test_words_that_may_end_a_turn(words: str, low: float, high: float) -> None:
    p = words_p_finished(words, "es" if words.startswith("¿") else "en")
    assert p is not None and low <= p <= high, (words, p)


def test_the_policy_waits_longer_the_less_finished_it_sounds() -> None:
    cfg = TurnConfig(min_silence_ms=200, max_silence_ms=2000)
    policy = TurnPolicy(cfg)
    waits = [policy.judge(Evidence(audio=p, words="What is the time?")).wait_ms
             for p in (0.05, 0.3, 0.6, 0.9, 0.99)]
    assert waits == sorted(waits, reverse=True) and 200 <= waits[-1] < 400, waits
    # The orator's case: the audio model is sure, the words are not: keep listening.
    open_phrase = policy.judge(Evidence(audio=0.97, words="Four score and seven years ago and"))
    assert open_phrase.wait_ms > 1300 and open_phrase.parts["audio"] == 0.97
    # A browser caller's "Before we start, | could you check ...": Whisper wrote a period at
    # the 0.8 s pause, Smart Turn and the small LLM both heard an end (a CI failure's verdict
    # was 98 % after 290 ms). The lone clause keeps the turn open past the pause.
    opener = policy.judge(Evidence(audio=0.98, words="Before we start.", llm=0.03))
    assert opener.wait_ms > 1300, opener
    # No evidence at all: half way; evidence that is not configured does not count.
    assert policy.judge(Evidence()).wait_ms == 1100
    words_only = TurnPolicy(TurnConfig(evidence=["words"]))
    assert words_only.judge(Evidence(audio=0.01, words="Why is the sky blue?")).parts.keys() \
        == {"words"}
    llm = TurnPolicy(TurnConfig(evidence=["words", "llm"]))
    assert llm.judge(Evidence(words="Tell me", llm=0.0001)).wait_ms > \
        llm.judge(Evidence(words="Tell me", llm=0.3)).wait_ms


@pytest.mark.parametrize("turn,needle", [
    ({"release": 0.6}, "release (0.6) must be below threshold"),
    ({"min_silence_ms": 2500, "max_silence_ms": 2000}, "min_silence_ms (2500) must be below"),
    ({"evidence": ["audio", "audio"]}, "evidence lists a kind twice"),
    ({"evidence": ["vibes"]}, "gateway.turn.evidence[0]"),
    ({"speculative": "maybe"}, "gateway.turn.speculative"),
    ({"end_silence_ms": 240}, "gateway.turn.end_silence_ms: unknown key"),
])
def test_turn_settings_are_checked_at_start_up(turn: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(profiles=["cpu"], overrides=[{"gateway": {"turn": turn}}])
    assert needle in str(e.value) and "gateway.turn" in str(e.value), str(e.value)


def test_smart_turn_features_are_whispers_and_it_hears_unfinished_phrases() -> None:
    from transformers import WhisperFeatureExtractor

    model = SmartTurn()
    q = next(s for s in samples("complete") if s.voice == "kokoro:am_adam")
    pcm = q.pcm()
    n = 8 * SAMPLE_RATE
    ref = WhisperFeatureExtractor(chunk_length=8)(
        np.pad(pcm.astype(np.float32) / 32768, (n - len(pcm), 0)), sampling_rate=SAMPLE_RATE,
        padding="max_length", max_length=n, truncation=True, do_normalize=True,
        return_tensors="np").input_features[0]
    assert np.abs(model.features(pcm) - ref).max() < 1e-4  # what the model was trained on
    finished = [model.p_finished(s.pcm()[: int((s.last_voiced_s + 0.2) * SAMPLE_RATE)])
                for s in samples("complete") if s.voice.startswith("kokoro:")]
    p04 = next(s for s in samples("paused") if s.id == "p04")  # "I was wondering if | ..."
    cut = p04.pcm()[: int((p04.phrase_ends_s[0] + 0.2) * SAMPLE_RATE)]
    assert min(finished) > 0.8 and model.p_finished(cut) < 0.2, (finished,)
