"""The turn-taking set: utterances with mid-sentence pauses and short finished questions
(tests/data/turns/*.wav and tests/data/turns.json, made by tests/data/make_turns.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

import numpy as np

from voxray import REPO_ROOT
from voxray.audio import read_audio

DATA = REPO_ROOT / "tests" / "data"


@dataclass(frozen=True)
class TurnSample:
    id: str
    set: str  # "paused" or "complete"
    voice: str
    text: str
    phrases: list[str]
    pauses_s: list[float]
    phrase_ends_s: list[float]  # in the file
    last_voiced_s: float

    @property
    def path(self) -> str:
        return str(DATA / "turns" / f"{self.id}.wav")

    def pcm(self, rate: int = 16_000) -> np.ndarray:
        return read_audio(self.path, rate)


@cache
def samples(kind: str | None = None) -> list[TurnSample]:
    items = [TurnSample(**m) for m in json.loads((DATA / "turns.json").read_text())]
    return [s for s in items if kind is None or s.set == kind]
