"""Session tickets: minted with a private key, verified offline with the public key, single use."""

from __future__ import annotations

import base64
import json

import pytest

from edge_node.errors import (
    ConfigError,
    TicketError,
    TicketExpired,
    TicketForged,
    TicketGuardFull,
    TicketMalformed,
    TicketReplayed,
    TicketWrongEdge,
)
from edge_node.tickets import (
    MAX_TOKEN_CHARS,
    ReplayGuard,
    TicketClaims,
    generate_keypair,
    load_private_key,
    load_public_key,
    mint_ticket,
    private_key_pem,
    public_key_pem,
    verify_ticket,
)

NOW = 1_700_000_000.0


def claims(**over: object) -> TicketClaims:
    fields: dict[str, object] = {
        "session_id": "s-1", "user": "alice", "edge_id": "edge-a", "iat": NOW, "exp": NOW + 60,
    }
    fields.update(over)
    return TicketClaims(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def keys():
    return generate_keypair()


def test_round_trip_keeps_every_claim(keys) -> None:
    private, public = keys
    c = claims(piece="bach-minuet", mode="detailed")
    token = mint_ticket(private, c)
    assert verify_ticket(token, [public], "edge-a", NOW + 1) == c


def test_token_is_compact_and_url_safe(keys) -> None:
    token = mint_ticket(keys[0], claims())
    assert len(token) < 300
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_ticket_ids_are_random_by_default() -> None:
    assert claims().ticket_id != claims().ticket_id


def test_any_edge_ticket_is_accepted_by_every_edge(keys) -> None:
    token = mint_ticket(keys[0], claims(edge_id="*"))
    assert verify_ticket(token, [keys[1]], "edge-zzz", NOW).edge_id == "*"


def test_ticket_for_another_edge_is_refused(keys) -> None:
    token = mint_ticket(keys[0], claims(edge_id="edge-b"))
    with pytest.raises(TicketWrongEdge):
        verify_ticket(token, [keys[1]], "edge-a", NOW)


def test_expired_ticket_is_refused(keys) -> None:
    token = mint_ticket(keys[0], claims())
    with pytest.raises(TicketExpired):
        verify_ticket(token, [keys[1]], "edge-a", NOW + 60)


def test_ticket_from_the_future_is_refused(keys) -> None:
    token = mint_ticket(keys[0], claims(iat=NOW + 3600, exp=NOW + 3660))
    with pytest.raises(TicketExpired):
        verify_ticket(token, [keys[1]], "edge-a", NOW)


def test_ticket_signed_by_another_key_is_forged(keys) -> None:
    other_private, _ = generate_keypair()
    token = mint_ticket(other_private, claims())
    with pytest.raises(TicketForged):
        verify_ticket(token, [keys[1]], "edge-a", NOW)


def test_any_trusted_key_verifies_during_rotation(keys) -> None:
    old_private, old_public = generate_keypair()
    token = mint_ticket(old_private, claims())
    assert verify_ticket(token, [keys[1], old_public], "edge-a", NOW).user == "alice"


def test_changed_claims_break_the_signature(keys) -> None:
    token = mint_ticket(keys[0], claims())
    prefix, payload, sig = token.split(".")
    wire = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    wire["sub"] = "mallory"
    forged_payload = base64.urlsafe_b64encode(json.dumps(wire).encode()).rstrip(b"=").decode()
    with pytest.raises(TicketForged):
        verify_ticket(f"{prefix}.{forged_payload}.{sig}", [keys[1]], "edge-a", NOW)


def test_unsigned_token_of_the_right_shape_is_forged(keys) -> None:
    with pytest.raises(TicketForged):
        verify_ticket("snt1.e30." + "A" * 86, [keys[1]], "edge-a", NOW)


def test_flipped_signature_bit_is_forged(keys) -> None:
    token = mint_ticket(keys[0], claims())
    prefix, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[10] ^= 1
    bad = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(TicketForged):
        verify_ticket(f"{prefix}.{payload}.{bad}", [keys[1]], "edge-a", NOW)


@pytest.mark.parametrize("token", [
    "", "garbage", "snt1.a.b.c", "jwt.eyJ9.eyJ9", "snt1.!!!.???", "snt1..",
    "x" * (MAX_TOKEN_CHARS + 1),
])
def test_malformed_tokens_are_refused_as_malformed(keys, token: str) -> None:
    with pytest.raises(TicketMalformed):
        verify_ticket(token, [keys[1]], "edge-a", NOW)


def test_signed_but_incomplete_claims_are_malformed(keys) -> None:
    # A trusted signer that omits a claim still does not produce a usable ticket.
    private, public = keys
    payload = base64.urlsafe_b64encode(b'{"sid":"s","sub":"u"}').rstrip(b"=").decode()
    signed = f"snt1.{payload}"
    sig = base64.urlsafe_b64encode(private.sign(signed.encode())).rstrip(b"=").decode()
    with pytest.raises(TicketMalformed, match="lacks"):
        verify_ticket(f"{signed}.{sig}", [public], "edge-a", NOW)


def test_every_refusal_is_a_ticket_error_with_a_reason(keys) -> None:
    with pytest.raises(TicketError) as info:
        verify_ticket("nope", [keys[1]], "edge-a", NOW)
    assert info.value.reason


def test_claims_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        claims(exp=NOW - 1)
    with pytest.raises(ValueError):
        claims(mode="turbo")
    with pytest.raises(ValueError):
        claims(session_id="")
    with pytest.raises(ValueError):
        claims(user="u" * 1000)


def test_replay_guard_accepts_first_use_only() -> None:
    guard = ReplayGuard()
    c = claims()
    guard.check_and_remember(c, NOW)
    with pytest.raises(TicketReplayed):
        guard.check_and_remember(c, NOW + 1)
    guard.check_and_remember(claims(), NOW + 1)  # another ticket id


def test_replay_guard_forgets_expired_tickets() -> None:
    guard = ReplayGuard()
    for i in range(100):
        guard.check_and_remember(claims(exp=NOW + 1 + i), NOW)
    assert len(guard) == 100
    guard.prune(NOW + 50.5)
    assert len(guard) == 50
    guard.prune(NOW + 1000)
    assert len(guard) == 0


def test_replay_guard_is_bounded_and_fails_closed() -> None:
    guard = ReplayGuard(max_entries=3)
    for _ in range(3):
        guard.check_and_remember(claims(), NOW)
    with pytest.raises(TicketGuardFull):
        guard.check_and_remember(claims(), NOW)
    guard.check_and_remember(claims(), NOW + 61)  # the first three expired


def test_keys_round_trip_through_pem_text_and_files(tmp_path, keys) -> None:
    private, public = keys
    (tmp_path / "k.pem").write_text(private_key_pem(private))
    (tmp_path / "k.pub").write_text(public_key_pem(public))
    loaded_private = load_private_key(tmp_path / "k.pem")
    loaded_public = load_public_key(str(tmp_path / "k.pub"))
    assert public_key_pem(loaded_private) == public_key_pem(public)
    token = mint_ticket(loaded_private, claims())
    assert verify_ticket(token, [loaded_public], "edge-a", NOW).session_id == "s-1"
    assert verify_ticket(token, [load_public_key(public_key_pem(public))], "edge-a", NOW)


def test_bad_key_material_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError):
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(ConfigError):
        load_private_key("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ConfigError, match="Ed25519"):
        load_public_key(ec_pem)

