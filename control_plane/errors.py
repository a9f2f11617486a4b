"""Errors raised by the control plane; the gRPC interceptor maps each to one status code.

    ControlPlaneError
    ├── InvalidRequest        INVALID_ARGUMENT     a field is missing, malformed or out of range (``field``)
    ├── UnknownEdge           NOT_FOUND            no edge with ``edge_id`` is known
    ├── UnknownSession        NOT_FOUND            no synced result of ``session_id`` is stored
    ├── WrongState            FAILED_PRECONDITION  the edge is in a state that forbids it (``state``)
    ├── DuplicateEdge         ALREADY_EXISTS       another live stream already holds ``edge_id``
    ├── NoCapacity            RESOURCE_EXHAUSTED   no edge fits the request (``reason``)
    ├── Unauthenticated       UNAUTHENTICATED      missing or wrong credentials
    ├── PermissionDenied      PERMISSION_DENIED    valid credentials of the wrong kind for this call
    ├── ShuttingDown          UNAVAILABLE          the control plane is stopping
    └── ConfigError           (start-up only)      a setting the control plane cannot run with (``setting``)
"""

from __future__ import annotations

import grpc


class ControlPlaneError(Exception):
    """Root of every error the control plane raises on purpose. ``code`` is its gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidRequest(ControlPlaneError):
    """A request field is missing, malformed or out of range."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class UnknownEdge(ControlPlaneError):
    """No edge with this id is registered (or it was removed)."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, edge_id: str) -> None:
        super().__init__(f"unknown edge {edge_id!r}")
        self.edge_id = edge_id


class UnknownSession(ControlPlaneError):
    """No result of this session has reached the progress store (result sync, issue 5)."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, session_id: str) -> None:
        super().__init__(f"unknown session {session_id!r}")
        self.session_id = session_id


class WrongState(ControlPlaneError):
    """The edge's state forbids the operation (e.g. uncordon while draining)."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, edge_id: str, state: str, reason: str) -> None:
        super().__init__(f"edge {edge_id!r} is {state}: {reason}")
        self.edge_id = edge_id
        self.state = state


class DuplicateEdge(ControlPlaneError):
    """Another process holds a live registry stream for this edge id."""

    code = grpc.StatusCode.ALREADY_EXISTS

    def __init__(self, edge_id: str) -> None:
        super().__init__(f"edge {edge_id!r} is already connected from another instance")
        self.edge_id = edge_id


class NoCapacity(ControlPlaneError):
    """Nothing fits the route request: no routable edge with capacity within the latency budget."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unauthenticated(ControlPlaneError):
    """The call carries no credentials or credentials nobody issued."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ControlPlaneError):
    """The credentials are valid but not for this service (e.g. a client key on fleet admin)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ShuttingDown(ControlPlaneError):
    """The control plane is stopping and takes no new work."""

    code = grpc.StatusCode.UNAVAILABLE


class ConfigError(ControlPlaneError):
    """A setting has a value the control plane cannot run with (raised at start-up)."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"setting {setting}: {reason}")
        self.setting = setting
        self.reason = reason
