from control_plane._proto.seminote.v1 import edge_pb2 as _edge_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EdgeRtt(_message.Message):
    __slots__ = ("edge_id", "rtt_ms")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    rtt_ms: float
    def __init__(self, edge_id: _Optional[str] = ..., rtt_ms: _Optional[float] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("user", "has_location", "lat", "lon", "region", "rtts", "piece", "tempo_bpm", "prefer_detailed", "alternate_tickets")
    USER_FIELD_NUMBER: _ClassVar[int]
    HAS_LOCATION_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    RTTS_FIELD_NUMBER: _ClassVar[int]
    PIECE_FIELD_NUMBER: _ClassVar[int]
    TEMPO_BPM_FIELD_NUMBER: _ClassVar[int]
    PREFER_DETAILED_FIELD_NUMBER: _ClassVar[int]
    ALTERNATE_TICKETS_FIELD_NUMBER: _ClassVar[int]
    user: str
    has_location: bool
    lat: float
    lon: float
    region: str
    rtts: _containers.RepeatedCompositeFieldContainer[EdgeRtt]
    piece: str
    tempo_bpm: float
    prefer_detailed: bool
    alternate_tickets: bool
    def __init__(self, user: _Optional[str] = ..., has_location: _Optional[bool] = ..., lat: _Optional[float] = ..., lon: _Optional[float] = ..., region: _Optional[str] = ..., rtts: _Optional[_Iterable[_Union[EdgeRtt, _Mapping]]] = ..., piece: _Optional[str] = ..., tempo_bpm: _Optional[float] = ..., prefer_detailed: _Optional[bool] = ..., alternate_tickets: _Optional[bool] = ...) -> None: ...

class Alternate(_message.Message):
    __slots__ = ("edge_id", "whip_url", "ticket", "rtt_ms")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    WHIP_URL_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    whip_url: str
    ticket: str
    rtt_ms: float
    def __init__(self, edge_id: _Optional[str] = ..., whip_url: _Optional[str] = ..., ticket: _Optional[str] = ..., rtt_ms: _Optional[float] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("edge_id", "whip_url", "ticket", "mode", "expires_at", "alternates", "session_id", "reason", "rtt_ms", "region")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    WHIP_URL_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ALTERNATES_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    whip_url: str
    ticket: str
    mode: _edge_pb2.Mode
    expires_at: float
    alternates: _containers.RepeatedCompositeFieldContainer[Alternate]
    session_id: str
    reason: str
    rtt_ms: float
    region: str
    def __init__(self, edge_id: _Optional[str] = ..., whip_url: _Optional[str] = ..., ticket: _Optional[str] = ..., mode: _Optional[_Union[_edge_pb2.Mode, str]] = ..., expires_at: _Optional[float] = ..., alternates: _Optional[_Iterable[_Union[Alternate, _Mapping]]] = ..., session_id: _Optional[str] = ..., reason: _Optional[str] = ..., rtt_ms: _Optional[float] = ..., region: _Optional[str] = ...) -> None: ...
