"""mTLS: with a client CA configured, edges present a certificate signed by it (plus their enrollment
token); a client without a certificate cannot even open the connection."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from control_plane.app import ControlPlane
from edge_node.agent import EdgeAgent, MemoryHost
from edge_node.settings import ControlAgentSettings

from .conftest import ENROLL, control_settings, identity


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          ca: bool, san: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, key: ec.EllipticCurvePrivateKey | None, cert: x509.Certificate) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


async def test_edges_register_over_mtls_and_clients_without_a_certificate_are_refused(tmp_path: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("seminote-test-ca", ca_key, "seminote-test-ca", ca_key, ca=True)
    _write(tmp_path / "ca", None, ca)
    for name in ("server", "edge"):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(tmp_path / name, key, _cert(name, key, "seminote-test-ca", ca_key, ca=False, san="localhost"))
    settings = control_settings(tmp_path / "cp")
    settings.grpc.host = "localhost"
    settings.grpc.tls_cert_path = tmp_path / "server.crt"
    settings.grpc.tls_key_path = tmp_path / "server.key"
    settings.grpc.tls_client_ca_path = tmp_path / "ca.crt"
    async with ControlPlane(settings) as cp:
        agent_settings = ControlAgentSettings(
            addr=f"localhost:{cp.port}", enrollment_token=ENROLL, tls_ca_path=tmp_path / "ca.crt",
            tls_cert_path=tmp_path / "edge.crt", tls_key_path=tmp_path / "edge.key", backoff_max_s=0.5)
        async with EdgeAgent(agent_settings, identity("edge-tls"), MemoryHost()) as agent:
            await asyncio.wait_for(agent.registered.wait(), 10)
            assert cp.registry is not None and cp.registry.edges["edge-tls"].state.value == "serving"

        # TLS without a client certificate: the handshake fails, nothing reaches a service.
        creds = grpc.ssl_channel_credentials(root_certificates=(tmp_path / "ca.crt").read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{cp.port}", creds) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
