"""A scenario: what each simulated caller does (YAML, validated strictly).

A user repeats sessions until the run ends: connect, `turns_per_session` turns
(each either a plain turn or, with probability `barge_in.probability`, a barge-in),
a pause between turns, hang up, a pause between sessions.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voxray import REPO_ROOT


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(Strict):
    """A uniform random duration in seconds; `min == max` for a fixed one."""

    min: float = Field(0.0, ge=0)
    max: float = Field(0.0, ge=0)

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.min, max(self.min, self.max))


class BargeIn(Strict):
    probability: float = Field(0.0, ge=0, le=1)  # of a turn being a barge-in
    prompt: str = "tests/data/speech/s18.wav"  # asks for a long answer
    interrupt_with: str = "tests/data/speech/s25.wav"  # said over the answer
    talk_s: Range = Field(default_factory=lambda: Range(min=1.0, max=2.0))  # answer heard first


class Scenario(Strict):
    name: str = "scenario"
    mode: Literal["pipeline", "duplex"] = "pipeline"
    utterances: list[str] = Field(min_length=1)  # WAV paths (relative to the repo root) or globs
    order: Literal["sequential", "random"] = "random"
    turns_per_session: int = Field(4, ge=1, le=1000)
    think_time_s: Range = Field(default_factory=lambda: Range(min=0.5, max=1.5))  # between turns
    session_pause_s: Range = Field(default_factory=lambda: Range(min=1.0, max=2.0))
    barge_in: BargeIn = Field(default_factory=BargeIn)
    turn_timeout_s: float = Field(60.0, gt=0, le=600)  # no reply within this: an error
    # A silent stretch inside a reply longer than this (or frames arriving this late)
    # counts as an underrun: the agent ran out of audio mid-answer.
    underrun_gap_ms: float = Field(600.0, ge=60)
    token: str | None = None  # the gateway's auth_token, if it wants one

    @field_validator("utterances")
    @classmethod
    def _expand(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for item in value:
            matches = sorted(str(p) for p in REPO_ROOT.glob(item)) if any(
                c in item for c in "*?[") else [item]
            for m in matches:
                path = Path(m) if Path(m).is_absolute() else REPO_ROOT / m
                if not path.is_file():
                    raise ValueError(f"no such utterance file: {m}")
                out.append(str(path))
        if not out:
            raise ValueError(f"no files match {value}")
        return out


class ScenarioError(ValueError):
    pass


def load_scenario(path: str | Path) -> Scenario:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ScenarioError(f"{path}: {e}") from None
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        lines = [f"{path}: invalid scenario"]
        for err in e.errors():
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {'.'.join(str(x) for x in err['loc'])}: {what}")
        raise ScenarioError("\n".join(lines)) from None
