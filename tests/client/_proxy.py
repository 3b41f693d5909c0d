"""A real gRPC server in front of a real varfx server that misbehaves on purpose.

``FaultyProxy`` forwards every call to the upstream server and can: fail the first N unary
calls with a given status (RESOURCE_EXHAUSTED, UNAVAILABLE), break streams with UNAVAILABLE
after K responses, delay each stream response, and it records how many stream requests were
received but not yet answered at most (to check the client's backpressure).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc


class FaultyProxy(pb_grpc.VariantEffectServiceServicer):
    def __init__(
        self,
        upstream: str,
        *,
        fail_unary: int = 0,
        fail_code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED,
        break_stream_after: int | None = None,
        breaks: int = 1,
        delay_s: float = 0.0,
        tls: tuple[bytes, bytes] | None = None,
    ) -> None:
        self._channel = grpc.insecure_channel(upstream)
        self._stub = pb_grpc.VariantEffectServiceStub(self._channel)
        self.fail_unary = fail_unary
        self.fail_code = fail_code
        self.break_stream_after = break_stream_after
        self.breaks = breaks
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.unary_calls = 0
        self.streams = 0
        self.stream_requests = 0
        self.variants_received = 0
        self.max_unanswered = 0
        self.server = grpc.server(ThreadPoolExecutor(8))
        pb_grpc.add_VariantEffectServiceServicer_to_server(self, self.server)
        self.metadata: list[dict[str, str]] = []
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:  # (private key PEM, certificate chain PEM)
            creds = grpc.ssl_server_credentials([tls])
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _maybe_fail(self, context: Any) -> None:
        with self.lock:
            self.unary_calls += 1
            fail = self.unary_calls <= self.fail_unary
        if fail:
            context.abort(self.fail_code, f"injected {self.fail_code.name}")

    def ListModels(self, request: Any, context: Any) -> Any:
        with self.lock:
            self.metadata.append({k: v for k, v in context.invocation_metadata()})
        return self._stub.ListModels(request)

    def ScoreVariants(self, request: Any, context: Any) -> Any:
        self._maybe_fail(context)
        return self._stub.ScoreVariants(request)

    def ScoreSequences(self, request: Any, context: Any) -> Any:
        self._maybe_fail(context)
        return self._stub.ScoreSequences(request)

    def StreamScoreVariants(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        with self.lock:
            self.streams += 1
            will_break = self.break_stream_after is not None and self.breaks > 0
            if will_break:
                self.breaks -= 1
        received = answered = 0
        # Read requests on a thread so "received" counts what the client sent, not what we asked.
        queue: list[Any] = []
        cond = threading.Condition()
        done = threading.Event()

        def reader() -> None:
            nonlocal received
            try:
                for req in request_iterator:
                    with cond:
                        queue.append(req)
                        received += 1
                        with self.lock:
                            self.stream_requests += 1
                            self.variants_received += len(req.variants)
                            self.max_unanswered = max(self.max_unanswered, received - answered)
                        cond.notify()
            except Exception:
                pass
            finally:
                done.set()
                with cond:
                    cond.notify()

        threading.Thread(target=reader, daemon=True).start()
        while True:
            with cond:
                while not queue and not done.is_set():
                    cond.wait(0.05)
                if not queue and done.is_set():
                    return
                req = queue.pop(0)
            if will_break and answered >= (self.break_stream_after or 0):
                context.abort(grpc.StatusCode.UNAVAILABLE, "injected: stream broken")
            if self.delay_s:
                time.sleep(self.delay_s)
            resp = self._stub.ScoreVariants(req)
            with cond:
                answered += 1
            yield resp

    def stop(self) -> None:
        self.server.stop(0)
        self._channel.close()


__all__ = ["FaultyProxy", "pb"]
