#!/usr/bin/env python
"""Train the brain-hg19 CNN on the index from ``prepare.py`` and export it to ONNX (issue 7).

Data loading: both chromosomes are read once into uint8 token arrays and moved to the training
device; each batch is one fancy-index gather there (no per-window Python, no DataLoader workers).
Model: Basset-style CNN (3 conv blocks + 1 dense layer), uint8 tokens [B, L] in (A0 C1 G2 T3 N4,
one-hot inside with N = 0.25), logits [B, 12] out; exported with a sigmoid so the ONNX gives
probabilities. Adam + ReduceLROnPlateau, L2 (weight decay), dropout, reverse-complement
augmentation, early stopping on the validation mean auPRC, best checkpoint kept.

Writes RUN_DIR/{config.json, metrics.csv, best.pt, summary.json, test_predictions.npz} and, with
``--export DIR``, ``DIR/model.onnx`` (checked against torch in ONNX Runtime, max abs diff <= 1e-5).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from brainlib import Index, load_genome, load_index
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

log = logging.getLogger("train")


class BrainCNN(nn.Module):
    """uint8 tokens [B, L] -> logits [B, F] (float32)."""

    def __init__(
        self,
        n_features: int,
        length: int,
        channels: tuple[int, int, int] = (256, 192, 192),
        widths: tuple[int, int, int] = (19, 11, 7),
        pools: tuple[int, int, int] = (3, 4, 4),
        hidden: int = 256,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        table = torch.eye(5, 4)
        table[4] = 0.25
        self.onehot: torch.Tensor
        self.register_buffer("onehot", table)
        layers: list[nn.Module] = []
        c_in, size = 4, length
        for c, w, p in zip(channels, widths, pools, strict=True):
            layers += [
                nn.Conv1d(c_in, c, w, padding=w // 2),
                nn.BatchNorm1d(c),
                nn.ReLU(),
                nn.MaxPool1d(p),
                nn.Dropout(dropout / 3),
            ]
            c_in, size = c, size // p
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * size, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_features),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.onehot[tokens.long()].transpose(1, 2)  # [B, 4, L]
        return self.head(self.conv(x))


class WithSigmoid(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(tokens))


class DeviceGenome:
    """All contigs concatenated into one uint8 tensor on the device; batch gather by index."""

    def __init__(self, genome: dict[str, np.ndarray], device: torch.device) -> None:
        names = sorted(genome)
        offs = np.cumsum([0] + [len(genome[n]) for n in names])
        self.offset = {n: int(o) for n, o in zip(names, offs[:-1], strict=True)}
        self.size = int(offs[-1])
        self.seq = torch.from_numpy(np.concatenate([genome[n] for n in names])).to(device)
        self.device = device

    def global_starts(self, idx: Index) -> torch.Tensor:
        off = np.array([self.offset[c] for c in idx.contig], dtype=np.int64)
        return torch.from_numpy(idx.start + off).to(self.device)

    def windows(self, gstart: torch.Tensor, length: int) -> torch.Tensor:
        pos = gstart[:, None] + torch.arange(length, device=self.device)
        return self.seq[pos.clamp_(0, self.size - 1)]


def rc_tokens(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t < 4, 3 - t, t).flip(-1)


def metrics(y: np.ndarray, p: np.ndarray, features: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for j, f in enumerate(features):
        if 0 < y[:, j].sum() < len(y):
            out[f] = {
                "auroc": float(roc_auc_score(y[:, j], p[:, j])),
                "auprc": float(average_precision_score(y[:, j], p[:, j])),
                "positives": int(y[:, j].sum()),
            }
    return out


def _mean(m: dict[str, dict[str, float]], key: str) -> float:
    return float(np.mean([v[key] for v in m.values()])) if m else float("nan")


@torch.no_grad()
def predict(net: nn.Module, g: DeviceGenome, gs: torch.Tensor, length: int, bs: int) -> np.ndarray:
    net.eval()
    out = []
    for i in range(0, len(gs), bs):
        out.append(torch.sigmoid(net(g.windows(gs[i : i + bs], length)).float()).cpu())
    return torch.cat(out).numpy()


def export_onnx(
    net: nn.Module, length: int, out_path: Path, meta: dict, tol: float = 1e-5
) -> float:
    """Export with sigmoid, dynamic batch, 1-D conv layers as 2-D ones (varfx.training.onnx_layout,
    as ``varfx export`` does); refuse to write when ORT differs from torch by > tol."""
    import onnx
    import onnxruntime as ort

    from varfx.training.onnx_layout import conv1d_as_conv2d

    wrapped = WithSigmoid(net).cpu().eval()
    tmp = out_path.with_suffix(".tmp.onnx")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        wrapped,
        (torch.zeros(2, length, dtype=torch.uint8),),
        str(tmp),
        dynamo=False,
        opset_version=17,
        input_names=["tokens"],
        output_names=["probabilities"],
        dynamic_axes={"tokens": {0: "batch"}, "probabilities": {0: "batch"}},
    )
    model = onnx.load_from_string(conv1d_as_conv2d(tmp.read_bytes()))
    entry = model.metadata_props.add()
    entry.key, entry.value = "varfx", json.dumps({**meta, "conv_layout": "2d"})
    onnx.save(model, str(tmp))
    x = np.random.default_rng(0).integers(0, 5, (16, length), dtype=np.uint8)
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"tokens": x})[0]
    with torch.no_grad():
        want = wrapped(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got - want).max())
    if not diff <= tol:
        tmp.unlink()
        raise RuntimeError(f"ONNX parity check failed: max abs diff {diff:.3g} > {tol:g}")
    tmp.replace(out_path)
    return diff


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-5)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--channels", type=int, nargs=3, default=[256, 192, 192])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-train", type=int, default=0, help="cap train windows (0 = all)")
    ap.add_argument("--max-eval", type=int, default=0, help="cap valid/test windows (0 = all)")
    ap.add_argument(
        "--export", default=None, help="write DIR/model.onnx (e.g. models/brain-hg19/1)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device")
    dev = torch.device(
        "cuda"
        if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    t0 = time.time()
    full = load_index(args.index)
    L, feats = full.length, full.features
    parts = {s: full.subset(s) for s in ("train", "valid", "test")}
    for s, cap in (("train", args.max_train), ("valid", args.max_eval), ("test", args.max_eval)):
        if cap and len(parts[s].start) > cap:
            keep = np.sort(rng.choice(len(parts[s].start), cap, replace=False))
            p = parts[s]
            parts[s] = Index(
                p.contig[keep], p.start[keep], p.labels[keep], p.split[keep], feats, p.meta
            )
    genome: dict[str, np.ndarray] = {}
    for c, fasta in full.meta["fasta"].items():
        genome.update(load_genome(fasta, [c]))
    g = DeviceGenome(genome, dev)
    gs = {s: g.global_starts(p) for s, p in parts.items()}
    y = {s: p.labels for s, p in parts.items()}
    ytrain = torch.from_numpy(y["train"]).float().to(dev)
    log.info(
        "device %s; windows %s; data ready in %.1fs",
        dev,
        {s: len(p.start) for s, p in parts.items()},
        time.time() - t0,
    )

    net = BrainCNN(len(feats), L, tuple(args.channels), hidden=args.hidden, dropout=args.dropout)
    net.to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.3, patience=2)
    loss_fn = nn.BCEWithLogitsLoss()
    run = Path(args.out)
    run.mkdir(parents=True, exist_ok=True)
    config = vars(args) | {
        "features": feats,
        "length": L,
        "split": full.meta["split"],
        "command": " ".join(sys.argv),
    }
    (run / "config.json").write_text(json.dumps(config, indent=2))
    amp = dev.type == "cuda"
    best, best_epoch, rows = -1.0, -1, []
    n = len(gs["train"])
    for epoch in range(1, args.epochs + 1):
        net.train()
        te = time.time()
        perm = torch.randperm(n, device=dev)
        total = 0.0
        for i in range(0, n, args.batch_size):
            b = perm[i : i + args.batch_size]
            if len(b) < 2:
                continue
            x = g.windows(gs["train"][b], L)
            flip = torch.rand(len(b), device=dev) < 0.5
            x = torch.where(flip[:, None], rc_tokens(x), x)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(net(x).float(), ytrain[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        pv = predict(net, g, gs["valid"], L, 1024)
        mv = metrics(y["valid"], pv, feats)
        row = {
            "epoch": epoch,
            "train_loss": total / n,
            "valid_auroc": _mean(mv, "auroc"),
            "valid_auprc": _mean(mv, "auprc"),
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.time() - te,
        }
        rows.append(row)
        log.info(
            "epoch %d loss %.4f valid auROC %.4f auPRC %.4f (%.1fs)",
            epoch,
            row["train_loss"],
            row["valid_auroc"],
            row["valid_auprc"],
            row["seconds"],
        )
        sched.step(row["valid_auprc"])
        if row["valid_auprc"] > best:
            best, best_epoch = row["valid_auprc"], epoch
            torch.save(
                {"model": net.state_dict(), "config": config, "epoch": epoch}, run / "best.pt"
            )
        elif epoch - best_epoch >= args.patience:
            log.info("early stop: no valid auPRC gain for %d epochs", args.patience)
            break
    with (run / "metrics.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    net.load_state_dict(torch.load(run / "best.pt", map_location=dev)["model"])
    pt = predict(net, g, gs["test"], L, 1024)
    mt = metrics(y["test"], pt, feats)
    np.savez_compressed(
        run / "test_predictions.npz",
        prob=pt,
        labels=y["test"],
        contig=parts["test"].contig,
        start=parts["test"].start,
    )
    summary = {
        "test": mt,
        "test_mean_auroc": _mean(mt, "auroc"),
        "test_mean_auprc": _mean(mt, "auprc"),
        "best_epoch": best_epoch,
        "best_valid_mean_auprc": best,
        "split": full.meta["split"],
        "windows": {s: len(p.start) for s, p in parts.items()},
        "seconds": time.time() - t0,
        "device": str(dev),
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "test mean auROC %.4f auPRC %.4f", summary["test_mean_auroc"], summary["test_mean_auprc"]
    )
    if args.export:
        meta = {
            "features": feats,
            "sequence_length": L,
            "alphabet": "ACGT",
            "output": "probabilities",
            "assembly": "GRCh37",
            "training_summary": {
                "per_feature_test": mt,
                "test_mean_auroc": summary["test_mean_auroc"],
                "test_mean_auprc": summary["test_mean_auprc"],
                "split": full.meta["split"],
                "label_rule": full.meta["label_rule"],
            },
            "provenance": {
                "trained_by": "research/brain/train.py",
                "git_commit": _git_commit(),
                "command": " ".join(sys.argv),
                "prepare_command": full.meta["command"],
                "data": {"fasta": full.meta["fasta"], "peaks": full.meta["peak_files"]},
                "source": "Nott et al., Science 2019 (doi:10.1126/science.aay0793)",
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "device": str(dev),
            },
        }
        diff = export_onnx(net, L, Path(args.export) / "model.onnx", meta)
        log.info(
            "exported %s (ORT vs torch max abs diff %.2g)", Path(args.export) / "model.onnx", diff
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
