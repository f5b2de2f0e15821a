"""The TTS replica's cost model of a unit: what it predicts follows what runs took."""

from __future__ import annotations

import pytest

from deployments.tts.unit_cost import UnitCost


def test_before_any_run_the_prior_answers() -> None:
    cost = UnitCost()
    assert 0.4 < cost.predict(4) < 0.7
    assert cost.predict(40) > cost.predict(4)


def test_it_follows_the_runs_of_a_loaded_box_and_forgets_the_prior() -> None:
    cost = UnitCost(memory=10)
    for _ in range(40):  # twice as slow as the prior, as when an LLM shares the cores
        for chars in (5, 12, 30, 60):
            cost.observe(chars, 1.0 + 0.03 * chars)
    assert cost.predict(5) == pytest.approx(1.15, abs=0.03)
    assert cost.predict(60) == pytest.approx(2.8, abs=0.05)


def test_runs_of_one_length_give_a_fixed_cost_and_never_a_negative_one() -> None:
    cost = UnitCost(memory=5)
    for _ in range(60):
        cost.observe(10, 0.2)
    assert cost.predict(10) == pytest.approx(0.2, abs=0.02)
    assert cost.predict(0) >= 0.0
    with pytest.raises(ValueError):
        UnitCost(memory=1)
