"""Retry policy: bounded exponential backoff with jitter on UNAVAILABLE / RESOURCE_EXHAUSTED /
CANCELLED.

Unary calls are retried by gRPC itself: ``service_config()`` is the channel's ``methodConfig``
``retryPolicy`` (gRPC caps it at ``UNARY_ATTEMPTS_CAP`` attempts in all, and its waits are
``random(0, min(max_backoff, initial_backoff * multiplier**(n-1)))``). Streams are resumed by
the client (client/_stream.py), with ``backoff`` and all ``max_attempts``: gRPC never retries a
stream once a response has arrived, and resuming sends only the chunks without one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

__all__ = ["UNARY_ATTEMPTS_CAP", "RetryPolicy"]

#: The most attempts gRPC's retryPolicy makes (a larger maxAttempts is clamped to it).
UNARY_ATTEMPTS_CAP = 5

#: The unary methods gRPC retries: not StreamScoreVariants (the client resumes it, sending only
#: unanswered chunks) and not grpc.health (a health check reports what it finds).
_UNARY_METHODS = ("ListModels", "ScoreVariants", "ScoreSequences")
_SERVICE = "varfx.v1.VariantEffectService"


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` tries in all (1 = no retry; unary calls make at most 5, gRPC's cap);
    the n-th wait is ``min(max_backoff, initial_backoff * multiplier**(n-1))`` seconds times a
    jitter in [0.5, 1] for stream resumes (gRPC's own jitter, [0, 1], for unary calls)."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff times must be >= 0 seconds")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return base * (0.5 + 0.5 * (rng or random).random())

    @property
    def unary_attempts(self) -> int:
        """Attempts gRPC makes for one unary call under this policy."""
        return min(self.max_attempts, UNARY_ATTEMPTS_CAP)

    def method_config(self, codes: tuple[str, ...]) -> list[dict[str, Any]]:
        """The service config's ``methodConfig`` list: a ``retryPolicy`` on ``codes`` (status
        code names) for the unary varfx.v1 methods; empty when there is nothing to retry."""
        if self.unary_attempts < 2:
            return []
        # gRPC wants durations as "<seconds>s" and an initial backoff above 0
        initial = max(self.initial_backoff, 0.001)
        return [
            {
                "name": [{"service": _SERVICE, "method": m} for m in _UNARY_METHODS],
                "retryPolicy": {
                    "maxAttempts": self.unary_attempts,
                    "initialBackoff": f"{initial:.3f}s",
                    "maxBackoff": f"{max(self.max_backoff, initial):.3f}s",
                    "backoffMultiplier": self.multiplier,
                    "retryableStatusCodes": list(codes),
                },
            }
        ]
