"""voxray: self-hosted realtime voice agents on Ray Serve."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
