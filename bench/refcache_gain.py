"""What reusing reference predictions buys (issue 19, item 1), on a real model through
``varfx serve``: variants/s for distinct SNV sites, for the same number of variants as 3 ALTs per
site, and for the distinct sites scored a second time (their ref windows then come from the
shared cache). Each pass starts a fresh server (cold cache); rounds alternate, and within a round
every ``--local-recompute`` setting asked for runs side by side.

    .venv/bin/python -m bench.refcache_gain [--net default|basset|deepsea] [--variants 12000]
        [--local-recompute auto off]

``--net default`` is the committed default model; ``basset`` / ``deepsea`` are random-weight
networks of the published sizes (``bench/_nets.py``), exported to a temporary repository.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from bench.score_vs_bcftools import _free_port
from bench.server_overhead import write_genome
from varfx.proto.v1 import varfx_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
_STREAM = "/varfx.v1.VariantEffectService/StreamScoreVariants"


def requests(seq: bytes, pos: np.ndarray, alts: np.ndarray, model: str, per: int) -> list[bytes]:
    out = []
    ref = np.frombuffer(seq, np.uint8)[pos - 1]
    for s in range(0, len(pos), per):
        p, r, a = pos[s : s + per], ref[s : s + per], alts[s : s + per]
        k = len(p)
        out.append(
            pb.ScoreVariantsRequest(
                model=model,
                options=pb.ScoreOptions(packed=True, scores=[pb.SCORE_KIND_DIFF]),
                packed_variants=pb.PackedVariants(
                    contigs=["chr1"],
                    contig_index=np.zeros(k, "<i4").tobytes(),
                    pos=p.astype("<i8").tobytes(),
                    alleles=np.stack([r, a], axis=1).astype(np.uint8).tobytes(),
                    allele_offsets=np.arange(2 * k + 1, dtype="<u4").tobytes(),
                ),
            ).SerializeToString()
        )
    return out


def run(target: str, reqs: list[bytes]) -> float:
    call = grpc.insecure_channel(target).stream_stream(_STREAM)
    t0 = time.perf_counter()
    n = sum(len(pb.ScoreVariantsResponse.FromString(r).packed.status) for r in call(iter(reqs)))
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--net", choices=("default", "basset", "deepsea"), default="default")
    ap.add_argument(
        "--local-recompute", nargs="+", choices=("auto", "off"), default=["auto"],
        help="server setting(s) to measure, side by side in each round",
    )  # fmt: skip
    ap.add_argument("--variants", type=int, default=12_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    acgt = np.frombuffer(b"ACGT", np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        from bench._nets import prepare_model

        bench_model = prepare_model(args.net, Path(tmp) / "repos", root=ROOT)
        model_repo, model = bench_model.path.parents[2], bench_model.name
        seq = write_genome(Path(tmp) / "g.fa", 2_000_000, 1)
        rng = np.random.default_rng(0)
        n = args.variants
        distinct = rng.choice(np.arange(1000, len(seq) - 1000), size=n, replace=False)
        ref = np.frombuffer(seq, np.uint8)[distinct - 1]
        alt1 = acgt[(np.searchsorted(acgt, ref) + 1) % 4]
        sites = distinct[: n // 3]
        pos3 = np.repeat(sites, 3)
        ref3 = np.frombuffer(seq, np.uint8)[pos3 - 1]
        alt3 = acgt[(np.searchsorted(acgt, ref3) + np.tile([1, 2, 3], n // 3)) % 4]
        one = requests(seq, distinct, alt1, model, 1000)
        three = requests(seq, pos3, alt3, model, 1000)
        ratios: dict[str, list[float]] = {}
        for r, local in itertools.product(range(args.rounds), args.local_recompute):
            rates = {}
            for name, first, second in (("distinct", one, one), ("3alts", three, None)):
                port = _free_port()
                cmd = [
                    sys.executable, "-m", "varfx", "--log-level", "WARNING", "serve",
                    "--model-repo", str(model_repo), "--genome", str(Path(tmp) / "g.fa"),
                    "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1",
                    "--allow-genome-mismatch", "--default-model", model,
                    "--local-recompute", local,
                ]  # fmt: skip
                proc = subprocess.Popen(cmd, env={**os.environ})
                try:
                    target = f"127.0.0.1:{port}"
                    grpc.channel_ready_future(grpc.insecure_channel(target)).result(timeout=120)
                    time.sleep(1)
                    rates[name] = run(target, first)
                    if second is not None:
                        rates["second"] = run(target, second)
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
            for key, value in (
                ("distinct v/s", rates["distinct"]),
                ("3 ALTs/site / distinct", rates["3alts"] / rates["distinct"]),
                ("second / first", rates["second"] / rates["distinct"]),
            ):
                ratios.setdefault(f"local {local}: {key}", []).append(value)
            print(
                f"round {r + 1}, {args.net}, --local-recompute {local}: distinct {rates['distinct']:,.0f} v/s, 3 ALTs/site "
                f"{rates['3alts']:,.0f} v/s, distinct again (warm cache) {rates['second']:,.0f} v/s"
            )
        for name, values in ratios.items():
            print(
                f"{name}: median {statistics.median(values):.4g} "
                f"({', '.join(f'{v:.4g}' for v in values)})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
