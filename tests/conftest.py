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
def serve_grpc() -> Iterator[str]:
    """The CPU profile deployed on a local Ray cluster; yields the gRPC proxy's address.

    Ports are picked free: two Serve instances on one host would silently share 9000.
    """
    grpc_port, http_port = free_port(), free_port()
    config = load_config(profiles=["cpu"], overrides=[{
        "grpc_options": {"port": grpc_port},
        "http_options": {"port": http_port},
        "applications": {"asr": {"args": {"max_utterance_s": 8}}},
    }])
    try:
        runtime.start(config, num_cpus=4, timeout_s=300, progress=lambda _: None)
        yield f"127.0.0.1:{grpc_port}"
    finally:
        runtime.stop()
