"""TLS for the gRPC port: server credentials from the configured PEM files, checked up front.

``server_credentials(config)`` returns None when ``tls_cert``/``tls_key`` are unset (plaintext),
else ``grpc.ServerCredentials``; with ``tls_client_ca`` the server asks every client for a
certificate signed by one of those CAs and refuses the handshake without one (mutual TLS).
gRPC itself only says "failed to add port" for a bad certificate, so the files are parsed with
the standard library first: an unreadable file, a file that is not PEM, or a key that does not
belong to the certificate is a ``TLSConfigError`` naming the file.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import grpc

from varfx.server.config import ServerConfig

__all__ = ["TLSConfigError", "is_loopback_host", "security_warnings", "server_credentials"]


class TLSConfigError(ValueError):
    """A TLS file cannot be read or used; the message names the key and the file."""


def _read(key: str, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{key} {str(path)!r}: cannot read: {exc.strerror or exc}") from exc
    if b"-----BEGIN " not in data:
        raise TLSConfigError(f"{key} {str(path)!r}: not a PEM file (no -----BEGIN line)")
    return data


def _no_password() -> bytes:
    raise TLSConfigError("encrypted private keys are not supported: decrypt it first")


def _check_pair(cert: Path, key: Path) -> None:
    """Parse the chain and the key, and check that the key is the certificate's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key), password=_no_password)
    except TLSConfigError as exc:
        raise TLSConfigError(f"tls_key {str(key)!r}: {exc}") from exc
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError(
                f"tls_key {str(key)!r} is not the private key of tls_cert {str(cert)!r}"
            ) from exc
        if "PEM" in reason or "CERT" in reason.upper():
            where = (
                f"tls_cert {str(cert)!r}" if "CERT" in reason.upper() else f"tls_key {str(key)!r}"
            )
            raise TLSConfigError(f"{where}: cannot parse ({reason})") from exc
        raise TLSConfigError(
            f"tls_cert {str(cert)!r} / tls_key {str(key)!r}: cannot load ({reason})"
        ) from exc


def _check_ca(path: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=str(path))
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"tls_client_ca {str(path)!r}: no usable CA certificate ({exc.reason or exc})"
        ) from exc


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, or None for plaintext (see the module docstring)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    chain = _read("tls_cert", config.tls_cert)
    key = _read("tls_key", config.tls_key)
    _check_pair(config.tls_cert, config.tls_key)
    ca = None
    if config.tls_client_ca is not None:
        ca = _read("tls_client_ca", config.tls_client_ca)
        _check_ca(config.tls_client_ca)
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
    )


def is_loopback_host(host: str) -> bool:
    """Whether a listen/connect host is this machine only (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def security_warnings(config: ServerConfig) -> list[str]:
    """What is exposed by ``config`` that an operator should know of (logged at start-up)."""
    if is_loopback_host(config.host):
        return []
    where = f"{config.host}:{config.port}"
    tls = config.tls_cert is not None
    if config.auth_tokens_file is not None and not tls:
        return [
            f"bearer tokens travel in plaintext on {where}: set tls_cert/tls_key, or "
            "terminate TLS in front of this port"
        ]
    if config.auth_tokens_file is None and config.tls_client_ca is None:
        return [
            f"no authentication on {where}: anyone who reaches it can call it (set "
            "auth_tokens_file or tls_client_ca, or bind host=127.0.0.1)"
        ]
    return []
