from control_plane._proto.seminote.v1 import edge_pb2 as _edge_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Register(_message.Message):
    __slots__ = ("edge_id", "region", "lat", "lon", "whip_url", "capacity", "capabilities", "sessions", "instance_id", "version", "cordoned")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    WHIP_URL_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CORDONED_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    region: str
    lat: float
    lon: float
    whip_url: str
    capacity: int
    capabilities: _edge_pb2.Capabilities
    sessions: _containers.RepeatedCompositeFieldContainer[_edge_pb2.SessionInfo]
    instance_id: str
    version: str
    cordoned: bool
    def __init__(self, edge_id: _Optional[str] = ..., region: _Optional[str] = ..., lat: _Optional[float] = ..., lon: _Optional[float] = ..., whip_url: _Optional[str] = ..., capacity: _Optional[int] = ..., capabilities: _Optional[_Union[_edge_pb2.Capabilities, _Mapping]] = ..., sessions: _Optional[_Iterable[_Union[_edge_pb2.SessionInfo, _Mapping]]] = ..., instance_id: _Optional[str] = ..., version: _Optional[str] = ..., cordoned: _Optional[bool] = ...) -> None: ...

class LoadReport(_message.Message):
    __slots__ = ("load", "new_sessions", "drained")
    LOAD_FIELD_NUMBER: _ClassVar[int]
    NEW_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    load: _edge_pb2.Load
    new_sessions: _containers.RepeatedCompositeFieldContainer[_edge_pb2.SessionInfo]
    drained: bool
    def __init__(self, load: _Optional[_Union[_edge_pb2.Load, _Mapping]] = ..., new_sessions: _Optional[_Iterable[_Union[_edge_pb2.SessionInfo, _Mapping]]] = ..., drained: _Optional[bool] = ...) -> None: ...

class EdgeMessage(_message.Message):
    __slots__ = ("register", "load", "ack")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    register: Register
    load: LoadReport
    ack: CommandAck
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., load: _Optional[_Union[LoadReport, _Mapping]] = ..., ack: _Optional[_Union[CommandAck, _Mapping]] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("report_interval_s", "ttl_s", "ticket_public_key_pem", "cordoned", "drain_deadline")
    REPORT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    TICKET_PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    CORDONED_FIELD_NUMBER: _ClassVar[int]
    DRAIN_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    report_interval_s: float
    ttl_s: float
    ticket_public_key_pem: str
    cordoned: bool
    drain_deadline: float
    def __init__(self, report_interval_s: _Optional[float] = ..., ttl_s: _Optional[float] = ..., ticket_public_key_pem: _Optional[str] = ..., cordoned: _Optional[bool] = ..., drain_deadline: _Optional[float] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("command_id", "cordon", "uncordon", "drain")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    CORDON_FIELD_NUMBER: _ClassVar[int]
    UNCORDON_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    cordon: Cordon
    uncordon: Uncordon
    drain: Drain
    def __init__(self, command_id: _Optional[str] = ..., cordon: _Optional[_Union[Cordon, _Mapping]] = ..., uncordon: _Optional[_Union[Uncordon, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ...) -> None: ...

class Cordon(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Uncordon(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Drain(_message.Message):
    __slots__ = ("deadline",)
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    deadline: float
    def __init__(self, deadline: _Optional[float] = ...) -> None: ...

class CommandAck(_message.Message):
    __slots__ = ("command_id", "ok", "message")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    ok: bool
    message: str
    def __init__(self, command_id: _Optional[str] = ..., ok: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ControlMessage(_message.Message):
    __slots__ = ("registered", "command")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    command: Command
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., command: _Optional[_Union[Command, _Mapping]] = ...) -> None: ...
