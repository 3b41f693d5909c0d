"""``varfx explain`` on the client side: one ExplainVariant call per variant, and its JSON.

The JSON (the layout ``varfx report --explain`` reads): ``variant`` ("CHROM:POS:REF:ALT"),
``positions`` (1-based genome positions, [P]), ``bases`` ("ACGT"), ``features`` ([F]),
``ref_ism`` and ``alt_ism`` (``p(mutant) - p(background)`` on the REF and the ALT background,
[P][4][F]), ``ref_bases``/``alt_bases`` (the background base at each position, "ACGTN", "-"
where the ALT background has none: a deletion removed it; absent from an older server),
``motifs`` (objects with ``name``, ``jaspar_id``, ``strand``, ``position`` (1-based
first base of the match), ``ref_score``, ``alt_score`` (bits), ``width`` (bp; 0 from a server
that predates the field), ``relative_change`` (0..1, the change in the matrix's relative score)
and ``model_importance`` (0..1, the mean ISM importance of the matched bases over the window's
largest; calls are ranked by their product; both 0 from an older server)), ``motif_feature``
(the feature whose ISM weighted the calls; "" when none); besides them ``model``,
``model_version``, ``status``, ``score`` (the variant's own scores: ``diff`` [F],
``max_abs_diff`` and its feature, and with a calibrated model ``quantile`` [F], ``max_quantile``
and its feature) and ``calibration`` (the background's description, "" when none).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

from varfx.client.errors import VarfxError
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc

__all__ = ["ExplainError", "explain_variant", "explanation_json", "parse_variant"]

_VARIANT = re.compile(r"^([^:\s]+):([0-9]+):([A-Za-z]+):([A-Za-z]+)$")
_STATUS = {v.number: v.name for v in pb.StatusCode.DESCRIPTOR.values}


class ExplainError(VarfxError):
    """A variant that cannot be explained, or a refused call; the message says which."""


def parse_variant(text: str) -> pb.Variant:
    """``CHROM:POS:REF:ALT`` (1-based POS, VCF alleles) as a Variant message."""
    m = _VARIANT.match(text.strip())
    if m is None or int(m.group(2)) < 1:
        raise ExplainError(f"variant {text!r} is not CHROM:POS:REF:ALT (e.g. chr1:12345:A:G)")
    return pb.Variant(chrom=m.group(1), pos=int(m.group(2)), ref=m.group(3), alt=m.group(4))


def explain_variant(
    channel: grpc.Channel,
    variant: pb.Variant,
    *,
    model: str = "",
    window: int = 20,
    features: Sequence[str] = (),
    reverse_complement: bool = False,
    top_motifs: int = 5,
    no_motifs: bool = False,
    timeout: float | None = 120.0,
    metadata: Sequence[tuple[str, str]] = (),
) -> pb.ExplainVariantResponse:
    """One ExplainVariant call (see the proto); gRPC errors become ExplainError."""
    request = pb.ExplainVariantRequest(
        model=model,
        variant=variant,
        window=window,
        features=list(features),
        reverse_complement=reverse_complement,
        top_motifs=top_motifs,
        no_motifs=no_motifs,
    )
    stub = pb_grpc.VariantEffectServiceStub(channel)
    try:
        response: pb.ExplainVariantResponse = stub.ExplainVariant(
            request, timeout=timeout, metadata=list(metadata) or None
        )
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = str(exc.details() if hasattr(exc, "details") else exc)
        name = code.name if code is not None else "ERROR"
        raise ExplainError(
            f"ExplainVariant {_name(variant)}: {name}: {details}", code=code, details=details
        ) from None
    return response


def _name(v: pb.Variant) -> str:
    return f"{v.chrom}:{v.pos}:{v.ref}:{v.alt}"


def _ism(data: bytes, p: int, f: int) -> list[Any]:
    arr = np.frombuffer(data, dtype="<f4")
    if arr.size != p * 4 * f:
        raise ExplainError(f"ISM of {arr.size} values; expected {p} x 4 x {f}")
    return arr.reshape(p, 4, f).round(7).tolist()


def explanation_json(response: pb.ExplainVariantResponse) -> dict[str, Any]:
    """The JSON document of one explanation (see the module docstring)."""
    p, f = len(response.positions), len(response.features)
    s = response.score
    score: dict[str, Any] = {
        "diff": list(s.diff),
        "max_abs_diff": s.max_abs_diff,
        "max_abs_diff_feature": s.max_abs_diff_feature,
    }
    if len(s.quantile):
        score.update(
            quantile=list(s.quantile),
            pvalue=list(s.pvalue),
            max_quantile=s.max_quantile,
            max_quantile_feature=s.max_quantile_feature,
        )
    return {
        "variant": _name(response.variant),
        "positions": list(response.positions),
        "bases": response.bases or "ACGT",
        "features": list(response.features),
        "ref_ism": _ism(response.ref_ism, p, f) if response.ref_ism else [],
        "alt_ism": _ism(response.alt_ism, p, f) if response.alt_ism else [],
        **({"ref_bases": response.ref_bases} if response.ref_bases else {}),
        **({"alt_bases": response.alt_bases} if response.alt_bases else {}),
        "motifs": [
            {
                "name": m.name,
                "jaspar_id": m.jaspar_id,
                "strand": m.strand,
                "position": m.position,
                "ref_score": round(m.ref_score, 3),
                "alt_score": round(m.alt_score, 3),
                "width": m.width,
                "relative_change": round(m.relative_change, 4),
                "model_importance": round(m.model_importance, 4),
            }
            for m in response.motifs
        ],
        "motif_feature": response.motif_feature,
        "model": response.manifest.model,
        "model_version": response.manifest.model_version,
        "status": {
            "code": _STATUS.get(response.status.code, str(response.status.code)),
            "message": response.status.message,
        },
        "score": score,
        "calibration": response.manifest.calibration,
    }
