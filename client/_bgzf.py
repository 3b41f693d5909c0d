"""BGZF (blocked gzip, what bgzip and tabix read) written by a background thread.

``BgzfWriter(path).write(data)`` queues plain bytes; a worker thread cuts the stream into
blocks of 65,280 bytes (htslib's ``BGZF_BLOCK_SIZE``), deflates each with zlib (which releases
the GIL, so compression runs beside the scoring) and appends the gzip members in order;
``close()`` writes the rest and the 28-byte BGZF end-of-file block. The blocks depend only on
the byte stream, not on how it was cut into ``write`` calls, so a resumed run that feeds the
same bytes produces the same file.
"""

from __future__ import annotations

import queue
import struct
import threading
import zlib
from typing import IO

__all__ = ["BLOCK", "BgzfWriter", "Tee"]

#: Uncompressed bytes per BGZF block (htslib's BGZF_BLOCK_SIZE).
BLOCK = 0xFF00
_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_HEAD = struct.Struct("<4BI2BH2BHH")


def _member(data: bytes, level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    bsize = len(body) + 25  # header 18 + trailer 8, minus one
    head = _HEAD.pack(0x1F, 0x8B, 8, 4, 0, 0, 0xFF, 6, 66, 67, 2, bsize)
    return head + body + struct.pack("<II", zlib.crc32(data), len(data))


class BgzfWriter:
    """Append-only BGZF file fed from the calling thread, compressed in a worker thread."""

    def __init__(
        self, path: str, *, level: int = 6, prefix_from: str | None = None, prefix_size: int = 0
    ) -> None:
        """``prefix_from``: a plain file whose first ``prefix_size`` bytes go first (a resumed
        partial output, which the caller goes on appending to)."""
        self.path = path
        self._level = level
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # bounded memory
        self._error: BaseException | None = None
        self._fh: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed by the worker
        self._thread = threading.Thread(
            target=self._work, args=(prefix_from, prefix_size), name="varfx-bgzf", daemon=True
        )
        self._thread.start()

    def write(self, data: bytes) -> int:
        if self._error is not None:
            raise self._error
        if data:
            self._queue.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to do: blocks are written as they fill (complete records stay in the plain
        partial file, which is what --resume reads)."""

    def _work(self, prefix_from: str | None, prefix_size: int) -> None:
        pending = b""
        try:
            if prefix_from is not None:
                with open(prefix_from, "rb") as fh:
                    left = prefix_size
                    while left > 0 and (piece := fh.read(min(16 * BLOCK, left))):
                        left -= len(piece)
                        pending = self._blocks(pending + piece)
            while (item := self._queue.get()) is not None:
                pending = self._blocks(pending + item)
            if pending:
                self._fh.write(_member(pending, self._level))
            self._fh.write(_EOF)
        except BaseException as exc:
            self._error = exc
            while self._queue.get() is not None:  # drain so that put() never blocks
                pass
        finally:
            self._fh.close()

    def _blocks(self, data: bytes) -> bytes:
        n = len(data) // BLOCK * BLOCK
        for i in range(0, n, BLOCK):
            self._fh.write(_member(data[i : i + BLOCK], self._level))
        return data[n:]

    def close(self) -> None:
        """Compress the rest and write the EOF block; raises what the worker ran into."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop without finishing (the file is incomplete)."""
        self._queue.put(None)
        self._thread.join(timeout=30)


class Tee:
    """``write`` to a plain file and a BgzfWriter at once (``flush`` flushes the plain one)."""

    def __init__(self, plain: IO[bytes], bgzf: BgzfWriter) -> None:
        self.plain, self.bgzf = plain, bgzf

    def write(self, data: bytes) -> int:
        self.plain.write(data)
        self.bgzf.write(data)
        return len(data)

    def flush(self) -> None:
        self.plain.flush()

    def close(self) -> None:
        self.plain.close()
