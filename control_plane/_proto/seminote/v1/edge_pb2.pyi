from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EdgeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EDGE_STATE_UNSPECIFIED: _ClassVar[EdgeState]
    EDGE_STATE_SERVING: _ClassVar[EdgeState]
    EDGE_STATE_CORDONED: _ClassVar[EdgeState]
    EDGE_STATE_DRAINING: _ClassVar[EdgeState]
    EDGE_STATE_DRAINED: _ClassVar[EdgeState]
    EDGE_STATE_STALE: _ClassVar[EdgeState]
    EDGE_STATE_DISCONNECTED: _ClassVar[EdgeState]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_LIGHT: _ClassVar[Mode]
    MODE_DETAILED: _ClassVar[Mode]
    MODE_ON_DEVICE: _ClassVar[Mode]
EDGE_STATE_UNSPECIFIED: EdgeState
EDGE_STATE_SERVING: EdgeState
EDGE_STATE_CORDONED: EdgeState
EDGE_STATE_DRAINING: EdgeState
EDGE_STATE_DRAINED: EdgeState
EDGE_STATE_STALE: EdgeState
EDGE_STATE_DISCONNECTED: EdgeState
MODE_UNSPECIFIED: Mode
MODE_LIGHT: Mode
MODE_DETAILED: Mode
MODE_ON_DEVICE: Mode

class Capabilities(_message.Message):
    __slots__ = ("detailed_mode", "model_loaded", "features")
    DETAILED_MODE_FIELD_NUMBER: _ClassVar[int]
    MODEL_LOADED_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    detailed_mode: bool
    model_loaded: bool
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, detailed_mode: _Optional[bool] = ..., model_loaded: _Optional[bool] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "user", "mode", "piece", "started_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PIECE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    user: str
    mode: Mode
    piece: str
    started_at: float
    def __init__(self, session_id: _Optional[str] = ..., user: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., piece: _Optional[str] = ..., started_at: _Optional[float] = ...) -> None: ...

class Load(_message.Message):
    __slots__ = ("sessions_light", "sessions_detailed", "cpu_percent", "latency_p99_ms", "outbox_depth", "session_ids", "accepting")
    SESSIONS_LIGHT_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_DETAILED_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTING_FIELD_NUMBER: _ClassVar[int]
    sessions_light: int
    sessions_detailed: int
    cpu_percent: float
    latency_p99_ms: float
    outbox_depth: int
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    accepting: bool
    def __init__(self, sessions_light: _Optional[int] = ..., sessions_detailed: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., outbox_depth: _Optional[int] = ..., session_ids: _Optional[_Iterable[str]] = ..., accepting: _Optional[bool] = ...) -> None: ...

class Edge(_message.Message):
    __slots__ = ("edge_id", "region", "lat", "lon", "whip_url", "capacity", "capabilities", "state", "load", "pending_sessions", "registered_at", "last_report_at", "drain_deadline", "cordoned", "version")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    WHIP_URL_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    PENDING_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_AT_FIELD_NUMBER: _ClassVar[int]
    DRAIN_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    CORDONED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    region: str
    lat: float
    lon: float
    whip_url: str
    capacity: int
    capabilities: Capabilities
    state: EdgeState
    load: Load
    pending_sessions: int
    registered_at: float
    last_report_at: float
    drain_deadline: float
    cordoned: bool
    version: str
    def __init__(self, edge_id: _Optional[str] = ..., region: _Optional[str] = ..., lat: _Optional[float] = ..., lon: _Optional[float] = ..., whip_url: _Optional[str] = ..., capacity: _Optional[int] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., state: _Optional[_Union[EdgeState, str]] = ..., load: _Optional[_Union[Load, _Mapping]] = ..., pending_sessions: _Optional[int] = ..., registered_at: _Optional[float] = ..., last_report_at: _Optional[float] = ..., drain_deadline: _Optional[float] = ..., cordoned: _Optional[bool] = ..., version: _Optional[str] = ...) -> None: ...
