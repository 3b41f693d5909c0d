"""TLS for the gRPC port: server credentials from the configured PEM files, checked up front.

``server_credentials(config)`` returns None when ``tls_cert``/``tls_key`` are unset (plaintext),
else ``grpc.ServerCredentials``; with ``tls_client_ca`` the server asks every client for a
certificate signed by one of those CAs and refuses the handshake without one (mutual TLS).
gRPC itself only says "failed to add port" for a bad certificate, so the files are parsed with
the standard library first: an unreadable file, a file that is not PEM, or a key that does not
belong to the certificate is a ``TLSConfigError`` naming the file.

The files are watched: before a new connection's handshake gRPC asks for the certificate to
use, and when the files' mtime, size or inode changed (looked at, at most once per second) they
are read and checked again (a rotated certificate, e.g. a Kubernetes Secret that cert-manager
renewed, is used without a restart; connections already open keep theirs). Files that fail
the checks then are logged and the certificate in force stays.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from varfx.core.hosts import is_loopback_host
from varfx.server.config import ServerConfig

__all__ = [
    "CertificateFiles",
    "TLSConfigError",
    "security_warnings",
    "server_credentials",
]


log = logging.getLogger(__name__)


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


def _load(cert: Path, key: Path, ca: Path | None) -> grpc.ServerCertificateConfiguration:
    chain = _read("tls_cert", cert)
    private_key = _read("tls_key", key)
    _check_pair(cert, key)
    roots = None
    if ca is not None:
        roots = _read("tls_client_ca", ca)
        _check_ca(ca)
    return grpc.ssl_server_certificate_configuration(
        [(private_key, chain)], root_certificates=roots
    )


def _states(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int] | None, ...]:
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            out.append(None)
            continue
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class CertificateFiles:
    """The configured PEM files and the gRPC fetcher that re-reads them when they change."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        ca: Path | None,
        *,
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert, self.key, self.ca = cert, key, ca
        self.paths = (cert, key) if ca is None else (cert, key, ca)
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _states(self.paths)
        self.initial = _load(cert, key, ca)  # TLSConfigError at start-up
        self._next_check = clock() + check_interval_s
        self.reloads = 0

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """For gRPC, before each new handshake: a new configuration when the files changed
        and pass the checks, else None (keep the one in force). Never raises."""
        try:
            with self._lock:
                now = self._clock()
                if now < self._next_check:
                    return None
                self._next_check = now + self.check_interval_s
                state = _states(self.paths)
                if state == self._state:
                    return None
                self._state = state
                config = _load(self.cert, self.key, self.ca)
                self.reloads += 1
            log.info("TLS certificate reloaded from %s", self.paths[0])
            return config
        except Exception as exc:  # a bad rotation must not take the port down
            log.error("TLS files not reloaded, the certificate in force stays: %s", exc)
            return None


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, or None for plaintext (see the module docstring)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    files = CertificateFiles(config.tls_cert, config.tls_key, config.tls_client_ca)
    return grpc.dynamic_ssl_server_credentials(
        files.initial,
        files.fetch,  # type: ignore[arg-type]  # gRPC takes None as "no change"; the stub does not
        require_client_authentication=files.ca is not None,
    )


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
