"""Session tickets: compact Ed25519-signed tokens that let a client open one session on an edge.

The control plane (or, for a standalone edge, ``seminote-edge ticket``) mints a ticket with its
private key; the edge verifies it offline with the public key(s) its settings trust, so an edge can
check tickets but never mint them. A ticket binds the session id, the user, the edge (``"*"``: any
edge that trusts the key, for a standalone edge) and a validity window; it may name a piece and a
mode. Tickets are single use: :class:`ReplayGuard` remembers each accepted ticket id until it expires.

Wire format (URL-safe, no padding, fits an ``Authorization: Bearer`` header or a query string)::

    snt1.<base64url(JSON claims)>.<base64url(Ed25519 signature over "snt1." + claims part)>

The JSON uses short keys: ``sid`` session, ``sub`` user, ``edge``, ``iat``, ``exp`` (Unix seconds),
``jti`` ticket id, and ``piece`` / ``mode`` when set.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import (
    ConfigError,
    TicketExpired,
    TicketForged,
    TicketGuardFull,
    TicketMalformed,
    TicketReplayed,
    TicketWrongEdge,
)

__all__ = [
    "ANY_EDGE",
    "MAX_TOKEN_CHARS",
    "ReplayGuard",
    "TicketClaims",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "mint_ticket",
    "private_key_pem",
    "public_key_pem",
    "verify_ticket",
]

PREFIX = "snt1"
ANY_EDGE = "*"
MODES = ("light", "detailed")
MAX_TOKEN_CHARS = 2048
MAX_FIELD_CHARS = 256
CLOCK_SKEW_S = 30.0  # tolerated difference between the minter's clock and the edge's
_SIGNATURE_BYTES = 64


def _new_ticket_id() -> str:
    return secrets.token_urlsafe(12)


@dataclass(frozen=True)
class TicketClaims:
    """What a ticket says. Times are Unix seconds."""

    session_id: str
    user: str
    edge_id: str
    exp: float
    iat: float
    piece: str | None = None
    mode: str | None = None
    ticket_id: str = field(default_factory=_new_ticket_id)

    def __post_init__(self) -> None:
        for name in ("session_id", "user", "edge_id", "ticket_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
                raise ValueError(f"{name} must be a non-empty string of at most {MAX_FIELD_CHARS} characters")
        if self.piece is not None and (not isinstance(self.piece, str) or len(self.piece) > MAX_FIELD_CHARS):
            raise ValueError(f"piece must be a string of at most {MAX_FIELD_CHARS} characters")
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} or None")
        for name in ("exp", "iat"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number of Unix seconds")
        if self.exp <= self.iat:
            raise ValueError("exp must be after iat")

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "sid": self.session_id, "sub": self.user, "edge": self.edge_id,
            "iat": self.iat, "exp": self.exp, "jti": self.ticket_id,
        }
        if self.piece is not None:
            wire["piece"] = self.piece
        if self.mode is not None:
            wire["mode"] = self.mode
        return wire

    @classmethod
    def from_wire(cls, wire: Any) -> TicketClaims:
        if not isinstance(wire, dict):
            raise TicketMalformed("ticket claims are not an object")
        try:
            return cls(
                session_id=wire["sid"], user=wire["sub"], edge_id=wire["edge"],
                exp=wire["exp"], iat=wire["iat"], piece=wire.get("piece"), mode=wire.get("mode"),
                ticket_id=wire["jti"],
            )
        except KeyError as exc:
            raise TicketMalformed(f"ticket lacks the {exc.args[0]!r} claim") from None
        except (TypeError, ValueError) as exc:
            raise TicketMalformed(f"ticket claims are invalid: {exc}") from None


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or len(text) % 4 == 1:
        raise TicketMalformed("ticket is not valid base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TicketMalformed("ticket is not valid base64url") from None


def mint_ticket(private_key: Ed25519PrivateKey, claims: TicketClaims) -> str:
    """Sign ``claims`` into a compact URL-safe token."""
    payload = json.dumps(claims.to_wire(), separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    signed = f"{PREFIX}.{_b64encode(payload.encode('ascii'))}"
    token = f"{signed}.{_b64encode(private_key.sign(signed.encode('ascii')))}"
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"ticket would be {len(token)} characters, over {MAX_TOKEN_CHARS}")
    return token


def verify_ticket(
    token: str, public_keys: Sequence[Ed25519PublicKey], edge_id: str, now: float
) -> TicketClaims:
    """Check a token's shape, signature (any of ``public_keys``), validity window and edge.

    Raises :class:`TicketMalformed`, :class:`TicketForged`, :class:`TicketExpired` or
    :class:`TicketWrongEdge` (in that order of checking). Single use is :class:`ReplayGuard`'s job.
    """
    if not isinstance(token, str) or not token:
        raise TicketMalformed("no ticket")
    if len(token) > MAX_TOKEN_CHARS:
        raise TicketMalformed(f"ticket is longer than {MAX_TOKEN_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TicketMalformed(f"not a {PREFIX} ticket")
    payload = _b64decode(parts[1])
    signature = _b64decode(parts[2])
    if len(signature) != _SIGNATURE_BYTES:
        raise TicketMalformed("ticket signature has the wrong length")
    signed = f"{parts[0]}.{parts[1]}".encode("ascii")
    for key in public_keys:
        try:
            key.verify(signature, signed)
            break
        except InvalidSignature:
            continue
    else:
        raise TicketForged("ticket signature does not verify with any trusted key")
    try:
        wire = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise TicketMalformed("ticket claims are not JSON") from None
    claims = TicketClaims.from_wire(wire)
    if now >= claims.exp:
        raise TicketExpired(f"ticket expired {now - claims.exp:.0f} s ago")
    if claims.iat > now + CLOCK_SKEW_S:
        raise TicketExpired("ticket is not valid yet (issued in the future)")
    if claims.edge_id != ANY_EDGE and claims.edge_id != edge_id:
        raise TicketWrongEdge(f"ticket is for edge {claims.edge_id!r}, this is {edge_id!r}")
    return claims


class ReplayGuard:
    """Remembers accepted ticket ids until their expiry, so each ticket opens one session only.

    Memory is bounded: expired ids are forgotten, and at most ``max_entries`` unexpired ones are
    kept. When full, new tickets are refused (:class:`TicketGuardFull`) rather than forgetting a
    live id, which would let it be replayed.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, ticket_id: object) -> bool:
        return ticket_id in self._expiry

    def prune(self, now: float) -> None:
        """Forget ids whose tickets have expired (a replay would be refused as expired anyway)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, ticket_id = heapq.heappop(heap)
            self._expiry.pop(ticket_id, None)

    def check_and_remember(self, claims: TicketClaims, now: float) -> None:
        """Accept a verified ticket's first use; raise :class:`TicketReplayed` on any later one."""
        self.prune(now)
        if claims.ticket_id in self._expiry:
            raise TicketReplayed("ticket was already used")
        if len(self._expiry) >= self.max_entries:
            raise TicketGuardFull("too many unexpired tickets in use; try again later")
        self._expiry[claims.ticket_id] = claims.exp
        heapq.heappush(self._heap, (claims.exp, claims.ticket_id))


# ----------------------------------------------------------------------------------- keys


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    private = Ed25519PrivateKey.generate()
    return private, private.public_key()


def _pem_bytes(pem_or_path: str | bytes | Path, what: str) -> bytes:
    if isinstance(pem_or_path, bytes):
        return pem_or_path
    if isinstance(pem_or_path, str) and "-----BEGIN" in pem_or_path:
        return pem_or_path.encode("ascii", errors="replace")
    path = Path(pem_or_path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(what, f"cannot read {path}: {exc.strerror or exc}") from exc


def load_private_key(pem_or_path: str | bytes | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM text (PKCS#8, unencrypted) or the path of a PEM file."""
    data = _pem_bytes(pem_or_path, "ticket private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError("ticket private key", f"not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("ticket private key", f"must be Ed25519, not {type(key).__name__}")
    return key


def load_public_key(pem_or_path: str | bytes | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text (SubjectPublicKeyInfo) or the path of a PEM file."""
    data = _pem_bytes(pem_or_path, "ticket public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError("ticket public key", f"not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("ticket public key", f"must be Ed25519, not {type(key).__name__}")
    return key


def public_key_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """SubjectPublicKeyInfo PEM of a public key (or of a private key's public half)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def private_key_pem(key: Ed25519PrivateKey) -> str:
    """Unencrypted PKCS#8 PEM of a private key (store it with mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
