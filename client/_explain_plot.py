"""``varfx explain --plot``: the ISM of one variant as sequence logos (logomaker + matplotlib,
``pip install 'varfx[plot]'``).

Two logo rows, the REF and the ALT background, for one feature: at each position the base that
is there, its height the importance of that base, ``-mean over the three other bases of
(p(mutant) - p(background))`` (probability units: tall upright letters are bases whose loss
lowers the prediction, letters below the axis bases whose loss raises it). The variant's
position is shaded; the top motif call is drawn under the logos (the span of its best match,
``width`` bases from its first base, an arrow for its strand, ref vs alt score in bits and the
model importance of its bases); the title gives the variant's diff and, for a calibrated
model, its quantile against the calibration background.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["base_importance", "plot_explanation"]

_BASES = "ACGT"


def base_importance(ism: np.ndarray, background: np.ndarray) -> np.ndarray:
    """float [P, 4]: at each position only the background base's column is set, to
    ``-mean`` of the mutants' ISM values (ism: float [P, 4] of one feature; background:
    int [P] base index, -1 where unknown)."""
    out = np.zeros_like(ism, dtype=np.float64)
    for p, b in enumerate(background.tolist()):
        if 0 <= b < 4:
            others = [j for j in range(4) if j != b]
            out[p, b] = -float(np.mean(ism[p, others]))
    return out


def _importance_note(motif: dict[str, Any], feature: str) -> str:
    """``", model importance 0.83 (feature)"`` for a call that has one, else ""."""
    if not motif.get("model_importance"):
        return ""
    return f", model importance {float(motif['model_importance']):.2f}" + (
        f" ({feature})" if feature else ""
    )


def _backgrounds(ism: np.ndarray, bases: str = "") -> np.ndarray:
    """int [P]: the background base at each position (-1: unknown, N, or none): from ``bases``
    (the server's ``ref_bases``/``alt_bases``) where given, else where the ISM is exactly 0 for
    one base (its own; an older server)."""
    if len(bases) == len(ism):
        codes = np.frombuffer(bases.encode(), dtype=np.uint8)
        return np.select([codes == c for c in b"ACGT"], [0, 1, 2, 3], default=-1).astype(np.int64)
    zero = ism == 0.0
    one = zero.sum(axis=1) == 1
    return np.where(one, zero.argmax(axis=1), -1)


def plot_explanation(doc: dict[str, Any], path: str | Path, feature: str = "") -> Path:
    """Draw an explanation (``explanation_json``) to a PNG at ``path``; returns the path.
    ``feature``: which one (default: the variant's max quantile feature, else max |diff|)."""
    import logomaker
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    features = list(doc["features"])
    score = doc.get("score") or {}
    name = feature or score.get("max_quantile_feature") or score.get("max_abs_diff_feature")
    f = features.index(name) if name in features else 0
    positions = np.asarray(doc["positions"], dtype=np.int64)
    ref_ism = np.asarray(doc["ref_ism"], dtype=np.float64)[:, :, f]
    alt_ism = np.asarray(doc["alt_ism"], dtype=np.float64)[:, :, f]
    chrom, pos, ref, alt = str(doc["variant"]).split(":")
    pos_i = int(pos)
    # the background base: where exactly one base has a zero ISM; a genuine 0.0 effect is rare
    rows = [
        ("REF", ref_ism, str(doc.get("ref_bases") or "")),
        ("ALT", alt_ism, str(doc.get("alt_bases") or "")),
    ]
    fig, axes = plt.subplots(
        3, 1, figsize=(max(8.0, len(positions) * 0.22), 5.4),
        gridspec_kw={"height_ratios": [3, 3, 1]}, sharex=True,
    )  # fmt: skip
    limit = 0.0
    for ax, (label, ism, bases) in zip(axes[:2], rows, strict=True):
        heights = base_importance(ism, _backgrounds(ism, bases))
        limit = max(limit, float(np.abs(heights).max()))
        frame = pd.DataFrame(heights, columns=list(_BASES), index=positions)
        logomaker.Logo(frame, ax=ax, color_scheme="classic")
        ax.axvspan(pos_i - 0.5, pos_i + len(ref) - 0.5, color="#ffd54f", alpha=0.35, lw=0)
        ax.axhline(0, color="#888", lw=0.6)
        ax.set_ylabel(f"{label}\nimportance\n(Δp)", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[:2]:
        ax.set_ylim(-limit * 1.1 - 1e-9, limit * 1.1 + 1e-9)
    track = axes[2]
    track.set_ylim(0, 1)
    track.set_yticks([])
    track.spines[["top", "right", "left"]].set_visible(False)
    motifs = doc.get("motifs") or []
    if motifs:
        m = motifs[0]
        start = int(m["position"])
        # the match spans [start, start + width - 1]; the arrow reads the motif's strand
        width = int(m.get("width") or 0) or 6  # 0: a server that predates MotifCall.width
        lo, hi = start - 0.5, start + width - 0.5
        track.axvspan(lo, hi, ymin=0.35, ymax=0.75, color="#b0bec5", alpha=0.6, lw=0)
        tail, head = (lo, hi) if m["strand"] == "+" else (hi, lo)
        track.annotate(
            "",
            xy=(head, 0.55),
            xytext=(tail, 0.55),
            arrowprops={"arrowstyle": "->", "color": "#37474f", "lw": 2},
        )
        track.text(
            positions[0], 0.05,
            f"{m['name']} ({m['jaspar_id']}, {m['strand']}): {m['ref_score']:.1f} → "
            f"{m['alt_score']:.1f} bits" + _importance_note(m, doc.get("motif_feature", "")),
            fontsize=9,
        )  # fmt: skip
    else:
        track.text(positions[0], 0.3, "no motif call", fontsize=9, color="#777")
    track.set_xlim(positions[0] - 0.5, positions[-1] + 0.5)
    track.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    track.set_xlabel(f"{chrom} position (1-based)")
    title = f"{chrom}:{pos} {ref}>{alt}  ·  {features[f]}"
    diffs = score.get("diff") or []
    if len(diffs) > f:
        title += f"  ·  diff {diffs[f]:+.4f}"
    quantiles = score.get("quantile") or []
    if len(quantiles) > f:
        title += f"  ·  quantile {quantiles[f]:.4f}"
    fig.suptitle(title, fontsize=11)
    if doc.get("calibration"):
        fig.text(0.01, 0.005, f"quantile vs {doc['calibration']}", fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
