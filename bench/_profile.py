"""Sampling profile of this process (the in-thread server) with py-spy, summarised as text."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["Profile", "summarise"]


def _py_spy() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


class Profile:
    """``with Profile(out, seconds):`` records this process with py-spy (collapsed stacks, GIL
    and idle threads excluded) while the block runs; a no-op when py-spy is missing."""

    def __init__(self, out: Path, seconds: float) -> None:
        self.out = out
        self.seconds = max(1, int(seconds))
        self.proc: subprocess.Popen[bytes] | None = None
        self.error = ""

    def __enter__(self) -> Profile:
        exe = _py_spy()
        if exe is None:
            self.error = "py-spy not installed (pip install py-spy)"
            return self
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(os.getpid()), "--duration", str(self.seconds),
             "--rate", "200", "--format", "raw", "--threads", "--nonblocking",
             "-o", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        try:
            _out, err = self.proc.communicate(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        if self.proc.returncode != 0:
            self.error = err.decode(errors="replace")[-500:]


def _name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    func, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(where).parts
    short = "/".join(parts[-2:]) if parts else where
    return f"{func} ({short})"


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    """Self time per function and time per thread, as fractions of all samples."""
    self_time: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        self_time[_name(frames[-1])] += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "threads": {k: round(v / total, 3) for k, v in threads.most_common(8)},
        "self": [[k, round(v / total, 3)] for k, v in self_time.most_common(top)],
    }
