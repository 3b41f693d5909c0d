"""What the server speaks: TLS or plaintext, whether it wants a client certificate.

gRPC reports a TLS/plaintext mismatch as UNAVAILABLE ("Socket closed", or a handshake failure),
which the client would retry for a minute. ``TransportCheck.diagnose`` looks at such a failure
and, for a connection that could not be set up, probes the server's port once: a TLS
ClientHello (no certificate checks) and, when that gets no TLS answer, an HTTP/2 preface in
plaintext. A mismatch (a plaintext client and a TLS server, a TLS client and a plaintext
server, no client certificate for a server that requires one, a server certificate the client
does not trust) becomes ``TransportMismatch``: an ``RpcError`` with FAILED_PRECONDITION and a
message saying which side speaks what, which the retry loops do not retry.

The interceptors here run the check on failed calls only; a call that succeeds costs one
``isinstance``. ``check_token_transport`` refuses to send a bearer token in plaintext to a
host other than this one unless told ``insecure``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from varfx.client.errors import InsecureTransportError
from varfx.core.hosts import is_loopback_host

__all__ = [
    "ServerTransport",
    "TransportCheck",
    "TransportMismatch",
    "check_token_transport",
    "is_loopback_target",
    "probe_transport",
    "target_addresses",
]

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS = 0x04


def target_addresses(target: str) -> list[tuple[str, int]] | None:
    """``(host, port)`` of each address in a gRPC target; None for unix sockets and targets
    this does not parse. ``host:port``, ``[v6]:port``, ``dns:[//authority/]host:port``,
    ``ipv4:a:p,b:p`` and ``ipv6:[a]:p,...``; a missing port is gRPC's default, 443."""
    scheme, sep, rest = target.partition(":")
    if sep and scheme in ("unix", "unix-abstract", "vsock"):
        return None
    if sep and scheme == "dns":
        rest = rest[2:].partition("/")[2] if rest.startswith("//") else rest
        parts = [rest]
    elif sep and scheme in ("ipv4", "ipv6"):
        parts = rest.split(",")
    else:
        parts = [target]
    out = []
    for part in parts:
        part = part.strip()
        if part.startswith("["):
            host, _, tail = part[1:].partition("]")
            port = tail[1:] if tail.startswith(":") else ""
        elif part.count(":") == 1:
            host, _, port = part.partition(":")
        elif ":" in part:  # a bare IPv6 address
            host, port = part, ""
        else:
            host, port = part, ""
        if not host:
            return None
        try:
            out.append((host, int(port) if port else 443))
        except ValueError:
            return None
    return out or None


def is_loopback_target(target: str) -> bool:
    """Whether every address of ``target`` is this machine (loopback IPs, localhost, a unix
    socket). Names are not resolved: any other name counts as another host."""
    if target.partition(":")[0] in ("unix", "unix-abstract"):
        return True
    addresses = target_addresses(target)
    return addresses is not None and all(is_loopback_host(h) for h, _ in addresses)


def check_token_transport(target: str, *, tls: bool, token: bool, insecure: bool) -> None:
    """Raise InsecureTransportError for a token over plaintext to another host."""
    if token and not tls and not insecure and not is_loopback_target(target):
        raise InsecureTransportError(
            f"refusing to send a bearer token in plaintext to {target}: anyone on the path "
            "could read it. Use TLS (tls=True / --tls, with root_certificates / --ca-cert for "
            "a private CA), or pass insecure=True / --insecure if the network is trusted"
        )


@dataclass(frozen=True)
class ServerTransport:
    """What a probe saw: ``tls`` True (TLS), False (plaintext HTTP/2) or None (no answer to
    go by); ``client_certificate_required``: the server ended the probe's TLS session, which
    has no client certificate, with a certificate alert or unanswered right after the
    handshake."""

    tls: bool | None
    client_certificate_required: bool = False


def _recv_some(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _wants_certificate(exc: ssl.SSLError) -> bool:
    return "CERTIFICATE_REQUIRED" in str(exc.reason or exc).upper()


def _probe_tls(host: str, port: int, timeout: float) -> ServerTransport | None:
    """ServerTransport(tls=True, ...) for a TLS answer; None when the port answered but not
    with TLS; ServerTransport(None) when nothing could be learnt."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a probe of the protocol, not of the certificate
    context.set_alpn_protocols(["h2"])
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return ServerTransport(None)
    with raw:
        sni = None if _is_ip(host) else host
        try:
            with context.wrap_socket(raw, server_hostname=sni) as tls:
                # TLS 1.3: a server that requires a client certificate refuses one only after
                # the handshake: with an alert, or (gRPC) by closing the session unanswered,
                # where an HTTP/2 server that accepts the session sends its SETTINGS first
                try:
                    tls.sendall(_H2_PREFACE)
                    answer = _recv_some(tls, 9)
                except ssl.SSLError as exc:
                    return ServerTransport(True, _wants_certificate(exc))
                except OSError:
                    return ServerTransport(True)
                return ServerTransport(True, client_certificate_required=not answer)
        except ssl.SSLError as exc:
            if "ALERT" in str(exc.reason or exc).upper():  # the server answered in TLS
                return ServerTransport(True, _wants_certificate(exc))
            return None
        except OSError:
            return ServerTransport(None)


def _probe_plaintext(host: str, port: int, timeout: float) -> bool:
    """Whether the port answers an HTTP/2 preface in plaintext with a SETTINGS frame."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_H2_PREFACE)
            head = _recv_some(sock, 9)
    except OSError:
        return False
    return len(head) == 9 and head[3] == _SETTINGS and head[5:9] == b"\x00\x00\x00\x00"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def probe_transport(host: str, port: int, timeout: float = 1.0) -> ServerTransport:
    """Connect to ``host:port`` (at most twice, ``timeout`` seconds each step) and see
    whether it speaks TLS or plaintext HTTP/2."""
    seen = _probe_tls(host, port, timeout)
    if seen is not None:
        return seen
    return ServerTransport(False if _probe_plaintext(host, port, timeout) else None)


class TransportMismatch(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A call that cannot work as configured (FAILED_PRECONDITION, not retried)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self._message = message

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.FAILED_PRECONDITION

    def details(self) -> str:
        return self._message

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


def _details(exc: BaseException) -> str:
    fn: Any = getattr(exc, "details", None)
    try:
        return str(fn() or "") if callable(fn) else ""
    except Exception:
        return ""


def _code(exc: BaseException) -> Any:
    fn: Any = getattr(exc, "code", None)
    try:
        return fn() if callable(fn) else None
    except Exception:
        return None


class TransportCheck:
    """Turns a connection failure caused by a TLS/plaintext mismatch into a clear message."""

    def __init__(self, target: str, *, tls: bool, client_certificate: bool) -> None:
        self.target = target
        self.tls = tls
        self.client_certificate = client_certificate
        addresses = target_addresses(target)
        self._address = addresses[0] if addresses else None

    def probe_address(self, exc: BaseException) -> tuple[str, int] | None:
        """Where to probe for ``exc``: a connection that could not be set up, else None."""
        if _code(
            exc
        ) is grpc.StatusCode.UNAVAILABLE and "failed to connect to all addresses" in _details(exc):
            return self._address
        return None

    def from_details(self, exc: BaseException) -> str | None:
        """A message for a failure the gRPC details already explain, else None."""
        if _code(exc) is not grpc.StatusCode.UNAVAILABLE:
            return None
        details = _details(exc)
        reason = details.rsplit("OPENSSL_internal:", 1)[-1].split(": OK")[0].strip()
        code = reason.split(":", 1)[0] if "OPENSSL_internal:" in details else ""
        if "ALERT" in code and ("CERTIFICATE" in code or "UNKNOWN_CA" in code):
            return (
                f"{self.target} refused this client's certificate ({reason}): with mutual "
                "TLS it must be signed by a CA in the server's tls_client_ca"
            )
        if "not in peer certificate" in details or "CERTIFICATE" in code or "SIGNATURE" in code:
            return (
                f"the TLS certificate of {self.target} is not accepted by this client "
                f"({reason}): pass the CA that signed it (root_certificates / --ca-cert), "
                "and connect by a name or IP address the certificate lists"
            )
        return None

    def from_probe(self, seen: ServerTransport) -> str | None:
        """A message when what the probe saw cannot work with this client, else None."""
        if seen.tls is True and not self.tls:
            return (
                f"{self.target} speaks TLS and this client plaintext: use tls=True (--tls), "
                "with root_certificates (--ca-cert) for a private CA"
            )
        if seen.tls is False and self.tls:
            return (
                f"{self.target} speaks plaintext (no TLS) and this client TLS: connect without "
                "TLS (no --tls/--ca-cert), or start the server with --tls-cert/--tls-key"
            )
        if seen.tls and seen.client_certificate_required and self.client_certificate:
            return (
                f"{self.target} requires a client certificate (mutual TLS) and ended the TLS "
                "session with this client's: is it signed by a CA in the server's "
                "tls_client_ca, and still valid?"
            )
        if seen.tls and seen.client_certificate_required and not self.client_certificate:
            return (
                f"{self.target} ends TLS sessions without a client certificate (mutual TLS) "
                "and this client has none: pass client_certificate/client_key "
                "(--client-cert/--client-key)"
            )
        return None

    def diagnose(self, exc: BaseException) -> str | None:
        """Blocking: a message when ``exc`` comes from a mismatch (may probe the server)."""
        message = self.from_details(exc)
        address = self.probe_address(exc) if message is None else None
        if address is not None:
            message = self.from_probe(probe_transport(*address))
        return message

    async def diagnose_async(self, exc: BaseException) -> str | None:
        """``diagnose`` with the probe in a worker thread (the event loop keeps running)."""
        message = self.from_details(exc)
        address = self.probe_address(exc) if message is None else None
        if address is not None:
            message = self.from_probe(await asyncio.to_thread(probe_transport, *address))
        return message

    def checked(self, exc: BaseException) -> BaseException:
        """Blocking: ``exc`` as TransportMismatch when it comes from a mismatch, else ``exc``
        itself. Every failed call goes through this (or ``checked_async``): Client's unary
        calls and streams here, AsyncClient's unary calls and streams (client/_aio.py)."""
        message = self.diagnose(exc)
        return exc if message is None else TransportMismatch(message)

    async def checked_async(self, exc: BaseException) -> BaseException:
        """``checked`` with the probe off the event loop."""
        message = await self.diagnose_async(exc)
        return exc if message is None else TransportMismatch(message)


class _CheckedStream:
    """A response-stream call whose errors go through the TransportCheck."""

    def __init__(self, call: Any, check: TransportCheck) -> None:
        self._call = call
        self._check = check

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as exc:
            checked = self._check.checked(exc)
            if checked is not exc:
                raise checked from exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class SyncTransportInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """For ``grpc.intercept_channel``: failed calls raise TransportMismatch on a mismatch."""

    def __init__(self, check: TransportCheck) -> None:
        self.check = check

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        outcome = continuation(details, request)
        if isinstance(outcome, grpc.RpcError) and outcome.done():  # type: ignore[attr-defined]
            checked = self.check.checked(outcome)
            if checked is not outcome:
                raise checked from outcome
        return outcome

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return _CheckedStream(continuation(details, requests), self.check)


class AioTransportInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """For grpc.aio channels (unary calls): the same check, the probe off the event loop.
    (AsyncClient's streams use the read/write API, which a stream interceptor would turn into
    a proxy; they call ``TransportCheck.checked_async`` where they catch a failure.)"""

    def __init__(self, check: TransportCheck) -> None:
        self.check = check

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(details, request)
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            checked = await self.check.checked_async(exc)
            if checked is not exc:
                # grpc.aio hands a caller only AioRpcErrors from an interceptor's call
                message = str(checked.details())  # type: ignore[attr-defined]
                empty = grpc.aio.Metadata()
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    empty,
                    empty,
                    details=message,
                    debug_error_string=message,
                ) from exc
        return call
