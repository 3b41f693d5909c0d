"""FLOPs per variant, counted analytically from the ONNX graph (conv and matrix-multiply MACs)."""

from __future__ import annotations

from math import prod
from pathlib import Path
from typing import Any

__all__ = ["model_macs"]


def _dims(value_info: Any) -> list[int]:
    return [d.dim_value if d.dim_value > 0 else 1 for d in value_info.type.tensor_type.shape.dim]


def model_macs(path: Path) -> int:
    """Multiply-accumulates of one window (batch 1) through Conv, ConvTranspose, Gemm and MatMul.

    Shapes come from ONNX shape inference with the batch dimension set to 1. Element-wise ops,
    pooling and activations are ignored (they are < 1% for these CNNs).
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        shapes[vi.name] = _dims(vi)
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0
    for node in inferred.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            out = shapes.get(node.output[0])
            weight = shapes.get(node.input[1])
            if out and weight:
                # out [N, Cout, *spatial]; weight [Cout, Cin/group, *kernel]
                macs += prod(out) * prod(weight[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out:
                transposed = node.op_type == "Gemm" and any(
                    at.name == "transA" and at.i for at in node.attribute
                )
                k = a[-2] if transposed and len(a) >= 2 else a[-1]
                macs += prod(out) * k
    return macs
