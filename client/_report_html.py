"""The HTML page of ``varfx report``: one self-contained file (inline CSS, SVG and a few lines of
JS; a Content-Security-Policy forbids every network load), built from a ReportData.

Charts are inline SVG (``_report_svg``): histograms with a log count axis (most variants have tiny
effects), horizontal bar charts, a Manhattan-style track of max |diff| by position, and the top
variants as a table whose per-feature cells are coloured by the score (red = the ALT raises the
feature's probability, blue = it lowers it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

from varfx import __version__
from varfx.client._report_explain import Explanation, explanation_html
from varfx.client._report_stats import SIGNED, STRONG, STRONG_INDEX, Histogram, nice_extent
from varfx.client._report_svg import (
    bars_table,
    fmt_int,
    fmt_num,
    fmt_pct,
    heat_style,
    histogram_svg,
    track_svg,
)
from varfx.client.report import ReportData

__all__ = ["render"]

MAX_FEATURE_CARDS = 24
MAX_TABLE_FEATURES = 20
STATUS_TEXT = {
    "OK": "scored",
    "REF_MISMATCH": "REF allele differs from the reference genome (see --ref-policy)",
    "UNKNOWN_CHROMOSOME": "chromosome not in the server's reference genome",
    "POSITION_OUT_OF_RANGE": "position beyond the end of the chromosome",
    "SYMBOLIC_ALLELE": "symbolic ALT such as <DEL> (no sequence to score)",
    "INDEL_TOO_LONG": "indel longer than the model's window allows",
    "INVALID_ALLELE": "ALT missing or not A/C/G/T/N",
    "REF_EQUALS_ALT": "ALT is the same as REF",
    "REFERENCE_GAP": "the reference is N under REF (an assembly gap)",
    "NOT_ANNOTATED": "record has no VARFX_STATUS (not written by varfx score)",
}
STATUS_COLOR = {"OK": "#2e7d4f", "NOT_ANNOTATED": "#9aa5b1", "REF_MISMATCH": "#c2410c"}
KIND_TEXT = {
    "diff": "alt − ref probability",
    "log2fc": "log2 odds ratio alt vs ref",
    "ref": "probability with the REF allele",
    "alt": "probability with the ALT allele",
    "quantile": "rank of |diff| among the model's background variants (0..1)",
    "signed_quantile": "rank of |diff| among background variants, with the sign of diff",
    "pvalue": "−log10 empirical p-value against the background",
}
CSS = """
:root{--fg:#1f2933;--muted:#5f6b7a;--line:#e4e7eb;--bg:#f4f6f9;--accent:#2f5f98;--gain:#c0392b;--loss:#2e6db4}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",Arial,sans-serif;color:var(--fg);background:var(--bg)}
header{background:linear-gradient(90deg,#1d3557,#2f5f98);color:#fff;padding:22px 32px}
header h1{margin:0;font-size:22px;font-weight:600}
header .sub{opacity:.85;margin-top:4px}
main{max-width:1200px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin:16px 0}
h2{font-size:17px;margin:0 0 2px}
p.lead{color:var(--muted);margin:0 0 12px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(165px,1fr));gap:12px;background:none;border:0;padding:0}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:12px 16px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:24px;font-weight:600;margin-top:2px}
.card .d{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;color:var(--muted);font-size:12px}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
dl.manifest{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:0}
dl.manifest dt{color:var(--muted)}
dl.manifest dd{margin:0;overflow-wrap:anywhere}
code{font:12px/1.4 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;background:#f0f2f5;padding:1px 4px;border-radius:4px}
.chip{display:inline-block;background:#e8eef7;color:#1d3557;border-radius:10px;padding:0 8px;margin:1px 2px;font-size:12px}
.two{display:grid;grid-template-columns:1fr 1fr;gap:24px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:14px}
.fcard{border:1px solid var(--line);border-radius:8px;padding:8px 10px}
.fcard h3{font-size:13px;margin:0;overflow-wrap:anywhere}
.fcard .d{color:var(--muted);font-size:12px}
.gain{color:var(--gain)}.loss{color:var(--loss)}
.note{color:var(--muted);font-size:12px}
.scroll{overflow-x:auto}
table.top td,table.top th{padding:4px 6px;font-size:12.5px;white-space:nowrap}
table.top th.f{writing-mode:vertical-rl;transform:rotate(180deg);padding:6px 2px;font-weight:500}
table.top td.h{text-align:center;min-width:36px;padding:4px 3px;font-variant-numeric:tabular-nums;font-size:11.5px}
table.top th[data-k]{cursor:pointer}
table.top tbody tr:hover{background:#f7f9fc}
details summary{cursor:pointer;color:var(--accent);margin:8px 0}
svg text{font-family:inherit}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:24px}
@media (max-width:800px){.two{grid-template-columns:1fr}}
@media print{body{background:#fff;print-color-adjust:exact;-webkit-print-color-adjust:exact}
section,.fcard{break-inside:avoid}.scroll{overflow:visible}main{max-width:none}}
"""
# Sorts the top table by a clicked column (numbers by data-v); nothing else runs.
JS = """
(function(){
  var t=document.getElementById('top');if(!t)return;
  var heads=t.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads,function(th,i){
    if(!th.hasAttribute('data-k'))return;
    th.title='click to sort';
    th.addEventListener('click',function(){
      var b=t.tBodies[0],rows=Array.prototype.slice.call(b.rows),num=th.getAttribute('data-k')==='n';
      var dir=th.getAttribute('data-dir')==='desc'?1:-1;th.setAttribute('data-dir',dir<0?'desc':'asc');
      rows.sort(function(x,y){var a=x.cells[i].getAttribute('data-v')||x.cells[i].textContent,
        c=y.cells[i].getAttribute('data-v')||y.cells[i].textContent;
        if(num){a=parseFloat(a);c=parseFloat(c);a=isNaN(a)?-1e99:a;c=isNaN(c)?-1e99:c;return dir*(a-c);}
        return dir*(a<c?-1:a>c?1:0);});
      rows.forEach(function(r){b.appendChild(r);});
    });
  });
  document.documentElement.setAttribute('data-sortable','1');
})();
"""


def _allele(s: str) -> str:
    return s if len(s) <= 12 else s[:5] + "…" + s[-3:] + f" ({len(s)} bp)"


def _top_table(data: ReportData, links: dict[tuple[str, int, str, str], str]) -> str:
    if not data.top:
        return "<p class=note>No variant was scored.</p>"
    kinds = [k for k, _, _ in data.details]
    kind = "diff" if "diff" in kinds else (kinds[0] if kinds else "")
    cols = [(f, key) for k, f, key in data.details if k == kind]
    note = ""
    if len(cols) > MAX_TABLE_FEATURES:
        peak = {key: max(abs(np.nan_to_num(t.values[key])) for t in data.top) for _, key in cols}
        keep = set(sorted(peak, key=lambda k: -peak[k])[:MAX_TABLE_FEATURES])
        note = (
            f" Showing the {MAX_TABLE_FEATURES} of {len(cols)} features with the largest "
            "effects among these variants."
        )
        cols = [(f, key) for f, key in cols if key in keep]
    has_q = any(t.quantile is not None for t in data.top)
    head = ["<th data-k=n class=num>#</th><th data-k=s>variant</th><th data-k=s>ID</th>"]
    head.append("<th data-k=n class=num>max |diff|</th><th data-k=s>top feature</th>")
    if has_q:
        head.append("<th data-k=n class=num>quantile</th>")
    head += [f"<th data-k=s>{escape(k.removeprefix('VARFX_'))}</th>" for k in data.extra_keys]
    head += [f"<th data-k=n class=f>{escape(f)}</th>" for f, _ in cols]
    peak = max(
        [abs(t.values[key]) for t in data.top for _, key in cols if math.isfinite(t.values[key])]
        + [0.0]
    )
    natural = 40.0 if kind == "log2fc" else 1.0
    scale = nice_extent(peak, natural) if peak > 0 else natural
    digits = 2 if scale >= 0.2 else 3
    body = []
    for rank, t in enumerate(data.top, 1):
        where = f"{t.chrom}:{t.pos:,} {_allele(t.ref)}>{_allele(t.alt)}"
        cells = [
            f"<td class=num data-v={rank}>{rank}</td>",
            f'<td data-v="{escape(t.chrom)}:{t.pos:012d}" title="line {t.line}">'
            f"{escape(where)}</td><td>{escape(t.vid)}</td>",
            f'<td class=num data-v="{t.max_abs_diff!r}"><b>{fmt_num(t.max_abs_diff)}</b></td>',
            f"<td>{escape(t.feature)}</td>",
        ]
        link = links.get((t.chrom, t.pos, t.ref, t.alt))
        if link:
            cells[-1] = (
                f'<td>{escape(t.feature)} <a href="#{link}" title="in-silico mutagenesis">'
                "ISM</a></td>"
            )
        if has_q:
            q = t.quantile
            cells.append(
                f'<td class=num data-v="{q if q is not None else ""}">'
                f"{fmt_num(q, 4) if q is not None else '·'}</td>"
            )
        cells += [f"<td>{escape(t.extras.get(k, '·'))}</td>" for k in data.extra_keys]
        for _, key in cols:
            v = t.values[key]
            shown = f"{v:+.{digits}f}".replace("-", "−")
            shown = "0" if abs(v) < 0.5 * 10**-digits else shown
            cells.append(
                f'<td class=h data-v="{v!r}" style="{heat_style(v, scale)}" title="{v:.4g}">'
                f"{shown if math.isfinite(v) else '·'}</td>"
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    legend = (
        f"Cells: {KIND_TEXT.get(kind, kind)} per feature; "
        "<span class=gain>red</span>: the ALT raises the feature, <span class=loss>blue</span>: "
        f"it lowers it (full colour at ±{scale:g}). Click a column header to sort." + note
    )
    if not cols:
        legend = (
            "Per-feature scores were not written; run varfx score with --features to see them "
            "here. Click a column header to sort."
        )
    return (
        f"<p class=lead>{legend}</p><div class=scroll><table class=top id=top"
        + (' style="width:auto"' if not cols else "")
        + "><thead><tr>"
        + "".join(head)
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></div>"
    )


def _strong(h: Histogram, i: int) -> int:
    return int(h.gain[i] + h.loss[i])


def _feature_cards(data: ReportData) -> str:
    if not data.details:
        return (
            "<p class=note>This VCF holds only the summary keys (VARFX_MAX_ABS_DIFF, "
            "VARFX_MAX_FEATURE). Run <code>varfx score --features A,B,...</code> to write "
            "per-feature scores and see their distributions here.</p>"
        )
    out: list[str] = []
    for kind in dict.fromkeys(k for k, _, _ in data.details):
        keys = [(f, key) for k, f, key in data.details if k == kind]
        i_strong = STRONG_INDEX[kind]
        note = ""
        if len(keys) > MAX_FEATURE_CARDS:
            keep = set(
                sorted((k for _, k in keys), key=lambda k: -_strong(data.hists[k], i_strong))[
                    :MAX_FEATURE_CARDS
                ]
            )
            note = (
                f"<p class=note>{len(keys) - MAX_FEATURE_CARDS} more features with fewer "
                "large effects are not drawn.</p>"
            )
            keys = [(f, k) for f, k in keys if k in keep]
        extent = None
        if kind in ("diff", "log2fc"):
            reach = max(max(abs(data.hists[k].min), abs(data.hists[k].max)) for _, k in keys)
            extent = nice_extent(reach, data.hists[keys[0][1]].hi) if math.isfinite(reach) else None
        cards = []
        for f, key in keys:
            h = data.hists[key]
            t = h.thresholds[i_strong]
            if kind in SIGNED:
                stats = (
                    f"<span class=gain>▲ {fmt_int(int(h.gain[i_strong]))}</span> ≥ {t:g} · "
                    f"<span class=loss>▼ {fmt_int(int(h.loss[i_strong]))}</span> ≤ −{t:g}"
                )
            elif kind == "pvalue":
                stats = f"{fmt_int(int(h.gain[i_strong]))} with p ≤ {10**-t:.2g}"
            else:
                stats = f"{fmt_int(int(h.gain[i_strong]))} ≥ {t:g} · mean {fmt_num(h.mean)}"
            cards.append(
                f"<div class=fcard><h3>{escape(f)}</h3><div class=d>{stats} · n {fmt_int(h.n)}"
                "</div>"
                + histogram_svg(
                    h, width=300, height=120, color="#2f5f98", x_label=kind, extent=extent
                )
                + "</div>"
            )
        block = f"<div class=grid>{''.join(cards)}</div>{note}"
        title = f"{kind}: {KIND_TEXT.get(kind, kind)}"
        if kind == "diff" or len(out) == 0:
            out.append(f"<h3>{escape(title)}</h3>{block}")
        else:
            out.append(f"<details><summary>{escape(title)}</summary>{block}</details>")
    return "".join(out)


def _manifest(data: ReportData) -> str:
    m = data.manifest
    rows = [("file", f"<code>{escape(data.source)}</code>")]
    if "model" in m:
        version = f" (version {escape(m['model_version'])})" if m.get("model_version") else ""
        rows.append(("model", f"<b>{escape(m['model'])}</b>{version}"))
    if "assembly" in m:
        rows.append(("assembly", escape(m["assembly"])))
    if "window_length" in m:
        rows.append(("window", f"{escape(m['window_length'])} bp around each variant"))
    feats = [f for f in m.get("features", "").split(",") if f]
    if feats:
        chips = "".join(f"<span class=chip>{escape(f)}</span>" for f in feats[:60])
        chips += f" <span class=note>and {len(feats) - 60} more</span>" if len(feats) > 60 else ""
        rows.append((f"features ({len(feats)})", chips))
    for key, label in (("ref_policy", "REF policy"), ("reverse_complement", "reverse complement")):
        if key in m:
            rows.append((label, escape(m[key])))
    if "command" in m:
        rows.append(("command", f"<code>{escape(m['command'])}</code>"))
    shown = {"model", "model_version", "assembly", "window_length", "features", "ref_policy"}
    shown |= {"reverse_complement", "command", "formulas"}
    rows += [(k.replace("_", " "), escape(v)) for k, v in m.items() if k not in shown]
    if "formulas" in m:
        rows.append(("scores", f"<span class=note>{escape(m['formulas'])}</span>"))
    return (
        "<dl class=manifest>"
        + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in rows)
        + "</dl>"
    )


def _cards(data: ReportData) -> str:
    mad = data.hists["VARFX_MAX_ABS_DIFF"]
    strong = int(mad.gain[1]) if len(mad.gain) > 1 else 0
    best = data.top[0] if data.top else None
    items = [
        ("records", fmt_int(data.records), f"{fmt_int(data.multiallelic)} multi-allelic"),
        ("variant-ALTs", fmt_int(data.alts), "one row per ALT allele"),
        ("scored", fmt_int(data.scored), fmt_pct(data.scored, data.alts) + " of variant-ALTs"),
        ("not scored", fmt_int(data.alts - data.scored), "see status below"),
        (f"max |diff| ≥ {STRONG:g}", fmt_int(strong), fmt_pct(strong, data.scored) + " of scored"),
    ]
    if best is not None:
        where = f"{best.chrom}:{best.pos:,} · {best.feature}"
        items.append(("largest effect", fmt_num(best.max_abs_diff), where))
    return "".join(
        f"<div class=card><div class=k>{escape(k)}</div><div class=v>{v}</div>"
        f"<div class=d>{escape(d)}</div></div>"
        for k, v, d in items
    )


def _explanations(data: ReportData, explanations: Sequence[Explanation]) -> str:
    if not explanations:
        return ""
    best = {(t.chrom, t.pos, t.ref, t.alt): t.feature for t in data.top}
    cards = "".join(
        explanation_html(e, f"explain-{i}", best.get(e.key, "")) for i, e in enumerate(explanations)
    )
    return (
        "<section><h2>Explanations</h2><p class=lead>From <code>varfx explain</code>: what each "
        "base around the variant contributes, on the REF and the ALT background (red: the "
        "mutation raises the feature, blue: it lowers it; the variant is outlined).</p>"
        f"{cards}</section>"
    )


def render(data: ReportData, *, title: str = "", explanations: Sequence[Explanation] = ()) -> str:
    """The whole page as one HTML string; ``explanations`` get a section and a link from the
    top table's row of their variant."""
    m = data.manifest
    name = data.source.rsplit("/", 1)[-1] if data.source != "-" else "stdin"
    title = title or f"varfx report: {name}"
    sub = " · ".join(
        x
        for x in (
            f"model {m['model']} v{m.get('model_version', '?')}" if "model" in m else "",
            m.get("assembly", ""),
            f"{m['window_length']} bp windows" if "window_length" in m else "",
            f"{fmt_int(data.records)} records",
        )
        if x
    )
    status_rows = [
        (s, n, STATUS_COLOR.get(s, "#d97706"), STATUS_TEXT.get(s, ""))
        for s, n in sorted(data.status.items(), key=lambda kv: (kv[0] != "OK", -kv[1]))
    ]
    mad = data.hists["VARFX_MAX_ABS_DIFF"]
    thr = "".join(
        f"<tr><td>max |diff| ≥ {t:g}</td><td class=num>{fmt_int(int(n))}</td>"
        f"<td class=num>{fmt_pct(int(n), data.scored)}</td></tr>"
        for t, n in zip(mad.thresholds, mad.gain, strict=True)
    )
    counted = data.strong_feature or data.max_feature
    strong = [(f, n, "#2f5f98", "") for f, n in counted.most_common(15)] or [
        ("none", 0, "#2f5f98", "no scored variant")
    ]
    n_strong = sum(counted.values())
    which = (
        f"the {fmt_int(n_strong)} variant-ALTs with max |diff| ≥ {STRONG:g}"
        if data.strong_feature
        else f"all {fmt_int(n_strong)} scored variant-ALTs (none reaches {STRONG:g})"
    )
    quant = ""
    if "VARFX_MAX_QUANTILE" in data.hists:
        quant = (
            "<h3>Quantile of max |diff| among the model's background variants</h3>"
            + histogram_svg(
                data.hists["VARFX_MAX_QUANTILE"],
                width=520,
                height=150,
                color="#6b46c1",
                x_label="quantile (1 = stronger than every background variant)",
            )
        )
    track, track_note = track_svg(data.tracks, data.contig_lengths)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{escape(title)}</h1><div class=sub>{escape(sub)}</div></header><main>",
        f"<section class=cards>{_cards(data)}</section>",
        "<section><h2>Run</h2><p class=lead>What produced these scores (the VCF's "
        f"<code>##varfx_*</code> header lines).</p>{_manifest(data)}</section>",
        "<section><h2>Status</h2><p class=lead>Every variant-ALT of the input, scored or with "
        f"the reason it was not.</p>{bars_table(status_rows, data.alts)}</section>",
        "<section><h2>Effect sizes</h2><p class=lead>max |diff|: the largest change in any "
        "feature's probability between the REF and ALT sequence (0 = no effect, 1 = "
        "switches a feature fully on or off).</p><div class=two><div>"
        + histogram_svg(
            mad,
            width=520,
            height=170,
            color="#2f5f98",
            x_label="max |diff| (count, log scale)",
            extent=nice_extent(mad.max, 1.0) if mad.n else None,
        )
        + f"<table>{thr}</table></div><div><h3 style='margin-top:0'>Feature with the largest "
        f"effect, for {which}</h3>"
        + bars_table(strong, n_strong)
        + f"</div></div>{quant}</section>",
        "<section><h2>Along the genome</h2><p class=lead>The largest max |diff| in each stretch "
        f"of each contig; dashed line: {STRONG:g}; red points: ≥ 0.5. {track_note}Hover a point "
        f"for its range.</p>{track}</section>",
        "<section><h2>Per-feature distributions</h2><p class=lead>Counts on a log scale; most "
        "variants change little. ▲ gains and ▼ losses beyond the threshold.</p>"
        + _feature_cards(data)
        + "</section>",
        f"<section><h2>Top {len(data.top)} variant-ALTs by max |diff|</h2>"
        + _top_table(data, {e.key: f"explain-{i}" for i, e in enumerate(explanations)})
        + "</section>",
        _explanations(data, explanations),
        f"<footer>varfx {escape(__version__)} · varfx report · self-contained page, no network "
        "needed</footer></main>",
        f"<script>{JS}</script></body></html>\n",
    ]
    return "".join(parts)
