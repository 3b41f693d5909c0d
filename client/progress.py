"""Progress bar for ``varfx score``: tqdm on stderr, in variants, with variants/s and ETA."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

__all__ = ["Progress"]


class Progress:
    """``update(variants, records)`` after each chunk. ``enabled=None``: only on a terminal."""

    def __init__(
        self,
        total_variants: int,
        total_records: int,
        done_records: int,
        *,
        enabled: bool | None = None,
    ) -> None:
        from tqdm import tqdm

        self.total_records = total_records
        self.records = done_records
        self._bar: Any = tqdm(
            total=total_variants or None,
            unit=" variants",
            unit_scale=True,
            dynamic_ncols=True,
            file=sys.stderr,
            disable=(not enabled) if enabled is not None else None,
            desc="scoring",
            smoothing=0.1,
        )

    def update(self, variants: int, records: int) -> None:
        self.records += records
        self._bar.update(variants)
        self._bar.set_postfix_str(f"records {self.records}/{self.total_records}", refresh=False)

    def skip(self, variants: int) -> None:
        """Count variants done in an earlier run (resume) without timing them."""
        self._bar.update(variants)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
