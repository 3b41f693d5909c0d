"""The varfx demo: simulate a genome, serve the default model, score the simulated VCF.

Run by scripts/demo.sh (the README's first command). Steps:
  1. ``varfx simulate --seed 0`` into OUT/sim (genome, peaks, variants.vcf.gz, truth.tsv);
  2. ``varfx serve`` with the model repository (default model ``sim-chromatin``) on free
     loopback ports, waiting until health says SERVING;
  3. ``varfx score OUT/sim/variants.vcf.gz -o OUT/scored.vcf.gz``;
  4. a table of the top variants (max |diff|, feature) next to their truth labels, and how well
     max |diff| separates motif-breaking/creating variants from neutral ones (auROC);
  5. stops the server.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARFX = [sys.executable, "-c", "import sys; from varfx.cli import main; sys.exit(main())"]


class DemoError(RuntimeError):
    pass


def free_port(host: str, port: int) -> int:
    """``port`` if it is free (0 = any free port); a clear error if it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise DemoError(
                f"port {port} on {host} is busy ({exc.strerror}); pick another with --port/--metrics-port "
                "or 0 for any free port"
            ) from None
        return int(s.getsockname()[1])


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode != 0:
        raise DemoError(f"{what} failed (exit {result.returncode}): {' '.join(cmd[3:])}")


def has_subcommand(name: str) -> bool:
    import argparse

    from varfx.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return name in action.choices
    return False


def simulate(out: Path, size: str) -> None:
    """``varfx simulate --seed 0``; the library call where the subcommand is not registered."""
    if has_subcommand("simulate"):
        run(
            [*VARFX, "simulate", "--out", str(out), "--seed", "0", "--size", size], "varfx simulate"
        )
        return
    from varfx.training.simulate import SIZES
    from varfx.training.simulate import simulate as simulate_genome

    result = simulate_genome(out, seed=0, config=SIZES[size])
    print(f"wrote {result.out_dir}: {result.counts['records']} variants", flush=True)


def wait_serving(target: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    from varfx.client import Client, VarfxError

    deadline = time.monotonic() + timeout
    with Client(target, timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
                raise DemoError(f"the server exited with {proc.returncode}; its log ends:\n{tail}")
            try:
                if client.health() == "SERVING":
                    return
            except VarfxError:
                pass
            time.sleep(0.3)
    raise DemoError(f"the server at {target} was not SERVING after {timeout:.0f} s; see {log}")


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def report(scored: Path, truth_path: Path, top: int) -> None:
    import pysam

    truth: dict[tuple[str, int, str, str], dict[str, str]] = {}
    with open(truth_path) as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            truth[(row["chrom"], int(row["pos"]), row["ref"], row["alt"])] = row
    rows = []
    with pysam.VariantFile(str(scored)) as vf:
        calibrated = "VARFX_MAX_QUANTILE" in vf.header.info  # the model has a calibration
        for rec in vf:
            for j, alt in enumerate(rec.alts or ()):
                mad = rec.info["VARFX_MAX_ABS_DIFF"][j]
                q = rec.info["VARFX_MAX_QUANTILE"][j] if calibrated else None
                t = truth.get((rec.chrom, rec.pos, rec.ref or "", alt), {})
                rows.append(
                    (
                        mad if mad is not None else float("nan"),
                        rec.info["VARFX_MAX_FEATURE"][j] or ".",
                        rec.info["VARFX_STATUS"][j],
                        f"{rec.chrom}:{rec.pos} {rec.ref}>{alt}",
                        rec.id or ".",
                        t.get("class", "?"),
                        t.get("direction", "?"),
                        q if q is not None else float("nan"),
                    )
                )
    scored_rows = [r for r in rows if r[2] == "OK"]
    scored_rows.sort(key=lambda r: -r[0])
    # max quantile: the variant's rank among the model's background SNVs (VARFX_MAX_QUANTILE)
    qhead = f"{'max q':>7}  " if calibrated else ""
    print(
        f"{'max|diff|':>9}  {qhead}{'feature':<14} {'variant':<28} {'id':<12} {'truth':<8} direction"
    )
    for mad, feat, _, where, vid, cls, direction, q in scored_rows[:top]:
        where = where if len(where) <= 28 else where[:25] + "..."
        qcol = f"{q:7.4f}  " if calibrated else ""
        print(f"{mad:9.3f}  {qcol}{feat:<14} {where:<28} {vid[:12]:<12} {cls:<8} {direction}")
    labelled = [r for r in scored_rows if r[5] in ("break", "create", "neutral")]
    if labelled:
        mads = np.array([r[0] for r in labelled])
        effect = np.array([r[5] != "neutral" for r in labelled])
        print(
            f"\n{len(rows)} variant-ALTs, {len(scored_rows)} scored; mean max|diff|: "
            f"break/create {mads[effect].mean():.3f} vs neutral {mads[~effect].mean():.3f}; "
            f"auROC(max|diff|, motif effect vs neutral) = {auroc(mads, effect):.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="demo-out", help="output folder (default: %(default)s)")
    p.add_argument("--model-repo", default="models", help="model repository (default: %(default)s)")
    p.add_argument(
        "--model", default="sim-chromatin", help="model to score with (default: %(default)s)"
    )
    p.add_argument("--port", type=int, default=0, help="gRPC port (default: any free port)")
    p.add_argument("--metrics-port", type=int, default=0, help="metrics port (default: any free)")
    p.add_argument("--size", default="default", choices=["small", "default", "large"])
    p.add_argument("--top", type=int, default=12, help="rows in the table (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for SERVING")
    args = p.parse_args(argv)
    out = (ROOT / args.out).resolve() if not os.path.isabs(args.out) else Path(args.out)
    repo = (
        (ROOT / args.model_repo).resolve()
        if not os.path.isabs(args.model_repo)
        else Path(args.model_repo)
    )
    start = time.perf_counter()
    proc: subprocess.Popen[bytes] | None = None
    try:
        model_file = repo / args.model
        if not any(model_file.glob("*/model.onnx")):
            raise DemoError(
                f"no model {args.model!r} in {repo} (expected {model_file}/<version>/model.onnx); "
                "train it with `varfx train` or pass --model-repo/--model"
            )
        host = "127.0.0.1"
        port = free_port(host, args.port)
        metrics_port = free_port(host, args.metrics_port)
        step(f"simulating a genome with planted motifs (seed 0) into {out / 'sim'}")
        simulate(out / "sim", args.size)
        step(f"starting varfx serve on {host}:{port} (metrics on :{metrics_port})")
        log = out / "server.log"
        with open(log, "wb") as log_fh:
            proc = subprocess.Popen(
                [*VARFX, "serve", "--model-repo", str(repo), "--genome", str(out / "sim" / "genome.fa"),
                 "--host", host, "--port", str(port), "--metrics-host", host,
                 "--metrics-port", str(metrics_port), "--default-model", args.model],
                cwd=ROOT, stdout=log_fh, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_serving(f"{host}:{port}", proc, log, args.timeout)
        print(f"SERVING (log: {log})", flush=True)
        for line in log.read_text(errors="replace").splitlines():  # which genome each model got
            found = re.search(r"varfx\.server\.app: (model \S+: (?:no )?genome .*)", line)
            if found:
                print(f"  {found.group(1)}", flush=True)
        scored = out / "scored.vcf.gz"
        step(f"scoring {out / 'sim' / 'variants.vcf.gz'}")
        run([*VARFX, "score", str(out / "sim" / "variants.vcf.gz"), "--server", f"{host}:{port}",
             "--model", args.model, "-o", str(scored)], "varfx score")  # fmt: skip
        step("top variants by max |alt - ref| probability, next to the simulation's truth")
        report(scored, out / "sim" / "truth.tsv", args.top)
        print(
            f"\nannotated VCF: {scored} (+ .tbi); INFO keys VARFX_STATUS, VARFX_MAX_ABS_DIFF, "
            "VARFX_MAX_FEATURE (and VARFX_MAX_QUANTILE, VARFX_MAX_QUANTILE_FEATURE for a calibrated model)"
        )
        if has_subcommand("report"):
            page = out / "report.html"
            run([*VARFX, "report", str(scored), "-o", str(page)], "varfx report")
            print(f"report: {page} (one HTML page; open it in a browser, it needs no network)")
    except DemoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            print("server stopped", flush=True)
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
