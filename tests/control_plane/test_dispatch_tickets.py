"""The router's ticket minter against the edge's verifier: same wire format as ``mint_ticket``."""

from __future__ import annotations

import pytest

from control_plane.dispatch import mint_route_ticket
from edge_node.errors import TicketExpired, TicketForged, TicketWrongEdge
from edge_node.tickets import TicketClaims, generate_keypair, mint_ticket, verify_ticket


@pytest.mark.parametrize(("user", "piece", "mode"), [
    ("ana", "bach/prelude-1", "detailed"),
    ('quo"te\\back\u00e9\u4e2d\n', None, "light"),  # escaped exactly as json.dumps(ensure_ascii=True) does
    ("u", "", None),
])
def test_route_tickets_verify_on_the_edge_and_match_mint_ticket(user: str, piece: str | None, mode: str | None) -> None:
    private, public = generate_keypair()
    iat = 1_700_000_000.123456
    token = mint_route_ticket(private, "sess-1", user, "edge-7", iat, iat + 120.0, piece, mode, "jti-1")
    claims = verify_ticket(token, [public], "edge-7", iat + 1)
    expected = TicketClaims(session_id="sess-1", user=user, edge_id="edge-7", exp=iat + 120.0, iat=iat,
                            piece=piece, mode=mode, ticket_id="jti-1")
    assert claims == expected
    # Byte for byte what the edge's own minter makes (Ed25519 signatures are deterministic).
    assert token == mint_ticket(private, expected)


def test_route_tickets_are_refused_for_another_edge_a_foreign_key_or_after_expiry() -> None:
    private, public = generate_keypair()
    _, other_public = generate_keypair()
    token = mint_route_ticket(private, "s", "u", "edge-7", 100.0, 220.0, None, "light", "j")
    with pytest.raises(TicketWrongEdge):
        verify_ticket(token, [public], "edge-8", 150.0)
    with pytest.raises(TicketForged):
        verify_ticket(token, [other_public], "edge-7", 150.0)
    with pytest.raises(TicketExpired):
        verify_ticket(token, [public], "edge-7", 220.0)
