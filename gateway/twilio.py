"""Twilio Media Streams: a phone call's audio over a WebSocket, both ways.

TwiML `<Connect><Stream url="wss://HOST/twilio"/></Connect>` opens it. Twilio sends
`connected`, `start` (streamSid; mediaFormat audio/x-mulaw, 8000 Hz, mono),
`media` (base64 mu-law, 20 ms each), `mark` (the audio before a mark we sent has
played), `dtmf` and `stop`. The gateway sends `media` (the agent's voice, paced
in real time like a WebRTC track, so what was sent is what was heard), a `mark`
where a reply's audio stops, and `clear` when a barge-in drops the agent's audio
(Twilio then drops what it buffered).

Twilio cannot send headers of our choosing: with `gateway.auth_token` set, give the
token as a `<Parameter name="token" value="..."/>` of the Stream (it arrives in
`start.customParameters`), or put a proxy that adds the bearer header in front.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from gateway.call_host import Call, CallHost
from gateway.message_audio import AudioFormat, BadAudio, InboundAudio, send_agent_audio
from gateway.session.pipeline import PipelineSession

log = logging.getLogger(__name__)
MULAW_8K = AudioFormat("pcmu", 8000)


class StreamRefused(Exception):
    """The stream cannot start; the socket is closed with `code` and the message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _message(data: str) -> dict[str, Any]:
    try:
        msg = json.loads(data)
    except ValueError as e:
        raise StreamRefused(WSCloseCode.INVALID_TEXT, f"not JSON: {e}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        raise StreamRefused(WSCloseCode.INVALID_TEXT, "a message is a JSON object with `event`")
    return msg


async def _start(ws: web.WebSocketResponse, within_s: float) -> dict[str, Any]:
    """The `start` message (after `connected`)."""
    async with asyncio.timeout(within_s):
        async for raw in ws:
            if raw.type != WSMsgType.TEXT:
                raise StreamRefused(WSCloseCode.UNSUPPORTED_DATA, "Media Streams sends text")
            msg = _message(raw.data)
            if msg["event"] == "start":
                start = msg.get("start")
                if not isinstance(start, dict) or not isinstance(start.get("streamSid"), str):
                    raise StreamRefused(WSCloseCode.INVALID_TEXT, "`start` has no streamSid")
                return start
            if msg["event"] not in ("connected",):
                raise StreamRefused(WSCloseCode.POLICY_VIOLATION,
                                    f"expected `start`, got {msg['event']!r}")
    raise StreamRefused(WSCloseCode.OK, "closed before `start`")


def _check_format(start: dict[str, Any]) -> None:
    fmt = start.get("mediaFormat") or {}
    encoding, rate = fmt.get("encoding", "audio/x-mulaw"), fmt.get("sampleRate", 8000)
    if encoding != "audio/x-mulaw" or rate != 8000 or fmt.get("channels", 1) != 1:
        raise StreamRefused(WSCloseCode.UNSUPPORTED_DATA,
                            f"mediaFormat {fmt}: only audio/x-mulaw, 8000 Hz, mono")


async def twilio_stream(request: web.Request, host: CallHost) -> web.StreamResponse:
    if not host.admit(request):
        return web.Response(status=429, text="too many new sessions from this address\n",
                            headers={"Retry-After": "60"})
    if not host.has_room():
        return web.Response(status=503, text="gateway is full; try again later\n",
                            headers={"Retry-After": "5"})
    cfg = host.cfg
    ws = web.WebSocketResponse(max_msg_size=cfg.max_message_bytes, heartbeat=30)
    await ws.prepare(request)
    try:
        start = await _start(ws, cfg.connect_timeout_s)
        _check_format(start)
        token = str((start.get("customParameters") or {}).get("token") or "")
        if cfg.auth_token and not (host.authorized(request) or hmac.compare_digest(
                token.encode(), cfg.auth_token.encode())):
            raise StreamRefused(WSCloseCode.POLICY_VIOLATION, "missing or wrong token")
    except (StreamRefused, TimeoutError) as e:
        code = e.code if isinstance(e, StreamRefused) else WSCloseCode.POLICY_VIOLATION
        await ws.close(code=code, message=str(e or "no `start` in time").encode()[:120])
        return ws
    await TwilioCall(ws, host, start["streamSid"]).run(request.remote or "")
    return ws


class TwilioCall:
    """One Media Stream: its socket in and out, on a pipeline session."""

    def __init__(self, ws: web.WebSocketResponse, host: CallHost, stream_sid: str) -> None:
        self.ws = ws
        self.host = host
        self.sid = stream_sid
        self._out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.inbound = InboundAudio(MULAW_8K)
        self.session = PipelineSession(
            host.cfg, host.stage_channel,
            host.session_sender(lambda: self.session.id, lambda _: None), host.turn_model)
        self.session.track.on_clear = lambda: self._send({"event": "clear"})
        self.marks_played: list[str] = []

    def _send(self, msg: dict[str, Any]) -> None:
        self._out.put_nowait(msg | {"streamSid": self.sid})

    async def _media(self, _: int, payload: bytes) -> None:
        self._send({"event": "media", "media": {"payload": base64.b64encode(payload).decode()}})

    async def _stopped(self, reply: int) -> None:
        self._send({"event": "mark", "mark": {"name": f"reply-{reply}"}})

    async def _write(self) -> None:
        while True:
            msg = await self._out.get()
            await self.ws.send_str(json.dumps(msg))

    async def _converse(self) -> None:
        tasks = [asyncio.ensure_future(self._write()),
                 asyncio.ensure_future(send_agent_audio(self.session.track, MULAW_8K,
                                                        self._media, self._stopped))]
        try:
            await self.session.run_chunks(self.inbound.chunks())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self, remote: str) -> None:
        call = Call(self.session, "twilio", self.ws.close, connected=True)
        self.host.start_call(call, self._converse(), remote)
        reason = "stream stopped"
        try:
            reason = await self._read()
        finally:
            self.inbound.end()
            await self.host.end(self.session.id, reason)

    async def _read(self) -> str:
        """Until `stop` or the socket closes: the reason the call ends."""
        async for raw in self.ws:
            if raw.type != WSMsgType.TEXT:
                await self.ws.close(code=WSCloseCode.UNSUPPORTED_DATA,
                                    message=b"Media Streams sends text")
                return "bad message: not text"
            try:
                msg = _message(raw.data)
                event = msg["event"]
                if event == "media":
                    media = msg.get("media") or {}
                    if media.get("track", "inbound") == "inbound":
                        self.inbound.push(base64.b64decode(media.get("payload", ""),
                                                           validate=True))
                elif event == "mark":
                    self.marks_played.append(str((msg.get("mark") or {}).get("name")))
                elif event == "stop":
                    return "stream stopped"
                else:  # dtmf and events of later protocol versions
                    log.debug("twilio %s: %s ignored", self.sid, event)
            except (StreamRefused, binascii.Error, BadAudio, TypeError, AttributeError) as e:
                code = e.code if isinstance(e, StreamRefused) else WSCloseCode.INVALID_TEXT
                with contextlib.suppress(Exception):
                    await self.ws.close(code=code, message=f"bad message: {e}".encode()[:120])
                return f"bad message: {e}"
        return "socket closed"
