"""Explanations on the ``varfx report`` page: the JSON of ``varfx explain`` (``--explain FILE``),
drawn as in-silico mutagenesis heatmaps with the motif calls beside them.

The JSON (issue 17's layout): ``variant`` (``"CHROM:POS:REF:ALT"`` or an object with ``chrom``,
``pos``, ``ref``, ``alt``), ``positions`` (1-based genome positions, [P]), ``bases`` (``"ACGT"``),
``features`` ([F]), ``ref_ism`` and ``alt_ism`` (``p(mutant) - p(background)`` on the REF and the
ALT background, [P][4][F]; ``alt_ism`` may be absent) and ``motifs`` (a list of objects, shown as
a table with their own keys).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from varfx.client._report_svg import fmt_num
from varfx.client.report import ReportError

__all__ = ["Explanation", "ExplanationError", "explanation_html", "load_explanation"]

MAX_MOTIFS = 8


class ExplanationError(ReportError):
    """An explanation file that cannot be read; the message names the file."""


@dataclass(frozen=True)
class Explanation:
    """One variant's ISM: ``ref_ism``/``alt_ism`` float64 [P, 4, F] (alt_ism None when absent)."""

    source: str
    chrom: str
    pos: int
    ref: str
    alt: str
    positions: np.ndarray
    bases: str
    features: list[str]
    ref_ism: np.ndarray
    alt_ism: np.ndarray | None
    motifs: list[dict[str, Any]]

    @property
    def key(self) -> tuple[str, int, str, str]:
        return self.chrom, self.pos, self.ref, self.alt


def _variant(value: Any, name: str) -> tuple[str, int, str, str]:
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) == 4 and parts[1].isdigit():
            return parts[0], int(parts[1]), parts[2], parts[3]
    elif (
        isinstance(value, dict)
        and {"chrom", "pos", "ref", "alt"} <= value.keys()
        and str(value["pos"]).isdigit()
    ):
        return str(value["chrom"]), int(value["pos"]), str(value["ref"]), str(value["alt"])
    raise ExplanationError(
        f"{name}: 'variant' must be CHROM:POS:REF:ALT or an object with chrom, pos, ref, alt; "
        f"got {str(value)[:80]!r}"
    )


def _array(doc: dict[str, Any], key: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    try:
        arr = np.asarray(doc[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ExplanationError(f"{name}: {key!r} is not an array of numbers") from None
    if arr.shape != shape:
        raise ExplanationError(
            f"{name}: {key!r} has shape {list(arr.shape)}, expected [positions={shape[0]}]"
            f"[bases={shape[1]}][features={shape[2]}]"
        )
    return arr


def load_explanation(path: str | Path) -> Explanation:
    """Read one ``varfx explain`` JSON file; ExplanationError (``FILE[:LINE]: what``) if bad."""
    name = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExplanationError(f"{name}:{exc.lineno}: not JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise ExplanationError(f"{name}: not UTF-8 text") from None
    if not isinstance(doc, dict):
        raise ExplanationError(f"{name}: expected a JSON object")
    missing = [k for k in ("variant", "positions", "features", "ref_ism") if k not in doc]
    if missing:
        raise ExplanationError(f"{name}: missing key(s) {', '.join(missing)}")
    chrom, pos, ref, alt = _variant(doc["variant"], name)
    positions = np.asarray(doc["positions"])
    if positions.ndim != 1 or not len(positions) or positions.dtype.kind not in "iu":
        raise ExplanationError(f"{name}: 'positions' must be a non-empty list of integers")
    bases = str(doc.get("bases", "ACGT"))
    features = [str(f) for f in doc["features"]] if isinstance(doc["features"], list) else []
    if not features:
        raise ExplanationError(f"{name}: 'features' must be a non-empty list")
    shape = (len(positions), len(bases), len(features))
    ref_ism = _array(doc, "ref_ism", shape, name)
    alt_ism = _array(doc, "alt_ism", shape, name) if doc.get("alt_ism") is not None else None
    motifs = [m for m in doc.get("motifs") or [] if isinstance(m, dict)]
    return Explanation(
        name, chrom, pos, ref, alt, positions, bases, features, ref_ism, alt_ism, motifs
    )


def _fill(v: float, scale: float) -> str:
    a = min(abs(v) / scale, 1.0) ** 0.7 if scale > 0 else 0.0
    r, g, b = (192, 57, 43) if v > 0 else (46, 109, 180)
    return "#" + "".join(f"{round(255 + (c - 255) * a):02x}" for c in (r, g, b))


def _ism_svg(e: Explanation, f: int, width: int = 1100) -> str:
    """Heatmaps [4 bases x P positions] of feature ``f`` on each background, a bar per position
    of how much the background base matters (minus the mean effect of its three mutations)."""
    panels = [("REF", e.ref_ism)] + ([("ALT", e.alt_ism)] if e.alt_ism is not None else [])
    n_pos, n_base = len(e.positions), len(e.bases)
    scale = max(float(np.abs(ism[:, :, f]).max()) for _, ism in panels) or 1.0
    ml, mr, bar_h, cell_h, gap = 44, 8, 46, 12, 14
    cw = (width - ml - mr) / n_pos
    panel_h = bar_h + n_base * cell_h + gap
    height = 18 + panel_h * len(panels) + 18
    center = int(np.argmin(np.abs(e.positions - e.pos)))
    out = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" class=ism '
        'aria-label="in-silico mutagenesis heatmap">'
    ]
    y0 = 14.0
    for label, ism in panels:
        vals = ism[:, :, f]
        importance = -vals.sum(axis=1) / max(n_base - 1, 1)  # the background base's own cell is 0
        base_y = y0 + bar_h / 2
        out.append(
            f'<text x="2" y="{base_y + 3:.1f}" font-size="10" fill="#1f2933">{label}</text>'
            f'<line x1="{ml}" x2="{width - mr}" y1="{base_y:.1f}" y2="{base_y:.1f}" '
            'stroke="#c9d1da"/>'
        )
        for i in range(n_pos):
            v = float(importance[i])
            hgt = (bar_h / 2 - 2) * min(abs(v) / scale, 1.0)
            y = base_y - hgt if v > 0 else base_y
            out.append(
                f'<rect x="{ml + i * cw + 0.5:.2f}" y="{y:.2f}" width="{max(cw - 1, 0.8):.2f}" '
                f'height="{hgt:.2f}" fill="{_fill(v, scale)}"><title>{int(e.positions[i]):,}: '
                f"importance {fmt_num(v)}</title></rect>"
            )
        top = y0 + bar_h
        for b, base in enumerate(e.bases):
            out.append(
                f'<text x="{ml - 6}" y="{top + b * cell_h + 9:.1f}" font-size="9" '
                f'text-anchor="end" fill="#5f6b7a">{escape(base)}</text>'
            )
            for i in range(n_pos):
                v = float(vals[i, b])
                out.append(
                    f'<rect x="{ml + i * cw:.2f}" y="{top + b * cell_h:.2f}" width="{cw:.2f}" '
                    f'height="{cell_h}" fill="{_fill(v, scale)}"><title>{int(e.positions[i]):,} '
                    f"to {escape(base)}: {v:.4g}</title></rect>"
                )
        out.append(
            f'<rect x="{ml + center * cw:.2f}" y="{y0:.1f}" width="{cw:.2f}" '
            f'height="{bar_h + n_base * cell_h:.1f}" fill="none" stroke="#1f2933" '
            'stroke-width="1.2"><title>the variant</title></rect>'
        )
        y0 += panel_h
    step = max(1, math.ceil(n_pos / 12))
    for i in range(0, n_pos, step):
        off = int(e.positions[i]) - e.pos
        out.append(
            f'<text x="{ml + (i + 0.5) * cw:.1f}" y="{y0 + 2:.1f}" font-size="9" '
            f'text-anchor="middle" fill="#5f6b7a">{off:+d}</text>'
        )
    out.append(
        f'<text x="{ml + (width - ml - mr) / 2:.0f}" y="{y0 + 15:.1f}" font-size="10" '
        f'text-anchor="middle" fill="#1f2933">bp from {escape(e.chrom)}:{e.pos:,}</text></svg>'
    )
    return "".join(out)


def _motif_table(motifs: list[dict[str, Any]]) -> str:
    if not motifs:
        return ""
    shown = motifs[:MAX_MOTIFS]
    keys = list(dict.fromkeys(k for m in shown for k in m))

    def cell(v: Any) -> str:
        return fmt_num(v) if isinstance(v, float) else escape(str(v))

    head = "".join(f"<th>{escape(k)}</th>" for k in keys)
    rows = "".join(
        "<tr>" + "".join(f"<td>{cell(m.get(k, ''))}</td>" for k in keys) + "</tr>" for m in shown
    )
    more = f"<p class=note>{len(motifs) - MAX_MOTIFS} more motif calls in the file.</p>"
    return f"<h3>Motif calls</h3><table>{head and '<tr>' + head + '</tr>'}{rows}</table>" + (
        more if len(motifs) > MAX_MOTIFS else ""
    )


def explanation_html(e: Explanation, anchor: str, feature: str = "") -> str:
    """One explanation card: the ISM of ``feature`` (default: the feature the ISM moves most)."""
    if feature in e.features:
        f = e.features.index(feature)
    else:
        total = np.abs(e.ref_ism).sum(axis=(0, 1))
        if e.alt_ism is not None:
            total = total + np.abs(e.alt_ism).sum(axis=(0, 1))
        f = int(np.argmax(total))
    where = f"{e.chrom}:{e.pos:,} {e.ref}>{e.alt}"
    return (
        f'<div class=fcard id="{escape(anchor)}"><h3>{escape(where)} · {escape(e.features[f])}'
        f"</h3><div class=d>in-silico mutagenesis, {len(e.positions)} positions; cell = "
        "p(mutant) − p(background) for the feature; bars: how much the background base "
        f"matters; <code>{escape(e.source)}</code></div>{_ism_svg(e, f)}"
        f"{_motif_table(e.motifs)}</div>"
    )
