"""Local recomputation (server/local_compute.py) against two full passes, single-threaded.

Rows 1-3: SNVs on random windows, variants/s of bare ONNX Runtime running ref and alt windows in
full (256 rows a run) against ``LocalRecompute.predict_pairs`` on the same rows (ref windows in
full with their feature maps, alts locally), for the default model (models/sim-chromatin),
Basset-size and DeepSEA-size networks (random weights, ``bench/_nets.py``), with the
multiply-accumulates per variant both ways. Row 4: ISM +-50 bp (``varfx explain``'s
ExplainVariant) on models/brain-hg19 v2 over real GRCh37 chr20, a server with local
recomputation against one without (the same mutants as full passes), and the largest ISM
difference between the two.

    OPENBLAS_NUM_THREADS=1 nice .venv/bin/python -m bench.local_recompute [--variants 512]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # numpy's matrix products on one thread, like ORT below

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GENOME = Path("/work/shared/data/real/hg19_ref_debian/vt-examples.20.fa.gz")
BRAIN = ROOT / "models/brain-hg19/2/model.onnx"


def _runner(path: Path) -> Any:
    from varfx.server.repository import scan_repository
    from varfx.server.runtime import ModelRunner

    entry = next(e for e in scan_repository(path.parents[2], {}) if e.path == path)
    return ModelRunner(entry, "cpu", intra_op_threads=1)


def snv_row(name: str, path: Path, n: int, rounds: int) -> dict[str, Any]:
    """variants/s, two full passes vs local, on n random SNVs (median of ``rounds``)."""
    from varfx.server.local_compute import load_local

    runner = _runner(path)
    local = load_local(path, runner.predict, name=name, logits=False, intra_op_threads=1)
    if local is None:
        raise SystemExit(f"{name}: no local path")
    length = runner.spec.sequence_length
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 4, size=(n, length), dtype=np.uint8)
    alt = ref.copy()
    pos = rng.integers(0, length, n)
    alt[np.arange(n), pos] = (alt[np.arange(n), pos] + 1 + rng.integers(0, 3, n)) % 4
    tokens = np.concatenate([ref, alt])
    pairs = np.concatenate([np.full(n, -1), np.arange(n)]).astype(np.int64)
    full_s, local_s, diff = [], [], 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        want = np.concatenate([runner.predict(tokens[i : i + 256]) for i in range(0, 2 * n, 256)])
        t1 = time.perf_counter()
        got = local.predict_pairs(tokens, pairs)
        t2 = time.perf_counter()
        full_s.append(t1 - t0)
        local_s.append(t2 - t1)
        diff = max(diff, float(np.abs(got - want).max()))
    full, loc = statistics.median(full_s), statistics.median(local_s)
    return {
        "model": name,
        "L": length,
        "features": len(runner.spec.features),
        "full_variants_per_s": n / full,
        "local_variants_per_s": n / loc,
        "ratio": full / loc,
        "gflop_per_variant_full": 2 * 2 * local.full_macs / 1e9,
        "gflop_per_variant_local": 2 * (local.full_macs + local.local_macs) / 1e9,
        "max_abs_diff": diff,
    }


def ism_row(rounds: int, window: int = 50) -> dict[str, Any]:
    """ExplainVariant +-window on brain-hg19 over real chr20: local vs full passes."""
    import grpc

    from varfx.proto.v1 import varfx_pb2 as pb
    from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
    from varfx.server import ServerConfig, start_in_thread
    from varfx.server.genome import Genome

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        (repo / "brain-hg19" / "2").mkdir(parents=True)
        for f in BRAIN.parent.iterdir():
            (repo / "brain-hg19" / "2" / f.name).symlink_to(f)
        positions = (30_000_001, 31_500_001, 44_000_001)
        out: dict[str, Any] = {}
        isms: dict[str, list[np.ndarray]] = {}
        for mode in ("auto", "off"):
            config = ServerConfig(
                model_repo=repo, genome=GENOME, host="127.0.0.1", port=0, metrics_port=-1,
                intra_op_threads=1, max_batch=256, allow_genome_mismatch=True,
                local_recompute=mode, ref_cache_mb=0,
            )  # fmt: skip
            with start_in_thread(config) as server, Genome(GENOME) as g:
                stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
                requests = []
                for pos in positions:
                    ref = bytes(g.fetch("20", pos - 1, pos)).decode().upper()
                    alt = "ACGT"[("ACGT".index(ref) + 1) % 4]
                    v = pb.Variant(chrom="20", pos=pos, ref=ref, alt=alt)
                    requests.append(
                        pb.ExplainVariantRequest(variant=v, window=window, no_motifs=True)
                    )
                stub.ExplainVariant(requests[0])  # warm-up
                times, isms[mode] = [], []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    resp = [stub.ExplainVariant(r) for r in requests]
                    times.append((time.perf_counter() - t0) / len(requests))
                bad = [r.status.message for r in resp if r.status.code != pb.OK]
                if bad:
                    raise SystemExit(f"ExplainVariant failed: {bad[0]}")
                isms[mode] = [np.frombuffer(r.ref_ism + r.alt_ism, "<f4") for r in resp]
                local = server.handle.models["brain-hg19"].local
                out[mode] = {
                    "explains_per_s": 1 / statistics.median(times),
                    "local_rows": local.local_rows if local is not None else 0,
                }
        diff = max(
            float(np.abs(a - b).max()) for a, b in zip(isms["auto"], isms["off"], strict=True)
        )
        return {
            "model": "brain-hg19 v2 ISM +-50",
            "local_explains_per_s": out["auto"]["explains_per_s"],
            "full_explains_per_s": out["off"]["explains_per_s"],
            "mutants_per_explain": 2 * (2 * window + 1) * 3,
            "ratio": out["auto"]["explains_per_s"] / out["off"]["explains_per_s"],
            "max_abs_ism_diff": diff,
            "local_rows": out["auto"]["local_rows"],
            "max_abs_ism": max(float(np.abs(a).max()) for a in isms["off"]),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=("default", "basset", "deepsea", "ism"), nargs="*")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    from bench._nets import SIZES, build_network, export_onnx

    rows = []
    want = set(args.only or ("default", "basset", "deepsea", "ism"))
    with tempfile.TemporaryDirectory() as tmp:
        if "default" in want:
            rows.append(
                snv_row(
                    "default",
                    ROOT / "models/sim-chromatin/1/model.onnx",
                    args.variants,
                    args.rounds,
                )
            )
        for key in ("basset", "deepsea"):
            if key in want:
                arch, length, features = SIZES[key]
                net, _ = build_network(arch, length, features)
                path = export_onnx(net, Path(tmp), key, length, features)
                rows.append(snv_row(f"{key}-size", path, args.variants, args.rounds))
    if "ism" in want and GENOME.is_file() and BRAIN.is_file():
        rows.append(ism_row(args.rounds))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 thread")
    for r in rows:
        print(
            json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in r.items()})
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
