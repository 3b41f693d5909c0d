"""Real X.509 certificates for tests: a CA, a server certificate for 127.0.0.1/localhost and a
client certificate, written as PEM files (made with the ``cryptography`` package)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PKI", "make_pki"]


@dataclass(frozen=True)
class PKI:
    """PEM files: ``ca`` (root), ``server_cert``/``server_key``, ``client_cert``/``client_key``,
    and ``other_ca`` (a second CA that signed neither)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_pki(directory: Path) -> PKI:
    """Write a small PKI under ``directory``; skips the test without ``cryptography``."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def ca_cert(cn: str, k: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(k, hashes.SHA256())
        )

    def leaf(
        cn: str,
        k: ec.EllipticCurvePrivateKey,
        issuer: x509.Certificate,
        issuer_key: ec.EllipticCurvePrivateKey,
        usage: x509.ObjectIdentifier,
        san: list[x509.GeneralName] | None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer.subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write_cert(path: Path, cert: x509.Certificate) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def write_key(path: Path, k: ec.EllipticCurvePrivateKey) -> Path:
        path.write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return path

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, other_key, server_key, client_key = key(), key(), key(), key()
    ca = ca_cert("varfx test CA", ca_key)
    other = ca_cert("another CA", other_key)
    san: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server = leaf("localhost", server_key, ca, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, san)
    client = leaf("varfx client", client_key, ca, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH, None)
    return PKI(
        ca=write_cert(directory / "ca.pem", ca),
        server_cert=write_cert(directory / "server.pem", server),
        server_key=write_key(directory / "server.key", server_key),
        client_cert=write_cert(directory / "client.pem", client),
        client_key=write_key(directory / "client.key", client_key),
        other_ca=write_cert(directory / "other-ca.pem", other),
    )
