"""Inline SVG charts of the ``varfx report`` page (no library): histograms with a log count axis,
horizontal bars, a Manhattan-style max |diff| track, diverging cell colours; number formats."""

from __future__ import annotations

import math
from html import escape

import numpy as np

from varfx.client._report_stats import STRONG, Histogram, PositionTrack, nice_extent

__all__ = [
    "MAX_CONTIGS",
    "bars_table",
    "fmt_int",
    "fmt_num",
    "fmt_pct",
    "heat_style",
    "histogram_svg",
    "track_svg",
]

MAX_CONTIGS = 40


def fmt_num(x: float, digits: int = 3) -> str:
    if not math.isfinite(x):
        return "·"
    if x != 0 and abs(x) < 10 ** -(digits - 1):
        return f"{x:.1e}".replace("-", "−")
    return f"{x:.{digits}f}".replace("-", "−")


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "–"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_text(t: float, step: float) -> str:
    """A tick value with the decimals its step needs (0.025 -> 3), minus sign typeset."""
    decimals = 0
    while decimals < 6 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    return f"{t:.{decimals}f}".replace("-", "−")


def histogram_svg(
    h: Histogram,
    *,
    width: int,
    height: int,
    color: str,
    x_label: str,
    extent: float | None = None,
    max_bars: int = 100,
) -> str:
    """Bars of ``h`` with a log10(1 + count) y axis. ``extent``: show only [-extent, extent]
    (signed ranges) or [lo, extent], which must hold every value; bins are merged to at most
    ``max_bars`` bars."""
    lo, hi, counts = h.lo, h.hi, h.counts
    bw = (h.hi - h.lo) / h.bins
    if extent is not None and extent < h.hi:
        first = 0 if h.lo >= 0 else round((-extent - h.lo) / bw)
        last = round((extent - h.lo) / bw)
        counts, lo, hi = counts[first:last], h.lo + first * bw, h.lo + last * bw
    group = max(1, math.ceil(len(counts) / max_bars))
    if group > 1:
        pad = (-len(counts)) % group
        counts = np.concatenate([counts, np.zeros(pad, counts.dtype)]).reshape(-1, group).sum(1)
        hi = lo + len(counts) * group * bw
    ml, mr, mt, mb = 38, 16, 6, 30
    pw, ph = width - ml - mr, height - mt - mb
    top = max(int(counts.max()) if len(counts) else 0, 1)
    ymax = math.log10(1 + top)
    out = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="histogram of {escape(x_label)}">'
    ]
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fafbfc"/>')
    decade = 1
    while decade <= top:
        y = mt + ph - ph * math.log10(1 + decade) / ymax
        out.append(
            f'<line x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7eb"/>'
            f'<text x="{ml - 4}" y="{y + 3:.1f}" font-size="9" text-anchor="end" '
            f'fill="#5f6b7a">{fmt_int(decade)}</text>'
        )
        decade *= 10 if top < 1e6 else 100
    bw = pw / len(counts)
    edges = np.linspace(lo, hi, len(counts) + 1)
    for i in np.flatnonzero(counts).tolist():
        c = int(counts[i])
        bh = ph * math.log10(1 + c) / ymax
        out.append(
            f'<rect x="{ml + i * bw:.2f}" y="{mt + ph - bh:.2f}" width="{max(bw - 0.3, 0.8):.2f}" '
            f'height="{bh:.2f}" fill="{color}"><title>{fmt_num(edges[i])} to {fmt_num(edges[i + 1])}: '
            f"{fmt_int(c)}</title></rect>"
        )
    ticks = _ticks(lo, hi)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else hi - lo
    for t in ticks:
        x = ml + pw * (t - lo) / (hi - lo)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="#5f6b7a"/>'
            f'<text x="{x:.1f}" y="{mt + ph + 14}" font-size="9.5" text-anchor="middle" '
            f'fill="#5f6b7a">{_tick_text(t, step)}</text>'
        )
    if lo < 0 < hi:
        x = ml + pw * (0 - lo) / (hi - lo)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt}" y2="{mt + ph}" stroke="#9aa5b1" '
            'stroke-dasharray="2,2"/>'
        )
    out.append(
        f'<text x="{ml + pw / 2}" y="{height - 3}" font-size="10" text-anchor="middle" '
        f'fill="#1f2933">{escape(x_label)}</text></svg>'
    )
    return "".join(out)


def bars_table(items: list[tuple[str, int, str, str]], total: int) -> str:
    """Horizontal bars: (label, count, colour, note) rows of an HTML table."""
    if not items:
        return "<p class=note>No records.</p>"
    top = max([c for _, c, _, _ in items] + [1])
    rows = []
    for label, count, color, note in items:
        w = 100.0 * count / top
        rows.append(
            f"<tr><td><b>{escape(label)}</b><div class=note>{escape(note)}</div></td>"
            f'<td style="width:55%"><svg viewBox="0 0 100 10" preserveAspectRatio="none" '
            f'width="100%" height="14"><rect width="{w:.2f}" height="10" fill="{color}" rx="1"/>'
            f"</svg></td><td class=num>{fmt_int(count)}</td><td class=num>{fmt_pct(count, total)}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def track_svg(
    tracks: dict[str, PositionTrack], lengths: dict[str, int], width: int = 1150, height: int = 230
) -> tuple[str, str]:
    """A Manhattan-style plot: one panel per contig (width by length), one point per pixel
    column at the largest max |diff| there. Returns (svg, note)."""
    names = [c for c in lengths if c in tracks]
    names += [c for c in tracks if c not in names]
    note = ""
    if len(names) > MAX_CONTIGS:
        keep = set(sorted(names, key=lambda c: -int(tracks[c].counts.sum()))[:MAX_CONTIGS])
        note = f"{len(names) - MAX_CONTIGS} contigs with fewer scored variants are not shown. "
        names = [c for c in names if c in keep]
    peak = max([float(np.nanmax(tracks[c].maxima)) for c in names] + [0.0])
    ymax = nice_extent(peak, 1.0)
    if ymax < 1.0:
        note += f"The axis is zoomed to 0–{ymax:g}. "
    ml, mr, mt, mb, gap = 52, 6, 10, 42, 4
    pw, ph = width - ml - mr - gap * max(len(names) - 1, 0), height - mt - mb
    spans = [tracks[c].span for c in names]
    total = float(sum(spans)) or 1.0
    widths = [max(pw * s / total, 14.0) for s in spans]
    scale = pw / sum(widths) if widths else 1.0
    widths = [w * scale for w in widths]
    out = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
        'aria-label="max |diff| along the genome">'
    ]
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = mt + ph * (1 - t)
        out.append(
            f'<line x1="{ml}" x2="{width - mr}" y1="{y:.1f}" y2="{y:.1f}" stroke="#edf0f3"/>'
            f'<text x="{ml - 5}" y="{y + 3:.1f}" font-size="10" text-anchor="end" '
            f'fill="#5f6b7a">{_tick_text(t * ymax, ymax / 4)}</text>'
        )
    if ymax > STRONG:
        y = mt + ph * (1 - STRONG / ymax)
        out.append(
            f'<line x1="{ml}" x2="{width - mr}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c0392b" '
            f'stroke-dasharray="4,3" opacity=".6"><title>max |diff| = {STRONG}</title></line>'
        )
    x0 = float(ml)
    for k, (name, w) in enumerate(zip(names, widths, strict=True)):
        tr: PositionTrack = tracks[name]
        color = "#2f5f98" if k % 2 == 0 else "#7aa6d6"
        out.append(
            f'<rect x="{x0:.1f}" y="{mt}" width="{w:.1f}" height="{ph}" '
            f'fill="{"#f7f9fc" if k % 2 == 0 else "#ffffff"}"/>'
        )
        cols = max(1, int(w / 2))
        used = math.ceil(tr.span / tr.width)
        m = tr.maxima[:used]
        c = tr.counts[:used]
        group = np.minimum((np.arange(used) * cols) // max(used, 1), cols - 1)
        best = np.full(cols, np.nan)
        np.fmax.at(best, group, m)
        n_in = np.bincount(group, weights=c, minlength=cols)
        for g in np.flatnonzero(np.isfinite(best)).tolist():
            v = float(best[g])
            cx = x0 + (g + 0.5) * w / cols
            cy = mt + ph * (1 - min(max(v / ymax, 0.0), 1.0))
            start = int(g * tr.span / cols) + 1
            end = int((g + 1) * tr.span / cols)
            fill = "#c0392b" if v >= 0.5 else color
            out.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.3" fill="{fill}"><title>{escape(name)}:'
                f"{fmt_int(start)}-{fmt_int(end)}: max |diff| {fmt_num(v)} ({int(n_in[g])} scored)"
                "</title></circle>"
            )
        label = escape(name if w > 7 * len(name) else name.removeprefix("chr"))
        if w >= 12:
            out.append(
                f'<text x="{x0 + w / 2:.1f}" y="{mt + ph + 14}" font-size="10" '
                f'text-anchor="middle" fill="#1f2933">{label}</text>'
            )
        x0 += w + gap
    out.append(
        f'<text x="{ml + pw / 2}" y="{height - 6}" font-size="11" text-anchor="middle" '
        'fill="#1f2933">position along each contig (panel width by contig length)</text>'
        f'<text x="12" y="{mt + ph / 2}" font-size="11" text-anchor="middle" fill="#1f2933" '
        f'transform="rotate(-90 12 {mt + ph / 2})">max |diff|</text></svg>'
    )
    return "".join(out), note


def heat_style(v: float, scale: float) -> str:
    if not math.isfinite(v) or abs(v) < 0.005 * scale:
        return "background:#fafbfc;color:#9aa5b1"
    a = min(abs(v) / scale, 1.0) ** 0.7
    r, g, b = (192, 57, 43) if v > 0 else (46, 109, 180)
    mix = [round(255 + (ch - 255) * a) for ch in (r, g, b)]
    return f"background:rgb({mix[0]},{mix[1]},{mix[2]});color:{'#fff' if a > 0.55 else '#1f2933'}"
