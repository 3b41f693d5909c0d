"""The fp16 graph of a model: its file name, the bounds its export-time check is held to, and the
rule that says whether a recorded check passes (used by ``varfx fp16`` when it writes the check
and by the server when it chooses which graph to serve; numpy-free, standard library only).

``<repo>/<name>/<version>/model.fp16.onnx`` beside ``model.onnx``: float16 arithmetic inside,
the same uint8 token input and float32 probabilities output. Its ``varfx`` metadata carries
``fp16_check``::

    {"max_abs_diff_random": float, "random_windows": int,   # probabilities, fp16 vs fp32 graph
     "max_abs_diff_real": float, "real_windows": int,       # on validation windows of the genome
     "valid_auroc_fp32": float, "valid_auroc_fp16": float,  # mean over features
     "valid_auroc_change": float, "valid_windows": int,     # fp16 minus fp32
     "diff_bound": float, "auroc_bound": float, "within_bound": bool,
     "reference_sha256": str}                               # SHA-256 of the model.onnx compared

The auROC is measured on validation windows only (never the test region).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "FP16_AUROC_BOUND",
    "FP16_DIFF_BOUND",
    "FP16_FILE",
    "PRECISIONS",
    "fp16_check_problem",
]

#: File name of the fp16-compute graph beside ``model.onnx``.
FP16_FILE = "model.fp16.onnx"
#: Default bound on the max abs difference of probabilities, fp16 vs fp32 graph.
FP16_DIFF_BOUND = 1e-2
#: Default bound on the drop of the mean validation auROC (fp32 minus fp16).
FP16_AUROC_BOUND = 1e-3
#: Values of ``--precision``.
PRECISIONS = ("auto", "fp32", "fp16")

_NUMBERS = ("max_abs_diff_random", "max_abs_diff_real", "valid_auroc_change")


def _number(check: Mapping[str, Any], key: str) -> float | None:
    value = check.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def fp16_check_problem(check: Mapping[str, Any] | None) -> str | None:
    """Why a recorded ``fp16_check`` does not pass, or None when it does.

    It passes when the random- and real-window differences and the auROC change are all
    recorded, both differences are <= ``diff_bound`` and the auROC drops by at most
    ``auroc_bound`` (the bounds recorded with it, which may not be looser than the defaults).
    """
    if not isinstance(check, Mapping):
        return "no fp16_check in its metadata"
    missing = [k for k in _NUMBERS if _number(check, k) is None]
    if missing:
        return f"fp16_check lacks {', '.join(missing)}"
    diff_bound = _number(check, "diff_bound")
    auroc_bound = _number(check, "auroc_bound")
    if diff_bound is None or auroc_bound is None:
        return "fp16_check records no diff_bound / auroc_bound"
    if diff_bound > FP16_DIFF_BOUND or auroc_bound > FP16_AUROC_BOUND:
        return (
            f"fp16_check bounds {diff_bound:g} / {auroc_bound:g} are looser than the server's"
            f" {FP16_DIFF_BOUND:g} / {FP16_AUROC_BOUND:g}"
        )
    for key in ("max_abs_diff_random", "max_abs_diff_real"):
        value = _number(check, key)
        if value is not None and value > diff_bound:
            return f"fp16_check {key} {value:.3g} > bound {diff_bound:g}"
    change = _number(check, "valid_auroc_change")
    if change is not None and change < -auroc_bound:
        return f"fp16_check valid_auroc_change {change:+.5f} below -{auroc_bound:g}"
    return None
