"""gateway/peers.py alone: polling a peer's room, passing a request on as it came, asking
peers for a session, a peer that is gone. Its peers are small aiohttp apps here; the
gateways side by side with real calls are in test_gateway_peers.py."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.peers import FORWARDED, Peers
from tests.waiting import until
from voxray import runtime


async def a_peer(room: int, holds: str = "") -> tuple[web.AppRunner, str, list[Any]]:
    seen: list[Any] = []

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"sessions": 0, "room": room})

    async def whip(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read(), request.path_qs))
        return web.Response(status=201, text="answer", content_type="application/sdp",
                            headers={"Location": "/whip/x1"})

    async def delete(request: web.Request) -> web.Response:
        seen.append(request.match_info["id"])
        return web.Response(status=200 if request.match_info["id"] == holds else 404)

    app = web.Application()
    app.router.add_get("/healthz", health)
    app.router.add_post("/whip", whip)
    app.router.add_delete("/whip/{id}", delete)
    runner = web.AppRunner(app)
    await runner.setup()
    port = runtime.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}", seen


async def test_peers_poll_room_forward_and_find() -> None:
    (r1, full, seen1), (r2, roomy, seen2) = await a_peer(0), await a_peer(3, holds="s9")
    gone = f"http://127.0.0.1:{runtime.free_port()}"
    peers = Peers([full, roomy, gone], poll_s=0.1)
    await peers.start()
    try:
        await until(lambda: peers.room[roomy] == 3, what="polled")
        assert peers.room[full] == 0 and peers.room[gone] == 0
        assert peers.roomiest() == roomy
        offer = make_mocked_request(
            "POST", "/whip?mode=pipeline", headers={"Content-Type": "application/sdp",
                                                    "Authorization": "Bearer t", "Cookie": "x"})
        res = await peers.forward(offer, b"v=0", roomy)
        assert res.status == 201 and res.headers["Location"] == "/whip/x1" and res.text == "answer"
        headers, body, path = seen2[-1]
        assert body == b"v=0" and path == "/whip?mode=pipeline"
        assert headers[FORWARDED] == "1" and headers["Authorization"] == "Bearer t"
        assert "Cookie" not in headers
        assert peers.room[roomy] == 2  # counted until the next poll says
        # a session only the second peer holds is found there; the dead one is passed over
        found = await peers.find(make_mocked_request("DELETE", "/whip/s9"))
        assert found is not None and found.status == 200 and seen1[-1] == "s9"
        assert await peers.find(make_mocked_request("DELETE", "/whip/nobody")) is None
        await r2.cleanup()  # a peer that goes away has no room
        await until(lambda: peers.room[roomy] == 0, what="the gone peer polled")
        assert peers.roomiest() is None
    finally:
        await peers.close()
        await r1.cleanup()
        await r2.cleanup()
