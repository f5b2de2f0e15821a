"""The WebRTC gateway: WHIP signalling (RFC 9725) on aiohttp, one peer connection per session.

POST /whip with an SDP offer (application/sdp) -> 201 Created, the SDP answer,
and `Location: /whip/<id>`; DELETE that location ends the session. Query
`?mode=pipeline` (default) or `?mode=duplex`. The browser page is at /.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import call_log
from gateway import events as ev
from gateway.call_host import Call
from gateway.config import GatewayConfig
from gateway.duplex import DuplexSession, DuplexUnavailable
from gateway.events import SessionEnded
from gateway.metrics import GatewayMetrics
from gateway.peer import BadOffer, answer_offer
from gateway.peers import FORWARDED, Peers
from gateway.realtime import calls as realtime_calls
from gateway.realtime.connection import realtime_socket
from gateway.session.pipeline import PipelineSession
from gateway.session.tools import ToolBox
from gateway.smart_turn import SharedSmartTurn
from gateway.twilio import twilio_stream
from voxray.ice import offer_only
from voxray.paced_track import PacedAudioTrack
from voxray.stage_auth import stage_channel

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class Gateway:
    def __init__(self, config: GatewayConfig, stages: str) -> None:
        self.cfg = config
        ToolBox(config.tools)  # a tool whose function cannot be loaded stops the start here
        self.stages = stages
        self.metrics = GatewayMetrics()
        self.calls: dict[str, Call] = {}
        self._answering = 0  # offers being answered: a duplex one waits for a Moshi slot
        self.channel: grpc.aio.Channel | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._ending: set[asyncio.Task[None]] = set()
        self._offers: dict[str, collections.deque[float]] = {}  # per address: when
        self.peers = Peers(config.peers, config.peer_poll_s) if config.peers else None
        offer_only(config.ice_addresses)
        # One turn model for every session (a read-only graph, ~9 MB).
        turn = config.turn
        self.turn_model = (SharedSmartTurn(turn.turn_model, turn.turn_model_threads,
                                           turn.turn_model_nice)
                           if "audio" in turn.evidence else None)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_sdp_bytes)
        app.router.add_get("/", self.page)
        app.router.add_static("/static/", STATIC)
        app.router.add_post("/whip", self.whip_post)
        app.router.add_delete("/whip/{id}", self.whip_delete)
        app.router.add_get("/twilio", self.twilio)
        app.router.add_get("/v1/realtime", self.realtime)
        app.router.add_post("/v1/realtime/calls", self.realtime_call)
        app.router.add_post("/v1/realtime/calls/{id}/hangup", self.realtime_hang_up)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/healthz", self.health)
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _startup(self, _: web.Application) -> None:
        self.channel = stage_channel(self.stages)
        self._watchdog = asyncio.create_task(self._enforce_limits())
        if self.peers is not None:
            await self.peers.start()

    async def _shutdown(self, _: web.Application) -> None:
        if self._watchdog:
            self._watchdog.cancel()
        await asyncio.gather(*(self.end(cid, "gateway shutting down") for cid in list(self.calls)))
        if self.channel is not None:
            await self.channel.close()
        if self.turn_model is not None:
            self.turn_model.close()
        if self.peers is not None:
            await self.peers.close()

    # -- HTTP ------------------------------------------------------------------------------

    async def page(self, _: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"sessions": len(self.calls), "room": max(
            0, self.cfg.max_sessions - len(self.calls) - self._answering)})

    def from_peer(self, request: web.Request) -> bool:
        """A request a peer passed on (on our private address: a client cannot claim it)."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return (request.headers.get(FORWARDED) == "1" and sockname is not None
                and sockname[1] == self.cfg.private_port)

    async def prometheus(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def whip_post(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            self.metrics.refused.labels("unauthorized").inc()
            return web.Response(status=401, text="missing or wrong bearer token\n",
                                headers={"WWW-Authenticate": "Bearer"})
        if request.content_type != "application/sdp":
            return web.Response(status=415, text="send the offer as application/sdp\n")
        mode = request.query.get("mode", "pipeline")
        if mode not in ("pipeline", "duplex"):
            return web.Response(status=400, text=f"unknown mode {mode!r}: pipeline or duplex\n")
        peer = self.from_peer(request)
        if not peer and not self.admit(request):  # (a peer's: admitted where it came in)
            return web.Response(status=429, text="too many new sessions from this address; "
                                "try again in a minute\n", headers={"Retry-After": "60"})
        if not self.has_room():
            if self.peers is not None and not peer and (url := self.peers.roomiest()):
                try:
                    return await self.peers.forward(request, await request.read(), url)
                except (aiohttp.ClientError, TimeoutError) as e:  # gone since its last poll
                    log.info("peer %s: %s", url, e)
            self.metrics.refused.labels("full").inc()
            return web.Response(status=503, text="gateway is full; try again later\n",
                                headers={"Retry-After": "5"})
        try:
            sdp = (await request.read()).decode("utf-8")
        except UnicodeDecodeError as e:
            return web.Response(status=400, text=f"the offer is not UTF-8 text: {e}\n")
        self._answering += 1
        try:
            return await self._offer(sdp, mode, request.remote or "")
        finally:
            self._answering -= 1

    async def _offer(self, sdp: str, mode: str, remote: str) -> web.Response:
        try:
            answer, location = await self._answer(sdp, mode, remote)
        except DuplexUnavailable as e:
            self.metrics.refused.labels("duplex_full" if e.retry_after_s else "duplex_unavailable"
                                        ).inc()
            retry = {"Retry-After": str(e.retry_after_s)} if e.retry_after_s else {}
            return web.Response(status=503, text=f"{e}\n", headers=retry)
        except BadOffer as e:
            log.info("bad offer: %s", e)
            return web.Response(status=400, text=f"cannot use this SDP offer: {e}\n")
        except Exception:  # ours, not the client's: say so, and keep the trace
            log.exception("could not start a session")
            return web.Response(status=500, text="the gateway could not start the session "
                                "(an internal error; its log has the details)\n")
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": location})

    async def twilio(self, request: web.Request) -> web.StreamResponse:
        return await twilio_stream(request, self)

    async def realtime(self, request: web.Request) -> web.StreamResponse:
        return await realtime_socket(request, self)

    async def realtime_call(self, request: web.Request) -> web.Response:
        return await realtime_calls.realtime_call(request, self)

    async def realtime_hang_up(self, request: web.Request) -> web.Response:
        return await realtime_calls.hang_up(request, self, self.calls)

    async def whip_delete(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return web.Response(status=401, text="missing or wrong bearer token\n")
        cid = request.match_info["id"]
        if cid not in self.calls:
            held = (await self.peers.find(request)
                    if self.peers is not None and not self.from_peer(request) else None)
            return held or web.Response(status=404, text="no such session\n")
        await self.end(cid, "ended by the client")
        return web.Response(status=200)

    # -- sessions --------------------------------------------------------------------------

    async def _answer(self, sdp: str, mode: str, remote: str) -> tuple[str, str]:
        assert self.channel is not None
        channels: list[object] = []
        early: list[str] = []  # events before the client's data channel is open

        def deliver(event: ev.Event) -> None:
            open_channels = [dc for dc in channels if getattr(dc, "readyState", "") == "open"]
            if not open_channels:
                early.append(event.json())
                del early[:-100]
            for dc in open_channels:
                with contextlib.suppress(Exception):
                    dc.send(event.json())  # type: ignore[attr-defined]

        def on_channel(dc: object) -> None:
            channels.append(dc)
            for message in early:
                with contextlib.suppress(Exception):
                    dc.send(message)  # type: ignore[attr-defined]
            early.clear()

        send = self.session_sender(lambda: session.id, deliver)
        session: PipelineSession | DuplexSession
        if mode == "duplex":
            session = DuplexSession(self.cfg, self.channel, send)
        else:
            session = PipelineSession(self.cfg, self.channel, send, self.turn_model)
        call = Call(session, mode, session.close)
        try:
            pc, mic = await answer_offer(sdp, call, session.track, self.cfg.mic_reorder_packets,
                                         on_channel, lambda why: self.end(session.id, why))
        except BaseException:
            await session.close()
            raise
        call.hang_up, call.peer = pc.close, pc
        try:
            if isinstance(session, DuplexSession):
                await session.connect()  # holds a Moshi slot from here on
        except BaseException:
            await session.close()
            await pc.close()
            raise
        self.start_call(call, session.run(mic), remote)
        return pc.localDescription.sdp, f"/whip/{session.id}"

    def start_call(self, call: Call, run: Coroutine[Any, Any, None], remote: str) -> None:
        """Count the call in and run its session (`run`) until it ends."""
        self.calls[call.session.id] = call
        if isinstance(call.session.track, PacedAudioTrack):
            call.session.track.on_late = self.metrics.frame_late.observe
        self.metrics.sessions.labels(call.mode).inc()
        call_log.session_started(call.session.id, call.mode, remote)
        call.task = asyncio.ensure_future(run)
        call.task.add_done_callback(lambda task: self._spawn(self._finished(call, task)))

    @property
    def stage_channel(self) -> grpc.aio.Channel:
        assert self.channel is not None, "the gateway has not started"
        return self.channel

    def has_room(self) -> bool:
        return len(self.calls) + self._answering < self.cfg.max_sessions

    def admit(self, request: web.Request) -> bool:
        """Whether this client address may open another session now (offers_per_minute).
        Behind a reverse proxy on this machine the client is the last X-Forwarded-For
        address; a client on this machine itself (load tests, tools) is not limited."""
        remote = request.remote or ""
        if _is_loopback(remote):
            forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
            if not forwarded:
                return True
            remote = forwarded
        now = time.monotonic()
        recent = self._offers.setdefault(remote, collections.deque())
        while recent and recent[0] < now - 60:
            recent.popleft()
        if len(recent) >= self.cfg.offers_per_minute:
            self.metrics.refused.labels("rate_limited").inc()
            return False
        recent.append(now)
        for address in [a for a, times in self._offers.items() if not times]:
            del self._offers[address]
        return True

    def authorized(self, request: web.Request) -> bool:
        token = self.cfg.auth_token
        return not token or hmac.compare_digest(
            request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode())

    def session_sender(self, sid: Callable[[], str],
                       deliver: Callable[[ev.Event], None]) -> Callable[[ev.Event], None]:
        """A session's `send`: metrics and the call log observe each event, then the
        transport delivers it (`sid`: the session's id, known once it exists)."""
        def send(event: ev.Event) -> None:
            self.metrics.observe(event)
            call_log.session_event(sid(), event)
            deliver(event)
        return send

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _finished(self, call: Call, task: asyncio.Task[None]) -> None:
        """A session's run ended by itself (or was cancelled by end()): end its call."""
        if not task.cancelled():
            error = task.exception()
            if isinstance(error, SessionEnded):
                call.reason = str(error)
            elif error is not None:
                log.error("session %s failed", call.session.id, exc_info=error)
                call.reason = "internal error"
        await self.end(call.session.id, call.reason)

    async def end(self, cid: str, reason: str) -> None:
        call = self.calls.pop(cid, None)
        if call is None:
            return
        call.reason = reason
        self.metrics.sessions.labels(call.mode).dec()
        self.metrics.ended.labels(reason.split(":")[0]).inc()
        call.session.send(ev.Info("session_ended", reason))
        mic = call.mic_buffer
        call_log.session_ended(cid, call.mode, reason, call.started,
                               mic.skipped if mic else None, mic.late if mic else None)
        await call.session.close()
        await call.hang_up()
        if call.task is not None:
            call.task.cancel()

    async def _enforce_limits(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for cid, call in list(self.calls.items()):
                cap = self.cfg.max_session_s
                if cap is not None and now - call.started > cap:
                    await self.end(cid, "session time limit reached")
                elif not call.connected and now - call.started > self.cfg.connect_timeout_s:
                    # an offer whose client never connected its media holds a slot
                    await self.end(cid, f"no media connection within "
                                        f"{self.cfg.connect_timeout_s:g} s")
                elif now - call.session.last_voice_at > self.cfg.idle_timeout_s:
                    await self.end(cid, "idle timeout")


async def serve(config: GatewayConfig, stages: str) -> web.AppRunner:
    """Start the gateway; returns the runner (`await runner.cleanup()` stops it)."""
    runner = web.AppRunner(Gateway(config, stages).app())
    await runner.setup()
    await listen(runner, config)
    return runner


async def listen(runner: web.AppRunner, config: GatewayConfig) -> None:
    """The signalling port (shared with peer gateways under reuse_port) and the private
    one the peers reach this gateway at."""
    await web.TCPSite(runner, config.host, config.port, reuse_port=config.reuse_port or None
                      ).start()
    if config.private_port is not None:
        await web.TCPSite(runner, config.private_host, config.private_port).start()
