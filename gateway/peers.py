"""Gateways side by side behind one signalling port.

Several gateway processes listen on the same port (SO_REUSEPORT: the kernel spreads new
connections over them, so sessions spread with no balancer in front). Each also listens on
a private address of its own, where its peers reach it. Two requests need a peer:
- an offer to a gateway that is full goes to the peer with the most room (polled from
  each peer's /healthz), and the peer's answer is returned as it is;
- a request for a session this process does not hold (a WHIP DELETE that the kernel gave
  to another process than the one that answered the offer) is asked of each peer in turn.
Media never passes through a peer: the SDP answer names the owner's own ICE candidates, so
a gateway that dies ends only its own calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)
FORWARDED = "X-Voxray-Forwarded"  # set on a request a peer passed on: never passed again
_PASSED_ON = ("Content-Type", "Authorization", "X-Forwarded-For")
_RETURNED = ("Content-Type", "Location", "Retry-After", "WWW-Authenticate")


class Peers:
    def __init__(self, urls: list[str], poll_s: float = 1.0) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.poll_s = poll_s
        self.room: dict[str, int] = dict.fromkeys(self.urls, 0)  # a peer not heard from: none
        self._http: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._poller = asyncio.create_task(self._poll())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._http is not None:
            await self._http.close()

    async def _poll(self) -> None:
        while True:
            await asyncio.gather(*(self._poll_one(url) for url in self.urls))
            await asyncio.sleep(self.poll_s)

    async def _poll_one(self, url: str) -> None:
        assert self._http is not None
        try:
            async with self._http.get(f"{url}/healthz",
                                      timeout=aiohttp.ClientTimeout(total=self.poll_s)) as res:
                self.room[url] = int((await res.json())["room"]) if res.status == 200 else 0
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
            self.room[url] = 0  # gone or not a gateway: nothing is sent there

    def roomiest(self) -> str | None:
        url = max(self.urls, key=lambda u: self.room[u], default=None)
        return url if url is not None and self.room[url] > 0 else None

    async def forward(self, request: web.Request, body: bytes, url: str) -> web.Response:
        """`request` as it came, to the peer at `url`; the peer's response."""
        assert self._http is not None
        headers = {k: request.headers[k] for k in _PASSED_ON if k in request.headers}
        if "X-Forwarded-For" not in headers and request.remote:
            headers["X-Forwarded-For"] = request.remote  # the peer limits the client, not us
        headers[FORWARDED] = "1"
        async with self._http.request(request.method, url + request.path_qs, data=body,
                                      headers=headers, allow_redirects=False) as res:
            if res.status == 201:
                self.room[url] -= 1  # until the next poll says
            return web.Response(status=res.status, body=await res.read(),
                                headers={k: res.headers[k] for k in _RETURNED
                                         if k in res.headers})

    async def find(self, request: web.Request) -> web.Response | None:
        """The answer of the peer that holds the session `request` is about; None if no
        peer does (every peer answered 404 or could not be reached)."""
        body = await request.read()
        for url in self.urls:
            try:
                res = await self.forward(request, body, url)
            except (aiohttp.ClientError, TimeoutError) as e:
                log.info("peer %s: %s", url, e)
                continue
            if res.status != 404:
                return res
        return None
