"""StreamingTranscriber's bookkeeping, with hand-made hypotheses (the model is not the subject)."""

import numpy as np
import pytest

from deployments.asr.engine import SAMPLE_RATE, DecodedWord, Hypothesis
from deployments.asr.streaming import StreamingTranscriber


def make(**kw: float) -> StreamingTranscriber:
    args = dict(max_utterance_s=10.0, partial_interval_s=0.5, pause_decode_s=0.2,
                quiet_dbfs=-45.0, commit_after_s=2.0, commit_margin_s=0.5, flush_pad_s=0.5)
    args.update(kw)
    return StreamingTranscriber(**args)  # type: ignore[arg-type]


def loud(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def hyp(*words: tuple[str, float, float]) -> Hypothesis:
    return Hypothesis(" ".join(w for w, _, _ in words),
                      [DecodedWord(w, s, e, 0.9) for w, s, e in words])


def test_partials_follow_voiced_audio_not_silence() -> None:
    t = make()
    t.add_audio(loud(0.3))
    assert t.next_job(1) is None
    t.add_audio(loud(0.3))
    job = t.next_job(2)
    assert job is not None and not job.final and len(job.audio) == int(0.6 * SAMPLE_RATE)
    assert not job.urgent  # a routine partial waits behind other streams' urgent decodes
    t.apply(job, hyp(("hello", 0.0, 0.5)), silent=False)
    t.add_audio(quiet(0.1))
    assert t.next_job(3) is None


def test_pause_decode_becomes_the_final_without_another_decode() -> None:
    t = make()
    t.add_audio(loud(0.4))
    t.add_audio(quiet(0.25))  # a pause: decode at once
    job = t.next_job(1)
    assert job is not None and not job.final
    assert job.urgent  # the turn's verdict waits for these words
    update = t.apply(job, hyp(("hello", 0.0, 0.4)), silent=False)
    assert update is not None and update.text == "hello"
    t.add_audio(quiet(0.2))
    t.end_utterance(0, seq=5)
    final_job = t.next_job(6)
    assert final_job is not None and final_job.final and final_job.reuse is not None
    final = t.apply(final_job, final_job.reuse.hypothesis, silent=False)
    assert final is not None and final.final and final.text == "hello"
    assert t.next_job(7) is None and t.open.utterance_id == 1


def test_speech_after_the_last_decode_forces_a_final_decode() -> None:
    t = make()
    t.add_audio(loud(0.4))
    t.add_audio(quiet(0.25))
    job = t.next_job(1)
    assert job is not None
    t.apply(job, hyp(("hello", 0.0, 0.4)), silent=False)
    t.add_audio(loud(0.2))  # the user went on
    t.end_utterance(0, seq=5)
    final_job = t.next_job(6)
    assert final_job is not None and final_job.final and final_job.reuse is None
    assert len(final_job.audio) == int((0.85 + 0.5) * SAMPLE_RATE)  # all audio + flush pad


def test_client_speech_end_overrides_the_energy_guess() -> None:
    t = make()
    t.add_audio(loud(0.4))
    t.add_audio(quiet(0.25))
    job = t.next_job(1)
    assert job is not None
    t.apply(job, hyp(("hi", 0.0, 0.3)), silent=False)
    t.add_audio(quiet(0.3) + 0.005)  # quiet by energy, but the client's VAD heard speech
    t.end_utterance(0, seq=2, speech_end=int(0.8 * SAMPLE_RATE))
    final_job = t.next_job(3)
    assert final_job is not None and final_job.reuse is None


def test_long_utterance_commits_agreed_sentences_and_drops_their_audio() -> None:
    t = make()
    t.add_audio(loud(3.0))
    words = (("One", 0.0, 0.4), ("two.", 0.5, 0.9), ("Three", 1.2, 1.6), ("four", 1.7, 2.9))
    job = t.next_job(1)
    assert job is not None
    first = t.apply(job, hyp(*words), silent=False)
    assert first is not None and first.stable_text == ""  # nothing agreed yet
    t.add_audio(loud(0.6))
    job = t.next_job(2)
    assert job is not None
    second = t.apply(job, hyp(*words), silent=False)
    assert second is not None and second.stable_text == "One two."
    assert t.open.tail_start == int(1.05 * SAMPLE_RATE)  # cut between "two." and "Three"
    assert second.text == "One two. Three four"
    t.end_utterance(0, seq=3)
    final_job = t.next_job(4)
    assert final_job is not None and final_job.prompt == "One two."
    final = t.apply(final_job, hyp(("Three", 0.1, 0.5), ("four", 0.6, 1.8)), silent=False)
    assert final is not None and final.text == "One two. Three four"
    assert final.words[2].start_sample == int(1.05 * SAMPLE_RATE) + int(0.1 * SAMPLE_RATE)


def test_words_not_ending_a_sentence_are_not_committed() -> None:
    t = make()
    t.add_audio(loud(3.0))
    words = (("One", 0.0, 0.4), ("two", 0.5, 0.9), ("three", 1.2, 2.9))
    for seq in (1, 2):
        job = t.next_job(seq)
        assert job is not None
        t.apply(job, hyp(*words), silent=False)
        t.add_audio(loud(0.6))
    assert t.open.committed == [] and t.open.tail_start == 0


def test_utterance_limit_and_wrong_end_id() -> None:
    t = make(max_utterance_s=1.0)
    t.add_audio(loud(0.9))
    with pytest.raises(OverflowError, match="max_utterance_s=1"):
        t.add_audio(loud(0.2))
    with pytest.raises(ValueError, match="open one is 0"):
        t.end_utterance(3, seq=1)


def test_audio_after_end_of_utterance_belongs_to_the_next_one() -> None:
    t = make()
    t.add_audio(loud(0.5))
    t.end_utterance(0, seq=1)
    t.add_audio(loud(0.7))
    job = t.next_job(2)
    assert job is not None and job.final and job.utterance.utterance_id == 0
    assert len(job.audio) == int(1.0 * SAMPLE_RATE)  # 0.5 s + flush pad, not the new audio
    t.apply(job, hyp(("a", 0.0, 0.4)), silent=False)
    nxt = t.next_job(3)
    assert nxt is not None and not nxt.final and nxt.utterance.utterance_id == 1
    assert nxt.offset == int(0.5 * SAMPLE_RATE)


def noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 10 ** (dbfs / 20)).astype(np.float32)


def test_pauses_show_on_a_noisy_line_once_the_floor_is_learnt() -> None:
    t = make()
    t.add_audio(noise(6.0, -38))  # background well above the -45 dBFS quiet level
    t.add_audio(loud(0.5) + noise(0.5, -38, 1))
    before = t.open.last_voiced
    t.add_audio(noise(0.3, -38, 2))
    assert t.open.last_voiced == before == int(6.5 * SAMPLE_RATE)


def test_unbroken_speech_is_not_taken_for_noise() -> None:
    t = make()
    for i in range(30):  # 3 s of speech-level audio with no pause at all
        t.add_audio(loud(0.1))
        assert t.open.last_voiced == t.stream_samples, i


def test_a_decode_that_did_not_hear_the_pause_is_not_reused() -> None:
    t = make()
    t.add_audio(loud(0.4))
    t.add_audio(quiet(0.25))
    job = t.next_job(1)
    assert job is not None
    t.apply(job, hyp(("hello", 0.0, 0.64)), silent=False)  # word runs to the end of its audio
    t.end_utterance(0, seq=2)
    final_job = t.next_job(3)
    assert final_job is not None and final_job.final and final_job.reuse is None


def test_a_partial_that_stopped_at_the_last_loud_frame_is_followed_by_a_pause_decode() -> None:
    """The partial decoded just as speech ended heard none of the pause: a client waiting
    for the words of the pause (the gateway's speculative reply) gets a decode that did."""
    t = make(partial_interval_s=0.5)
    t.add_audio(loud(0.5))
    job = t.next_job(1)  # a regular partial, due as the speech ends
    assert job is not None and not job.final
    t.apply(job, hyp(("hello", 0.0, 0.5)), silent=False)
    t.add_audio(quiet(0.25))
    pause = t.next_job(2)
    assert pause is not None and not pause.final
    assert pause.offset + len(pause.audio) >= int(0.6 * SAMPLE_RATE)  # into the pause
    t.apply(pause, hyp(("hello", 0.0, 0.45)), silent=False)
    assert t.next_job(3) is None  # one pause decode, not one per chunk
