from control_plane._proto.seminote.v1 import edge_pb2 as _edge_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListEdgesRequest(_message.Message):
    __slots__ = ("region",)
    REGION_FIELD_NUMBER: _ClassVar[int]
    region: str
    def __init__(self, region: _Optional[str] = ...) -> None: ...

class ListEdgesResponse(_message.Message):
    __slots__ = ("edges",)
    EDGES_FIELD_NUMBER: _ClassVar[int]
    edges: _containers.RepeatedCompositeFieldContainer[_edge_pb2.Edge]
    def __init__(self, edges: _Optional[_Iterable[_Union[_edge_pb2.Edge, _Mapping]]] = ...) -> None: ...

class GetEdgeRequest(_message.Message):
    __slots__ = ("edge_id",)
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    def __init__(self, edge_id: _Optional[str] = ...) -> None: ...

class EdgeRequest(_message.Message):
    __slots__ = ("edge_id",)
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    def __init__(self, edge_id: _Optional[str] = ...) -> None: ...

class DrainEdgeRequest(_message.Message):
    __slots__ = ("edge_id", "timeout_s")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    timeout_s: float
    def __init__(self, edge_id: _Optional[str] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("edge_id", "state", "limit")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    state: str
    limit: int
    def __init__(self, edge_id: _Optional[str] = ..., state: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "user", "edge_id", "mode", "piece", "state", "routed_at", "updated_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PIECE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROUTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    user: str
    edge_id: str
    mode: _edge_pb2.Mode
    piece: str
    state: str
    routed_at: float
    updated_at: float
    def __init__(self, session_id: _Optional[str] = ..., user: _Optional[str] = ..., edge_id: _Optional[str] = ..., mode: _Optional[_Union[_edge_pb2.Mode, str]] = ..., piece: _Optional[str] = ..., state: _Optional[str] = ..., routed_at: _Optional[float] = ..., updated_at: _Optional[float] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegionStats(_message.Message):
    __slots__ = ("region", "edges", "serving", "capacity", "sessions")
    REGION_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    region: str
    edges: int
    serving: int
    capacity: int
    sessions: int
    def __init__(self, region: _Optional[str] = ..., edges: _Optional[int] = ..., serving: _Optional[int] = ..., capacity: _Optional[int] = ..., sessions: _Optional[int] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("edges", "serving", "capacity", "sessions", "pending", "routes_total", "routes_exhausted", "routes_on_device", "regions", "uptime_s")
    EDGES_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    ROUTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROUTES_EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    ROUTES_ON_DEVICE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    edges: int
    serving: int
    capacity: int
    sessions: int
    pending: int
    routes_total: int
    routes_exhausted: int
    routes_on_device: int
    regions: _containers.RepeatedCompositeFieldContainer[RegionStats]
    uptime_s: float
    def __init__(self, edges: _Optional[int] = ..., serving: _Optional[int] = ..., capacity: _Optional[int] = ..., sessions: _Optional[int] = ..., pending: _Optional[int] = ..., routes_total: _Optional[int] = ..., routes_exhausted: _Optional[int] = ..., routes_on_device: _Optional[int] = ..., regions: _Optional[_Iterable[_Union[RegionStats, _Mapping]]] = ..., uptime_s: _Optional[float] = ...) -> None: ...
