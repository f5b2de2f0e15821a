"""One Realtime API connection: its client events in, the pipeline session's events out.

The session takes the turns (turn_detection server_vad or semantic_vad: voxray's
turn taker and policy) and answers them; this adapter only translates:

    speech started / turn ended   -> input_audio_buffer.speech_started / speech_stopped,
                                     committed, conversation.item.added (the user's item)
    the turn's final transcript   -> ...input_audio_transcription.completed, item.done
    a committed reply             -> response.created, output_item.added, content_part.added
    its text and its paced audio  -> response.output_audio_transcript.delta, output_audio.delta
    played / interrupted / failed -> ...done events, response.done (completed, cancelled,
                                     failed), with what was heard as the transcript

A session whose output_modalities is ["text"] (beta: modalities ["text"]) is answered
in text: response.output_text.delta / done, no TTS stream and no audio.

The agent's audio is sent paced in real time, as on a WebRTC track, so what was
sent is what was heard; `conversation.item.truncate` narrows that to what the
client played. A client using the beta protocol (header `OpenAI-Beta:
realtime=v1`) gets the beta names of the audio and transcript events.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from aiortc.mediastreams import MediaStreamTrack

from gateway import events as ev
from gateway.call_host import Call, CallHost
from gateway.message_audio import BadAudio, InboundAudio, send_agent_audio
from gateway.realtime.settings import BadSetting, Settings, described, updated
from gateway.session.events import (
    SessionEvent,
    SpeechStarted,
    TurnCommitted,
    TurnEnded,
    TurnEvent,
    TurnHeard,
)
from gateway.session.pipeline import PipelineSession
from gateway.session.tools import ClientTool
from gateway.vad import SAMPLE_RATE
from voxray.stage_clients.llm import (
    TOOL_CALLS,
    TOOL_RESULT,
    ToolCall,
    tool_calls_message,
    tool_result_message,
)

log = logging.getLogger(__name__)
BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
GA_NAMES = {beta: ga for ga, beta in BETA_NAMES.items()}


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


@dataclass
class Response:
    id: str
    item_id: str
    reply: int
    text: str = ""
    audio_bytes: int = 0
    cancel_reason: str = "turn_detected"
    text_only: bool = False  # output_modalities ["text"]

    def item(self, status: str, transcript: str | None = None) -> dict[str, Any]:
        said = self.text if transcript is None else transcript
        content = {"type": "output_text", "text": said} if self.text_only else \
            {"type": "output_audio", "transcript": said}
        return {"id": self.item_id, "object": "realtime.item", "type": "message",
                "role": "assistant", "status": status, "content": [content]}

    def part(self, said: str) -> dict[str, Any]:
        return {"type": "text", "text": said} if self.text_only else \
            {"type": "audio", "transcript": said}


@dataclass
class UserItem:
    id: str
    transcript: str | None = None
    partial: str = ""

    def item(self) -> dict[str, Any]:
        return {"id": self.id, "object": "realtime.item", "type": "message", "role": "user",
                "status": "completed",
                "content": [{"type": "input_audio", "transcript": self.transcript}]}


@dataclass
class Conversation:
    """What the client was told: its items and the responses under way."""

    last_item: str | None = None
    speaking: UserItem | None = None  # the user turn under way
    to_transcribe: list[UserItem] = field(default_factory=list)  # ended, awaiting finals
    responses: dict[int, Response] = field(default_factory=dict)  # by reply id
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # as last described
    replies_by_item: dict[str, int] = field(default_factory=dict)


def _context_message(item: dict[str, Any]) -> Callable[[str, str], bool]:
    """Which chat-context message a Realtime item is."""
    kind = item.get("type")
    if kind == "function_call_output":
        call_id = item.get("call_id")
        return lambda role, content: role == TOOL_RESULT and \
            json.loads(content)["call_id"] == call_id
    if kind == "function_call":
        call_id = item.get("call_id")
        return lambda role, content: role == TOOL_CALLS and \
            [c["id"] for c in json.loads(content)["calls"]] == [call_id]
    text = " ".join(str(p.get("text") or p.get("transcript") or "")
                    for p in item.get("content") or [] if isinstance(p, dict)).strip()
    role = item.get("role")
    return lambda r, content: r == role and content.strip() == text


class RealtimeConnection:
    """`audio_deltas`: the agent's audio goes out as response.output_audio.delta events
    and the client's comes in input_audio_buffer.append (a WebSocket); without, both
    are the media tracks of a WebRTC call and only events use the data channel."""

    def __init__(self, host: CallHost, beta: bool, audio_deltas: bool = True) -> None:
        self.host = host
        self.beta = beta
        self.audio_deltas = audio_deltas
        self._sink: Callable[[str], Awaitable[None]] | None = None
        self._sink_ready = asyncio.Event()
        self.settings = Settings()
        self.convo = Conversation()
        self._ids = uuid.uuid4().hex[:8]
        self._n = 0
        self._out: asyncio.Queue[str] = asyncio.Queue()
        self._audio_task: asyncio.Task[None] | None = None
        self.inbound = InboundAudio(self.settings.input_format)
        self._audio_in = False  # some audio came: the input format is fixed from here
        self.session = PipelineSession(
            host.cfg, host.stage_channel,
            host.session_sender(lambda: self.session.id, self._on_gateway_event),
            host.turn_model)
        self.session.listeners.append(self._on_session_event)

    # -- out ------------------------------------------------------------------------------

    def _new_id(self, kind: str) -> str:
        self._n += 1
        return f"{kind}_{self._ids}{self._n:04d}"

    def emit(self, type_: str, **fields: Any) -> None:
        if type_ in ("conversation.item.added", "conversation.item.done"):
            self.convo.items[fields["item"]["id"]] = fields["item"]
        name = BETA_NAMES.get(type_, type_) if self.beta else type_
        self._out.put_nowait(json.dumps({"type": name, "event_id": self._new_id("event"),
                                         **fields}))

    def error(self, message: str, code: str, param: str | None = None,
              event_id: str | None = None, type_: str = "invalid_request_error") -> None:
        self.emit("error", error={"type": type_, "code": code, "message": message,
                                  "param": param, "event_id": event_id})

    def _session_object(self) -> dict[str, Any]:
        voice = self.settings.voice or self.host.cfg.voice
        return described(self.settings, "sess_" + self.session.id, voice, self.beta)

    # -- the session's side ----------------------------------------------------------------

    def _on_session_event(self, e: TurnEvent | SessionEvent) -> None:
        c = self.convo
        if isinstance(e, SpeechStarted):
            c.speaking = UserItem(self._new_id("item"))
            self.emit("input_audio_buffer.speech_started", audio_start_ms=_ms(e.start_sample),
                      item_id=c.speaking.id)
        elif isinstance(e, TurnEnded):
            item = c.speaking or UserItem(self._new_id("item"))
            c.speaking = None
            if self.settings.turn_detection is not None:  # (committed by the client)
                self.emit("input_audio_buffer.speech_stopped",
                          audio_end_ms=_ms(e.last_voiced_sample), item_id=item.id)
            self.emit("input_audio_buffer.committed", item_id=item.id,
                      previous_item_id=c.last_item)
            self.emit("conversation.item.added", item=item.item(), previous_item_id=c.last_item)
            c.last_item = item.id
            c.to_transcribe.append(item)
        elif isinstance(e, TurnHeard) and c.to_transcribe:
            item = c.to_transcribe.pop(0)
            item.transcript = e.text
            self.emit("conversation.item.input_audio_transcription.completed",
                      item_id=item.id, content_index=0, transcript=e.text,
                      usage={"type": "duration", "seconds": 0})
            self.emit("conversation.item.done", item=item.item(), previous_item_id=None)
        elif isinstance(e, TurnCommitted):
            self._response_started(e.reply)

    def _response_started(self, reply: int) -> None:
        c = self.convo
        r = c.responses[reply] = Response(self._new_id("resp"), self._new_id("item"), reply,
                                          text_only=self.settings.text_only)
        c.replies_by_item[r.item_id] = reply
        fmt = self.settings.output_format
        self.emit("response.created", response=self._response(r, "in_progress", []))
        self.emit("rate_limits.updated", rate_limits=[])
        self.emit("response.output_item.added", response_id=r.id, output_index=0,
                  item=r.item("in_progress"))
        self.emit("conversation.item.added", item=r.item("in_progress"),
                  previous_item_id=c.last_item)
        c.last_item = r.item_id
        self.emit("response.content_part.added", response_id=r.id, item_id=r.item_id,
                  output_index=0, content_index=0, part=r.part(""))
        log.debug("realtime %s: response %s for reply %d in %s", self.session.id, r.id,
                  reply, fmt)

    def _response(self, r: Response, status: str, output: list[dict[str, Any]],
                  details: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"id": r.id, "object": "realtime.response", "status": status,
                "status_details": details, "output": output,
                "conversation_id": "conv_" + self.session.id,
                "output_modalities": ["text"] if r.text_only else ["audio"],
                "metadata": None, "usage": None}

    def _finish(self, reply: int, status: str, transcript: str | None = None,
                details: dict[str, Any] | None = None,
                calls: list[dict[str, str]] | None = None) -> None:
        r = self.convo.responses.pop(reply, None)
        if r is None:
            return
        said = r.text if transcript is None else transcript
        where = {"response_id": r.id, "item_id": r.item_id, "output_index": 0,
                 "content_index": 0}
        if r.text_only:
            self.emit("response.output_text.done", **where, text=said)
        else:
            self.emit("response.output_audio.done", **where)
            self.emit("response.output_audio_transcript.done", **where, transcript=said)
        self.emit("response.content_part.done", **where, part=r.part(said))
        item = r.item("completed" if status == "completed" else "incomplete", said)
        self.emit("response.output_item.done", response_id=r.id, output_index=0, item=item)
        self.emit("conversation.item.done", item=item, previous_item_id=None)
        output = [item, *(self._function_call(r, i + 1, c) for i, c in enumerate(calls or []))]
        self.emit("response.done", response=self._response(r, status, output, details))

    def _function_call(self, r: Response, index: int, call: dict[str, str]) -> dict[str, Any]:
        """A call of one of the client's tools, as the response's output item `index`."""
        item_id = self._new_id("item")
        item: dict[str, Any] = {"id": item_id, "object": "realtime.item",
                                "type": "function_call", "status": "in_progress",
                                "call_id": call["call_id"], "name": call["name"],
                                "arguments": ""}
        where = {"response_id": r.id, "item_id": item_id, "output_index": index,
                 "call_id": call["call_id"]}
        self.emit("response.output_item.added", response_id=r.id, output_index=index, item=item)
        self.emit("conversation.item.added", item=item, previous_item_id=self.convo.last_item)
        self.convo.last_item = item_id
        self.emit("response.function_call_arguments.delta", **where, delta=call["arguments"])
        self.emit("response.function_call_arguments.done", **where, name=call["name"],
                  arguments=call["arguments"])
        item = item | {"status": "completed", "arguments": call["arguments"]}
        self.emit("response.output_item.done", response_id=r.id, output_index=index, item=item)
        self.emit("conversation.item.done", item=item, previous_item_id=None)
        return item

    def _on_gateway_event(self, e: ev.Event) -> None:
        c = self.convo
        if isinstance(e, ev.AgentText):
            r = c.responses.get(e.turn)
            if r is not None:
                r.text += e.text
                self.emit("response.output_text.delta" if r.text_only else
                          "response.output_audio_transcript.delta", response_id=r.id,
                          item_id=r.item_id, output_index=0, content_index=0, delta=e.text)
        elif isinstance(e, ev.Transcript) and not e.final and c.speaking is not None:
            # partials are whole hypotheses: a delta only where one extends the last
            if e.text.startswith(c.speaking.partial) and len(e.text) > len(c.speaking.partial):
                self.emit("conversation.item.input_audio_transcription.delta",
                          item_id=c.speaking.id, content_index=0,
                          delta=e.text[len(c.speaking.partial):])
                c.speaking.partial = e.text
        elif isinstance(e, ev.Interrupted):
            r = c.responses.get(e.turn)
            reason = r.cancel_reason if r is not None else "turn_detected"
            self._finish(e.turn, "cancelled", e.heard, {"type": "cancelled", "reason": reason})
        elif isinstance(e, ev.Info) and e.type == "agent_done":
            self._finish(int(e.detail.get("turn", -1)), "completed",
                         calls=e.detail.get("tool_calls"))
        elif isinstance(e, ev.Info) and e.type == "error":
            stage = str(e.detail.get("stage", "gateway"))
            self.error(e.message, f"{stage}_failed", type_="server_error")
            current = self.session.reply.id if self.session.reply is not None else None
            for reply in [r for r in c.responses if r != current]:
                self._finish(reply, "failed", details={"type": "failed",
                                                       "error": {"type": "server_error",
                                                                 "code": stage}})

    async def _audio_out(self, reply: int, data: bytes) -> None:
        r = self.convo.responses.get(reply)
        if r is not None:
            r.audio_bytes += len(data)
            self.emit("response.output_audio.delta", response_id=r.id, item_id=r.item_id,
                      output_index=0, content_index=0, delta=base64.b64encode(data).decode())

    def _start_audio_out(self) -> None:
        if self._audio_task is not None:
            self._audio_task.cancel()
        self._audio_task = asyncio.ensure_future(send_agent_audio(
            self.session.track, self.settings.output_format, self._audio_out))

    # -- the client's side -----------------------------------------------------------------

    def configure(self, session: dict[str, Any]) -> None:
        """Settings given with the call (the WebRTC flow's `session` form field): as a
        session.update before anything else; BadSetting refuses the call."""
        self._apply({"session": session}, announce=False)

    def _apply(self, event: dict[str, Any], announce: bool = True) -> None:
        session = event.get("session")
        new = updated(self.settings, session, self.beta)
        if new.input_format != self.settings.input_format and self._audio_in:
            raise BadSetting("session.audio.input.format",
                             "the input format is fixed once audio has been sent")
        if new.turn_detection != self.settings.turn_detection:
            try:
                self.session.set_manual(new.turn_detection is None)
                if new.turn_detection is not None:
                    self.session.retune(new.turn_config(self.host.cfg.turn))
            except RuntimeError as e:
                raise BadSetting("session.audio.input.turn_detection", str(e)) from None
        out_changed = new.output_format != self.settings.output_format
        self.settings = new
        self.inbound.reformat(new.input_format)
        self.session.voice = new.voice or None
        self.session.speak = not new.text_only
        self.session.context.instructions = new.instructions
        self.session.temperature = new.temperature
        self.session.reply_max_tokens = new.max_output_tokens or self.host.cfg.reply_max_tokens
        if out_changed and self.audio_deltas:
            self._start_audio_out()
        self.session.tools.client = {t["name"]: ClientTool(t["name"], t["description"],
                                                           t["parameters"]) for t in new.tools}
        if announce:
            self.emit("session.updated", session=self._session_object())

    def handle(self, event: dict[str, Any]) -> None:
        eid = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        if not isinstance(event.get("type"), str):
            self.error("a client event has a string `type`", "invalid_event", "type", eid)
            return
        kind = GA_NAMES.get(event["type"], event["type"])
        try:
            if kind == "session.update":
                self._apply(event)
            elif kind == "input_audio_buffer.append" and not self.audio_deltas:
                self.error("a WebRTC call's audio is its media track", "unsupported",
                           event_id=eid)
            elif kind == "input_audio_buffer.append":
                audio = event.get("audio")
                if not isinstance(audio, str):
                    raise BadSetting("audio", "base64 audio in the input format")
                self._audio_in = True
                self.inbound.push(base64.b64decode(audio, validate=True))
            elif kind == "input_audio_buffer.clear":
                self.inbound.clear()
                self.inbound.then(self.session.discard_audio)
                self.emit("input_audio_buffer.cleared")
            elif kind == "input_audio_buffer.commit":
                if not self.session.manual:
                    self.error("with server_vad or semantic_vad the server commits the audio "
                               "when the turn ends", "input_audio_buffer_commit_unsupported",
                               event_id=eid)
                else:
                    self.inbound.flush()
                    self.inbound.then(lambda: self._commit(eid))
            elif kind == "response.cancel":
                current = self.session.reply
                if current is not None and current.id in self.convo.responses:
                    self.convo.responses[current.id].cancel_reason = "client_cancelled"
                if self.session.cancel_reply() is None:
                    self.error("no response is under way", "response_cancel_not_active",
                               event_id=eid)
            elif kind == "response.create":
                self.inbound.then(self.session.respond)  # after any commit before it
            elif kind == "conversation.item.create":
                self._create_item(event.get("item"), eid)
            elif kind == "conversation.item.truncate":
                self._truncate(event, eid)
            elif kind == "conversation.item.retrieve":
                item = self.convo.items.get(str(event.get("item_id")))
                if item is None:
                    self.error(f"no item {event.get('item_id')!r}", "item_not_found",
                               "item_id", eid)
                else:
                    self.emit("conversation.item.retrieved", item=item)
            elif kind == "conversation.item.delete":
                self._delete(event.get("item_id"), eid)
            elif kind == "output_audio_buffer.clear":
                # WebRTC: stop the agent's audio now (what was played stays heard)
                self.session.cancel_reply()
                self.emit("output_audio_buffer.cleared", response_id=None)
            else:
                self.error(f"unknown event type {event.get('type')!r}", "unknown_event",
                           "type", eid)
        except BadSetting as e:
            self.error(str(e), "invalid_value", e.param, eid)
        except (binascii.Error, BadAudio) as e:
            self.error(f"audio: {e}", "invalid_audio", "audio", eid)

    def _commit(self, eid: str | None) -> None:
        if not self.session.commit_audio():
            self.error("the input audio buffer is empty", "input_audio_buffer_commit_empty",
                       event_id=eid)

    def _create_item(self, item: Any, eid: str | None) -> None:
        if isinstance(item, dict) and item.get("type") in ("function_call",
                                                           "function_call_output"):
            self._create_tool_item(item, eid)
            return
        if not isinstance(item, dict) or item.get("type", "message") != "message" \
                or item.get("role") not in ("user", "assistant", "system"):
            self.error("supported items are messages (user, assistant, system), "
                       "function_call and function_call_output", "unsupported", "item", eid)
            return
        parts = item.get("content") or []
        text = " ".join(str(p.get("text") or p.get("transcript") or "") for p in parts
                        if isinstance(p, dict)).strip()
        if not text:
            self.error("a message item needs text content", "invalid_value", "item.content",
                       eid)
            return
        role = item["role"]
        if role == "system":
            self.session.context.instructions = text
        elif role == "user":
            self.session.context.commit_user(text)
        else:
            self.session.context.agent_heard(text)
        item_id = item.get("id") or self._new_id("item")
        added = {"id": item_id, "object": "realtime.item", "type": "message", "role": role,
                 "status": "completed", "content": parts}
        self.emit("conversation.item.added", item=added, previous_item_id=self.convo.last_item)
        self.emit("conversation.item.done", item=added, previous_item_id=self.convo.last_item)
        self.convo.last_item = item_id

    def _create_tool_item(self, item: dict[str, Any], eid: str | None) -> None:
        """A client's function call or its output, into the conversation the LLM reads."""
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            self.error("a function item needs its call_id", "invalid_value", "item.call_id",
                       eid)
            return
        if item["type"] == "function_call_output":
            output = item.get("output")
            if not isinstance(output, str):
                self.error("output: a string (the function's result)", "invalid_value",
                           "item.output", eid)
                return
            if not self.session.context.has_tool_call(call_id):
                self.error(f"no function call {call_id!r} in the conversation",
                           "invalid_value", "item.call_id", eid)
                return
            self.session.context.add([tool_result_message(call_id, output)])
        else:
            name, arguments = item.get("name"), item.get("arguments") or "{}"
            if not isinstance(name, str) or not isinstance(arguments, str):
                self.error("a function_call item has a name and its arguments as a JSON "
                           "string", "invalid_value", "item", eid)
                return
            self.session.context.add([tool_calls_message("", [ToolCall(call_id, name,
                                                                       arguments)])])
        item_id = item.get("id") or self._new_id("item")
        added = {**item, "id": item_id, "object": "realtime.item", "status": "completed"}
        self.emit("conversation.item.added", item=added, previous_item_id=self.convo.last_item)
        self.emit("conversation.item.done", item=added, previous_item_id=self.convo.last_item)
        self.convo.last_item = item_id

    def _delete(self, item_id: Any, eid: str | None) -> None:
        """Take an item out of the conversation the LLM reads from the next reply on."""
        item = self.convo.items.get(str(item_id))
        if item is None:
            self.error(f"no item {item_id!r}", "item_not_found", "item_id", eid)
            return
        if item["id"] in self.convo.replies_by_item and \
                self.convo.replies_by_item[item["id"]] in self.convo.responses:
            self.error("the response is still under way: cancel it first", "item_in_use",
                       "item_id", eid)
            return
        if item.get("role") == "system":
            self.session.context.instructions = ""
        elif not self.session.context.remove(_context_message(item)):
            self.error(f"item {item_id!r} is part of a longer message in the conversation "
                       "(the user went on speaking) and cannot be taken out alone",
                       "item_not_deletable", "item_id", eid)
            return
        del self.convo.items[item["id"]]
        self.emit("conversation.item.deleted", item_id=item["id"])

    def _truncate(self, event: dict[str, Any], eid: str | None) -> None:
        item_id, end_ms = event.get("item_id"), event.get("audio_end_ms")
        reply = self.convo.replies_by_item.get(str(item_id))
        if reply is None:
            self.error(f"no assistant item {item_id!r}", "item_not_found", "item_id", eid)
            return
        if not isinstance(end_ms, int) or end_ms < 0:
            self.error("audio_end_ms: a whole number of ms", "invalid_value", "audio_end_ms",
                       eid)
            return
        r = self.convo.responses.get(reply)
        if r is not None:
            r.cancel_reason = "client_cancelled"
        self.session.truncate(reply, end_ms)
        self.emit("conversation.item.truncated", item_id=item_id, content_index=0,
                  audio_end_ms=end_ms)

    # -- the connection ----------------------------------------------------------------------

    @property
    def has_sink(self) -> bool:
        return self._sink is not None

    def connect_sink(self, sink: Callable[[str], Awaitable[None]]) -> None:
        """Where the server events go (queued until this is given)."""
        self._sink = sink
        self._sink_ready.set()

    async def _write(self) -> None:
        await self._sink_ready.wait()
        assert self._sink is not None
        while True:
            await self._sink(await self._out.get())

    async def _converse(self, mic: MediaStreamTrack | None) -> None:
        writer = asyncio.ensure_future(self._write())
        if self.audio_deltas:
            self._start_audio_out()
        try:
            if mic is None:
                await self.session.run_chunks(self.inbound.chunks())
            else:
                await self.session.run(mic)
        finally:
            if self._audio_task is not None:
                self._audio_task.cancel()
            # what is queued (a last error, the session's end) still goes out
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain(), 1.0)
            writer.cancel()

    async def _drain(self) -> None:
        while not self._out.empty():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def handle_message(self, data: object) -> None:
        """One client message as it came (text, or anything else: an error event)."""
        if not isinstance(data, str):
            self.error("client events are JSON text messages", "invalid_message")
            return
        try:
            event = json.loads(data)
        except ValueError as e:
            self.error(f"not JSON: {e}", "invalid_json")
            return
        if not isinstance(event, dict):
            self.error("a client event is a JSON object with `type`", "invalid_event")
            return
        self.handle(event)

    def start(self, call: Call, remote: str, mic: MediaStreamTrack | None = None) -> None:
        self.emit("session.created", session=self._session_object())
        self.host.start_call(call, self._converse(mic), remote)

    async def run_socket(self, ws: web.WebSocketResponse, remote: str) -> None:
        self.connect_sink(ws.send_str)
        self.start(Call(self.session, "realtime", ws.close, connected=True), remote)
        try:
            async for raw in ws:
                self.handle_message(raw.data if raw.type == WSMsgType.TEXT else raw.type)
        finally:
            self.inbound.end()
            await self.host.end(self.session.id, "socket closed")


async def realtime_socket(request: web.Request, host: CallHost) -> web.StreamResponse:
    """GET /v1/realtime (`?model=` is accepted and reported back)."""
    token = host.cfg.auth_token
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    # browsers cannot set headers: the key rides as a subprotocol, as with OpenAI's
    keyed = bool(token) and f"openai-insecure-api-key.{token}" in offered
    if not (host.authorized(request) or keyed):
        return web.json_response({"error": {"type": "invalid_request_error",
                                            "code": "invalid_api_key",
                                            "message": "missing or wrong bearer token"}},
                                 status=401, headers={"WWW-Authenticate": "Bearer"})
    if not host.admit(request):
        return web.json_response({"error": {"type": "rate_limit_exceeded",
                                            "code": "rate_limit_exceeded",
                                            "message": "too many new sessions from this "
                                                       "address"}},
                                 status=429, headers={"Retry-After": "60"})
    if not host.has_room():
        return web.json_response({"error": {"type": "server_error", "code": "gateway_full",
                                            "message": "gateway is full; try again later"}},
                                 status=503, headers={"Retry-After": "5"})
    ws = web.WebSocketResponse(max_msg_size=host.cfg.max_message_bytes, heartbeat=30,
                               protocols=("realtime",))
    await ws.prepare(request)
    beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
    conn = RealtimeConnection(host, beta)
    if request.query.get("model"):
        conn.settings.model = request.query["model"]
    await conn.run_socket(ws, request.remote or "")
    return ws
