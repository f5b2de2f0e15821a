"""What the bench scripts share (their JSON reports use loadtest.harness.stats.write_json)."""

from __future__ import annotations

import numpy as np


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (linear interpolation); NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")

