"""A request larger than any legal one is refused at its 5-byte length prefix (issue 16): gRPC
core compares the declared length with the port's receive limit (server/requests.py
receive_limit) and answers RESOURCE_EXHAUSTED before the body is sent (how fast: bench/soak.py);
a legal length is waited for. Real server on loopback, raw HTTP/2 for the prefix-only call."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from bench.h2_prefix import prefix_answer
from varfx.core.variants import MAX_REQUEST_BYTES
from varfx.server.requests import max_infer_bytes, max_request_bytes, receive_limit

_SCORE = "/varfx.v1.VariantEffectService/ScoreVariants"
_MIB = 1 << 20


def test_receive_limit_is_the_largest_legal_request_capped_at_the_message_limit() -> None:
    assert max_request_bytes(10_000) == 10_000 * 512 + MAX_REQUEST_BYTES
    assert receive_limit(64 * _MIB, 10_000, 256, [600]) == max_request_bytes(10_000)
    # a long-window model's ModelInferRequest is larger than any varfx.v1 request
    long = max_infer_bytes(256, 4_000)
    assert long > max_request_bytes(10_000)
    assert receive_limit(64 * _MIB, 10_000, 256, [600, 4_000]) == long
    assert receive_limit(4 * _MIB, 10_000, 256, [600]) == 4 * _MIB  # never above the message limit


def _limit(server: Any) -> int:
    """The receive limit of the session server, from its config and its models."""
    c = server.config
    lengths = [m.spec.sequence_length for m in server.handle.models.values()]
    return receive_limit(c.max_message_mb * _MIB, c.max_variants_per_request, c.max_batch, lengths)


def test_oversized_message_refused_at_its_prefix(server: Any) -> None:
    limit = _limit(server)
    seconds, status = prefix_answer("127.0.0.1", server.port, _SCORE, limit + 1, timeout=5.0)
    assert status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], (seconds, status)


def test_legal_length_is_waited_for(server: Any) -> None:
    limit = _limit(server)
    _, status = prefix_answer("127.0.0.1", server.port, _SCORE, limit, timeout=0.5)
    assert status is None  # no answer: the server waits for the body it was promised


def test_client_sees_resource_exhausted_larger_than_max(server: Any) -> None:
    limit = _limit(server)
    channel = grpc.insecure_channel(
        server.target, options=[("grpc.max_send_message_length", 64 * _MIB)]
    )
    with channel, pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(_SCORE)(b"\x00" * (limit + 1), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert "larger than max" in (info.value.details() or "")  # type: ignore[attr-defined]
