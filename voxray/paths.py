"""Where model files live."""

from __future__ import annotations

import os
from pathlib import Path

from voxray import REPO_ROOT


def models_dir(configured: str = "") -> Path:
    """`configured`, else $VOXRAY_MODELS_DIR, else <repo>/models."""
    return Path(configured or os.environ.get("VOXRAY_MODELS_DIR") or REPO_ROOT / "models")
