"""Benchmark report: machine description, ratios against the targets, markdown, PNG plots."""

from __future__ import annotations

import json
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "machine", "markdown_table", "profile_section", "ratios", "write_all"]

# ratio key -> (description, comparison, threshold)
TARGETS: dict[str, tuple[str, str, float]] = {
    "server_over_bare_ort": ("server at saturation / bare ORT", ">=", 0.95),
    "batching_gain": ("dynamic batching gain at 16 callers", ">=", 3.5),
    "score_over_stream": ("`varfx score` / server streaming", ">=", 0.85),
    "varfx_over_torch": ("server / torch-eager peer", ">=", 3.0),
    "p99_over_p50": ("p99 / p50 at steady load (16 callers, unary)", "<=", 2.0),
    "metrics_change": ("|throughput change| metrics endpoint on vs off", "<=", 0.03),
}


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def machine(device: str) -> dict[str, Any]:
    """CPU model, cores, memory, library versions and (on CUDA) the GPU."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": device,
        "versions": {
            name: _version(name)
            for name in ("onnxruntime", "onnxruntime-gpu", "torch", "grpcio", "numpy", "onnx")
        },
    }
    try:
        import onnxruntime as ort

        info["ort_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 1024**3, 1)}
    return info


def _best(res: dict[str, Any], mode: str) -> float:
    runs = res.get("server", {}).get(mode, {})
    return max((r["variants_per_s"] for r in runs.values()), default=float("nan"))


def _paired(res: dict[str, Any], other: str, unary_ref: dict[str, Any]) -> float:
    """Batched (metrics on) server over ``other``: the median of the per-round ratios of the
    interleaved A/B runs; results from before those existed compare two single runs."""
    ab = res.get("ab")
    if ab and other in ab.get("over_first", {}):
        return 1.0 / float(ab["over_first"][other]["median"])
    return float(unary_ref["variants_per_s"] / res[other]["variants_per_s"])


def ratios(res: dict[str, Any]) -> dict[str, float | None]:
    """The issue's ratios for one model's results."""
    sat = max(_best(res, "unary"), _best(res, "stream"))
    ref = str(res.get("reference_concurrency", 16))
    unary_ref = res["server"]["unary"][ref]
    out: dict[str, float | None] = {
        "server_saturation_vps": sat,
        "server_over_bare_ort": sat / res["bare_ort"]["variants_per_s"],
        "batching_gain": _paired(res, "batch1", unary_ref),
        "p99_over_p50": unary_ref["p99_ms"] / unary_ref["p50_ms"],
        "metrics_change": _paired(res, "metrics_off", unary_ref) - 1,
        "dedupe_gain": res["dedupe"]["multiallelic"]["variants_per_s"]
        / res["dedupe"]["distinct"]["variants_per_s"],
        "ort_batch2_ceiling": None,
        "score_over_stream": None,
        "varfx_over_torch": None,
        "score_over_torch": None,
        "score_tsv_over_stream": None,
        "conv2d_gain": None,
    }
    layout = res.get("conv_layout")
    if layout and "conv1d" in layout.get("over_first", {}):
        out["conv2d_gain"] = 1.0 / float(layout["over_first"]["conv1d"]["median"])
    sweep = res["bare_ort"]["sweep"]
    if "2" in sweep:  # what batching can gain at most when ORT itself scales like this
        out["ort_batch2_ceiling"] = res["bare_ort"]["variants_per_s"] / sweep["2"]["per_s"]
    if res.get("score"):
        out["score_over_stream"] = res["score"]["variants_per_s"] / _best(res, "stream")
        if res["score"].get("tsv"):
            out["score_tsv_over_stream"] = res["score"]["tsv"]["variants_per_s"] / _best(
                res, "stream"
            )
    if res.get("torch_peer"):
        out["varfx_over_torch"] = sat / res["torch_peer"]["per_s"]
        if res.get("score"):
            out["score_over_torch"] = res["score"]["variants_per_s"] / res["torch_peer"]["per_s"]
    return out


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.{digits}f}"
    return str(x)


def _meets(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    _desc, op, thr = TARGETS[key]
    v = abs(value) if key == "metrics_change" else value
    return "yes" if (v >= thr if op == ">=" else v <= thr) else "**no**"


def markdown_table(results: dict[str, Any]) -> str:
    """Throughput/latency table per model, then the ratio table against the targets."""
    lines = [
        "| model | L / F | GFLOP/variant | bare ORT v/s (batch) | mode | callers | variants/s "
        "| p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, res in results["models"].items():
        head = (
            f"| {key} | {res['length']} / {res['features']} | {res['gflop_per_variant']:.3f} "
            f"| {_fmt(res['bare_ort']['variants_per_s'])} ({res['bare_ort']['best_batch_windows']}) "
        )
        rows = [(m, c, r) for m in ("unary", "stream") for c, r in res["server"][m].items()]
        rows.append(("unary, max_batch=2", res["reference_concurrency"], res["batch1"]))
        rows.append(("unary, metrics off", res["reference_concurrency"], res["metrics_off"]))
        rows.append(("unary, 3 ALTs/site", res["reference_concurrency"], res["dedupe"]["multiallelic"]))  # fmt: skip
        for i, (mode, conc, r) in enumerate(rows):
            prefix = head if i == 0 else "| | | | "
            lines.append(
                f"{prefix}| {mode} | {conc} | {_fmt(r['variants_per_s'])}"
                f"{'' if r['stable'] else '*'} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
                f"| {r['p99_ms']:.1f} |"
            )
        if res.get("score"):
            s = res["score"]
            for what, r in (("annotated .vcf.gz", s), ("TSV, all kinds", s.get("tsv"))):
                if not r:
                    continue
                job = (f"; {_fmt(r['variants'] / r['job_s'])} v/s after start-up"
                       if r.get("job_s") else "")  # fmt: skip
                lines.append(f"| | | | | `varfx score` → {what} ({r['variants']:,} variants, wall{job}) | 1 | {_fmt(r['variants_per_s'])} | | | |")  # fmt: skip
        if res.get("torch_peer"):
            t = res["torch_peer"]
            lines.append(f"| | | | | torch-eager peer (batch {t['batch_variants']}) | 1 | {_fmt(t['per_s'])}{'' if t['stable'] else '*'} | | | |")  # fmt: skip
    lines += [
        "",
        "`*` = hit the time cap before three consecutive windows agreed within 10%. "
        "The max_batch=2 and metrics-off rows are the median of interleaved rounds against the "
        "batched, metrics-on server (A B C, C B A, ...); their ratios below are medians of the "
        "per-round ratios, so drift in the machine's speed cancels.",
        "",
    ]
    keys = list(results["models"])
    lines.append("| ratio | target | " + " | ".join(keys) + " |")
    lines.append("|---|---|" + "---|" * len(keys))
    for rk, (desc, op, thr) in TARGETS.items():
        cells = []
        for k in keys:
            v = results["models"][k]["ratios"].get(rk)
            cells.append("n/a" if v is None else f"{v:+.3f} ({_meets(rk, v)})" if rk == "metrics_change" else f"{v:.2f} ({_meets(rk, v)})")  # fmt: skip
        lines.append(f"| {desc} | {op} {thr} | " + " | ".join(cells) + " |")
    for rk, desc in (("dedupe_gain", "multi-allelic (3 ALTs/site) / distinct sites, variants/s"),
                     ("ort_batch2_ceiling", "bare ORT best batch / bare ORT batch 2 (batching ceiling)"),
                     ("score_over_torch", "`varfx score` / torch-eager peer"),
                     ("score_tsv_over_stream", "`varfx score` → TSV of all kinds / server streaming"),
                     ("conv2d_gain", "bare ORT, 2-D / 1-D conv layers (same weights, paired rounds)")):  # fmt: skip
        cells = [_fmt(results["models"][k]["ratios"].get(rk)) for k in keys]
        lines.append(f"| {desc} | | " + " | ".join(cells) + " |")
    roof = results.get("roofline_tflops")
    if roof:
        lines += ["", "Matmul roofline (torch): " + ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in roof.items())]  # fmt: skip
    for k in keys:
        r = results["models"][k]
        if roof:
            achieved = r["ratios"]["server_saturation_vps"] * r["gflop_per_variant"] / 1e3
            lines.append(f"- {k}: server {achieved:.2f} TFLOP/s = {achieved / roof['tf32']:.1%} of tf32, {achieved / roof['fp16']:.1%} of fp16 matmul peak")  # fmt: skip
        if r.get("gpu_memory"):
            g = r["gpu_memory"]
            lines.append(f"- {k}: GPU memory over {g['runs']} runs of {g['distinct_batch_sizes']} random batch sizes: {g['min_mib']}-{g['max_mib']} MiB, flat: {g['flat']}")  # fmt: skip
    return "\n".join(lines)


def profile_section(results: dict[str, Any]) -> str:
    """Where the server's time goes (py-spy, 16 callers unary), per profiled model."""
    lines: list[str] = []
    for key, res in [*results["models"].items(),
                     *((f"{k} `varfx score`", r) for k, r in results["models"].items())]:  # fmt: skip
        prof = res.get("score_profile" if key.endswith("`varfx score`") else "profile")
        if not prof:
            continue
        if not prof.get("samples"):
            lines.append(f"- {key}: no profile ({prof.get('error', 'no samples')})")
            continue
        threads = ", ".join(f"{t.split(': ', 1)[-1]} {v:.0%}" for t, v in prof["threads"].items())
        lines.append(f"- **{key}** ({prof['samples']} samples; share by thread: {threads})")
        for name, frac in prof["self"][:10]:
            lines.append(f"  - {frac:.1%} `{name}`")
    if not lines:
        return ""
    head = ["", "### Profiles (py-spy self time: the server under unary load at the reference "
            "concurrency; `varfx score` as a subprocess)", ""]  # fmt: skip
    return "\n".join(head + lines)


def _plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results["models"])
    if not keys:
        return []
    paths = []
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        res = results["models"][key]
        for mode, marker in (("unary", "o"), ("stream", "s")):
            runs = res["server"][mode]
            xs = [int(c) for c in runs]
            ax.plot(xs, [runs[c]["variants_per_s"] for c in runs], marker=marker, label=f"server {mode}")  # fmt: skip
        ax.axhline(res["bare_ort"]["variants_per_s"], color="k", ls="--", label="bare ORT (best batch)")  # fmt: skip
        ax.plot([res["reference_concurrency"]], [res["batch1"]["variants_per_s"]], "rv", label="server, max_batch=2")  # fmt: skip
        if res.get("score"):
            ax.axhline(res["score"]["variants_per_s"], color="g", ls=":", label="varfx score")
        if res.get("torch_peer"):
            ax.axhline(res["torch_peer"]["per_s"], color="tab:purple", ls="-.", label="torch eager")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent callers")
        ax.set_ylabel("variants/s")
        ax.set_title(f"{key} (L={res['length']}, F={res['features']}) on {res['device']}")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "throughput.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        res = results["models"][key]
        labels, values = [], []
        for mode in ("unary", "stream"):
            for c, r in res["server"][mode].items():
                labels.append(f"{mode[0]}{c}")
                values.append((r["p50_ms"], r["p95_ms"], r["p99_ms"]))
        for j, name in enumerate(("p50", "p95", "p99")):
            ax.bar([i + (j - 1) * 0.27 for i in range(len(labels))], [v[j] for v in values], 0.27, label=name)  # fmt: skip
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yscale("log")
        ax.set_xlabel("u = unary, s = stream (per message); number = callers")
        ax.set_ylabel("latency per request, ms")
        ax.set_title(f"{key}: latency percentiles")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _docs_page(results: dict[str, Any], table: str, images: list[str]) -> str:
    m = results["machine"]
    gpu = m.get("gpu")
    analysis = Path(__file__).with_name("analysis.md")
    parts = [
        "# varfx benchmarks",
        "",
        "Generated by `bench/run.py` (hand-written analysis from `bench/analysis.md` at the end;"
        " raw numbers in `benchmarks_results.json`).",
        "",
        "## How to run",
        "",
        "```",
        ".venv/bin/python -m bench.run --device cpu --models default,basset,deepsea --out bench/out --docs docs/benchmarks.md",
        ".venv/bin/python -m bench.run --device cuda --models default,deepsea --quick --out bench/out-cuda",
        "```",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), {m['memory_gib']} GiB memory",
        f"- device: {m['device']}"
        + (f", GPU {gpu['name']} ({gpu['memory_gib']} GiB)" if gpu else ""),
        f"- {m['platform']}, Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v != "absent"),
        f"- command: `{results['command']}`",
        "",
        "## Results",
        "",
        table,
        "",
        *[f"![{name}]({name})" for name in images],
        "",
        "Models: " + "; ".join(f"{k}: {r['source']}" for k, r in results["models"].items()),
        "",
    ]
    if analysis.exists():
        parts.append(analysis.read_text())
    return "\n".join(parts)


def write_all(results: dict[str, Any], out: Path, docs: Path | None) -> None:
    """results.json, results.md and PNGs into ``out``; the docs page (+ PNG copies) if asked."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    if not results["models"]:
        return
    table = markdown_table(results) + "\n" + profile_section(results)
    (out / "results.md").write_text(table + "\n")
    images = _plots(results, out)
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        names = []
        for img in images:
            name = f"benchmarks_{img.name}"
            shutil.copyfile(img, docs.parent / name)
            names.append(name)
        shutil.copyfile(out / "results.json", docs.parent / "benchmarks_results.json")
        docs.write_text(_docs_page(results, table, names))
