"""The locked test protocol: one shipped model, evaluated once on its held-out test region.

``evaluate_model`` labels every bin of the test region (``varfx train``'s index rule, the
blacklist applied: windows overlapping it are left out, as are windows with > max_n N or reaching
outside the region), runs the ONNX model on all of them and reports, per feature and as the mean
over features, auROC and auPRC with bootstrap 95% intervals on three mixes:

- ``all``: every bin of the test region;
- ``random``: the positives (bins with any label) and as many random unlabelled bins;
- ``gc-matched``: the positives and as many unlabelled bins drawn to follow their GC histogram
  (``random`` and ``gc-matched`` are the mixes ``varfx train --negatives`` builds);
- ``gc-matched-per-feature``: for each feature its own positives and as many unlabelled bins
  matched to *their* GC histogram, so GC alone scores ~0.5 (bootstrap per feature).

Beside the model, on the same windows: GC fraction, CpG count (no fitting) and the k-mer
baseline (varfx.training.kmer_baseline, fitted on a 1:1 random mix of training-sequence bins,
i.e. bins outside the held-out regions, its fit size and L2 strength C chosen on the validation
region, never on test; grid, validation scores and choice are in the report). Cell-type specificity: for each assay (the feature-name
prefix before ``_``), auROC of each feature among the windows open in at least one cell type of
that assay. Model predictions are cached in OUT/predictions.npz (keyed by the model's SHA-256).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from varfx.training._fasta import FastaTokens
from varfx.training.bootstrap import bootstrap_counts
from varfx.training.dataset import IndexConfig, SplitSpec, WindowIndex, build_index, parse_region
from varfx.training.errors import DataError
from varfx.training.kmer_baseline import KmerBaseline, kmer_dimension, select_kmer_baseline
from varfx.training.negatives import gc_fraction
from varfx.training.peaks import PeakSet, feature_name, find_peak_files
from varfx.training.protocol_report import cell_types, mix_rows, render_markdown, score_block

__all__ = ["BRAIN_TEST_REGION", "MIXES", "ProtocolConfig", "evaluate_model", "render_markdown"]

log = logging.getLogger(__name__)

BRAIN_TEST_REGION = "chr20:29500001-"  # brain-hg19: the chr20 q-arm, never used for any choice
MIXES = ("all", "random", "gc-matched", "gc-matched-per-feature")
SCORERS = ("model", "kmer", "gc", "cpg")


@dataclass(frozen=True)
class ProtocolConfig:
    """Inputs of one locked evaluation (lengths in bp).

    ``valid_regions`` are excluded from the k-mer baseline's training bins (as from any fitting)
    and choose its fit size and C: every pair of ``kmer_windows`` (1:1 fitting windows) and
    ``kmer_C`` (inverse L2 strength) is fitted and the best mean auROC over features on a 1:1
    random mix of the validation windows wins. With one size and one C nothing is chosen and no
    validation region is needed.
    """

    model: str
    genome: tuple[str, ...]
    peaks: tuple[str, ...]
    out: str
    test_regions: tuple[str, ...] = (BRAIN_TEST_REGION,)
    valid_regions: tuple[str, ...] = ()
    blacklist: str | None = None
    bin_size: int = 200
    stride: int = 200
    min_overlap: float = 0.5
    max_n_fraction: float = 0.1
    allow_peaks_past_end: bool = False
    bootstrap: int = 200
    seed: int = 0
    kmer_windows: tuple[int, ...] = (20_000,)
    kmer_C: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0)
    kmer_k: int = 6
    batch_size: int = 256
    threads: int = 1
    again: bool = False
    command: str = ""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _model_meta(path: Path) -> dict[str, Any]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in m.metadata_props}
    if "varfx" not in props:
        raise DataError(f"{path}: no varfx metadata (features, sequence_length)")
    meta: dict[str, Any] = json.loads(props["varfx"])
    return meta


def _gather(tokens: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """uint8 [n, length] windows of one contig's tokens; outside the contig is N (4)."""
    pos = starts[:, None] + np.arange(length, dtype=np.int64)
    inside = (pos >= 0) & (pos < len(tokens))
    return np.where(inside, tokens[np.clip(pos, 0, len(tokens) - 1)], 4).astype(np.uint8)


def _windows(genome: FastaTokens, index: WindowIndex, rows: np.ndarray, chunk: int):  # type: ignore[no-untyped-def]
    """Yield (row slice, uint8 [n, L]) over ``rows`` in chunks, one contig read at a time."""
    cache: dict[int, np.ndarray] = {}
    for i in range(0, len(rows), chunk):
        r = rows[i : i + chunk]
        out = np.empty((len(r), index.length), dtype=np.uint8)
        for cid in np.unique(index.contig_ids[r]):
            if cid not in cache:
                cache.clear()
                cache[cid] = genome.contig_tokens(index.contigs[cid])
            m = index.contig_ids[r] == cid
            out[m] = _gather(cache[cid], index.starts[r[m]], index.length)
        yield slice(i, i + len(r)), out


def _predict(cfg: ProtocolConfig, genome: FastaTokens, index: WindowIndex, rows: np.ndarray,
             model_sha: str) -> np.ndarray:  # fmt: skip
    """Model probabilities float32 [n, F] for ``rows``, cached in OUT/predictions.npz."""
    cache = Path(cfg.out) / "predictions.npz"
    key_c, key_s = index.contig_ids[rows], index.starts[rows]
    if cache.is_file():
        with np.load(cache) as z:
            if (str(z["model_sha256"]) == model_sha and np.array_equal(z["contig_ids"], key_c)
                    and np.array_equal(z["starts"], key_s)):  # fmt: skip
                log.info("model predictions from %s", cache)
                return np.asarray(z["probabilities"])
    import onnxruntime as ort
    from tqdm import tqdm

    so = ort.SessionOptions()
    so.intra_op_num_threads = cfg.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(cfg.model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    probs = np.zeros((len(rows), len(index.features)), np.float32)
    bar = tqdm(total=len(rows), desc="model", unit="win", mininterval=30)
    for sl, x in _windows(genome, index, rows, cfg.batch_size):
        probs[sl] = sess.run(None, {name: x})[0]
        bar.update(len(x))
    bar.close()
    tmp = cache.with_name("predictions.tmp.npz")
    np.savez_compressed(tmp, model_sha256=np.array(model_sha), contig_ids=key_c, starts=key_s,
                        probabilities=probs)  # fmt: skip
    tmp.replace(cache)
    return probs


def _kmer_features(base: KmerBaseline, genome: FastaTokens, index: WindowIndex,
                   rows: np.ndarray) -> np.ndarray:  # fmt: skip
    """k-mer frequencies float32 [len(rows), D] of ``rows`` (any order), read contig by contig."""
    order = np.argsort(rows, kind="stable")
    x = np.empty((len(rows), kmer_dimension(base.ks, base.canonical)), np.float32)
    for sl, tok in _windows(genome, index, rows[order], 4096):
        x[order[sl]] = base.features(tok)
    return x


def _check_kmer_grid(cfg: ProtocolConfig) -> bool:
    """Whether the k-mer settings are a grid to choose from (refused unless on validation).

    Raises:
        DataError: an empty or invalid grid, a grid without valid regions, or valid regions
            reaching into the brain locked test region (the choice would look at the test).
    """
    sizes, cs = sorted(set(cfg.kmer_windows)), list(dict.fromkeys(cfg.kmer_C))
    if not sizes or not cs or min(sizes) < 2 or min(cs) <= 0:
        raise DataError(f"k-mer grid: need fit sizes >= 2 and C > 0, got "
                        f"{list(cfg.kmer_windows)} and {list(cfg.kmer_C)}")  # fmt: skip
    grid = len(sizes) * len(cs) > 1
    if grid and not cfg.valid_regions:
        raise DataError("the k-mer baseline's fit size and C are chosen on the validation region: "
                        "give valid regions (--valid-regions), or one --kmer-C and --kmer-windows")  # fmt: skip
    if grid:
        valid = SplitSpec.from_args(valid_regions=cfg.valid_regions)
        valid.check_disjoint()  # parse errors and valid regions overlapping each other first
        try:
            SplitSpec(valid.valid, (parse_region(BRAIN_TEST_REGION),)).check_disjoint()
        except DataError as exc:
            raise DataError(f"valid regions {list(cfg.valid_regions)} reach into the locked test "
                            f"region {BRAIN_TEST_REGION}: choosing C there would look at the test; "
                            "give one --kmer-C and --kmer-windows") from exc  # fmt: skip
    return grid


def _fit_kmer(cfg: ProtocolConfig, genome: FastaTokens, index: WindowIndex) -> tuple[KmerBaseline, dict[str, Any]]:  # fmt: skip
    """The k-mer baseline, its fit size and C chosen on the validation rows; and its record.

    Fitting windows are 1:1 positives and unlabelled bins of the training sequence (outside every
    held-out region), nested over the fit sizes; the choice scores a 1:1 random mix of the
    validation windows (mean auROC over features). Test rows are never read here.
    """
    sizes, cs = sorted(set(cfg.kmer_windows)), list(dict.fromkeys(cfg.kmer_C))
    grid = _check_kmer_grid(cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    train = index.rows("train")
    pos = rng.permutation(train[index.labels[train].any(1)])
    neg = rng.permutation(train[~index.labels[train].any(1)])
    halves = sorted({min(n // 2, len(pos), len(neg)) for n in sizes})
    if halves[-1] == 0:
        raise DataError("no training-sequence positives and negatives to fit the k-mer baseline")
    top = halves[-1]
    fit_rows = np.concatenate([pos[:top], neg[:top]])
    subsets = [np.concatenate([np.arange(h), top + np.arange(h)]) for h in halves]
    ks = tuple(range(1, cfg.kmer_k + 1))
    proto = KmerBaseline(ks=ks)
    fit_x, fit_y = _kmer_features(proto, genome, index, fit_rows), index.labels[fit_rows]
    record: dict[str, Any] = {
        "ks": list(ks), "positives_per_negative": 1.0,
        "fit_on": "bins outside the held-out regions (training sequence)",
        "grid": {"fit_windows": [2 * h for h in halves], "C": cs},
    }  # fmt: skip
    if not grid:
        base = KmerBaseline(ks=ks, C=float(cs[0])).fit_counts(fit_x, fit_y)
        record.update(fit_windows=len(fit_rows), C=base.C,
                      chosen_on="fixed: one fit size and one C given, nothing chosen")  # fmt: skip
        return base, record
    valid = index.rows("valid")
    vlab = index.labels[valid].any(1)
    vpos, vneg = valid[vlab], valid[~vlab]
    vrng = np.random.default_rng(cfg.seed + 2)
    vrows = np.sort(
        np.concatenate([vpos, vrng.choice(vneg, min(len(vpos), len(vneg)), replace=False)])
    )
    valid_x, valid_y = _kmer_features(proto, genome, index, vrows), index.labels[vrows]
    try:
        base, scores = select_kmer_baseline(fit_x, fit_y, subsets, valid_x, valid_y, cs, ks)
    except ValueError as exc:
        raise DataError(
            f"k-mer baseline on valid regions {list(cfg.valid_regions)}: {exc}"
        ) from exc
    del fit_x, valid_x
    chosen = max(scores, key=lambda r: r["valid_mean_auroc"])  # the first best, as chosen
    record.update(
        fit_windows=int(chosen["fit_windows"]), C=base.C,
        chosen_on=("validation: mean auROC over features on a 1:1 random mix of the validation "
                   "windows; the test region is not looked at"),
        validation={"regions": list(cfg.valid_regions), "windows": len(vrows),
                    "positives": len(vpos), "scores": scores},
    )  # fmt: skip
    return base, record


def _baselines(cfg: ProtocolConfig, genome: FastaTokens, index: WindowIndex,
               rows: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:  # fmt: skip
    """GC fraction, CpG count and k-mer probabilities for ``rows``; and the k-mer fit record."""
    base, record = _fit_kmer(cfg, genome, index)
    f = len(index.features)
    out = {"kmer": np.zeros((len(rows), f), np.float32), "gc": np.zeros(len(rows), np.float32),
           "cpg": np.zeros(len(rows), np.float32)}  # fmt: skip
    for sl, x in _windows(genome, index, rows, 4096):
        out["kmer"][sl] = base.predict_proba(x)
        out["gc"][sl] = gc_fraction(x)
        out["cpg"][sl] = ((x[:, :-1] == 1) & (x[:, 1:] == 2)).sum(1)
    return out, record


def _match_features(files: list[Path], features: tuple[str, ...]) -> list[str]:
    """The model feature of each peak file: its name, or the feature its name starts with
    (``ATAC_NeuN_optimal_peak.bed`` -> ``ATAC_NeuN``); every feature needs exactly one file."""
    out = []
    for f in files:
        name = feature_name(f)
        hits = [x for x in features if name == x or name.startswith((x + "_", x + "."))]
        if len(hits) != 1:
            raise DataError(f"peak file {f} matches model features {hits}, need exactly one")
        out.append(hits[0])
    missing = sorted(set(features) - set(out))
    if missing or len(out) != len(features):
        raise DataError(f"need one peak file per model feature; missing {missing} in {files}")
    return out


def evaluate_model(cfg: ProtocolConfig) -> dict[str, Any]:
    """Run the locked protocol; writes OUT/protocol.json and OUT/protocol.md, returns the report.

    Raises:
        DataError: bad inputs, peak sets that differ from the model's features, a feature with
            no test positives, or OUT holding an evaluation of this model already (``again``).
    """
    model = Path(cfg.model)
    if not model.is_file():
        raise DataError(f"model not found: {model}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    sha = _sha256(model)
    report_path = out / "protocol.json"
    if report_path.is_file() and not cfg.again:
        old = json.loads(report_path.read_text())
        if old.get("model_sha256") == sha:
            raise DataError(f"{report_path} already holds the test evaluation of {model} "
                            f"(sha256 {sha[:12]}); the test region is evaluated once per model")  # fmt: skip
    _check_kmer_grid(cfg)
    meta = _model_meta(model)
    features, length = tuple(meta["features"]), int(meta["sequence_length"])
    genome = FastaTokens(cfg.genome)
    files = find_peak_files(cfg.peaks)
    names = _match_features(files, features)
    peaks = PeakSet.load(files, genome.lengths, names, allow_past_end=cfg.allow_peaks_past_end)
    split = SplitSpec.from_args(valid_regions=cfg.valid_regions, test_regions=cfg.test_regions)
    icfg = IndexConfig(length=length, bin_size=cfg.bin_size, stride=cfg.stride,
                       min_overlap=cfg.min_overlap, negative_ratio=float("inf"), negatives="all",
                       max_n_fraction=cfg.max_n_fraction, blacklist=cfg.blacklist, seed=cfg.seed)  # fmt: skip
    index = build_index(genome, peaks, split, icfg)
    order = [peaks.features.index(f) for f in features]
    index.labels, index.features = index.labels[:, order], features
    rows = index.rows("test")
    if len(rows) == 0:
        raise DataError(f"no test windows in {list(cfg.test_regions)}")
    labels = index.labels[rows].astype(bool)
    log.info("%d test windows, %d with a label", len(rows), int(labels.any(1).sum()))
    scores: dict[str, np.ndarray] = {"model": _predict(cfg, genome, index, rows, sha)}
    base, kmer_record = _baselines(cfg, genome, index, rows)
    scores.update(base)
    rng = np.random.default_rng(cfg.seed)
    mixes: dict[str, Any] = {}
    for mix in MIXES:
        rows_f = mix_rows(mix, labels, base["gc"], rng)
        shared = all(r is rows_f[0] for r in rows_f)
        counts = [
            bootstrap_counts(len(r), cfg.bootstrap, rng) for r in rows_f[: 1 if shared else None]
        ]
        block = score_block(
            labels, scores, features, rows_f, counts * len(rows_f) if shared else counts
        )
        at = np.unique(np.concatenate(rows_f))
        mixes[mix] = {"windows": len(at), "positives": int(labels[at].any(1).sum()), **block}
    specificity: dict[str, Any] = {}
    for assay, col_list in cell_types(features).items():
        cols = np.array(col_list, dtype=np.int64)
        at = np.flatnonzero(labels[:, cols].any(1))
        counts = bootstrap_counts(len(at), cfg.bootstrap, rng)
        sub = tuple(features[j] for j in cols)
        block = score_block(labels[at][:, cols],
                             {k: (v[at][:, cols] if v.ndim == 2 else v[at])
                              for k, v in scores.items()}, sub, [np.arange(len(at))] * len(cols),
                             [counts] * len(cols))  # fmt: skip
        specificity[assay] = {"windows": len(at), **block}
    report = {
        "protocol": "varfx locked test protocol v2",
        "model": str(model), "model_sha256": sha, "features": list(features),
        "sequence_length": length, "config": asdict(cfg), "test_regions": list(cfg.test_regions),
        "windows": {"test": len(rows), "dropped": {k: v for k, v in index.stats.items()
                                                    if k.startswith("dropped")}},
        "kmer_baseline": kmer_record, "mixes": mixes, "cell_type_specificity": specificity,
        "training_summary": meta.get("training_summary"),
    }  # fmt: skip
    report_path.write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out / "protocol.md").write_text(render_markdown(report))
    return report
