from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Frame(_message.Message):
    __slots__ = ("seq", "intended_send_ns", "sent_ns", "payload")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    INTENDED_SEND_NS_FIELD_NUMBER: _ClassVar[int]
    SENT_NS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    seq: int
    intended_send_ns: int
    sent_ns: int
    payload: bytes
    def __init__(self, seq: _Optional[int] = ..., intended_send_ns: _Optional[int] = ..., sent_ns: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("count", "payload_bytes", "interval_ms", "sent_ns")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    SENT_NS_FIELD_NUMBER: _ClassVar[int]
    count: int
    payload_bytes: int
    interval_ms: int
    sent_ns: int
    def __init__(self, count: _Optional[int] = ..., payload_bytes: _Optional[int] = ..., interval_ms: _Optional[int] = ..., sent_ns: _Optional[int] = ...) -> None: ...

class StreamSummary(_message.Message):
    __slots__ = ("frames", "bytes", "first_seq", "last_seq")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    frames: int
    bytes: int
    first_seq: int
    last_seq: int
    def __init__(self, frames: _Optional[int] = ..., bytes: _Optional[int] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ...) -> None: ...
