"""The real Whisper models through the engine, without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.asr.config import AsrArgs
from deployments.asr.engine import WhisperEngine, resolve_model
from tests import speech
from voxray.wer import word_errors

KEYS = ["s01", "s03", "s10", "s14", "s20", "s24"]


@pytest.fixture(scope="module", params=["base", "tiny.en"])
def engine(request: pytest.FixtureRequest) -> WhisperEngine:
    return WhisperEngine(AsrArgs(model=request.param))


def f32(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768.0


def test_words_come_back(engine: WhisperEngine) -> None:
    errors = words = 0
    for key in KEYS:
        hyp = engine.decode(f32(speech.load(key)), beam_size=1)
        e, n = word_errors(speech.references()[key], hyp.text)
        errors, words = errors + e, words + n
        assert hyp.words and all(w.start_s <= w.end_s for w in hyp.words)
    assert errors / words <= 0.2


def test_word_times_fall_on_the_speech(engine: WhisperEngine) -> None:
    hyp = engine.decode(f32(speech.load("s19")), beam_size=1)
    # the file has 0.3 s of silence before the speech and 1.0 s after it
    assert 0.0 <= hyp.words[0].start_s < 0.8
    assert hyp.words[-1].end_s < len(speech.load("s19")) / 16000 - 0.6


def test_silence_is_not_transcribed(engine: WhisperEngine) -> None:
    rng = np.random.default_rng(0)
    hyp = engine.decode((rng.standard_normal(32000) * 1e-4).astype(np.float32))
    assert engine.is_silence(hyp), hyp.text


def test_padded_window_is_selectable() -> None:
    engine = WhisperEngine(AsrArgs(model="tiny.en", window="padded"))
    hyp = engine.decode(f32(speech.load("s22")))
    e, n = word_errors(speech.references()["s22"], hyp.text)
    assert e / n <= 0.2, hyp.text


def test_unprepared_local_model_names_the_fix(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="voxray models prepare"):
        resolve_model("base", tmp_path)
    assert resolve_model("distil-large-v3", tmp_path) == "distil-large-v3"  # hub name: passed on


def test_language_auto_hears_each_language_and_keeps_to_the_named_ones() -> None:
    engine = WhisperEngine(AsrArgs(model="base", language="auto",
                                   languages=["en", "es", "fr", "de", "it", "pt"]))
    for key, (language, text) in speech.languages().items():
        hyp = engine.decode(f32(speech.load_language(key)), beam_size=1, language="")
        assert hyp.language == language and hyp.language_probability > 0.5, (key, hyp)
        errors, n = word_errors(speech.unaccented(text), speech.unaccented(hyp.text))
        assert errors / n <= 0.4, (key, hyp.text)
    english = engine.decode(f32(speech.load("s01")), beam_size=1, language="")
    assert english.language == "en" and word_errors(speech.references()["s01"],
                                                    english.text)[0] <= 2
    # a fixed language decodes in it without asking; a short unclear turn keeps to the
    # language the caller was heard in
    fixed = engine.decode(f32(speech.load_language("es1")), beam_size=1, language="es")
    assert fixed.language == "es" and fixed.language_probability == 1.0
    short = f32(speech.load_language("it1"))[: 16000 * 3 // 2]
    assert engine.decode(short, beam_size=1, language="", likely="it").language == "it"


def test_languages_an_english_only_model_cannot_decode_are_refused() -> None:
    with pytest.raises(ValueError, match="English only"):
        AsrArgs(model="tiny.en", language="es")
    engine = WhisperEngine(AsrArgs(model="tiny.en"))
    assert engine.language("auto") == "en"
    with pytest.raises(ValueError, match="English only"):
        engine.language("fr")
    with pytest.raises(ValueError, match="not one Whisper knows"):
        WhisperEngine(AsrArgs(model="base")).language("xx")
