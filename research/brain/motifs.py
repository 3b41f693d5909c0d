#!/usr/bin/env python
"""Which known motifs does the brain-hg19 model use? (issue 7)

    .venv/bin/python research/brain/motifs.py --index runs/brain/index.npz \
        --model models/brain-hg19/1/model.onnx --out docs/brain

Works from the ONNX file alone (any varfx token-input model whose first Conv sees the one-hot):

1. First-layer filters -> PWMs (Basset recipe): the filter's activation is computed on sampled test
   windows (numpy, valid positions); every subsequence whose activation exceeds half the filter's
   maximum is stacked into a count matrix. Edge columns under 0.3 bits are trimmed.
2. Tomtom-style matching against JASPAR2024 CORE vertebrates (pyjaspar): mean column Pearson
   correlation over every offset and both strands (overlap >= min(6, both widths)); an empirical
   p-value comes from the same match run on column-shuffled copies of every filter.
3. Filters per feature: Pearson correlation between a filter's max activation per window and the
   model's logit for each feature, and cell-type specificity = that correlation minus the mean over
   the same assay's four cell types.
4. In-silico motif insertion: a sequence drawn from a JASPAR PWM is written at the centre of
   background (unlabelled) test windows; the mean change in each feature's logit says which cell
   types the model ties to SPI1 (microglia), SOX (oligodendrocytes), RFX/NEUROD (neurons), ...

Writes OUT/motifs.json and OUT/motifs.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from brainlib import gather_windows, load_genome, load_index
from evaluate import onnx_predict

log = logging.getLogger("motifs")

# TFs Nott et al. 2019 name per cell type, plus controls; JASPAR names (first match is used).
PROBES = {
    "SPI1 (PU.1)": ["Spi1", "SPI1"],
    "SOX10": ["SOX10"],
    "SOX9": ["SOX9"],
    "OLIG2": ["OLIG2", "Olig2"],
    "RFX2": ["RFX2"],
    "RFX3": ["RFX3"],
    "NEUROD1": ["NEUROD1"],
    "MEF2C": ["MEF2C"],
    "NFIA": ["NFIA"],
    "FOS::JUN (AP-1)": ["FOS::JUN"],
    "CTCF": ["CTCF"],
}
EXPECTED = {"PU1": "SPI1/ETS", "Olig2": "SOX", "NeuN": "RFX / NEUROD", "LHX2": "NFI / LHX2"}


def first_conv(model_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """First Conv's weight [C, 4, w] and bias [C] (float32) from an ONNX graph."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type == "Conv":
            w = inits[node.input[1]].astype(np.float32)
            b = inits[node.input[2]] if len(node.input) > 2 else np.zeros(len(w))
            if w.ndim != 3 or w.shape[1] != 4:
                raise ValueError(f"first Conv weight has shape {w.shape}, expected [C, 4, w]")
            return w, b.astype(np.float32)
    raise ValueError(f"{model_path}: no Conv node")


def activations(tokens: np.ndarray, w: np.ndarray, b: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Filter activations [n, P, C] (P = L - w + 1 valid positions) for tokens [n, L] uint8."""
    table = np.vstack([np.eye(4, dtype=np.float32), np.full((1, 4), 0.25, np.float32)])
    c, _, width = w.shape
    wm = w.transpose(2, 1, 0).reshape(width * 4, c)  # [(pos, base), C]
    out = []
    for i in range(0, len(tokens), chunk):
        oh = table[tokens[i : i + chunk]]  # [n, L, 4]
        win = np.lib.stride_tricks.sliding_window_view(oh, width, axis=1)  # [n, P, 4, w]
        win = win.transpose(0, 1, 3, 2).reshape(len(oh), -1, width * 4)
        out.append((win @ wm + b).astype(np.float32))
    return np.concatenate(out)


def filter_pwms(tokens: np.ndarray, act: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """PFMs [C, w, 4] (probabilities, +pseudocount) from subsequences with act > 0.5 max; n sites."""
    c = act.shape[2]
    pfm = np.zeros((c, width, 4))
    sites = np.zeros(c, dtype=np.int64)
    offs = np.arange(width)
    for f in range(c):  # one vectorized pass per filter
        a = act[:, :, f]
        thr = 0.5 * a.max()
        if thr <= 0:
            continue
        r, q = np.nonzero(a > thr)
        sub = tokens[r[:, None], q[:, None] + offs]  # [m, w]
        ok = (sub < 4).all(1)
        sub = sub[ok]
        sites[f] = len(sub)
        pfm[f] = np.stack([(sub == k).sum(0) for k in range(4)], axis=1)
    pwm = (pfm + 0.25) / (pfm.sum(2, keepdims=True) + 1.0)
    return pwm, sites


def info_content(pwm: np.ndarray) -> np.ndarray:
    """Bits per column for [..., w, 4] probabilities."""
    return 2 + (pwm * np.log2(pwm)).sum(-1)


def trim(pwm: np.ndarray, min_ic: float = 0.3) -> np.ndarray:
    ic = info_content(pwm)
    keep = np.flatnonzero(ic >= min_ic)
    return pwm[keep[0] : keep[-1] + 1] if len(keep) else pwm[:0]


def _zcols(m: np.ndarray) -> np.ndarray:
    z = m - m.mean(-1, keepdims=True)
    return z / (np.linalg.norm(z, axis=-1, keepdims=True) + 1e-9)


class Matcher:
    """All-offset, both-strand mean column Pearson correlation of a PWM against a motif library."""

    def __init__(self, motifs: list[np.ndarray]) -> None:
        self.lengths = np.array([len(m) for m in motifs])
        self.maxlen = int(self.lengths.max())
        self.z = np.full((len(motifs), self.maxlen, 4), np.nan)
        for i, m in enumerate(motifs):
            self.z[i, : len(m)] = _zcols(m)

    def best(self, pwm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best score over offsets/strands per library motif -> (score [M], strand [M] 0/1)."""
        w = len(pwm)
        scores = []
        for q in (pwm, pwm[::-1, ::-1]):  # forward, reverse complement (ACGT order)
            zq = _zcols(q)
            pad = np.full((len(self.z), self.maxlen + 2 * (w - 1), 4), np.nan)
            pad[:, w - 1 : w - 1 + self.maxlen] = self.z
            corr = np.einsum("ik,mpk->imp", zq, pad)  # [w, M, P]
            win = np.lib.stride_tricks.sliding_window_view(corr, w, axis=2)  # [w, M, S, w]
            diag = np.diagonal(win, axis1=0, axis2=3)  # [M, S, w]
            cnt = np.isfinite(diag).sum(-1)
            mean = np.nansum(diag, -1) / np.maximum(cnt, 1)
            need = np.minimum(np.minimum(6, w), self.lengths)[:, None]
            mean[cnt < need] = -1
            scores.append(mean.max(1))
        s = np.stack(scores)
        return s.max(0), s.argmax(0)


def load_jaspar() -> tuple[list[str], list[str], list[np.ndarray]]:
    from pyjaspar import jaspardb

    ms = jaspardb(release="JASPAR2024").fetch_motifs(collection="CORE", tax_group=["vertebrates"])
    ids, names, pwms = [], [], []
    for m in ms:
        c = np.array([m.counts[b] for b in "ACGT"], dtype=np.float64).T
        ids.append(m.matrix_id)
        names.append(m.name)
        pwms.append((c + 0.25) / (c.sum(1, keepdims=True) + 1.0))
    return ids, names, pwms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--windows", type=int, default=3000, help="test windows sampled")
    ap.add_argument("--insert-windows", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    idx = load_index(args.index)
    test = idx.subset("test")
    genome: dict[str, np.ndarray] = {}
    for c in np.unique(test.contig):
        genome.update(load_genome(idx.meta["fasta"][str(c)], [str(c)]))
    rows = np.sort(rng.choice(len(test.start), min(args.windows, len(test.start)), replace=False))
    x = gather_windows(genome, test.contig[rows], test.start[rows], idx.length)
    w, b = first_conv(args.model)
    width = w.shape[2]
    act = activations(x, w, b)
    pwm, sites = filter_pwms(x, act, width)
    log.info("%d filters -> PWMs in %.0fs", len(w), time.time() - t0)

    ids, names, lib = load_jaspar()
    matcher = Matcher(lib)
    trimmed = [trim(p) for p in pwm]
    best_score = np.full(len(w), -1.0)
    best_motif = np.zeros(len(w), dtype=np.int64)
    null = []
    for f, tp in enumerate(trimmed):
        if len(tp) < 4 or sites[f] < 10:
            continue
        s, _ = matcher.best(tp)
        best_score[f], best_motif[f] = s.max(), s.argmax()
        for _ in range(2):  # column-shuffled copies: the null for the best-match score
            null.append(matcher.best(tp[rng.permutation(len(tp))])[0].max())
    null_arr = np.sort(np.array(null))
    pval = 1 - np.searchsorted(null_arr, best_score, side="left") / max(len(null_arr), 1)
    log.info("JASPAR matching done in %.0fs", time.time() - t0)

    # filters <-> features: correlation of max activation with the model's logits
    prob = np.clip(onnx_predict(args.model, x), 1e-6, 1 - 1e-6)
    logit = np.log(prob / (1 - prob))
    amax = act.max(1)  # [n, C]
    za = (amax - amax.mean(0)) / (amax.std(0) + 1e-9)
    zl = (logit - logit.mean(0)) / (logit.std(0) + 1e-9)
    corr = za.T @ zl / len(x)  # [C, F]
    feats = idx.features
    assay = np.array([f.split("_")[0] for f in feats])
    spec = corr.copy()
    for a in np.unique(assay):
        cols = assay == a
        spec[:, cols] = corr[:, cols] - corr[:, cols].mean(1, keepdims=True)

    def label(f: int) -> str:
        if best_score[f] < 0:
            return f"filter {f} (no PWM)"
        return (
            f"{names[best_motif[f]]} ({ids[best_motif[f]]}, r={best_score[f]:.2f}, p={pval[f]:.2f})"
        )

    per_feature: dict[str, list[dict[str, object]]] = {}
    for j, feat in enumerate(feats):
        top_filters = np.argsort(-spec[:, j])[:5]
        per_feature[feat] = [
            {
                "filter": int(f),
                "specificity": float(spec[f, j]),
                "corr": float(corr[f, j]),
                "match": label(int(f)),
            }
            for f in top_filters
        ]

    # in-silico insertion into background windows
    bg_rows = np.flatnonzero(test.labels.sum(1) == 0)
    bg_rows = np.sort(rng.choice(bg_rows, min(args.insert_windows, len(bg_rows)), replace=False))
    bg = gather_windows(genome, test.contig[bg_rows], test.start[bg_rows], idx.length)
    p0 = np.clip(onnx_predict(args.model, bg), 1e-6, 1 - 1e-6)
    l0 = np.log(p0 / (1 - p0))
    insertion: dict[str, dict] = {}
    name_to_i = {n: i for i, n in enumerate(names)}
    for probe, candidates in PROBES.items():
        hit = next((name_to_i[c] for c in candidates if c in name_to_i), None)
        if hit is None:
            continue
        m = lib[hit]
        # draw a site per window from the PWM (vectorized inverse-CDF), random strand
        u = rng.random((len(bg), len(m)))
        site = (u[:, :, None] > np.cumsum(m, 1)[None]).sum(2).clip(0, 3).astype(np.uint8)
        flip = rng.random(len(bg)) < 0.5
        site[flip] = (3 - site[flip])[:, ::-1]
        xi = bg.copy()
        c0 = idx.length // 2 - len(m) // 2
        xi[:, c0 : c0 + len(m)] = site
        p1 = np.clip(onnx_predict(args.model, xi), 1e-6, 1 - 1e-6)
        d = (np.log(p1 / (1 - p1)) - l0).mean(0)
        insertion[probe] = {
            "jaspar": f"{names[hit]} {ids[hit]}",
            "mean_delta_logit": dict(zip(feats, d.round(4).tolist(), strict=True)),
            "top_feature": feats[int(np.argmax(d))],
        }
    log.info("insertions done in %.0fs", time.time() - t0)

    good = [f for f in range(len(w)) if best_score[f] >= 0 and pval[f] <= 0.05]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {
        "model": str(args.model),
        "filters": len(w),
        "filter_width": width,
        "windows": len(x),
        "filters_matched_p05": len(good),
        "filter_matches": {
            int(f): {
                "match": label(f),
                "sites": int(sites[f]),
                "ic_bits": float(info_content(trimmed[f]).sum()),
            }
            for f in range(len(w))
            if best_score[f] >= 0
        },
        "per_feature_top_specific_filters": per_feature,
        "insertion": insertion,
        "expected_nott2019": EXPECTED,
    }
    (out / "motifs.json").write_text(json.dumps(res, indent=2))

    cells = ["NeuN", "Olig2", "PU1", "LHX2"]
    lines = [
        f"{len(good)} of {len(w)} first-layer filters match a JASPAR2024 vertebrate motif at "
        "empirical p <= 0.05 (column-shuffled null).",
        "",
        "**In-silico insertion** (mean change in logit when a PWM-drawn site is written at the "
        f"centre of {len(bg)} unlabelled test windows; per cell type, mean over ATAC, H3K27ac, "
        "H3K4me3):",
        "",
        "| motif | " + " | ".join(cells) + " | strongest feature |",
        "|---|" + "---:|" * len(cells) + "---|",
    ]
    for probe, r in insertion.items():
        d = r["mean_delta_logit"]
        per_cell = [np.mean([d[f] for f in feats if f.endswith("_" + c)]) for c in cells]
        lines.append(
            f"| {probe} | " + " | ".join(f"{v:+.3f}" for v in per_cell) + f" | {r['top_feature']} |"
        )
    lines += [
        "",
        "**Most cell-type-specific matched filters per feature** (corr(max activation, "
        "logit) minus the same assay's mean over the 4 cell types):",
        "",
    ]
    for feat, best_filters in per_feature.items():
        ms = [str(t["match"]) for t in best_filters if not str(t["match"]).startswith("filter")][:3]
        lines.append(f"- {feat}: " + "; ".join(ms))
    (out / "motifs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    log.info("done in %.0fs", time.time() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
