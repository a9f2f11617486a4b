"""The JSON route gateway for browsers: auth, CORS, bad bodies, and real tickets."""

from __future__ import annotations

import asyncio
import time

import httpx

from control_plane.app import ControlPlane
from edge_node.tickets import load_public_key, verify_ticket

from .conftest import ADMIN, CLIENT, identity, make_agent

ORIGIN = "http://127.0.0.1:8080"


async def test_route_gateway_returns_edge_ticket_mode_and_alternates(control: ControlPlane) -> None:
    url = f"http://127.0.0.1:{control.gateway_port}/v1/route"
    async with make_agent(control.port or 0, identity("edge-1")) as a1, \
            make_agent(control.port or 0, identity("edge-2", lat=48.9)) as a2, httpx.AsyncClient() as http:
        await asyncio.wait_for(asyncio.gather(a1.registered.wait(), a2.registered.wait()), 5)
        r = await http.post(url, json={"user": "amy", "lat": 48.8, "lon": 2.3, "tempo_bpm": 50, "piece": "p1",
                                  "alternate_tickets": True},
                            headers={"Authorization": f"Bearer {CLIENT}", "Origin": ORIGIN})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) >= {"edge_id", "whip_url", "ticket", "mode", "expires_at", "alternates"}
        assert body["mode"] == "detailed" and body["edge_id"] in ("edge-1", "edge-2")
        assert body["whip_url"].endswith(f"/{body['edge_id']}/v1/whip")
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        claims = verify_ticket(body["ticket"], [load_public_key(control.public_key_pem)], body["edge_id"], time.time())
        assert claims.user == "amy" and claims.mode == "detailed" and claims.exp == body["expires_at"]
        assert [a["edge_id"] for a in body["alternates"]] == [{"edge-1": "edge-2", "edge-2": "edge-1"}[body["edge_id"]]]
        alternate = body["alternates"][0]
        alt_claims = verify_ticket(alternate["ticket"], [load_public_key(control.public_key_pem)],
                                   alternate["edge_id"], time.time())
        assert alt_claims.session_id == claims.session_id
        # Alternates carry tickets only on request (signing is most of a route's cost).
        r = await http.post(url, json={"user": "amy", "lat": 48.8, "lon": 2.3}, headers={"X-Api-Key": CLIENT})
        assert r.status_code == 200 and r.json()["alternates"][0]["ticket"] is None

        # X-Api-Key works too; fast tempo with no edge near enough goes on device.
        r = await http.post(url, json={"user": "amy", "lat": 10.0, "lon": 10.0, "tempo_bpm": 160},
                            headers={"X-Api-Key": CLIENT})
        assert r.status_code == 200 and r.json()["mode"] == "on_device" and r.json()["edge_id"] is None


async def test_route_gateway_refuses_bad_requests_cleanly(control: ControlPlane) -> None:
    url = f"http://127.0.0.1:{control.gateway_port}/v1/route"
    key = {"Authorization": f"Bearer {CLIENT}"}
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, json={"user": "a", "lat": 1, "lon": 1})).status_code == 401
        assert (await http.post(url, json={"user": "a"}, headers={"Authorization": "Bearer wrong"})).status_code == 401
        r = await http.post(url, content=b"{not json", headers={**key, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT"
        r = await http.post(url, content=b"user=a", headers={**key, "Content-Type": "text/plain"})
        assert r.status_code == 415
        r = await http.post(url, json={"user": "a", "lat": 95, "lon": 0}, headers=key)
        assert r.status_code == 400 and r.json()["error"]["field"] == "lat"
        r = await http.post(url, json={"user": "a", "lat": "north", "lon": 0}, headers=key)
        assert r.status_code == 400 and r.json()["error"]["field"] == "lat"
        r = await http.post(url, json=["a"], headers=key)
        assert r.status_code == 400
        r = await http.post(url, json={"user": "a", "pad": "x" * 20_000}, headers=key)
        assert r.status_code == 413
        # No edge registered: nothing fits.
        r = await http.post(url, json={"user": "a", "lat": 1, "lon": 1, "tempo_bpm": 80}, headers={"X-Api-Key": ADMIN})
        assert r.status_code == 503 and r.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
        assert r.headers["Retry-After"]
        pre = await http.options(url, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 204
        assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
        assert pre.headers["Access-Control-Allow-Origin"] == ORIGIN
