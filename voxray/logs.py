"""Logging set-up shared by the CLI and the replicas."""

from __future__ import annotations

import logging
import os


def configure_logging() -> None:
    level = os.environ.get("VOXRAY_LOG_LEVEL", "INFO").upper()
    logging.getLogger("voxray").setLevel(level)
    logging.getLogger("deployments").setLevel(level)
    logging.getLogger("gateway").setLevel(level)
