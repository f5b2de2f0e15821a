"""What a transport (WHIP, Twilio, the Realtime API) needs of the gateway that hosts its
calls: room, credentials, the session's event sink, and a call's start and end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from aiohttp import web
from aiortc.mediastreams import MediaStreamTrack

from gateway import events as ev
from gateway.config import GatewayConfig
from gateway.mic_jitter import MicJitterBuffer
from gateway.smart_turn import SharedSmartTurn


class Session(Protocol):
    """What the gateway needs of a session, pipeline or duplex."""

    @property
    def id(self) -> str: ...

    @property
    def track(self) -> MediaStreamTrack: ...

    @property
    def last_voice_at(self) -> float: ...

    def send(self, event: ev.Event) -> None: ...

    async def close(self) -> None: ...


@dataclass
class Call:
    session: Session
    mode: str  # pipeline, duplex, twilio, realtime
    hang_up: Callable[[], Awaitable[object]]  # closes its transport (peer connection, socket)
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    reason: str = "hangup"
    connected: bool = False  # its media connection is up (ICE and DTLS; a socket at once)
    peer: Any = None  # its WebRTC peer connection, if it has one
    mic_buffer: MicJitterBuffer | None = None  # its WebRTC audio's, for the packets lost


class CallHost(Protocol):
    cfg: GatewayConfig
    turn_model: SharedSmartTurn | None

    @property
    def stage_channel(self) -> grpc.aio.Channel: ...

    def has_room(self) -> bool: ...

    def admit(self, request: web.Request) -> bool: ...

    def authorized(self, request: web.Request) -> bool: ...

    def session_sender(self, sid: Callable[[], str],
                       deliver: Callable[[ev.Event], None]) -> Callable[[ev.Event], None]: ...

    def start_call(self, call: Call, run: Coroutine[Any, Any, None], remote: str) -> None: ...

    async def end(self, cid: str, reason: str) -> None: ...
