"""A bounded cache of reference-window predictions, shared by every caller of a server.

An SNV's ref window is the genome around it, so every variant at a site, every re-scoring of the
same VCF, and nearby callers asking for the same site need the same prediction. The cache holds
it once: keyed by the model (name, version, ONNX SHA-256), the genome (digest), the contig, the
window start and whether strands are averaged; the value is the model's probability vector
float32 [F] (all the model's features, before any feature selection). It is bounded in bytes
(least recently used entries go first), thread-safe, and gives exactly the numbers a fresh run
gives (the value is what the model returned for that very window).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["RefCache"]

_ENTRY_OVERHEAD = 160  # bytes of key, dict slot and array header per entry (approximate)


class RefCache:
    """Least-recently-used map of window keys to float32 [F] predictions, at most
    ``max_bytes`` of them (0: disabled: every lookup misses, nothing is kept)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def lookup(self, keys: Sequence[Hashable], width: int) -> tuple[np.ndarray, np.ndarray]:
        """(found bool [n], values float32 [n, width]; rows of misses are undefined)."""
        found = np.zeros(len(keys), dtype=bool)
        values = np.empty((len(keys), width), dtype=np.float32)
        if not self.max_bytes:
            self.misses += len(keys)
            return found, values
        with self._lock:
            data = self._data
            for i, key in enumerate(keys):
                row = data.get(key)
                if row is not None and len(row) == width:
                    data.move_to_end(key)
                    values[i] = row
                    found[i] = True
            hits = int(found.sum())
            self.hits += hits
            self.misses += len(keys) - hits
        return found, values

    def store(self, keys: Sequence[Hashable], values: np.ndarray) -> None:
        """Keep ``values[i]`` (float32 [F]) for ``keys[i]``, evicting the oldest past the bound."""
        if not self.max_bytes or not len(keys):
            return
        size = values.shape[1] * 4 + _ENTRY_OVERHEAD
        with self._lock:
            data = self._data
            for i, key in enumerate(keys):
                if key in data:
                    data.move_to_end(key)
                    continue
                data[key] = np.array(values[i], dtype=np.float32)
                self._bytes += size
            while self._bytes > self.max_bytes and data:
                _, old = data.popitem(last=False)
                self._bytes -= old.shape[0] * 4 + _ENTRY_OVERHEAD
