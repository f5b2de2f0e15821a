"""Two gateways share one signalling port (gateway/peers.py): sessions land on both, a full
one passes an offer to the other, a DELETE reaches the session's owner from either, and a
gateway that stops ends only its own calls. Real aiortc callers, the real stages."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.config import local_gateway_config
from gateway.server import Gateway, listen
from tests.waiting import until
from voxray import runtime
from voxray.clients.caller import Caller, load_48k, speak_turn

SPEECH = "tests/data/speech"


async def side_by_side(stages: str) -> tuple[list[tuple[web.AppRunner, Gateway]], str, list[str]]:
    port = runtime.free_port()
    private = [runtime.free_port(), runtime.free_port()]
    out = []
    for own in private:
        cfg = local_gateway_config(port=port, reuse_port=True, private_port=own, max_sessions=1,
                                   peers=[f"http://127.0.0.1:{q}" for q in private if q != own],
                                   peer_poll_s=0.2)
        gw = Gateway(cfg, stages)
        runner = web.AppRunner(gw.app())
        await runner.setup()
        await listen(runner, cfg)
        out.append((runner, gw))
    return out, f"http://127.0.0.1:{port}", [f"http://127.0.0.1:{q}" for q in private]


@pytest.fixture
async def pair(serve_grpc: str) -> AsyncIterator[tuple[list[tuple[web.AppRunner, Gateway]],
                                                       str, list[str]]]:
    gateways, url, private = await side_by_side(serve_grpc)
    try:
        yield gateways, url, private
    finally:
        for runner, _ in gateways:
            await runner.cleanup()


async def test_two_gateways_share_the_sessions_and_either_can_end_one(
        pair: tuple[list[tuple[web.AppRunner, Gateway]], str, list[str]]) -> None:
    gateways, url, private = pair
    (_, a), (_, b) = gateways
    # each has heard that the other has room
    await until(lambda: all(g.peers is not None and set(g.peers.room.values()) == {1}
                            for g in (a, b)), what="peers polled")
    first = Caller(url)
    await first.connect()
    # the next offer goes to the gateway that is now full (its private address takes offers
    # too): it passes the offer on, and the call is the other's
    x, y = (0, 1) if a.calls else (1, 0)
    gx, gy = gateways[x][1], gateways[y][1]
    second = Caller(private[x])
    third = Caller(private[x])
    try:
        await second.connect()
        assert len(gx.calls) == 1 and len(gy.calls) == 1
        await until(lambda: all(g.peers is not None and set(g.peers.room.values()) == {0}
                                for g in (a, b)), what="peers polled full")
        with pytest.raises(ConnectionError, match="503"):
            await Caller(url).connect()  # both full: refused, not passed back and forth
        # A DELETE sent to the gateway that does not hold the session reaches its owner.
        assert first.location is not None
        async with aiohttp.ClientSession() as http:
            async with http.delete(private[y] + first.location) as res:
                assert res.status == 200, await res.text()
            async with http.delete(private[y] + "/whip/nobody") as res:
                assert res.status == 404
        first.location = None
        await until(lambda: not gx.calls, what="the first call ended")
        # A gateway that stops ends its own calls only: the other's call goes on.
        await third.connect()
        assert len(gx.calls) == 1
        await gateways[x][0].cleanup()
        assert not gx.calls
        turn = await speak_turn(second, load_48k(f"{SPEECH}/s11.wav"))
        assert turn.gateway and turn.agent_text.strip(), second.events[-5:]
        assert len(gy.calls) == 1
        second.base_url = url  # (its gateway of entry is gone; the shared port is the other's)
    finally:
        await first.hang_up()
        await second.hang_up()
        third.location = None  # its gateway is gone
        await third.hang_up()
    assert not gy.calls
