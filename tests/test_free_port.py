"""Ports for test and bench Serve instances: outside the ranges other processes are handed."""

from __future__ import annotations

import socket

from voxray import runtime


def test_free_ports_are_distinct_and_outside_the_kernels_and_rays_ranges() -> None:
    low, high = runtime._ephemeral_range()
    ports = [runtime.free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        assert not low <= port <= high, port
        assert not 10002 <= port <= 19999, port  # Ray's worker ports


def test_a_port_something_listens_on_is_not_handed_out() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert not runtime._bindable(taken.getsockname()[1])
    port = runtime.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # and what it hands out binds
