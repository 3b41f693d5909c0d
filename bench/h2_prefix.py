"""A gRPC call that sends only the 5-byte length prefix of its message, on plaintext HTTP/2
written by hand: how long the server takes to answer a message it can judge by its declared
length alone, with no upload in the measurement.

``prefix_answer(host, port, path, declared)`` opens a connection, starts a call of ``path``,
sends the prefix of an uncompressed message of ``declared`` bytes (and nothing of its body),
and returns ``(seconds, grpc_status)``: the time from the prefix to the call's end (trailers
or RST_STREAM), and the status the trailers carry (None: no answer within ``timeout``, or a
reset without one). bench/soak.py uses it for the server's own rejection latency, and the
tests to check that gRPC core refuses an oversized message at its prefix.
"""

from __future__ import annotations

import re
import socket
import struct
import time

__all__ = ["prefix_answer"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS = 0, 1, 3, 4
_END_STREAM, _END_HEADERS = 0x1, 0x4
_STATUS = re.compile(rb"grpc-status.([0-9]{1,2})", re.DOTALL)


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def _literal(name: str, value: str) -> bytes:
    """An HPACK literal header field without indexing, plain (no Huffman) strings < 127 B."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def frames(self, deadline: float) -> list[tuple[int, int, int, bytes]]:
        """Frames (type, flags, stream, payload) that arrive before ``deadline``."""
        out: list[tuple[int, int, int, bytes]] = []
        while not out and time.monotonic() < deadline:
            self.sock.settimeout(max(1e-3, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                break
            if not chunk:
                break
            self.buf += chunk
            while len(self.buf) >= 9:
                size = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + size:
                    break
                head, self.buf = self.buf[: 9 + size], self.buf[9 + size :]
                stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                out.append((head[3], head[4], stream, head[9:]))
        return out


def prefix_answer(
    host: str, port: int, path: str, declared: int, *, timeout: float = 2.0
) -> tuple[float, int | None]:
    """Seconds from sending a message's length prefix (``declared`` bytes, uncompressed) to
    the end of the call, and its grpc-status (None: none within ``timeout`` s). Plaintext."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = _Reader(sock)
        headers = b"".join(
            _literal(k, v)
            for k, v in (
                (":method", "POST"), (":scheme", "http"), (":path", path),
                (":authority", f"{host}:{port}"), ("content-type", "application/grpc"),
                ("te", "trailers"),
            )
        )  # fmt: skip
        sock.sendall(
            _PREFACE + _frame(_SETTINGS, 0, 0, b"") + _frame(_HEADERS, _END_HEADERS, 1, headers)
        )
        deadline = time.monotonic() + timeout
        while not any(k == _SETTINGS for k, *_ in reader.frames(deadline)):  # the server is up
            if time.monotonic() >= deadline:
                return timeout, None
        t0 = time.perf_counter()
        sock.sendall(_frame(_DATA, 0, 1, b"\x00" + struct.pack(">I", declared)))
        deadline = time.monotonic() + timeout
        status: int | None = None
        while time.monotonic() < deadline:
            for kind, flags, stream, payload in reader.frames(deadline):
                if stream != 1:
                    continue
                if kind == _HEADERS and (match := _STATUS.search(payload)):
                    status = int(match.group(1))
                if kind == _RST_STREAM or (kind == _HEADERS and flags & _END_STREAM):
                    return time.perf_counter() - t0, status
        return time.perf_counter() - t0, None
