"""varfx benchmark harness: bare ONNX Runtime, the varfx server, ``varfx score`` and a torch-eager
peer, side by side in one run on the same machine and models.

    .venv/bin/python -m bench.run --device cpu --models default,basset,deepsea --out bench/out
    .venv/bin/python -m bench.run --device cuda --models default,deepsea --quick --out bench/out-gpu

Run from the repository root. Writes ``<out>/results.json``, ``<out>/results.md`` and PNG plots;
``--docs docs/benchmarks.md`` also writes the benchmark page (plots copied beside it).
Basset/DeepSEA-size models have random weights (speed only). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import _report
from bench._data import SimGenome, distinct_sites, multiallelic_sites, write_vcf
from bench._flops import model_macs
from bench._load import measure_load
from bench._nets import BenchModel, layout_pair, prepare_model
from bench._peers import (
    bare_ort_sweep,
    ort_session,
    torch_peer,
    varfx_score,
    varfx_score_available,
)

__all__ = ["Knobs", "main", "run_benchmarks"]

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Knobs:
    """How long and how hard to measure (``--quick`` shrinks them)."""

    window_s: float  # shortest measurement window, seconds
    cap_s: float  # time cap of one measurement (it stops earlier once 3 windows agree)
    concurrency: tuple[int, ...]
    batch_sizes: tuple[int, ...]  # bare-ORT sweep, windows per run
    score_variants: int  # VCF size for `varfx score` (>= 20,000 in full runs)
    score_cap_s: float  # shrink the VCF for slow models so `varfx score` takes about this long
    max_batch: int
    max_delay_ms: float
    peer_batch: int  # torch peer: variants per batch
    gpu_memory_s: float
    profile_s: float  # py-spy the server for this long (0 = no profile)
    ab_rounds: int  # interleaved rounds of the paired batching / metrics comparisons


def knobs_from(args: argparse.Namespace) -> Knobs:
    quick = args.quick
    return Knobs(
        window_s=args.window_s or (0.5 if quick else 1.0),
        cap_s=args.cap_s or (5.0 if quick else 20.0),
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        batch_sizes=tuple(int(b) for b in args.batch_sizes.split(","))
        if args.batch_sizes
        else (2, 16, 64, 256)
        if quick
        else (1, 2, 8, 32, 128, 256, 512),
        score_variants=args.score_variants or (4000 if quick else 20000),
        score_cap_s=20.0 if quick else 90.0,
        max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms,
        peer_batch=args.peer_batch,
        gpu_memory_s=15.0 if quick else 60.0,
        profile_s=args.profile_s,
        ab_rounds=args.ab_rounds or (2 if quick else 3),
    )


class _Scraper:
    """Scrapes /metrics every ``interval`` seconds, like Prometheus would."""

    def __init__(self, port: int, interval: float = 5.0) -> None:
        self._stop = threading.Event()
        self.scrapes = 0
        self._thread = threading.Thread(target=self._run, args=(port, interval), daemon=True)
        self._thread.start()

    def _run(self, port: int, interval: float) -> None:
        while not self._stop.wait(interval):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                r.read()
            self.scrapes += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _server(model: BenchModel, genome: SimGenome, device: str, *, max_batch: int,
            max_delay_ms: float, metrics: bool) -> Any:  # fmt: skip
    from varfx.server import ServerConfig, start_in_thread

    config = ServerConfig(
        model_repo=model.path.parents[2],
        genome=genome.path,
        allow_genome_mismatch=True,  # speed only: the committed model on a random genome
        host="127.0.0.1",
        port=0,
        metrics_port=0 if metrics else -1,
        metrics_host="127.0.0.1",
        device=device,
        max_batch=max_batch,
        max_delay_ms=max_delay_ms,
        max_queue=1 << 16,
        warmup_batch_sizes=() if device == "cuda" else (2, max_batch),
        # every row re-scores the same sites: with the shared reference cache on, later rows
        # would run only alt windows; these rows measure both windows per variant, as bare ORT
        # does (bench/refcache_gain.py measures the cache)
        ref_cache_mb=0,
    )
    return start_in_thread(config)


def bench_model(model: BenchModel, genome: SimGenome, device: str, knobs: Knobs,
                work: Path, out: Path) -> dict[str, Any]:  # fmt: skip
    """Every measurement for one model; returns its results dict."""
    from varfx.server.repository import scan_repository
    from varfx.server.runtime import ModelRunner

    res: dict[str, Any] = {"model": model.name, "source": model.source}
    entry = scan_repository(model.path.parents[2])[0]
    runner = ModelRunner(entry, device)
    spec = runner.spec
    res.update(length=spec.sequence_length, features=len(spec.features), device=runner.device)
    macs = model_macs(model.path)
    res["macs_per_window"] = macs
    res["gflop_per_variant"] = 4 * macs / 1e9  # 2 FLOP/MAC x 2 windows
    res["gflop_per_variant_rc"] = 8 * macs / 1e9

    log.info("[%s] (a) bare ONNX Runtime batch sweep", model.key)
    sweep = bare_ort_sweep(runner, knobs.batch_sizes, window_s=knobs.window_s, cap_s=knobs.cap_s)
    best_b = max(sweep, key=lambda b: sweep[b].per_s)
    ort_vps = sweep[best_b].per_s
    threads: dict[str, Any] = {}
    if runner.device == "cpu":  # ORT threading matters on CPU: try 1 thread and no spinning
        for label, intra, spin in (("intra1", 1, True), ("nospin", 0, False)):
            sess = ort_session(model.path, intra_op_threads=intra, spinning=spin)
            rate = bare_ort_sweep(runner, (best_b,), window_s=knobs.window_s, cap_s=knobs.cap_s,
                                  session=sess)[best_b]  # fmt: skip
            threads[label] = rate.to_dict()
            log.info("[%s] (a) bare ORT %s: %.0f variants/s", model.key, label, rate.per_s)
            del sess
    best_threads = max(threads, key=lambda k: threads[k]["per_s"], default="server")
    if threads and threads[best_threads]["per_s"] > ort_vps:
        ort_vps = threads[best_threads]["per_s"]
    else:
        best_threads = "server"
    log.info("[%s] (a) bare ORT: %.0f variants/s at %d windows/run", model.key, ort_vps, best_b)
    res["bare_ort"] = {
        "sweep": {str(b): r.to_dict() for b, r in sweep.items()},
        "best_batch_windows": best_b,
        "threads_at_best_batch": threads,
        "best_threads": best_threads,  # "server" = the server's session options
        "server_session_variants_per_s": sweep[best_b].per_s,
        "variants_per_s": ort_vps,
        "achieved_tflops": ort_vps * res["gflop_per_variant"] / 1e3,
    }
    pair = layout_pair(model, work / f"layout-{model.key}") if knobs.ab_rounds > 0 else None
    if pair is not None:
        log.info("[%s] (a) bare ORT, 2-D vs 1-D conv layers (%d interleaved rounds)", model.key,
                 knobs.ab_rounds)  # fmt: skip
        # the server's own session options and providers (CUDA EP settings included on a GPU)
        layout_runners = {
            k: ModelRunner(scan_repository(p.parents[2])[0], device) for k, p in pair.items()
        }

        def layout_rate(k: str) -> dict[str, Any]:
            r = bare_ort_sweep(layout_runners[k], (best_b,), window_s=knobs.window_s,
                               cap_s=knobs.cap_s)[best_b]  # fmt: skip
            log.info("[%s]   bare ORT %s: %.0f variants/s", model.key, k, r.per_s)
            return {**r.to_dict(), "variants_per_s": r.per_s}

        res["conv_layout"] = paired_rounds(layout_rate, {k: k for k in pair}, knobs.ab_rounds)
        del layout_runners
    # ~20 ms of compute per request at full speed; windows long enough for >= 4 rounds at 64 callers
    per_request = int(min(32, max(1, round(ort_vps * 0.02))))
    chunk = min(256, per_request * 4)
    res["per_request"], res["stream_chunk"] = per_request, chunk

    score_target = int(min(max(knobs.score_variants, ort_vps * 10), 200_000))
    n_sites = max(score_target, max(knobs.concurrency) * chunk * 4)
    sites = distinct_sites(genome, min(n_sites, len(genome) // 2))
    variants = [(s.chrom, s.pos, s.ref, s.alts[0]) for s in sites]

    def window_for(conc: int, size: int) -> float:
        return min(max(knobs.window_s, 4 * conc * size / ort_vps), knobs.cap_s / 3.5)

    def load(target: str, conc: int, mode: str, vlist: list[Any] | None = None) -> dict[str, Any]:
        size = per_request if mode == "unary" else chunk
        win = window_for(conc, size if mode == "unary" else size * 2)
        r = measure_load(target, vlist or variants, mode=mode, concurrency=conc,
                         per_request=size, window_s=win, warmup_s=min(win, 2.0),
                         cap_s=knobs.cap_s)  # fmt: skip
        log.info("[%s]   %s x%d: %.0f variants/s, p50 %.1f ms, p99 %.1f ms%s", model.key, mode,
                 conc, r.variants_per_s, r.p50_ms, r.p99_ms, "" if r.stable else " (cap)")  # fmt: skip
        return r.to_dict()

    log.info("[%s] (b) server: unary and streaming at %s callers", model.key, knobs.concurrency)
    server = _server(model, genome, device, max_batch=knobs.max_batch,
                     max_delay_ms=knobs.max_delay_ms, metrics=True)  # fmt: skip
    scraper = _Scraper(server.metrics_port)
    try:
        res["server"] = {
            mode: {str(c): load(server.target, c, mode) for c in knobs.concurrency}
            for mode in ("unary", "stream")
        }
        ref_conc = 16 if 16 in knobs.concurrency else knobs.concurrency[-1]
        res["reference_concurrency"] = ref_conc
        if knobs.profile_s > 0:
            from bench._profile import Profile, summarise

            log.info("[%s] py-spy profile of the server, unary x%d", model.key, ref_conc)
            out.mkdir(parents=True, exist_ok=True)
            raw = out / f"profile_{model.key}.txt"
            with Profile(raw, knobs.profile_s) as prof:
                res["profiled_run"] = load(server.target, ref_conc, "unary")
            res["profile"] = summarise(raw) if raw.exists() else {"error": prof.error}
        log.info("[%s] multi-allelic dedupe: 3 ALTs per site vs distinct sites", model.key)
        multi = multiallelic_sites(genome, max(1, len(variants) // 3 + 1))
        multi_v = [(s.chrom, s.pos, s.ref, a) for s in multi for a in s.alts]
        res["dedupe"] = {
            "distinct": res["server"]["unary"][str(ref_conc)],
            "multiallelic": load(server.target, ref_conc, "unary", multi_v),
        }
        # at least --score-variants, and ~10 s of work for fast models so that start-up (imports,
        # ListModels) does not dominate; slow models: about score_cap_s
        score_n = int(
            min(
                score_target,
                max(500, ort_vps * knobs.score_cap_s),
                len(sites),
            )
        )
        res["score"] = _score(server.target, genome, sites[:score_n], work / f"{model.key}.vcf")
        if knobs.profile_s > 0 and res["score"] is not None:
            from bench._profile import summarise

            log.info("[%s] py-spy profile of varfx score", model.key)
            raw = out / f"profile_score_{model.key}.txt"
            vcf = work / f"{model.key}.vcf"
            run_ = varfx_score(server.target, vcf, vcf.with_suffix(".p.vcf.gz"), score_n,
                               profile=raw)  # fmt: skip
            res["score_profile"] = summarise(raw) if raw.exists() else run_
        log.info("[%s] paired A/B at %d callers: batched vs max_batch=2, metrics on vs off "
                 "(%d interleaved rounds)", model.key, ref_conc, knobs.ab_rounds)  # fmt: skip
        with _server(model, genome, device, max_batch=2, max_delay_ms=knobs.max_delay_ms,
                     metrics=True) as one, _server(model, genome, device,
                     max_batch=knobs.max_batch, max_delay_ms=knobs.max_delay_ms,
                     metrics=False) as off:  # fmt: skip
            targets = {"batched": server.target, "batch1": one.target, "metrics_off": off.target}
            res["ab"] = paired_rounds(
                lambda target: load(target, ref_conc, "unary"), targets, knobs.ab_rounds
            )
        res["batch1"] = res["ab"]["median"]["batch1"]
        res["metrics_off"] = res["ab"]["median"]["metrics_off"]
    finally:
        scraper.stop()
        server.stop()

    # the machine may have changed speed meanwhile: measure the limit again, keep the higher
    thread_cfg = {"intra1": (1, True), "nospin": (0, False)}.get(best_threads)
    again_sess = None
    if thread_cfg is not None:
        again_sess = ort_session(model.path, intra_op_threads=thread_cfg[0], spinning=thread_cfg[1])
    again = bare_ort_sweep(runner, (best_b,), window_s=knobs.window_s, cap_s=knobs.cap_s,
                           session=again_sess)[best_b]  # fmt: skip
    del again_sess
    res["bare_ort"]["again_variants_per_s"] = again.per_s
    res["bare_ort"]["variants_per_s"] = max(ort_vps, again.per_s)
    log.info(
        "[%s] (a) bare ORT again: %.0f variants/s (first %.0f)", model.key, again.per_s, ort_vps
    )

    if model.torch_module is not None and not _torch_device_ok(device):
        log.warning("torch has no CUDA here: (d) torch-eager peer skipped")
        res["torch_peer"] = None
    elif model.torch_module is not None:
        log.info("[%s] (d) torch-eager peer", model.key)
        peer_sites = [(s.pos, s.ref, s.alts[0]) for s in sites]
        rate = torch_peer(model.torch_module, genome.seq, peer_sites, spec.sequence_length,
                          device=device, batch=knobs.peer_batch, window_s=knobs.window_s,
                          cap_s=knobs.cap_s)  # fmt: skip
        res["torch_peer"] = {**rate.to_dict(), "batch_variants": knobs.peer_batch}
    else:
        res["torch_peer"] = None
    if device == "cuda":
        from bench._gpu import gpu_memory_run

        log.info("[%s] GPU memory over random batch sizes", model.key)
        res["gpu_memory"] = gpu_memory_run(runner, knobs.max_batch, seconds=knobs.gpu_memory_s)
    res["ratios"] = _report.ratios(res)
    return res


def paired_rounds(
    measure: Callable[[str], dict[str, Any]], targets: dict[str, str], rounds: int
) -> dict[str, Any]:
    """Measure every target ``rounds`` times, interleaved (A B C, then C B A, ...), so that a
    machine that drifts in speed moves every target alike. Returns the per-round results, each
    target's median-throughput round and, per round, each target's throughput over the first
    target's (``over_first``; the paired ratio is the median of those)."""
    names = list(targets)
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            per[name].append(measure(targets[name]))
    first = names[0]
    ratios = {
        name: [
            b["variants_per_s"] / a["variants_per_s"]
            for a, b in zip(per[first], per[name], strict=True)
        ]
        for name in names[1:]
    }
    median = {
        name: sorted(runs, key=lambda x: x["variants_per_s"])[len(runs) // 2]
        for name, runs in per.items()
    }
    return {
        "rounds": per,
        "median": median,
        "over_first": {
            name: {"rounds": v, "median": statistics.median(v)} for name, v in ratios.items()
        },
    }


def _torch_device_ok(device: str) -> bool:
    import torch

    return device != "cuda" or torch.cuda.is_available()


def _score(target: str, genome: SimGenome, sites: list[Any], vcf: Path) -> dict[str, Any] | None:
    """(c): ``varfx score`` writing the default annotated VCF (``.vcf.gz``: bgzip + tabix), then
    the same variants to a TSV of every score kind of every feature (``tsv``)."""
    if not varfx_score_available():
        log.warning("`varfx score` is not available in this checkout: (c) skipped")
        return None
    n = write_vcf(vcf, genome, sites)
    log.info("(c) varfx score on %d variants", n)
    out = varfx_score(target, vcf, vcf.with_suffix(".scored.vcf.gz"), n)
    log.info(
        "    annotated VCF: %.0f variants/s (%.1f s wall)", out["variants_per_s"], out["wall_s"]
    )
    tsv = varfx_score(target, vcf, vcf.with_suffix(".scored.tsv"), n)
    log.info(
        "    TSV, all kinds: %.0f variants/s (%.1f s wall)", tsv["variants_per_s"], tsv["wall_s"]
    )
    return {**out, "tsv": tsv}


def run_benchmarks(args: argparse.Namespace) -> dict[str, Any]:
    """Run everything the arguments ask for; returns the results (also written to --out)."""
    knobs = knobs_from(args)
    device = args.device
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.run", *sys.argv[1:]]),
        "machine": _report.machine(device),
        "knobs": knobs.__dict__,
        "models": {},
    }
    if device == "cuda" and not _torch_device_ok(device):
        log.warning("torch has no CUDA here: matmul roofline skipped")
    elif device == "cuda":
        from bench._gpu import matmul_roofline

        log.info("matmul roofline (torch, cuda)")
        results["roofline_tflops"] = matmul_roofline(seconds=1.0 if args.quick else 3.0)
    with tempfile.TemporaryDirectory(prefix="varfx-bench-") as tmp_name:
        tmp = Path(tmp_name)
        genome = SimGenome(tmp, size=args.genome_size, seed=0)
        for key in args.models.split(","):
            t0 = time.perf_counter()
            log.info("== model %s", key)
            model = prepare_model(key, tmp / "repos", root=ROOT)
            results["models"][key] = bench_model(model, genome, device, knobs, tmp, Path(args.out))
            results["models"][key]["bench_seconds"] = time.perf_counter() - t0
            _report.write_all(results, Path(args.out), docs=None)  # partial results survive
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", default="default,basset,deepsea",
                    help="comma-separated: default, basset, deepsea (tiny: smoke tests)")  # fmt: skip
    ap.add_argument("--out", default="bench/out", help="results folder")
    ap.add_argument(
        "--docs", default=None, help="also write this markdown page (docs/benchmarks.md)"
    )
    ap.add_argument("--quick", action="store_true", help="short windows and caps (smoke/GPU runs)")
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--batch-sizes", default="", help="bare-ORT sweep, windows per run")
    ap.add_argument("--window-s", type=float, default=0.0)
    ap.add_argument("--cap-s", type=float, default=0.0)
    ap.add_argument("--score-variants", type=int, default=0)
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--max-delay-ms", type=float, default=2.0)
    ap.add_argument("--peer-batch", type=int, default=64)
    ap.add_argument("--profile-s", type=float, default=0.0,
                    help="py-spy the server for this many seconds at 16 callers (needs py-spy)")  # fmt: skip
    ap.add_argument("--ab-rounds", type=int, default=0,
                    help="interleaved rounds of the paired batching and metrics on/off runs "
                    "(default 3, --quick 2)")  # fmt: skip
    ap.add_argument("--genome-size", type=int, default=2_000_000)
    ap.add_argument("--render", default=None, metavar="RESULTS_JSON",
                    help="measure nothing: rebuild the report from an earlier results.json")  # fmt: skip
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("varfx").setLevel(logging.WARNING)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        for res in results["models"].values():
            res["ratios"] = _report.ratios(res)
    else:
        results = run_benchmarks(args)
    _report.write_all(results, Path(args.out), docs=Path(args.docs) if args.docs else None)
    print(_report.markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
