"""Tuning of aiortc's UDP sockets that both the edge's sessions and the Python client need.

Two things go wrong when tens of peers share one asyncio process, and both show up as seconds of
feedback delay rather than as errors:

- asyncio's datagram transport reads **one** datagram per wake-up of the event loop. A session
  receives ~110 datagrams a second (50 audio packets, ~60 SCTP acknowledgements); once one loop
  iteration takes longer than ~9 ms (20 sessions' worth of work) a socket is read slower than it is
  written to, its kernel queue grows without bound, SCTP measures round trips of seconds and its
  congestion window throttles the feedback channel. :func:`tune_sockets` makes each wake-up drain the
  socket (up to ``MAX_DATAGRAMS_PER_WAKE``).
- the default kernel receive buffer (~208 KB, of which a small datagram takes 1-2 KB) overflows in a
  100 ms stall, dropping audio (concealed) and SCTP packets (retransmitted after a 1 s timeout).
  :func:`tune_sockets` enlarges it (the kernel caps it at ``net.core.rmem_max``).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from aiortc import RTCPeerConnection

UDP_RECEIVE_BUFFER_BYTES = 1 << 20
MAX_DATAGRAMS_PER_WAKE = 64


def tune_sockets(pc: RTCPeerConnection, rcvbuf_bytes: int = UDP_RECEIVE_BUFFER_BYTES) -> int:
    """Tune the ICE sockets of ``pc`` (call after ``setLocalDescription``, which gathers them).
    Returns the number of sockets tuned."""
    tuned = 0
    for transport in _ice_transports(pc):
        connection = getattr(transport, "_connection", None)
        for protocol in getattr(connection, "_protocols", ()):
            udp = getattr(protocol, "transport", None)
            sock = udp.get_extra_info("socket") if udp is not None else None
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
            if _drain_on_wake(udp):
                tuned += 1
    return tuned


def _drain_on_wake(transport: Any) -> bool:
    """Replace a selector datagram transport's read callback by one that reads until the socket is
    empty (bounded), with the same error handling as asyncio's own."""
    loop = getattr(transport, "_loop", None)
    sock = getattr(transport, "_sock", None)
    protocol = getattr(transport, "_protocol", None)
    if loop is None or sock is None or protocol is None or not hasattr(loop, "_add_reader"):
        return False
    if transport.is_closing():
        return False
    max_size = getattr(transport, "max_size", 256 * 1024)

    def read_ready() -> None:
        for _ in range(MAX_DATAGRAMS_PER_WAKE):
            if transport._conn_lost:
                return
            try:
                data, addr = sock.recvfrom(max_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                transport._fatal_error(exc, "Fatal read error on datagram transport")
                return
            protocol.datagram_received(data, addr)

    loop._add_reader(sock.fileno(), read_ready)
    return True


def _ice_transports(pc: RTCPeerConnection) -> list[Any]:
    seen: list[Any] = []
    dtls = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        dtls.append(pc.sctp.transport)
    for d in dtls:
        ice = getattr(d, "transport", None)
        if ice is not None and all(ice is not s for s in seen):
            seen.append(ice)
    return seen
