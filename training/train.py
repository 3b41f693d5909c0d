"""The training loop behind ``varfx train``.

Adam with L2 (``weight_decay``) and dropout, a learning-rate schedule (ReduceLROnPlateau on the
validation mean auPRC, or cosine), early stopping on validation mean auPRC, a checkpoint every
epoch (``last.pt``) plus the best one (``best.pt``), resume, seeds, CPU or CUDA.

Run directory (``TrainConfig.out``): ``config.json``, ``index.npz`` (the window index),
``metrics.csv`` (one row per epoch), ``last.pt``, ``best.pt``, ``learning_curves.png``,
``test_roc.png``, ``test_pr.png`` and ``summary.json`` (per-feature test auROC/auPRC, split,
data provenance).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from varfx.training._fasta import FastaTokens
from varfx.training.dataset import IndexConfig, SplitSpec, WindowDataset, WindowIndex, build_index
from varfx.training.errors import DataError, TrainingError
from varfx.training.evaluate import Metrics, per_feature_metrics, plot_learning_curves, plot_roc_pr
from varfx.training.models import ModelConfig, build_model
from varfx.training.peaks import PeakSet

__all__ = ["METRICS_COLUMNS", "TrainConfig", "TrainResult", "resolve_device", "train"]

log = logging.getLogger(__name__)

METRICS_COLUMNS = (
    "epoch",
    "train_loss",
    "valid_loss",
    "valid_auroc",
    "valid_auprc",
    "lr",
    "seconds",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs (typed plain data; saved as config.json).

    Lengths in bp; ``lr`` per step; ``weight_decay`` is Adam's L2 coefficient. ``genome`` is one
    or more FASTA paths (several files form one genome).
    """

    genome: tuple[str, ...]
    peaks: tuple[str, ...]
    out: str
    model: ModelConfig = field(default_factory=ModelConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    split: SplitSpec = field(default_factory=SplitSpec)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-6
    scheduler: str = "plateau"
    patience: int = 3
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    reverse_complement: bool = False
    num_workers: int = 0
    threads: int = 0
    assembly: str = "unknown"
    progress: bool = True
    command: str = ""
    feature_names: tuple[str, ...] | None = None
    allow_peaks_past_end: bool = False
    evaluate_test: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.genome, (str, Path)):  # one FASTA given as a plain path
            object.__setattr__(self, "genome", (str(self.genome),))

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise DataError(f"lr must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise DataError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.scheduler not in ("plateau", "cosine"):
            raise DataError(f"scheduler must be plateau or cosine, got {self.scheduler!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise DataError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if not self.split.valid or not self.split.test:
            raise DataError("give held-out validation and test chromosomes or regions")
        self.split.check_disjoint()
        self.index.validate()

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_json()
        d["split"] = self.split.to_json()
        d["peaks"] = list(self.peaks)
        d["genome"] = list(self.genome)
        d["feature_names"] = list(self.feature_names) if self.feature_names else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["model"] = ModelConfig.from_json(d["model"])
        d["index"] = IndexConfig(**d["index"])
        d["split"] = SplitSpec.from_json(d["split"])
        d["peaks"] = tuple(d["peaks"])
        d["genome"] = (d["genome"],) if isinstance(d["genome"], str) else tuple(d["genome"])
        if d.get("feature_names"):
            d["feature_names"] = tuple(d["feature_names"])
        return cls(**d)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of a run: its directory, epochs run, best epoch, the test metrics (None with
    ``evaluate_test=False``) and the best checkpoint's validation metrics."""

    run_dir: Path
    epochs_run: int
    best_epoch: int
    best_valid_auprc: float
    test: Metrics | None
    valid: Metrics


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU raises TrainingError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but torch sees no CUDA device")
    return torch.device(name)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _provenance(cfg: TrainConfig, peak_files: list[Path]) -> dict[str, Any]:
    genomes = [Path(g) for g in cfg.genome]
    fais = [Path(str(g) + ".fai") for g in genomes]
    one = len(genomes) == 1
    names = [str(g.resolve()) for g in genomes]
    sizes = [g.stat().st_size for g in genomes]
    digests = [_file_digest(f) if f.is_file() else None for f in fais]
    return {
        "genome": names[0] if one else names,
        "genome_bytes": sizes[0] if one else sizes,
        "genome_fai_sha256": digests[0] if one else digests,
        "peaks": {str(p.resolve()): _file_digest(p) for p in peak_files},
    }


# settings a resumed run may change; everything else must match the run's config.json
_RESUMABLE = ("epochs", "patience", "device", "num_workers", "threads", "progress", "command",
              "resume", "out", "evaluate_test")  # fmt: skip


def _check_resume(cfg: TrainConfig, run: Path) -> None:
    """Refuse --resume with settings other than the run's (before anything is written).

    Raises:
        TrainingError: no config.json / last.pt; DataError: settings that differ, named.
    """
    path = run / "config.json"
    if not path.is_file() or not (run / "last.pt").is_file():
        raise TrainingError(f"--resume: {run} has no config.json and last.pt to resume from")
    old = json.loads(path.read_text())
    new = json.loads(json.dumps(cfg.to_json()))
    try:
        saved_model = ModelConfig.from_json(old["model"])
        want = ModelConfig(**{**cfg.model.to_json(), "n_features": saved_model.n_features})
        new["model"] = json.loads(json.dumps(want.resolved().to_json()))
    except (KeyError, TypeError) as exc:
        raise TrainingError(f"--resume: cannot read {path}: {exc}") from exc
    diff = [
        f"{k}: run has {old.get(k)!r}, now {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if k not in _RESUMABLE and old.get(k) != new.get(k)
    ]
    if diff:
        raise DataError(f"--resume with settings other than {path}: " + "; ".join(diff))


def _check_positives(index: WindowIndex, files: list[Path]) -> None:
    """Refuse a feature with no positive window in a split (its auROC would be NaN)."""
    for s in ("train", "valid", "test"):
        counts = index.labels[index.rows(s)].sum(axis=0)
        for j in np.flatnonzero(counts == 0):
            src = f" ({files[j]})" if j < len(files) else ""
            raise DataError(
                f"feature {index.features[j]!r}{src} has no positive window in the {s} split; "
                "remove its peak file, or check its contig names and the held-out regions"
            )


def _loader(ds: WindowDataset, cfg: TrainConfig, shuffle: bool, device: torch.device) -> DataLoader:
    gen = torch.Generator()
    gen.manual_seed(cfg.seed)
    return DataLoader(
        ds,  # type: ignore[arg-type]
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        num_workers=cfg.num_workers,
        generator=gen,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init,
    )


def _rng_states(loader: DataLoader, ds: WindowDataset) -> dict[str, Any]:
    """Every random state a training epoch draws from: shuffle, augmentation, dropout."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "shuffle": loader.generator.get_state() if loader.generator is not None else None,
        "augment": ds._rng.bit_generator.state,
    }


def _set_rng_states(states: dict[str, Any], loader: DataLoader, ds: WindowDataset) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if states["shuffle"] is not None and loader.generator is not None:
        loader.generator.set_state(states["shuffle"])
    ds._rng.bit_generator.state = states["augment"]


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    if info is not None:
        ds = info.dataset
        ds._rng = np.random.default_rng(info.seed % 2**32)  # type: ignore[attr-defined]


def _evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device, loss_fn: nn.Module
) -> tuple[float, np.ndarray]:
    """Mean loss and sigmoid outputs float32 [N, F] over a loader."""
    model.eval()
    total, n, parts = 0.0, 0, []
    with torch.no_grad():
        for tokens, labels in loader:
            logits = model(tokens.to(device, non_blocking=True))
            y = labels.to(device, non_blocking=True)
            total += float(loss_fn(logits, y)) * len(y)
            n += len(y)
            parts.append(torch.sigmoid(logits).float().cpu().numpy())
    return total / max(n, 1), np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _prepare_index(
    cfg: TrainConfig, run: Path, genome: FastaTokens
) -> tuple[WindowIndex, list[Path]]:
    from varfx.training.peaks import find_peak_files

    files = find_peak_files(cfg.peaks)
    path = run / "index.npz"
    if cfg.resume and path.is_file():
        return WindowIndex.load(path), files
    peaks = PeakSet.load(
        files, genome.lengths, cfg.feature_names, allow_past_end=cfg.allow_peaks_past_end
    )
    index = build_index(genome, peaks, cfg.split, cfg.index)
    if any(peaks.past_end):
        index.stats["peaks_past_contig_end"] = dict(
            zip(peaks.features, peaks.past_end, strict=True)
        )
    _check_positives(index, files)
    index.save(path)
    return index, files


def train(cfg: TrainConfig) -> TrainResult:
    """Run one training job (or resume one) and evaluate the best model on the test split.

    Raises:
        DataError: bad settings or inputs; TrainingError: resume without a checkpoint, no CUDA.
    """
    cfg.validate()
    run = Path(cfg.out)
    if cfg.index.length != cfg.model.sequence_length:
        raise DataError(
            f"window length {cfg.index.length} differs from model sequence_length "
            f"{cfg.model.sequence_length}"
        )
    if cfg.resume:
        _check_resume(cfg, run)
    device = resolve_device(cfg.device)
    genome = FastaTokens(cfg.genome)
    run.mkdir(parents=True, exist_ok=True)
    _seed_everything(cfg.seed)
    if cfg.threads > 0:  # intra-op threads; 1 is much faster on a busy shared CPU
        torch.set_num_threads(cfg.threads)
    index, peak_files = _prepare_index(cfg, run, genome)
    mcfg = ModelConfig(**{**cfg.model.to_json(), "n_features": len(index.features)}).resolved()
    mcfg = ModelConfig.from_json(mcfg.to_json())
    (run / "config.json").write_text(
        json.dumps({**cfg.to_json(), "model": mcfg.to_json()}, indent=2) + "\n"
    )
    for split in ("train", "valid", "test"):
        if len(index.rows(split)) == 0:
            raise DataError(f"the {split} split has no windows; check the held-out chromosomes")
    train_ds = WindowDataset(
        genome, index, "train", reverse_complement=cfg.reverse_complement, seed=cfg.seed
    )
    valid_ds = WindowDataset(genome, index, "valid")
    test_ds = WindowDataset(genome, index, "test")
    train_dl = _loader(train_ds, cfg, True, device)
    valid_dl = _loader(valid_ds, cfg, False, device)

    model = build_model(mcfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched: Any
    if cfg.scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=1)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    loss_fn = nn.BCEWithLogitsLoss()
    start, best, best_epoch, bad = 1, -math.inf, 0, 0
    last_path, best_path, csv_path = run / "last.pt", run / "best.pt", run / "metrics.csv"
    if cfg.resume:
        if not last_path.is_file():
            raise TrainingError(f"--resume: no checkpoint {last_path}")
        ck = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start, best, best_epoch, bad = ck["epoch"] + 1, ck["best"], ck["best_epoch"], ck["bad"]
        _set_rng_states(ck["rng"], train_dl, train_ds)
        log.info("resumed from %s at epoch %d", last_path, start)
    elif csv_path.exists():
        csv_path.unlink()
    if not csv_path.exists():
        with csv_path.open("w", newline="") as fh:
            csv.writer(fh).writerow(METRICS_COLUMNS)

    done = start - 1  # last finished epoch
    for epoch in range(start, cfg.epochs + 1):
        if bad >= cfg.patience:
            break
        t0 = time.perf_counter()
        model.train()
        total, n = 0.0, 0
        bar = tqdm(train_dl, desc=f"epoch {epoch}/{cfg.epochs}", disable=not cfg.progress)
        for tokens, labels in bar:
            y = labels.to(device, non_blocking=True)
            logits = model(tokens.to(device, non_blocking=True))
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
            bar.set_postfix(loss=f"{total / n:.4f}")
        valid_loss, probs = _evaluate(model, valid_dl, device, loss_fn)
        vm = per_feature_metrics(valid_ds.labels(), probs, index.features)
        score = vm.mean_auprc if not math.isnan(vm.mean_auprc) else -valid_loss
        lr = opt.param_groups[0]["lr"]
        if cfg.scheduler == "plateau":
            sched.step(score)
        else:
            sched.step()
        seconds = time.perf_counter() - t0
        bar.write(
            f"epoch {epoch}: train loss {total / max(n, 1):.4f}, valid loss {valid_loss:.4f}, "
            f"valid mean auROC {vm.mean_auroc:.4f} auPRC {vm.mean_auprc:.4f} ({seconds:.1f} s)"
        )
        with csv_path.open("a", newline="") as fh:
            csv.writer(fh).writerow(
                [epoch, f"{total / max(n, 1):.6f}", f"{valid_loss:.6f}", f"{vm.mean_auroc:.6f}",
                 f"{vm.mean_auprc:.6f}", f"{lr:.3g}", f"{seconds:.2f}"]
            )  # fmt: skip
        if score > best:
            best, best_epoch, bad = score, epoch, 0
            torch.save({"model": model.state_dict(), "model_config": mcfg.to_json(),
                        "features": list(index.features), "epoch": epoch}, best_path)  # fmt: skip
        else:
            bad += 1
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "model_config": mcfg.to_json(),
                "features": list(index.features),
                "epoch": epoch,
                "best": best,
                "best_epoch": best_epoch,
                "bad": bad,
                "rng": _rng_states(train_dl, train_ds),
            },
            last_path,
        )
        plot_learning_curves(csv_path, run / "learning_curves.png")
        done = epoch

    # validation metrics of the best checkpoint; test metrics unless the locked protocol owns them
    model.load_state_dict(torch.load(best_path, map_location=device, weights_only=False)["model"])
    _, valid_probs = _evaluate(model, valid_dl, device, loss_fn)
    best_valid = per_feature_metrics(valid_ds.labels(), valid_probs, index.features)
    tm: Metrics | None = None
    test_loss: float | None = None
    if cfg.evaluate_test:
        test_dl = _loader(test_ds, cfg, False, device)
        test_loss, test_probs = _evaluate(model, test_dl, device, loss_fn)
        tm = per_feature_metrics(test_ds.labels(), test_probs, index.features)
        plot_roc_pr(test_ds.labels(), test_probs, index.features, run)
    summary = {
        "features": list(index.features),
        "sequence_length": mcfg.sequence_length,
        "assembly": cfg.assembly,
        "arch": mcfg.arch,
        "best_epoch": best_epoch,
        "epochs_run": done,
        "best_valid_mean_auprc": best,
        "valid": best_valid.to_json(),
        "test_loss": test_loss,
        "test": tm.to_json() if tm is not None else None,
        "split": cfg.split.to_json(),
        "windows": {k: v for k, v in index.stats.items()},
        "data": _provenance(cfg, peak_files),
        "command": cfg.command,
    }
    if tm is None:
        summary["test_note"] = "not evaluated (--skip-test): the locked protocol, varfx evaluate"
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if tm is not None:
        log.info("test mean auROC %.4f auPRC %.4f", tm.mean_auroc, tm.mean_auprc)
    return TrainResult(run, done, best_epoch, best, tm, best_valid)
