"""``varfx explain``: ISM and motif calls for a variant (stdlib-only at import time)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "explain",
        help="explain a variant: in-silico mutagenesis around it and the motifs it changes",
        description=(
            "Ask the server (ExplainVariant) for saturation mutagenesis over ±W bp around the "
            "variant on its REF and its ALT background, shape [2W+1, 4, F], and the JASPAR "
            "motifs whose best match it changes most; write them as JSON (the layout "
            "`varfx report --explain` reads) and, with --plot, as sequence logos. With --vcf "
            "every record is explained: OUT.json becomes OUT.1.json, OUT.2.json, ... (the "
            "plots likewise)."
        ),
    )
    p.add_argument("--server", default="localhost:50051", help="HOST:PORT (default: %(default)s)")
    p.add_argument("--model", default="", help="model name (default: the server's default)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--variant", help="CHROM:POS:REF:ALT (1-based POS, VCF alleles)")
    which.add_argument("--vcf", help="a small VCF: every ALT of every record")
    p.add_argument("--window", type=int, default=20, help="half-width W in bp (default 20)")
    p.add_argument("--features", default="", help="comma-separated features (default: all)")
    p.add_argument("--top-motifs", type=int, default=5, help="motif calls (default 5)")
    p.add_argument("--no-motifs", action="store_true", help="skip the motif scan")
    p.add_argument(
        "--reverse-complement", action="store_true", help="average with reverse complements"
    )
    p.add_argument("-o", "--output", required=True, help="output JSON file")
    p.add_argument("--plot", default=None, help="also draw sequence logos to this PNG")
    p.add_argument("--plot-feature", default="", help="feature drawn (default: the top one)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per call (300)")
    g = p.add_argument_group("TLS and auth")
    g.add_argument("--tls", action="store_true", help="use TLS (system roots unless --ca-cert)")
    g.add_argument("--ca-cert", default=None, help="PEM file of root certificates")
    g.add_argument("--token", default=None, help="bearer token (or env VARFX_TOKEN)")
    p.set_defaults(func=run)


def _numbered(path: str, i: int, n: int) -> Path:
    out = Path(path)
    return out if n == 1 else out.with_name(f"{out.stem}.{i}{out.suffix}")


def _write_text(path: Path, text: str) -> None:
    """Write a regular file (never through a link, a pipe or a device) via a rename."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OSError(f"{path}: exists and is not a regular file; not overwritten")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _variants(args: argparse.Namespace) -> list[Any]:
    from varfx.client.explain import ExplainError, parse_variant
    from varfx.proto.v1 import varfx_pb2 as pb

    if args.variant:
        return [parse_variant(args.variant)]
    import pysam

    out = []
    try:
        with pysam.VariantFile(args.vcf) as vcf:
            for rec in vcf:
                for alt in rec.alts or ():
                    out.append(
                        pb.Variant(
                            id=rec.id or "", chrom=rec.chrom, pos=rec.pos, ref=rec.ref, alt=alt
                        )
                    )
    except (OSError, ValueError) as exc:
        raise ExplainError(f"{args.vcf}: cannot read as VCF ({exc})") from None
    if not out:
        raise ExplainError(f"{args.vcf}: no variants")
    if len(out) > 100:
        raise ExplainError(f"{args.vcf}: {len(out)} variants; explain at most 100 at a time")
    return out


def run(args: argparse.Namespace) -> int:
    import json

    import grpc

    from varfx.client.explain import ExplainError, explain_variant, explanation_json

    token = args.token or os.environ.get("VARFX_TOKEN")
    try:
        variants = _variants(args)
        if args.tls:
            roots = Path(args.ca_cert).read_bytes() if args.ca_cert else None
            channel = grpc.secure_channel(args.server, grpc.ssl_channel_credentials(roots))
        else:
            channel = grpc.insecure_channel(args.server)
        metadata = [("authorization", f"Bearer {token}")] if token else []
        features = [f for f in args.features.split(",") if f]
        with channel:
            for i, variant in enumerate(variants, start=1):
                response = explain_variant(
                    channel, variant, model=args.model, window=args.window, features=features,
                    reverse_complement=args.reverse_complement, top_motifs=args.top_motifs,
                    no_motifs=args.no_motifs, timeout=args.timeout, metadata=metadata,
                )  # fmt: skip
                doc = explanation_json(response)
                out = _numbered(args.output, i, len(variants))
                _write_text(out, json.dumps(doc) + "\n")
                line = f"{doc['variant']}: {doc['status']['code']}"
                if doc["motifs"]:
                    m = doc["motifs"][0]
                    line += (
                        f"; top motif {m['name']} {m['ref_score']:.1f} -> {m['alt_score']:.1f} bits"
                        f" (model importance {m['model_importance']:.2f})"
                    )
                if "max_quantile" in doc["score"]:
                    line += f"; max quantile {doc['score']['max_quantile']:.4f}"
                sys.stderr.write(f"{line} -> {out}\n")
                if args.plot and doc["ref_ism"]:
                    from varfx.client._explain_plot import plot_explanation

                    plot_explanation(doc, _numbered(args.plot, i, len(variants)), args.plot_feature)
    except (ExplainError, OSError, ValueError) as exc:
        sys.stderr.write(f"varfx explain: {exc}\n")
        return 2
    return 0
