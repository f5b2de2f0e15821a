from __future__ import annotations

from collections.abc import Iterator

import pytest

from voxray import runtime


@pytest.fixture(scope="session")
def serve_app() -> Iterator[runtime.Endpoints]:
    """The CPU profile deployed on a local Ray cluster.

    Ports are picked free: two Serve instances on one host would silently share 9000.
    """
    try:
        yield runtime.start_local_profile(
            overrides=[{"applications": {"asr": {"args": {"max_utterance_s": 20}}}}],
            metrics_port=runtime.free_port(), timeout_s=300)
    finally:
        runtime.stop()


@pytest.fixture(scope="session")
def serve_grpc(serve_app: runtime.Endpoints) -> str:
    """The Serve gRPC proxy's address."""
    return serve_app.grpc


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run tests that start their own Ray cluster first, before `serve_app` starts the
    shared one, so two clusters never share the 2 cores."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("own_cluster") else 1)
