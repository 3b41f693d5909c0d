"""The report of a locked-protocol run: which windows each mix scores, the per-mix metric blocks
(point auROC/auPRC and paired bootstrap intervals for every scorer) and the Markdown tables.

Used by varfx.training.protocol; the blocks' layout is the ``mixes`` part of protocol.json.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from varfx.training.bootstrap import interval, weighted_auc
from varfx.training.errors import DataError
from varfx.training.negatives import sample_negatives

__all__ = ["cell_types", "mix_rows", "render_markdown", "score_block"]

log = logging.getLogger(__name__)


def score_block(labels: np.ndarray, scores: dict[str, np.ndarray], features: tuple[str, ...],
                rows: list[np.ndarray], counts: list[np.ndarray]) -> dict[str, Any]:  # fmt: skip
    """Per feature and mean: point auROC/auPRC and bootstrap intervals, for every scorer.

    labels: bool [n, F]; scores: name -> [n, F] or [n]; rows[j]: positions scored for feature j;
    counts[j]: bootstrap counts [B, len(rows[j])] (the same arrays for every scorer: paired).
    """
    out: dict[str, Any] = {}
    boot_means: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, s in scores.items():
        per: dict[str, Any] = {}
        rocs_b, prcs_b, rocs, prcs = [], [], [], []
        for j, feat in enumerate(features):
            col = s[rows[j], j] if s.ndim == 2 else s[rows[j]]
            y = labels[rows[j], j]
            (r,), (p,) = weighted_auc(y, col)
            rb, pb = weighted_auc(y, col, counts[j])
            per[feat] = {"auroc": float(r), "auroc_ci": interval(rb), "auprc": float(p),
                         "auprc_ci": interval(pb), "positives": int(y.sum()), "n": len(y)}  # fmt: skip
            rocs.append(float(r))
            prcs.append(float(p))
            rocs_b.append(rb)
            prcs_b.append(pb)
        if any(np.isnan(rocs)):
            raise DataError(f"features without positives or negatives here: "
                            f"{[f for f, r in zip(features, rocs, strict=True) if np.isnan(r)]}")  # fmt: skip
        mb_r, mb_p = np.mean(rocs_b, axis=0), np.mean(prcs_b, axis=0)
        boot_means[name] = (mb_r, mb_p)
        out[name] = {"mean_auroc": float(np.mean(rocs)), "mean_auroc_ci": interval(mb_r),
                     "mean_auprc": float(np.mean(prcs)), "mean_auprc_ci": interval(mb_p),
                     "per_feature": per}  # fmt: skip
    if "model" in boot_means and "kmer" in boot_means:
        d = boot_means["model"][0] - boot_means["kmer"][0]
        out["model_minus_kmer_mean_auroc"] = {
            "value": out["model"]["mean_auroc"] - out["kmer"]["mean_auroc"],
            "ci": interval(d),
        }
    return out


def mix_rows(mix: str, labels: np.ndarray, gc: np.ndarray,
             rng: np.random.Generator) -> list[np.ndarray]:  # fmt: skip
    """Positions (into the test rows) scored for each feature in one mix."""
    f = labels.shape[1]
    if mix == "all":
        return [np.arange(len(labels))] * f
    neg = np.flatnonzero(~labels.any(1))
    if mix == "gc-matched-per-feature":
        out = []
        for j in range(f):
            pos = np.flatnonzero(labels[:, j])
            pick, _ = sample_negatives("gc-matched", 1.0, len(pos), gc[pos], gc[neg], rng)
            out.append(np.sort(np.concatenate([pos, neg[pick]])))
        return out
    pos = np.flatnonzero(labels.any(1))
    pick, short = sample_negatives(mix, 1.0, len(pos), gc[pos], gc[neg], rng)
    if short:
        log.warning("%s mix: %d negatives short of 1:1", mix, short)
    return [np.sort(np.concatenate([pos, neg[pick]]))] * f


def cell_types(features: tuple[str, ...]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for j, f in enumerate(features):
        if "_" in f:
            groups.setdefault(f.split("_", 1)[0], []).append(j)
    return {a: cols for a, cols in groups.items() if len(cols) >= 2}


def _fmt(block: dict[str, Any], key: str) -> str:
    lo, hi = block[f"{key}_ci"]
    return f"{block[key]:.3f} ({lo:.3f}-{hi:.3f})"


def _kmer_text(rec: dict[str, Any]) -> str:
    """One paragraph on the k-mer baseline's fit: sizes, C, how they were chosen."""
    text = (f"k-mer baseline: canonical k = {rec['ks'][0]}..{rec['ks'][-1]}, {rec['fit_windows']} "
            f"fitting windows (1:1) of {rec['fit_on']}, C = {rec['C']:g}; {rec.get('chosen_on', '')}")  # fmt: skip
    val = rec.get("validation")
    if val:
        grid = ", ".join(f"{s['fit_windows']} / {s['C']:g}: {s['valid_mean_auroc']:.4f}"
                         for s in val["scores"])  # fmt: skip
        text += (
            f" ({val['windows']} validation windows, {val['positives']} positives, in "
            f"{val['regions']}; validation mean auROC per fit windows / C: {grid})"
        )
    return text + "."


def render_markdown(report: dict[str, Any]) -> str:
    """Tables of a protocol report: means per mix, per-feature auROC, cell-type specificity."""
    lines = [f"# Locked test evaluation of `{report['model']}`", "",
             f"sha256 `{report['model_sha256']}`; test regions {report['test_regions']}; "
             f"{report['windows']['test']} test windows (every 200-bp bin, blacklist and N "
             f"filtered: {report['windows']['dropped']}). 95% bootstrap intervals "
             f"({report['config']['bootstrap']} resamples of the windows).", "",
             "| mix | windows | positives | model auROC | k-mer | GC | CpG | model auPRC | k-mer auPRC |",
             "|---|---:|---:|---|---|---|---|---|---|"]  # fmt: skip
    for mix, m in report["mixes"].items():
        lines.append(
            f"| {mix} | {m['windows']} | {m['positives']} | {_fmt(m['model'], 'mean_auroc')} | "
            f"{_fmt(m['kmer'], 'mean_auroc')} | {_fmt(m['gc'], 'mean_auroc')} | "
            f"{_fmt(m['cpg'], 'mean_auroc')} | {_fmt(m['model'], 'mean_auprc')} | "
            f"{_fmt(m['kmer'], 'mean_auprc')} |"
        )
    lines += ["", "Model minus k-mer, mean auROC (paired bootstrap 95% interval): " + "; ".join(
        f"{mix} {m['model_minus_kmer_mean_auroc']['value']:+.3f} "
        f"({m['model_minus_kmer_mean_auroc']['ci'][0]:+.3f} to "
        f"{m['model_minus_kmer_mean_auroc']['ci'][1]:+.3f})" for mix, m in report["mixes"].items()
    ) + "."]  # fmt: skip
    lines += ["", _kmer_text(report["kmer_baseline"])]
    lines += ["", "Per feature auROC (model / k-mer / GC), per mix:", "",
              "| feature | " + " | ".join(report["mixes"]) + " |",
              "|---|" + "---|" * len(report["mixes"])]  # fmt: skip
    for f in report["features"]:
        cells = []
        for m in report["mixes"].values():
            a, b, c = (m[s]["per_feature"][f]["auroc"] for s in ("model", "kmer", "gc"))
            cells.append(f"{a:.3f} / {b:.3f} / {c:.3f}")
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    lines += ["", "Cell-type specificity: auROC among windows open in >= 1 cell type of the assay "
              "(model / k-mer / GC):", "", "| assay | windows | feature | auROC |", "|---|---:|---|---|"]  # fmt: skip
    for assay, s in report["cell_type_specificity"].items():
        for f, v in s["model"]["per_feature"].items():
            lines.append(f"| {assay} | {s['windows']} | {f} | {_fmt(v, 'auroc')} / "
                         f"{s['kmer']['per_feature'][f]['auroc']:.3f} / "
                         f"{s['gc']['per_feature'][f]['auroc']:.3f} |")  # fmt: skip
        lines.append(f"| {assay} | | **mean** | {_fmt(s['model'], 'mean_auroc')} / "
                     f"{s['kmer']['mean_auroc']:.3f} / {s['gc']['mean_auroc']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"
