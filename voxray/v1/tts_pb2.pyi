from voxray.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VoiceOptions(_message.Message):
    __slots__ = ("voice", "speed", "language")
    VOICE_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    voice: str
    speed: float
    language: str
    def __init__(self, voice: _Optional[str] = ..., speed: _Optional[float] = ..., language: _Optional[str] = ...) -> None: ...

class TtsRequest(_message.Message):
    __slots__ = ("meta", "text", "voice")
    META_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    text: str
    voice: VoiceOptions
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., text: _Optional[str] = ..., voice: _Optional[_Union[VoiceOptions, _Mapping]] = ...) -> None: ...

class TtsFlush(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TtsStreamRequest(_message.Message):
    __slots__ = ("meta", "start", "text", "flush")
    META_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    start: VoiceOptions
    text: str
    flush: TtsFlush
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., start: _Optional[_Union[VoiceOptions, _Mapping]] = ..., text: _Optional[str] = ..., flush: _Optional[_Union[TtsFlush, _Mapping]] = ...) -> None: ...

class TtsAudio(_message.Message):
    __slots__ = ("audio", "span", "span_complete")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SPAN_FIELD_NUMBER: _ClassVar[int]
    SPAN_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    audio: _common_pb2.AudioChunk
    span: _common_pb2.TextSpan
    span_complete: bool
    def __init__(self, audio: _Optional[_Union[_common_pb2.AudioChunk, _Mapping]] = ..., span: _Optional[_Union[_common_pb2.TextSpan, _Mapping]] = ..., span_complete: _Optional[bool] = ...) -> None: ...

class TtsDone(_message.Message):
    __slots__ = ("total_samples", "characters_spoken")
    TOTAL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_SPOKEN_FIELD_NUMBER: _ClassVar[int]
    total_samples: int
    characters_spoken: int
    def __init__(self, total_samples: _Optional[int] = ..., characters_spoken: _Optional[int] = ...) -> None: ...

class TtsReady(_message.Message):
    __slots__ = ("replica_id", "voice")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    voice: str
    def __init__(self, replica_id: _Optional[str] = ..., voice: _Optional[str] = ...) -> None: ...

class TtsEvent(_message.Message):
    __slots__ = ("meta", "audio", "done", "ready")
    META_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    audio: TtsAudio
    done: TtsDone
    ready: TtsReady
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., audio: _Optional[_Union[TtsAudio, _Mapping]] = ..., done: _Optional[_Union[TtsDone, _Mapping]] = ..., ready: _Optional[_Union[TtsReady, _Mapping]] = ...) -> None: ...
