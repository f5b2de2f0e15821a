"""The Realtime API's WebRTC call flow: `POST /v1/realtime/calls` with an SDP offer
(`application/sdp`, or multipart form fields `sdp` and `session` as the openai SDK's
`client.realtime.calls.create(sdp=..., session=...)` sends them) -> `201` with the SDP
answer and `Location: /v1/realtime/calls/<id>`. The caller's and the agent's audio are
the call's media tracks; the events go both ways on the client's data channel
(OpenAI's clients name it `oai-events`). `POST /v1/realtime/calls/<id>/hangup` ends it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import FileField

from gateway.call_host import Call, CallHost
from gateway.peer import BadOffer, answer_offer
from gateway.realtime.connection import RealtimeConnection
from gateway.realtime.settings import BadSetting

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": {"type": "invalid_request_error", "code": code,
                                         "message": message}}, status=status, headers=headers)


def _text(value: object) -> str | None:
    """A form field's text, given as a plain field or as a file part (the openai SDK)."""
    if value is None:
        return None
    if isinstance(value, FileField):
        value = value.file.read()
    if isinstance(value, bytes | bytearray):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"a form field is not UTF-8 text: {e}") from None
    return str(value)


async def _offer(request: web.Request) -> tuple[str, dict[str, Any] | None]:
    """(the SDP offer, the session settings given with it); ValueError if unusable."""
    if request.content_type == "application/sdp":
        try:
            return (await request.read()).decode("utf-8"), None
        except UnicodeDecodeError as e:
            raise ValueError(f"the offer is not UTF-8 text: {e}") from None
    if request.content_type != "multipart/form-data":
        raise TypeError("send the offer as application/sdp or multipart/form-data")
    try:
        form = await request.post()
    except (HttpProcessingError, ValueError) as e:  # a broken part, header or boundary
        raise ValueError(f"the multipart form cannot be read: {e}") from None
    sdp, session = _text(form.get("sdp")), _text(form.get("session"))
    if sdp is None:
        raise ValueError("the form has no `sdp` field")
    if session is None:
        return sdp, None
    try:
        settings = json.loads(session)
    except ValueError as e:
        raise ValueError(f"`session` is not JSON: {e}") from None
    if not isinstance(settings, dict):
        raise ValueError("`session` is a JSON object")
    return sdp, settings


async def realtime_call(request: web.Request, host: CallHost) -> web.Response:
    if not host.authorized(request):
        return _error(401, "invalid_api_key", "missing or wrong bearer token",
                      **{"WWW-Authenticate": "Bearer"})
    if not host.admit(request):
        return _error(429, "rate_limit_exceeded", "too many new sessions from this address",
                      **{"Retry-After": "60"})
    if not host.has_room():
        return _error(503, "gateway_full", "gateway is full; try again later", **{
            "Retry-After": "5"})
    try:
        sdp, settings = await _offer(request)
    except TypeError as e:
        return _error(415, "unsupported_media_type", str(e))
    except ValueError as e:
        return _error(400, "invalid_offer", str(e))
    beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
    conn = RealtimeConnection(host, beta, audio_deltas=False)
    session = conn.session
    try:
        if settings is not None:
            conn.configure(settings)
    except BadSetting as e:
        return _error(400, "invalid_value", str(e))
    call = Call(session, "realtime", session.close)

    def on_channel(dc: Any) -> None:
        if conn.has_sink:
            return  # the first channel carries the events

        async def send(message: str) -> None:
            if dc.readyState == "open":
                with contextlib.suppress(Exception):
                    dc.send(message)

        dc.on("message", conn.handle_message)
        conn.connect_sink(send)

    try:
        pc, mic = await answer_offer(sdp, call, session.track, host.cfg.mic_reorder_packets,
                                     on_channel, lambda why: host.end(session.id, why))
    except BadOffer as e:
        await session.close()
        return _error(400, "invalid_offer", f"cannot use this SDP offer: {e}")
    call.hang_up, call.peer = pc.close, pc
    conn.start(call, request.remote or "", mic)
    return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                        headers={"Location": f"/v1/realtime/calls/{session.id}"})


async def hang_up(request: web.Request, host: CallHost, calls: dict[str, Call]) -> web.Response:
    if not host.authorized(request):
        return _error(401, "invalid_api_key", "missing or wrong bearer token")
    cid = request.match_info["id"]
    if cid not in calls or calls[cid].mode != "realtime":
        return _error(404, "call_not_found", f"no call {cid!r}")
    await host.end(cid, "ended by the client")
    return web.Response(status=200)
