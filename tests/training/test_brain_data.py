"""brain-hg19 flow on a tiny slice of the real data (issue 7); skipped where shared data is absent.

Runs the real scripts as a user would (subprocess): prepare.py on ~1.3 Mb of real GRCh37 sequence
with the 12 real Nott et al. peak sets (CRLF, ``chr20``/``chrX`` vs FASTA ``20``/``X``), then a
1-epoch tiny train.py + ONNX export, and checks labels against a per-base brute force.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from varfx.training.onnx_layout import count_1d_convs

REPO = Path(__file__).resolve().parents[2]
REAL = REPO / ".." / "shared" / "data" / "real"
REF = REAL / "hg19_ref_debian"
PEAKS = REAL / "hg19_nott_brain"
SCRIPTS = REPO / "research" / "brain"

pytestmark = pytest.mark.skipif(
    not (REF / "vt-examples.20.fa.gz").exists() or not PEAKS.is_dir(),
    reason="real data (../shared/data/real) not present",
)

TRAIN, VALID, TEST = "X:2900001-3300000", "chr20:30000001-30400000", "20:30400001-30900000"


def _run(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("brain") / "index.npz"
    _run(
        str(SCRIPTS / "prepare.py"),
        "--genome", str(REF / "vt-examples.20.fa.gz"),
        "--genome", str(REF / "smalt-examples.hs37chrXtrunc.fa.gz"),
        "--peaks", str(PEAKS),
        "--out", str(out),
        "--train-regions", TRAIN, "--valid-regions", VALID, "--test-regions", TEST,
        "--neg-ratio", "1.0",
    )  # fmt: skip
    return out


def _peaks(feature: str, chrom: str) -> np.ndarray:
    f = next(PEAKS.glob(f"{feature}_*.bed"))
    rows = [ln.rstrip("\r\n").split("\t") for ln in f.read_text().splitlines() if ln.strip()]
    return np.array([(int(r[1]), int(r[2])) for r in rows if r[0] == chrom], dtype=np.int64)


def test_index_labels_split_and_naming(index: Path) -> None:
    z = np.load(index)
    meta = json.loads(str(z["meta"]))
    assert meta["split"] == {"train": [TRAIN], "valid": [VALID], "test": [TEST]}
    assert len(meta["features"]) == 12
    contig, start, labels, split = z["contig"], z["start"], z["labels"], z["split"]
    assert set(contig[split == 0]) == {"X"}
    assert set(contig[split > 0]) == {"20"}  # chr20 in the peak files -> 20 in the FASTA
    # windows lie wholly inside their region: no base shared between splits
    bounds = {0: (2_900_000, 3_300_000), 1: (30_000_000, 30_400_000), 2: (30_400_000, 30_900_000)}
    for code, (lo, hi) in bounds.items():
        s = start[split == code]
        assert len(s) > 0
        assert s.min() >= lo
        assert s.max() + 1000 <= hi
    # every positive window has a label; negatives are as many as positives (ratio 1.0)
    pos = labels.any(1)
    assert pos.sum() == (~pos).sum()
    # brute-force labels: per-base coverage of the central 200 bp bin, per feature
    for j, feat in enumerate(meta["features"]):
        for chrom, code in (("chrX", 0), ("chr20", 1), ("chr20", 2)):
            lo, hi = bounds[code]
            cov = np.zeros(hi - lo + 1000, dtype=bool)
            for s, e in _peaks(feat, chrom):
                cov[max(s, lo) - lo : max(min(e, hi), lo) - lo] = True
            rows = np.flatnonzero(split == code)
            bin_start = start[rows] + 400 - lo
            covered = np.array([cov[b : b + 200].sum() for b in bin_start])
            np.testing.assert_array_equal(labels[rows, j], covered >= 100, err_msg=feat)


def test_overlapping_regions_are_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "prepare.py"),
            "--genome",
            str(REF / "vt-examples.20.fa.gz"),
            "--peaks",
            str(PEAKS),
            "--out",
            str(tmp_path / "i.npz"),
            "--train-regions",
            "20:1000001-2000000",
            "--valid-regions",
            "20:1500001-2500000",
            "--test-regions",
            "20:3000001-3500000",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "overlaps" in proc.stderr
    assert not (tmp_path / "i.npz").exists()


def test_tiny_train_exports_a_contract_onnx(index: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    run, export = tmp_path / "run", tmp_path / "repo" / "brain-hg19" / "1"
    _run(
        str(SCRIPTS / "train.py"), "--index", str(index), "--out", str(run), "--device", "cpu",
        "--epochs", "1", "--max-train", "300", "--channels", "8", "8", "8", "--hidden", "8",
        "--export", str(export),
    )  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["split"]) == {"train", "valid", "test"}
    assert 0.0 <= summary["test_mean_auroc"] <= 1.0
    sess = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    inp, outp = sess.get_inputs()[0], sess.get_outputs()[0]
    assert (inp.name, inp.type, inp.shape[1]) == ("tokens", "tensor(uint8)", 1000)
    assert (outp.name, outp.shape[1]) == ("probabilities", 12)
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["varfx"])
    assert meta["sequence_length"] == 1000
    assert meta["alphabet"] == "ACGT"
    assert meta["output"] == "probabilities"
    assert meta["assembly"] == "GRCh37"
    assert len(meta["features"]) == 12
    assert meta["training_summary"]["split"]["test"] == [TEST]
    assert meta["conv_layout"] == "2d"
    assert count_1d_convs((export / "model.onnx").read_bytes()) == 0
    probs = sess.run(None, {"tokens": np.full((3, 1000), 4, dtype=np.uint8)})[0]
    assert probs.shape == (3, 12)
    assert ((probs > 0) & (probs < 1)).all()
