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

And two per-packet shortcuts for the edge, each taken only when it is exactly equivalent to aiortc's
own path (measured in README, "Capacity"):

- **RTP in** (``tune_sockets(..., media=...)``): an SRTP datagram is unprotected and handed to the
  session's receive path inside the socket's read callback, instead of travelling through aioice's
  STUN parser (which raises on every media packet), an ``asyncio.Queue``, the DTLS transport's task, a
  full RTP parse and three coroutine layers. DTLS, STUN and RTCP keep the stock path.
- **SCTP out** (:func:`send_bundled`): the feedback events of one moment leave as one SCTP packet
  with one DATA chunk per message (RFC 4960 bundling) in one DTLS record and one UDP datagram, written
  synchronously, instead of a task, a packet, a record and a datagram per message. The chunks enter
  aiortc's sent queue with the bookkeeping its ``_send``/``_transmit`` give them, so SACKs,
  retransmission (T3) and congestion control are aiortc's own; whenever the stock path has anything
  queued or the congestion window is full, messages take the stock path (order is kept).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc import rtcsctptransport as sctp_mod
from google_crc32c import value as crc32c

UDP_RECEIVE_BUFFER_BYTES = 1 << 20
MAX_DATAGRAMS_PER_WAKE = 64
SCTP_BUNDLE_MAX_BYTES = 1200  # user data + chunk headers per bundled packet (aiortc's own fragment size)
_SCTP_COMMON_HEADER = struct.Struct("!HHL")
_SCTP_DATA_HEADER = struct.Struct("!BBHLHHL")
_SCTP_UNFRAGMENTED = sctp_mod.SCTP_DATA_FIRST_FRAG | sctp_mod.SCTP_DATA_LAST_FRAG

MediaHandler = Callable[[bytes], bool]
"""Takes an SRTP (not SRTCP) datagram; returns False to leave it to aiortc's stock path."""


def tune_sockets(
    pc: RTCPeerConnection, rcvbuf_bytes: int = UDP_RECEIVE_BUFFER_BYTES, media: MediaHandler | None = None
) -> int:
    """Tune the ICE sockets of ``pc`` (call after ``setLocalDescription``, which gathers them); with
    ``media``, SRTP datagrams go to it first. Returns the number of sockets tuned."""
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
            if _drain_on_wake(udp, media):
                tuned += 1
    return tuned


def _drain_on_wake(transport: Any, media: MediaHandler | None = None) -> bool:
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
            # RTP: first byte 128..191 (version 2), second byte not an RTCP packet type (RFC 5761)
            if media is not None and 127 < data[0] < 192 and not 191 < data[1] < 224 and media(data):
                continue
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


def _dtls_of(channel: RTCDataChannel) -> Any:
    return channel.transport._RTCSctpTransport__transport  # type: ignore[attr-defined]


def send_bundled(channel: RTCDataChannel, messages: Sequence[str]) -> bool:
    """Send text ``messages`` on ``channel`` as bundled SCTP packets, now; False (nothing sent) when
    only aiortc's stock path may send them (see the module docstring)."""
    sctp: Any = channel.transport
    sid = channel.id
    if (
        not messages or sid is None or channel.readyState != "open" or channel.maxPacketLifeTime
        or not channel.ordered or sctp._association_state != sctp_mod.RTCSctpTransport.State.ESTABLISHED
        or sctp._data_channel_queue or sctp._outbound_queue or sctp._forward_tsn_chunk is not None
    ):
        return False
    dtls = _dtls_of(channel)
    pair = dtls.transport._connection._nominated.get(1)
    if pair is None or dtls._state.name != "CONNECTED":
        return False
    payloads = [m.encode("utf-8") for m in messages]
    size = sum(len(p) for p in payloads)
    if any(not p or len(p) > sctp_mod.USERDATA_MAX_LENGTH for p in payloads) \
            or sctp._flight_size + size > sctp._cwnd:
        return False
    now = time.time()
    seq = sctp._outbound_stream_seq.get(sid, 0)
    max_retransmits = channel.maxRetransmits
    packets: list[list[bytes]] = [[]]
    room = SCTP_BUNDLE_MAX_BYTES
    for payload in payloads:
        chunk = sctp_mod.DataChunk(flags=_SCTP_UNFRAGMENTED)
        chunk.tsn = sctp._local_tsn
        chunk.stream_id = sid
        chunk.stream_seq = seq
        chunk.protocol = sctp_mod.WEBRTC_STRING
        chunk.user_data = payload
        chunk._abandoned = False
        chunk._acked = False
        chunk._book_size = len(payload)
        chunk._expiry = None
        chunk._in_flight = False
        chunk._max_retransmits = max_retransmits
        chunk._misses = 0
        chunk._retransmit = False
        chunk._sent_count = 1
        chunk._sent_time = now
        sctp._local_tsn = sctp_mod.tsn_plus_one(sctp._local_tsn)
        seq = sctp_mod.uint16_add(seq, 1)
        sctp._sent_queue.append(chunk)
        sctp._flight_size_increase(chunk)
        wire = bytes(chunk)
        if len(wire) > room and packets[-1]:
            packets.append([])
            room = SCTP_BUNDLE_MAX_BYTES
        packets[-1].append(wire)
        room -= len(wire)
    sctp._outbound_stream_seq[sid] = seq
    header = _SCTP_COMMON_HEADER.pack(sctp._local_port, sctp._remote_port, sctp._remote_verification_tag)
    ssl, udp, addr = dtls._ssl, pair.protocol.transport, pair.remote_addr
    for chunks in packets:
        body = b"".join(chunks)
        checksum = crc32c(header + b"\x00\x00\x00\x00" + body)
        ssl.send(header + struct.pack("<L", checksum) + body)
        record = ssl.bio_read(1500)
        udp.sendto(record, addr)
        dtls._RTCDtlsTransport__tx_bytes += len(record)
        dtls._RTCDtlsTransport__tx_packets += 1
    if not sctp._t3_handle:
        sctp._t3_start()
    return True
