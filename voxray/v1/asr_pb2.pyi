from voxray.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AsrStart(_message.Message):
    __slots__ = ("sample_rate", "language", "partials")
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    PARTIALS_FIELD_NUMBER: _ClassVar[int]
    sample_rate: int
    language: str
    partials: bool
    def __init__(self, sample_rate: _Optional[int] = ..., language: _Optional[str] = ..., partials: _Optional[bool] = ...) -> None: ...

class EndOfUtterance(_message.Message):
    __slots__ = ("utterance_id", "speech_end_sample")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SPEECH_END_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    utterance_id: int
    speech_end_sample: int
    def __init__(self, utterance_id: _Optional[int] = ..., speech_end_sample: _Optional[int] = ...) -> None: ...

class AsrRequest(_message.Message):
    __slots__ = ("meta", "start", "audio", "end_of_utterance")
    META_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    END_OF_UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    start: AsrStart
    audio: _common_pb2.AudioChunk
    end_of_utterance: EndOfUtterance
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., start: _Optional[_Union[AsrStart, _Mapping]] = ..., audio: _Optional[_Union[_common_pb2.AudioChunk, _Mapping]] = ..., end_of_utterance: _Optional[_Union[EndOfUtterance, _Mapping]] = ...) -> None: ...

class Word(_message.Message):
    __slots__ = ("text", "start_s", "end_s", "probability")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    text: str
    start_s: float
    end_s: float
    probability: float
    def __init__(self, text: _Optional[str] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., probability: _Optional[float] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("text", "words", "stable_text", "audio_start_sample", "audio_end_sample", "language")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    STABLE_TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_END_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    words: _containers.RepeatedCompositeFieldContainer[Word]
    stable_text: str
    audio_start_sample: int
    audio_end_sample: int
    language: str
    def __init__(self, text: _Optional[str] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ..., stable_text: _Optional[str] = ..., audio_start_sample: _Optional[int] = ..., audio_end_sample: _Optional[int] = ..., language: _Optional[str] = ...) -> None: ...

class AsrReady(_message.Message):
    __slots__ = ("model", "replica_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    replica_id: str
    def __init__(self, model: _Optional[str] = ..., replica_id: _Optional[str] = ...) -> None: ...

class AsrEvent(_message.Message):
    __slots__ = ("meta", "utterance_id", "decode_ms", "ready", "partial", "final")
    META_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    utterance_id: int
    decode_ms: float
    ready: AsrReady
    partial: Transcript
    final: Transcript
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., utterance_id: _Optional[int] = ..., decode_ms: _Optional[float] = ..., ready: _Optional[_Union[AsrReady, _Mapping]] = ..., partial: _Optional[_Union[Transcript, _Mapping]] = ..., final: _Optional[_Union[Transcript, _Mapping]] = ...) -> None: ...
