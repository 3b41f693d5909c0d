"""One GPU check for issue 19 items 3 and 4 (fp16 and device windows), for a session with a GPU.

Run on the GPU machine (onnxruntime-gpu from ``varfx[gpu]``, torch for the matmul roofline)::

    python -m bench.gpu_check --out bench/out/gpu_check          # ~4-6 min on one H100/H200
    python -m bench.gpu_check --out /tmp/gc --device cpu --quick  # CPU smoke run of the same code

It measures, on the DeepSEA-size net (random weights, L=1000, F=919; bench/_nets.py):

1. bare ONNX Runtime windows/s, fp32 vs fp16 graph, batch 256 and 1024 (``ModelRunner``);
2. parity: fp16 on the device vs fp32 on the CPU, and fp32 device vs CPU, max abs diff of
   probabilities on random windows;
3. device windows vs host windows: SNV batches scored from window descriptions through the
   gather graph (``ModelRunner.predict_rows``) vs host-built windows (``build_windows`` +
   ``predict``), variants/s, and whether the windows are equal byte for byte;
4. ``varfx score`` end to end (a VCF of distinct SNVs on a simulated genome, a real server on
   loopback) with ``--precision fp32``, ``auto`` (fp16), and ``auto`` with ``--device-windows``
   (``auto`` on CUDA, ``on`` for the CPU smoke run: ScoreVariants sends the SNVs to the batcher
   as row descriptions and the windows are built on the device), variants/s, and whether the
   device-window run wrote the same VCF bytes as the host-window run;
5. the fp16 dense-matmul roofline (torch) and the fraction of it each rate reaches
   (2 x MACs per window x windows/s; ``bench/_flops.model_macs``).

The fp16 graph of a random-weight net has no labelled validation windows; its check uses the
fp32 graph's own predictions plus noise (> per-feature median) as labels on random windows, so the server
will serve it (speed only: not a claim about accuracy; the committed models' checks use real
validation windows). Results: ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench.gpu_check")


def _fp16_beside(model_path: Path, length: int, n_features: int) -> dict[str, Any]:
    """Write model.fp16.onnx beside the bench model with a bench check (see module doc)."""
    import onnx

    from varfx.training.fp16 import (
        ValidationWindows,
        check_fp16,
        fp16_compute_graph,
        write_fp16_file,
    )

    fp32 = model_path.read_bytes()
    half = fp16_compute_graph(fp32)
    import onnxruntime as ort

    rng = np.random.default_rng(7)
    tokens = rng.integers(0, 4, (512, length), dtype=np.uint8)
    s = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"])
    probs = s.run(None, {"tokens": tokens})[0]
    noisy = probs + rng.normal(0, 1, probs.shape) * 0.3 * probs.std(axis=0)
    labels = (noisy > np.median(probs, axis=0)).astype(np.uint8)
    valid = ValidationWindows(tokens, labels, "bench: noisy fp32 predictions > median (speed only)")
    features = [f"f{i}" for i in range(n_features)]
    check = check_fp16(fp32, half, length, features, valid, n_random=128)
    meta = json.loads({p.key: p.value for p in onnx.load(str(model_path)).metadata_props}["varfx"])
    write_fp16_file(model_path.with_name("model.fp16.onnx"), half, meta, check)
    return check


def _rate(fn: Any, n_rows: int, seconds: float) -> float:
    fn()  # first call: shape setup
    t0, reps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds or reps < 2:
        fn()
        reps += 1
    return n_rows * reps / (time.perf_counter() - t0)


def _bare(
    entry: Any, device: str, seconds: float, batches: list[int], length: int
) -> dict[str, Any]:
    from varfx.server.runtime import ModelRunner

    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    cpu32 = ModelRunner(entry, "cpu", precision="fp32")
    probe = rng.integers(0, 5, (256, length), dtype=np.uint8)
    ref = cpu32.predict(probe)
    for precision in ("fp32", "fp16"):
        runner = ModelRunner(entry, device, precision=precision)
        runner.warmup(batches)
        row: dict[str, Any] = {"device": runner.device, "precision": runner.precision}
        for b in batches:
            x = rng.integers(0, 4, (b, length), dtype=np.uint8)
            row[f"windows_per_s_b{b}"] = _rate(lambda r=runner, x=x: r.predict(x), b, seconds)
        row["max_abs_diff_vs_cpu_fp32"] = float(np.abs(runner.predict(probe) - ref).max())
        out[precision] = row
        log.info("bare ORT %s: %s", precision, row)
    return out


def _device_windows(entry: Any, device: str, genome_path: Path, seconds: float,
                    batch: int) -> dict[str, Any]:  # fmt: skip
    from varfx.core.variants import VariantBatch
    from varfx.server.genome import Genome
    from varfx.server.runtime import ModelRunner
    from varfx.server.windows import build_windows

    out: dict[str, Any] = {}
    with Genome(genome_path) as genome:
        contig = next(iter(genome.contigs))
        size = genome.contigs[contig]
        rng = np.random.default_rng(3)
        pos = rng.integers(1, size + 1, batch)
        refs = [genome.fetch(contig, int(p) - 1, int(p)).decode() for p in pos]
        alts = ["ACGT"[("ACGT".index(r) + 1) % 4] for r in refs]
        variants = VariantBatch.from_columns([contig] * batch, pos, refs, alts)
        alt_tok = np.array(["ACGT".index(a) for a in alts], dtype=np.uint8)
        for precision in ("fp32", "fp16"):
            runner = ModelRunner(entry, device, precision=precision)
            runner.warmup([2 * batch])
            t0 = time.perf_counter()
            runner.attach_device_windows(genome, [contig], 4 << 30)
            dw = runner.device_windows
            attach_s = time.perf_counter() - t0
            rows = dw.snv_rows(contig, pos, alt_tok)
            host = build_windows(genome, variants, runner.spec.sequence_length)
            same = bool(np.array_equal(dw.windows(rows), host.both))

            def on_host(r: Any = runner) -> Any:
                w = build_windows(genome, variants, r.spec.sequence_length)
                return r.predict(w.both)

            def on_device(r: Any = runner) -> Any:
                return r.predict_rows(r.device_windows.snv_rows(contig, pos, alt_tok))

            diff = float(np.abs(on_host() - on_device()).max())
            row = {
                "host_windows_variants_per_s": _rate(on_host, batch, seconds),
                "device_windows_variants_per_s": _rate(on_device, batch, seconds),
                "windows_equal": same,
                "max_abs_diff_device_vs_host": diff,
                "genome_bytes_on_device": dw.nbytes,
                "attach_s": attach_s,
                "device": dw.device,
            }
            out[precision] = row
            log.info("device windows %s: %s", precision, row)
    return out


def _score(model_repo: Path, genome_path: Path, device: str, precision: str,
           vcf: Path, n: int, device_windows: str = "off") -> dict[str, Any]:  # fmt: skip
    import grpc

    from bench._peers import varfx_score
    from varfx.proto.v1 import varfx_pb2 as pb
    from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
    from varfx.server import ServerConfig, start_in_thread

    config = ServerConfig(
        model_repo=model_repo, genome=genome_path, allow_genome_mismatch=True, host="127.0.0.1",
        port=0, metrics_port=-1, device=device, precision=precision, max_batch=1024,
        max_delay_ms=2.0, max_queue=1 << 16, ref_cache_mb=0,
        warmup_batch_sizes=(2, 256, 1024), device_windows=device_windows,
    )  # fmt: skip
    out = vcf.with_suffix(f".{precision}.{device_windows}.scored.vcf.gz")
    with start_in_thread(config) as srv:
        res = dict(varfx_score(srv.target, vcf, out, n))
        channel = grpc.insecure_channel(srv.target)
        models = pb_grpc.VariantEffectServiceStub(channel).ListModels(pb.ListModelsRequest())
        channel.close()
    res["device_windows"] = device_windows
    # whether the genome was resident on the device (the SNVs were sent as descriptions)
    res["genome_on_device"] = all(m.device_windows for m in models.models)
    res["output"] = str(out)
    log.info("varfx score %s device_windows=%s: %s", precision, device_windows, res)
    return res


def _score_rows(
    repo: Path, genome_path: Path, device: str, vcf: Path, n: int
) -> dict[str, dict[str, Any]]:
    """``varfx score`` with fp32, auto (fp16 on CUDA), and auto with device windows."""
    import gzip

    dw = "auto" if device == "cuda" else "on"  # "on": the same code path on the CPU
    rows = {p: _score(repo, genome_path, device, p, vcf, n) for p in ("fp32", "auto")}
    rows["auto+device_windows"] = row = _score(repo, genome_path, device, "auto", vcf, n, dw)

    def body(path: str) -> list[bytes]:  # records only: the header names the run's settings
        with gzip.open(path) as fh:
            return [line for line in fh if not line.startswith(b"#")]

    row["same_records_as_host_windows"] = body(row["output"]) == body(rows["auto"]["output"])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes (a CPU smoke run)")
    ap.add_argument("--model", default="deepsea", help="bench/_nets.py size (deepsea)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import onnxruntime as ort

    from bench._data import SimGenome, distinct_sites, write_vcf
    from bench._flops import model_macs
    from bench._nets import prepare_model
    from varfx.server.repository import scan_repository

    if args.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        sys.stderr.write(
            f"no CUDAExecutionProvider (have {ort.get_available_providers()}); install "
            "varfx[gpu] (onnxruntime-gpu), or run with --device cpu --quick\n"
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = 0.5 if args.quick else 5.0
    batches = [16, 64] if args.quick else [256, 1024]
    n_score = 2_000 if args.quick else 100_000
    report: dict[str, Any] = {
        "device": args.device, "quick": args.quick, "model": args.model,
        "onnxruntime": ort.__version__, "providers": ort.get_available_providers(),
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model = prepare_model(args.model, tmp / "repos", root=Path.cwd())
        report["model_source"] = model.source
        report["fp16_check"] = _fp16_beside(model.path, model.length, model.n_features)
        macs = model_macs(model.path)
        report["macs_per_window"] = macs
        entry = scan_repository(model.path.parents[2])[0]
        genome = SimGenome(tmp, size=200_000 if args.quick else 2_000_000)
        vcf = tmp / "snvs.vcf"
        n = write_vcf(vcf, genome, distinct_sites(genome, n_score))
        repo = model.path.parents[2]
        stages = {
            "bare_ort": lambda: _bare(entry, args.device, seconds, batches, model.length),
            "device_windows": lambda: _device_windows(
                entry, args.device, genome.path, seconds, batches[-1] // 2
            ),
            "varfx_score": lambda: _score_rows(repo, genome.path, args.device, vcf, n),
        }
        for key, stage in stages.items():  # one failing stage leaves the others' numbers
            try:
                report[key] = stage()
            except Exception as exc:
                log.exception("stage %s failed", key)
                report[key] = {"error": {"error": f"{type(exc).__name__}: {exc}"}}
            (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    if args.device == "cuda":
        from bench._gpu import matmul_roofline

        try:
            roof = matmul_roofline(seconds=2.0)
        except Exception as exc:  # no CUDA torch here: the rest of the report stands
            log.error("matmul roofline failed (%s): no fraction of the roofline", exc)
            roof = {"fp16": float("nan"), "error": str(exc)}  # type: ignore[dict-item]
        report["matmul_tflops"] = roof
        fp16_peak = roof["fp16"] * 1e12
        fractions: dict[str, float] = {}
        for p, row in report["bare_ort"].items():
            for k, v in row.items():
                if k.startswith("windows_per_s") and isinstance(v, float):
                    fractions[f"bare_{p}_{k}"] = 2 * macs * v / fp16_peak
        for p, row in report["varfx_score"].items():
            if isinstance(row.get("variants_per_s"), float):  # 2 windows per variant
                fractions[f"score_{p}"] = 2 * macs * 2 * row["variants_per_s"] / fp16_peak
        report["fraction_of_fp16_roofline"] = fractions
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [f"# GPU check ({args.device}{', quick' if args.quick else ''})", ""]
    lines.append(f"model: {model.source}; {macs / 1e9:.2f} GMAC/window")
    for p, row in report["bare_ort"].items():
        lines.append(f"- bare ORT {p}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float)
                                                     else f"{k} {v}" for k, v in row.items()))  # fmt: skip
    for p, row in report["device_windows"].items():
        lines.append(f"- device windows {p}: {row}")
    for p, row in report["varfx_score"].items():
        extra = f" (same records as host windows: {row['same_records_as_host_windows']})" if (
            "same_records_as_host_windows" in row
        ) else ""  # fmt: skip
        lines.append(f"- varfx score {p}: {row.get('variants_per_s')} variants/s{extra}")
    if "fraction_of_fp16_roofline" in report:
        lines.append(f"- matmul TFLOP/s: {report['matmul_tflops']}")
        lines.append(f"- fraction of the fp16 roofline: {report['fraction_of_fp16_roofline']}")
    (args.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
