"""Speed and memory of ``varfx report`` on a large annotated VCF.

Writes a bgzipped VCF in the layout ``varfx score --features`` writes (``##varfx_*`` header,
``VARFX_STATUS`` / ``VARFX_MAX_ABS_DIFF`` / ``VARFX_MAX_FEATURE`` and one ``VARFX_DIFF_<f>``
per feature; 5% multi-allelic records, 1% unscored ALTs; random scores, most near 0), then
times ``collect`` (the streaming pass) and ``render`` (the page) in this process and prints
records/s and the peak resident memory.

    .venv/bin/python -m bench.report_speed [--records 500000] [--features 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pysam

from varfx.client._report_html import render
from varfx.client.report import collect


def write_vcf(path: Path, n: int, n_features: int, seed: int = 0) -> None:
    """A bgzipped synthetic annotated VCF of ``n`` records on 5 contigs of 50 Mb."""
    rng = np.random.default_rng(seed)
    feats = [f"F{i}" for i in range(n_features)]
    head = ["##fileformat=VCFv4.3"]
    head += [f"##contig=<ID=chr{c},length=50000000>" for c in range(1, 6)]
    head += [f"##INFO=<ID={k},Number=A,Type=String,Description=\"\">" for k in (
        "VARFX_STATUS", "VARFX_MAX_ABS_DIFF", "VARFX_MAX_FEATURE")]  # fmt: skip
    head += [f'##INFO=<ID=VARFX_DIFF_{f},Number=A,Type=Float,Description="">' for f in feats]
    head += ["##varfx_model=bench", "##varfx_model_version=1", "##varfx_assembly=none"]
    head += ["##varfx_window_length=600", f"##varfx_features={','.join(feats)}"]
    head += ["#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    plain = path.with_suffix("")
    with open(plain, "w") as fh:
        fh.write("\n".join(head) + "\n")
        per_contig = n // 5 + 1
        pos = np.sort(rng.integers(1, 50_000_000, per_contig))
        for i in range(n):
            c, k = divmod(i, per_contig)
            n_alt = 2 if rng.random() < 0.05 else 1
            diffs = rng.laplace(0, 0.01, (n_alt, n_features)).clip(-1, 1)
            ok = rng.random(n_alt) >= 0.01
            status = ",".join("OK" if o else "REF_MISMATCH" for o in ok)
            best = np.abs(diffs).argmax(1)
            mad = ",".join(
                f"{abs(d[b]):.6g}" if o else "." for d, b, o in zip(diffs, best, ok, strict=True)
            )
            top = ",".join(feats[b] if o else "." for b, o in zip(best, ok, strict=True))
            per = ";".join(
                f"VARFX_DIFF_{f}="
                + ",".join(f"{diffs[a, j]:.6g}" if ok[a] else "." for a in range(n_alt))
                for j, f in enumerate(feats)
            )
            alt = "C,G" if n_alt == 2 else "C"
            info = f"VARFX_STATUS={status};VARFX_MAX_ABS_DIFF={mad};VARFX_MAX_FEATURE={top};{per}"
            fh.write(f"chr{c + 1}\t{pos[k]}\tv{i}\tA\t{alt}\t.\tPASS\t{info}\n")
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=500_000)
    p.add_argument("--features", type=int, default=10)
    p.add_argument("--keep", default="", help="folder to keep the VCF and page in")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        vcf = folder / "bench_scored.vcf.gz"
        t0 = time.perf_counter()
        write_vcf(vcf, args.records, args.features)
        made = time.perf_counter() - t0
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        data = collect(vcf)
        t_collect = time.perf_counter() - t0
        t0 = time.perf_counter()
        page = render(data)
        t_render = time.perf_counter() - t0
        (folder / "bench_report.html").write_text(page)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        size = vcf.stat().st_size
    print(
        f"input: {args.records:,} records, {args.features} features, {size / 1e6:.1f} MB bgzipped (written in {made:.1f} s)"
    )
    print(
        f"collect: {t_collect:.2f} s ({args.records / t_collect:,.0f} records/s); render: {t_render:.2f} s; page {len(page) / 1e3:.0f} kB"
    )
    print(f"peak RSS: {peak / 1024:.0f} MB (before collect: {base / 1024:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
