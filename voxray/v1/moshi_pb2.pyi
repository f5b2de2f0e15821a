from voxray.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MoshiStart(_message.Message):
    __slots__ = ("sample_rate",)
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    sample_rate: int
    def __init__(self, sample_rate: _Optional[int] = ...) -> None: ...

class MoshiFrame(_message.Message):
    __slots__ = ("frame_index", "audio")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    audio: _common_pb2.AudioChunk
    def __init__(self, frame_index: _Optional[int] = ..., audio: _Optional[_Union[_common_pb2.AudioChunk, _Mapping]] = ...) -> None: ...

class MoshiReady(_message.Message):
    __slots__ = ("replica_id", "slot", "max_buffered_frames")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    MAX_BUFFERED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    slot: int
    max_buffered_frames: int
    def __init__(self, replica_id: _Optional[str] = ..., slot: _Optional[int] = ..., max_buffered_frames: _Optional[int] = ...) -> None: ...

class MoshiOutput(_message.Message):
    __slots__ = ("tick", "audio", "text", "text_token", "input_frame_index", "late_frames", "dropped_frames")
    TICK_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INPUT_FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    LATE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    tick: int
    audio: _common_pb2.AudioChunk
    text: str
    text_token: int
    input_frame_index: int
    late_frames: int
    dropped_frames: int
    def __init__(self, tick: _Optional[int] = ..., audio: _Optional[_Union[_common_pb2.AudioChunk, _Mapping]] = ..., text: _Optional[str] = ..., text_token: _Optional[int] = ..., input_frame_index: _Optional[int] = ..., late_frames: _Optional[int] = ..., dropped_frames: _Optional[int] = ...) -> None: ...

class MoshiRequest(_message.Message):
    __slots__ = ("meta", "start", "frame")
    META_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    start: MoshiStart
    frame: MoshiFrame
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., start: _Optional[_Union[MoshiStart, _Mapping]] = ..., frame: _Optional[_Union[MoshiFrame, _Mapping]] = ...) -> None: ...

class MoshiEvent(_message.Message):
    __slots__ = ("meta", "ready", "output")
    META_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    ready: MoshiReady
    output: MoshiOutput
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., ready: _Optional[_Union[MoshiReady, _Mapping]] = ..., output: _Optional[_Union[MoshiOutput, _Mapping]] = ...) -> None: ...
