"""The conv trunk of a token-input ONNX model, read from the graph itself, for local recomputation.

``read_trunk(model)`` walks the graph from the token input: the one-hot prologue (Cast, Clip,
Gather of a [5, C] table, Transpose, Unsqueeze), then every op it recognises as position-wise or
as a 1-D window op along the sequence axis (Conv with group 1, MaxPool, AveragePool without
padding, BatchNormalization, element-wise ops with per-channel constants, Add/Mul/Sub/Div of two
trunk tensors). The trunk ends at the first tensor read by anything else (Flatten, a global
reduction, a Reshape, an op it does not know): those are the *boundary* tensors, and the *head*
is the sub-graph from them to the output, run by ONNX Runtime unchanged. An unknown op is never
guessed at: it just moves the boundary earlier (less saving, same numbers).

Geometry: each trunk tensor t has a length n_t (positions along the sequence) and C_t channels.
A window op with kernel k, dilation d, stride s and left padding p maps output j to inputs
``j*s - p .. j*s - p + (k-1)*d``; so a change at window positions ``a .. a+w-1`` affects outputs
``ceil((lo + p - (k-1)*d) / s) .. floor((hi + p) / s)`` of each layer (``Geometry``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Geometry", "TrunkGraph", "TrunkOp", "UnsupportedGraph", "read_trunk"]

_UNARY = {"Relu", "Sigmoid", "Tanh", "Erf", "Identity", "Neg", "Abs", "Exp", "Dropout"}
_BINARY = {"Add", "Sub", "Mul", "Div"}


class UnsupportedGraph(ValueError):
    """The graph has no trunk this module can recompute locally (the message says why)."""


@dataclass(frozen=True)
class TrunkOp:
    """One trunk op. ``kind``: onehot | conv | maxpool | avgpool | unary | affine | const | binary.

    conv: ``weight`` float32 [k*C_in, C_out] (rows tap-major), ``bias`` [C_out]; affine (BN):
    ``weight`` scale [C], ``bias`` shift [C]; const: ``weight`` the constant ([C] or scalar),
    ``left`` whether it is the left operand; onehot: ``weight`` the table [5, C].
    """

    kind: str
    out: str
    inputs: tuple[str, ...]
    op: str = ""
    weight: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    k: int = 1
    s: int = 1
    d: int = 1
    p: int = 0
    left: bool = False
    alpha: float = 0.0


@dataclass
class TrunkGraph:
    """The trunk ops in graph order, each tensor's (channels, length), the boundary tensors
    (in head-input order), the head as ONNX bytes, and ``rank`` 3 ([B, C, n]) or 4 ([B, C, 1, n])."""

    length: int
    ops: list[TrunkOp]
    shape: dict[str, tuple[int, int]]
    boundary: list[str]
    head: bytes
    rank: int
    output: str
    consumers: dict[str, list[int]] = field(default_factory=dict)
    linear: tuple[str, np.ndarray] | None = None  # see _linear_head
    head2: bytes = b""

    def maps_model(self, model: Any, names: list[str]) -> bytes:
        """The full model with the trunk tensors ``names`` as extra outputs (after the first)."""
        from onnx import TensorProto, helper

        m = type(model)()
        m.CopyFrom(model)
        for name in names:
            m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        return bytes(m.SerializeToString())


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _last(values: Any, default: int) -> int:
    """The sequence-axis entry of a conv/pool attribute (1-D or 2-D-as-1-D layout)."""
    return int(values[-1]) if values else default


def _window_attrs(node: Any, rank: int) -> tuple[int, int, int, int, int] | None:
    """(k, s, d, p_left, p_right) along the sequence axis, or None when the op also works
    across the height axis of a 2-D layout or uses settings this module does not model."""
    a = _attrs(node)
    kernel = a.get("kernel_shape")
    if (
        not kernel
        or len(kernel) != rank - 2
        or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
    ):
        return None
    pads = list(a.get("pads", [0] * (2 * len(kernel))))
    strides = list(a.get("strides", [1] * len(kernel)))
    dil = list(a.get("dilations", [1] * len(kernel)))
    if len(kernel) == 2 and (
        kernel[0] != 1 or strides[0] != 1 or dil[0] != 1 or pads[0] or pads[2]
    ):
        return None
    if a.get("ceil_mode", 0) or a.get("group", 1) != 1:
        return None
    half = len(pads) // 2
    return int(kernel[-1]), _last(strides, 1), _last(dil, 1), int(pads[half - 1]), int(pads[-1])


def _channel_vector(value: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """A constant broadcast over [B, C, (1,) n] as a scalar or a [C] vector (None otherwise)."""
    if value.size == 1:
        return np.asarray(value, dtype=np.float32).reshape(())
    shape = (1,) * (rank - value.ndim) + value.shape
    want = (1, channels) + (1,) * (rank - 2)
    if len(shape) == rank and all(s in (1, w) for s, w in zip(shape, want, strict=True)):
        return np.asarray(value, dtype=np.float32).reshape(-1)
    return None


def read_trunk(model: Any) -> TrunkGraph:
    """Analyse a token-input ONNX ``ModelProto`` (uint8 [batch, L] -> float32 [batch, F]).

    Raises:
        UnsupportedGraph: no one-hot prologue, no trunk op after it, or a head that needs more
            than the boundary tensors.
    """
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute:
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != TensorProto.UINT8:
        raise UnsupportedGraph("not one uint8 token input")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].dim_value:
        raise UnsupportedGraph("the token input has no fixed length")
    length = int(dims[1].dim_value)
    if len(g.output) != 1:
        raise UnsupportedGraph("more than one output")
    index = {inputs[0].name}  # int token-index tensors of the prologue
    rows: dict[str, int] = {}  # one-hot gathered, [B, L, C] (before the transpose)
    shape: dict[str, tuple[int, int]] = {}
    rank: dict[str, int] = {}
    ops: list[TrunkOp] = []
    used: set[str] = set()  # tensors a trunk op reads
    for node in g.node:
        ins = [i for i in node.input if i]
        t = node.op_type
        if t in ("Constant",) or (t == "Identity" and ins and ins[0] in consts):
            continue
        if t in ("Cast", "Clip") and ins and ins[0] in index:
            index.add(node.output[0])
            continue
        if t == "Gather" and len(ins) == 2 and ins[1] in index and ins[0] in consts:
            table = consts[ins[0]]
            if table.ndim == 2 and table.shape[0] >= 5 and _attrs(node).get("axis", 0) == 0:
                rows[node.output[0]] = table.shape[1]
                ops.append(
                    TrunkOp("onehot", node.output[0], (), weight=table[:5].astype(np.float32))
                )
                continue
        if (
            t == "Transpose"
            and ins
            and ins[0] in rows
            and list(_attrs(node).get("perm", [])) == [0, 2, 1]
        ):
            shape[node.output[0]], rank[node.output[0]] = (rows[ins[0]], length), 3
            ops.append(TrunkOp("unary", node.output[0], (ins[0],), op="Identity"))
            used.add(ins[0])
            continue
        spatial = [i for i in ins if i in shape]
        if not spatial:
            continue
        x = spatial[0]
        c, n = shape[x]
        r = rank[x]
        op: TrunkOp | None = None
        out_shape = (c, n)
        if t == "Unsqueeze" and r == 3:
            axes = consts.get(ins[1]) if len(ins) == 2 else _attrs(node).get("axes")
            if axes is not None and [int(v) for v in np.ravel(axes)] == [2]:
                op, r = TrunkOp("unary", node.output[0], (x,), op="Identity"), 4
        elif t == "Conv" and ins[0] == x and ins[1] in consts:
            geo = _window_attrs(node, r)
            w = consts[ins[1]]
            if geo is not None and w.shape[1] == c:
                k, s, d, p0, p1 = geo
                w3 = w.reshape(w.shape[0], c, k).astype(np.float32)
                bias = consts[ins[2]] if len(ins) > 2 else np.zeros(w.shape[0], np.float32)
                op = TrunkOp("conv", node.output[0], (x,), weight=np.ascontiguousarray(
                    w3.transpose(2, 1, 0).reshape(k * c, -1)), bias=bias.astype(np.float32),
                    k=k, s=s, d=d, p=p0)  # fmt: skip
                out_shape = (int(w.shape[0]), (n + p0 + p1 - d * (k - 1) - 1) // s + 1)
        elif t in ("MaxPool", "AveragePool") and len(node.output) == 1:
            geo = _window_attrs(node, r)
            if geo is not None and (t == "MaxPool" or geo[3] == geo[4] == 0) and geo[2] == 1:
                k, s, d, p0, p1 = geo
                kind = "maxpool" if t == "MaxPool" else "avgpool"
                op = TrunkOp(kind, node.output[0], (x,), k=k, s=s, p=p0)
                out_shape = (c, (n + p0 + p1 - (k - 1) - 1) // s + 1)
        elif t == "BatchNormalization" and len(ins) == 5 and all(i in consts for i in ins[1:]):
            gamma, beta, mean, var = (consts[i].astype(np.float64) for i in ins[1:])
            scale = gamma / np.sqrt(var + float(_attrs(node).get("epsilon", 1e-5)))
            op = TrunkOp("affine", node.output[0], (x,), weight=scale.astype(np.float32),
                         bias=(beta - mean * scale).astype(np.float32))  # fmt: skip
        elif t in _UNARY and node.output[0]:
            op = TrunkOp("unary", node.output[0], (x,), op=t)
        elif t == "LeakyRelu":
            op = TrunkOp(
                "unary", node.output[0], (x,), op=t, alpha=float(_attrs(node).get("alpha", 0.01))
            )
        elif t in _BINARY and len(ins) == 2:
            if (
                len(spatial) == 2
                and shape[ins[0]] == shape[ins[1]]
                and rank[ins[0]] == rank[ins[1]]
            ):
                op = TrunkOp("binary", node.output[0], (ins[0], ins[1]), op=t)
            elif len(spatial) == 1:
                other = ins[1] if ins[0] == x else ins[0]
                vec = _channel_vector(consts[other], r, c) if other in consts else None
                if vec is not None:
                    op = TrunkOp(
                        "const", node.output[0], (x,), op=t, weight=vec, left=ins[0] == other
                    )
        if op is None or (t not in ("Dropout",) and len(node.output) != 1):
            continue  # not a trunk op: its spatial inputs become boundary tensors (below)
        ops.append(op)
        used.update(op.inputs)
        shape[op.out], rank[op.out] = out_shape, r
        if out_shape[1] < 1:
            raise UnsupportedGraph(f"{node.name or t}: no positions left")
    consumers: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        for name in op.inputs:
            consumers.setdefault(name, []).append(i)
    trunk_outputs = set(shape)
    boundary: list[str] = []
    head_nodes = []
    for node in g.node:
        out0 = node.output[0] if node.output else ""
        if out0 in shape or out0 in rows or out0 in index:
            continue
        for i in node.input:
            if i in trunk_outputs and i not in boundary:
                boundary.append(i)
        head_nodes.append(node)
    if g.output[0].name in shape:
        raise UnsupportedGraph("the output is a trunk tensor")
    if not boundary or any(rank[b] != rank[boundary[0]] for b in boundary):
        raise UnsupportedGraph("no boundary between trunk and head")
    if not any(op.kind == "conv" for op in ops):
        raise UnsupportedGraph("no convolution before the head")
    for node in head_nodes:
        if any(i in index or i in rows for i in node.input):
            raise UnsupportedGraph(f"head node {node.name or node.op_type} reads the tokens")
    r0 = rank[boundary[0]]
    head_inputs = []
    for b in boundary:
        hdims: list[str | int] = ["batch", shape[b][0], *([1] if r0 == 4 else []), shape[b][1]]
        head_inputs.append(helper.make_tensor_value_info(b, TensorProto.FLOAT, hdims))
    trunk = TrunkGraph(length, ops, shape, boundary, _subgraph(model, head_nodes, head_inputs),
                       r0, g.output[0].name, consumers)  # fmt: skip
    _linear_head(trunk, model, head_nodes, consts)
    return trunk


def _subgraph(model: Any, nodes: list[Any], inputs: list[Any]) -> bytes:
    """ONNX bytes of ``nodes`` with graph ``inputs``, the model's output and initializers."""
    from onnx import helper

    g = model.graph
    needed = {i for node in nodes for i in node.input}
    graph = helper.make_graph(
        nodes, "varfx_head", inputs, list(g.output), [i for i in g.initializer if i.name in needed]
    )
    m = helper.make_model(graph, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    return bytes(m.SerializeToString())


def _linear_head(
    trunk: TrunkGraph, model: Any, nodes: list[Any], consts: dict[str, np.ndarray]
) -> None:
    """Where the head starts with Flatten(boundary) -> Gemm (a linear map of the flattened
    boundary), set ``trunk.linear`` (the Gemm's output name and its weight as float32
    [n, C, H], position-major) and ``trunk.head2`` (the head after the Gemm): an alt's Gemm
    output is then the ref's plus the change of its window alone times those weight rows."""
    from onnx import TensorProto, helper

    if len(trunk.boundary) != 1:
        return
    b = trunk.boundary[0]
    readers = [n for n in nodes if b in n.input]
    if (
        len(readers) != 1
        or readers[0].op_type != "Flatten"
        or _attrs(readers[0]).get("axis", 1) != 1
    ):
        return
    flat = readers[0].output[0]
    gemms = [n for n in nodes if flat in n.input]
    if len(gemms) != 1 or gemms[0].op_type != "Gemm" or gemms[0].input[0] != flat:
        return
    gemm = gemms[0]
    a = _attrs(gemm)
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or gemm.input[1] not in consts:
        return
    w = consts[gemm.input[1]].astype(np.float32)
    w = w if a.get("transB", 0) else w.T  # [H, C*n]
    c, n = trunk.shape[b]
    if w.shape[1] != c * n:
        return
    rest = [x for x in nodes if x is not readers[0] and x is not gemm]
    out = gemm.output[0]
    inputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", int(w.shape[0])])]
    trunk.head2 = _subgraph(model, rest, inputs)
    trunk.linear = (out, np.ascontiguousarray(w.reshape(-1, c, n).transpose(2, 1, 0)))


@dataclass(frozen=True)
class Geometry:
    """Where each trunk tensor is computed for a change of width w at every start a.

    ``start[t]``: int64 [L - w + 1], the first position of tensor t's computed window for a
    change at ``a .. a+w-1``; ``width[t]``: its width (fixed); ``maps``: the tensors whose
    reference maps are read (a window op reads positions outside the window computed for it).
    """

    w: int
    start: dict[str, np.ndarray]
    width: dict[str, int]
    maps: tuple[str, ...]

    @classmethod
    def of(cls, trunk: TrunkGraph, w: int) -> Geometry:
        a = np.arange(trunk.length - w + 1, dtype=np.int64)
        lo: dict[str, np.ndarray] = {}
        hi: dict[str, np.ndarray] = {}
        for op in trunk.ops:  # forward: the affected range [lo, hi] of each tensor (empty: lo > hi)
            n = trunk.shape[op.out][1] if op.out in trunk.shape else trunk.length
            if op.kind == "onehot":
                lo[op.out], hi[op.out] = a, a + w - 1
                continue
            if op.kind == "binary":
                x, y = op.inputs
                ex, ey = lo[x] > hi[x], lo[y] > hi[y]
                l0 = np.minimum(np.where(ex, lo[y], lo[x]), np.where(ey, lo[x], lo[y]))
                h0 = np.maximum(np.where(ex, hi[y], hi[x]), np.where(ey, hi[x], hi[y]))
            elif op.kind in ("conv", "maxpool", "avgpool"):
                x = op.inputs[0]
                l0 = -((-(lo[x] + op.p - (op.k - 1) * op.d)) // op.s)
                h0 = (hi[x] + op.p) // op.s
                empty = lo[x] > hi[x]
                l0, h0 = np.where(empty, 1, l0), np.where(empty, 0, h0)
            else:
                l0, h0 = lo[op.inputs[0]], hi[op.inputs[0]]
            lo[op.out], hi[op.out] = np.maximum(l0, 0), np.minimum(h0, n - 1)
        start: dict[str, np.ndarray] = {}
        width: dict[str, int] = {}
        maps: list[str] = []
        for i in range(len(trunk.ops) - 1, -1, -1):  # backward: windows from what consumers read
            op = trunk.ops[i]
            t = op.out
            n = trunk.shape[t][1] if t in trunk.shape else trunk.length
            spans: list[tuple[np.ndarray, np.ndarray]] = []
            soft = t in trunk.boundary
            for j in trunk.consumers.get(t, []):
                c = trunk.ops[j]
                if c.kind in ("unary", "affine", "const", "binary"):
                    spans.append((start[c.out], start[c.out] + width[c.out]))
                elif c.kind == "maxpool" or c.kind == "avgpool":
                    need = start[c.out] * c.s - c.p
                    spans.append((need, need + (width[c.out] - 1) * c.s + c.k))
                else:
                    soft = True
            if soft or not spans:
                empty = lo[t] > hi[t]
                spans.append((np.where(empty, n, lo[t]), np.where(empty, 0, hi[t] + 1)))
            s0 = np.maximum(np.min([s for s, _ in spans], axis=0), 0)
            e0 = np.minimum(np.max([e for _, e in spans], axis=0), n)
            wid = int(min(max(1, int((e0 - s0).max())), n))
            start[t], width[t] = np.clip(s0, 0, n - wid), wid
        for op in trunk.ops:  # window ops reading outside their input's window need its map
            if op.kind in ("conv", "maxpool", "avgpool"):
                x = op.inputs[0]
                n = trunk.shape[x][1] if x in trunk.shape else trunk.length
                need = start[op.out] * op.s - op.p
                span = (width[op.out] - 1) * op.s + (op.k - 1) * op.d + 1
                lo_n, hi_n = np.maximum(need, 0), np.minimum(need + span, n)
                inside = (lo_n >= start[x]) & (hi_n <= start[x] + width[x])
                if not inside.all() and x not in maps and trunk.ops[0].out != x:
                    maps.append(x)
        maps += [b for b in trunk.boundary if b not in maps]
        return cls(w, start, width, tuple(maps))
