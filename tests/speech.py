"""The shipped test utterances (tests/data/speech, see tests/data/LICENSE)."""

from __future__ import annotations

import wave
from functools import cache
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"


@cache
def references() -> dict[str, str]:
    out = {}
    for line in (DATA / "sentences.txt").read_text().splitlines():
        if line.strip():
            key, _voice, text = line.split("|", 2)
            out[key] = text
    return out


def load(key: str) -> np.ndarray:
    """PCM16 mono 16 kHz, with 0.3 s of silence before and 1.0 s after the speech."""
    with wave.open(str(DATA / "speech" / f"{key}.wav")) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


@cache
def languages() -> dict[str, tuple[str, str]]:
    """The non-English utterances (tests/data/languages): id -> (ISO 639-1 code, text)."""
    import json

    items = json.loads((DATA / "languages.json").read_text())
    return {m["id"]: (m["language"], m["text"]) for m in items}


def load_language(key: str) -> np.ndarray:
    """PCM16 mono 16 kHz, like `load`."""
    with wave.open(str(DATA / "languages" / f"{key}.wav")) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def unaccented(text: str) -> str:
    """For word error rates across languages: "qué" and "que" agree."""
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c))
