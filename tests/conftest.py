from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from voxray import runtime
from voxray.config import load_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def serve_app() -> Iterator[runtime.Endpoints]:
    """The CPU profile deployed on a local Ray cluster.

    Ports are picked free: two Serve instances on one host would silently share 9000.
    """
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    config = load_config(profiles=["cpu"], overrides=[{
        "grpc_options": {"port": grpc_port},
        "http_options": {"port": http_port},
        "applications": {"asr": {"args": {"max_utterance_s": 20}}},
    }])
    try:
        yield runtime.start(config, num_cpus=4, metrics_port=metrics_port, timeout_s=300,
                            progress=lambda _: None)
    finally:
        runtime.stop()


@pytest.fixture(scope="session")
def serve_grpc(serve_app: runtime.Endpoints) -> str:
    """The Serve gRPC proxy's address."""
    return serve_app.grpc
