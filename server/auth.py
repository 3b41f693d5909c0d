"""Bearer-token authentication for the gRPC server: a token file and a grpc.aio interceptor.

The token file holds one token per line; blank lines and lines starting with ``#`` are ignored,
surrounding whitespace is stripped, and a token is visible ASCII without spaces (it travels as
an HTTP/2 header value). ``TokenStore`` keeps SHA-256 digests of the tokens and compares a
presented token's digest with every one of them with ``hmac.compare_digest`` (constant time,
and the same work whatever the token's length or which one matches). It re-reads the file on
``reload()`` (SIGHUP) and when the file's mtime, size or inode change, checked at most once per
``check_interval_s`` from the call path (no polling thread, no stat per call). A reload that
fails (file gone, unreadable, a bad line) keeps the tokens in force and logs why; a file that
reloads with no tokens refuses every call until tokens are back.

``BearerTokenInterceptor`` lets ``grpc.health.v1`` calls through without a token (probes) and
answers every other call (scoring, ListModels, reflection) that lacks
``authorization: Bearer <token>`` with one of the tokens with UNAUTHENTICATED, before the
request is read or decoded.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

__all__ = [
    "OPEN_METHOD_PREFIXES",
    "BearerTokenInterceptor",
    "TokenFileError",
    "TokenStore",
    "read_tokens",
]

log = logging.getLogger(__name__)

#: Methods callable without a token: health checks, for load balancers and kubelet probes
#: (grpc.health.v1, and KServe v2's liveness and readiness).
OPEN_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
)


class TokenFileError(ValueError):
    """The token file cannot be read or has a bad line (``FILE:LINE: what``)."""


def read_tokens(path: Path) -> list[bytes]:
    """The tokens in ``path``, in file order (see the module docstring for the format)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TokenFileError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    tokens = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not all(0x21 <= ord(c) <= 0x7E for c in line):
            raise TokenFileError(
                f"{path}:{number}: a token is visible ASCII without spaces "
                "(one token per line, # starts a comment line)"
            )
        tokens.append(line.encode("ascii"))
    return tokens


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def _file_state(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class TokenStore:
    """The accepted bearer tokens, from ``path``; see the module docstring.

    Raises TokenFileError when the file cannot be read, has a bad line, or holds no token.
    """

    def __init__(
        self,
        path: Path,
        *,
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._state = _file_state(path)
        tokens = read_tokens(path)
        if not tokens:
            raise TokenFileError(f"{path}: no tokens (one per line): every call would be refused")
        self._digests = tuple(_digest(t) for t in tokens)
        self._next_check = clock() + check_interval_s
        self.reloads = 0
        if self._state is not None and path.stat().st_mode & 0o004:
            log.warning("token file %s is readable by every user on this host", path)

    def __len__(self) -> int:
        return len(self._digests)

    def reload(self) -> bool:
        """Re-read the file now; True when the new tokens are in force. On a failure the
        tokens in force stay and the reason is logged."""
        state = _file_state(self.path)
        try:
            tokens = read_tokens(self.path)
        except TokenFileError as exc:
            log.error("auth tokens not reloaded, the %d in force stay: %s", len(self), exc)
            self._state = state
            return False
        self._digests = tuple(_digest(t) for t in tokens)
        self._state = state
        self.reloads += 1
        if tokens:
            log.info("auth tokens reloaded from %s: %d token(s)", self.path, len(tokens))
        else:
            log.warning("auth tokens reloaded from %s: no tokens, every call is refused", self.path)
        return True

    def maybe_reload(self) -> None:
        """Reload when the file changed; looks at most once per ``check_interval_s``."""
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + self.check_interval_s
        if _file_state(self.path) != self._state:
            self.reload()

    def accepts(self, token: bytes) -> bool:
        """Whether ``token`` is one of the tokens (constant time in the token and the match)."""
        presented = _digest(token)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(presented, digest)
        return found


_MISSING = (
    "this server requires a bearer token: send metadata 'authorization: Bearer <token>' "
    "(varfx --token, or the VARFX_TOKEN environment variable)"
)
_MALFORMED = "the authorization metadata is not 'Bearer <token>'"
_REJECTED = "the bearer token is not accepted by this server"


def _check(store: TokenStore, metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """None when the call carries an accepted token, else why not (for UNAUTHENTICATED)."""
    values = [v for k, v in metadata or () if k == "authorization"]
    if not values:
        return _MISSING
    value = values[0]
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    scheme, _, token = bytes(value).strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token or len(values) > 1:
        return _MALFORMED
    return None if store.accepts(token) else _REJECTED


def _denier(message: str) -> grpc.RpcMethodHandler:
    """A handler that ends the call with UNAUTHENTICATED without reading its request."""

    async def deny(_requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.stream_stream_rpc_method_handler(deny)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for every call outside ``OPEN_METHOD_PREFIXES`` without an accepted
    bearer token. Refusals are logged at most once per ``log_interval_s``, with a count."""

    def __init__(self, store: TokenStore, *, log_interval_s: float = 10.0) -> None:
        self.store = store
        self._deniers = {m: _denier(m) for m in (_MISSING, _MALFORMED, _REJECTED)}
        self._log_interval_s = log_interval_s
        self._refused = 0
        self._next_log = 0.0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method.startswith(OPEN_METHOD_PREFIXES):
            return await continuation(handler_call_details)
        self.store.maybe_reload()
        why = _check(self.store, handler_call_details.invocation_metadata)
        if why is None:
            return await continuation(handler_call_details)
        self._note_refusal(method, why)
        return self._deniers[why]

    def _note_refusal(self, method: str, why: str) -> None:
        self._refused += 1
        now = time.monotonic()
        if now >= self._next_log:
            log.warning(
                "refused %d call(s) without an accepted token (last: %s: %s)",
                self._refused,
                method,
                why,
            )
            self._refused = 0
            self._next_log = now + self._log_interval_s
