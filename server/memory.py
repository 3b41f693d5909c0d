"""Process memory settings for the server.

glibc gives each thread that allocates under contention its own malloc arena (up to 8 per core)
and keeps freed memory in them. A server whose window arrays, request and response buffers are
allocated and freed by several threads (the event loop, window-building workers, ONNX Runtime's
callers) then holds hundreds of MB it no longer uses: measured with bench/soak.py, streams far
beyond the queue took RSS from ~100 MB to ~250 MB with the default arenas and stayed under
+60 MB with two. ``limit_malloc_arenas`` caps them (``mallopt(M_ARENA_MAX)``) before the
server's threads start; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["limit_malloc_arenas"]

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (0: leave the default); True when applied."""
    if arenas <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_ARENA_MAX, arenas))
    if not ok:
        log.debug("mallopt(M_ARENA_MAX, %d) was refused", arenas)
    return ok
