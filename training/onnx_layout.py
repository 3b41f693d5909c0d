"""Rewrite 1-D convolution graphs as 2-D ones ([N, C, L] -> [N, C, 1, L]) for ONNX Runtime's CPU.

ONNX Runtime's CPU provider runs ``Conv``/``MaxPool`` with a 2-D kernel through its blocked
(NCHWc) kernels, but leaves 1-D ones on the generic im2col path; the same DNA CNN is 1.3-1.7x
faster on a 2-core AVX-512 machine when its 1-D layers are written as 2-D layers with a
``(1, k)`` kernel (the ``conv2d_gain`` row of ``bench/run.py`` measures it). The rewrite changes no arithmetic: the
outputs agree with the 1-D graph to float32 rounding, and :func:`conv1d_as_conv2d` leaves the
graph's inputs, outputs and metadata as they were.

How: walking the nodes in order, a ``Conv`` with a 3-D weight initializer (or a 1-D ``MaxPool`` /
``AveragePool``) is replaced by its 2-D form, its input lifted with one ``Unsqueeze(axis 2)``.
Element-wise ops (unary, and binary ones whose other inputs are lifted too or size-1
constants), ``BatchNormalization`` and ``Flatten(axis=1)`` carry the lifted tensor on, so a
stack of conv / norm / activation / pool / residual-add layers stays 2-D end to end; a
``Reduce*`` over the length axis reduces both trailing axes. Any other consumer gets the 3-D
tensor back through one ``Squeeze(axis 2)``. Graphs with control flow are returned unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, GraphProto, NodeProto, TensorProto, helper, numpy_helper

__all__ = ["conv1d_as_conv2d", "count_1d_convs"]

log = logging.getLogger(__name__)

_SUFFIX = "__2d"
_UNARY = frozenset(
    {
        "Relu", "Sigmoid", "Tanh", "Erf", "Identity", "LeakyRelu", "Elu", "Selu", "Softplus",
        "Gelu", "HardSigmoid", "HardSwish", "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal",
        "Dropout", "Cast",
    }
)  # fmt: skip
_NARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"})
_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})
_REDUCE_ATTR = frozenset({"ReduceMax", "ReduceMean", "ReduceMin", "ReduceL2"})  # axes attribute


def count_1d_convs(model_bytes: bytes) -> int:
    """Number of ``Conv`` nodes with a 3-D weight (1-D convolutions) in a serialized model."""
    return _n_1d_convs(onnx.load_from_string(model_bytes).graph)


def _n_1d_convs(graph: GraphProto) -> int:
    dims = {i.name: len(i.dims) for i in graph.initializer}
    return sum(1 for n in graph.node if n.op_type == "Conv" and dims.get(n.input[1]) == 3)


def conv1d_as_conv2d(model_bytes: bytes) -> bytes:
    """The same model with its 1-D conv / pool layers as 2-D layers over ``[N, C, 1, L]``.

    Inputs, outputs (names, shapes, dtypes), metadata_props and opset are unchanged; a model
    without 1-D convolutions (or with control-flow subgraphs) comes back as it went in.
    """
    m = onnx.load_from_string(model_bytes)
    g = m.graph
    if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS)
           for n in g.node for a in n.attribute):  # fmt: skip
        log.info("graph has control flow; 1-D -> 2-D rewrite skipped")
        return model_bytes
    if _n_1d_convs(g) == 0:
        return model_bytes
    rw = _Rewriter(g)
    new_nodes = rw.run()
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used] + rw.new_initializers
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]  # shapes of rewritten tensors changed; ORT infers them again
    onnx.checker.check_model(m)
    return bytes(m.SerializeToString())


class _Rewriter:
    def __init__(self, graph: GraphProto) -> None:
        self.g = graph
        self.inits = {i.name: i for i in graph.initializer}
        self.consts: dict[str, np.ndarray] = {
            name: numpy_helper.to_array(i) for name, i in self.inits.items()
        }
        for n in graph.node:
            if n.op_type == "Constant" and len(n.output) == 1:
                for a in n.attribute:
                    if a.name == "value":
                        self.consts[n.output[0]] = numpy_helper.to_array(a.t)
        self.twins: dict[str, str] = {}  # lifted tensor -> the name of its 4-D twin
        self.has_3d: set[str] = {i.name for i in graph.input} | set(self.inits)
        self.new_initializers: list[TensorProto] = []
        self.out: list[NodeProto] = []
        taken = {t for n in graph.node for t in (*n.input, *n.output)}
        taken |= set(self.inits)
        self.taken = taken
        self._axes: dict[str, str] = {}

    # -- helpers ------------------------------------------------------------------------------
    def _fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def _axes_tensor(self, values: Iterable[int]) -> str:
        key = ",".join(map(str, values))
        if key not in self._axes:
            name = self._fresh(f"varfx_layout_axes_{key.replace(',', '_')}")
            arr = np.array([int(v) for v in key.split(",")], dtype=np.int64)
            self.new_initializers.append(numpy_helper.from_array(arr, name))
            self._axes[key] = name
        return self._axes[key]

    def _twin(self, name: str) -> str:
        """The 4-D twin's name of ``name`` (a fresh one the first time)."""
        if name not in self.twins:
            self.twins[name] = self._fresh(name + _SUFFIX)
        return self.twins[name]

    def _as_4d(self, name: str) -> str:
        """The 4-D twin of ``name``, made with an Unsqueeze when it does not exist yet."""
        if name not in self.twins:
            self.out.append(
                helper.make_node(
                    "Unsqueeze", [name, self._axes_tensor([2])], [self._twin(name)],
                    name=self._fresh(f"varfx_layout_unsqueeze_{name}"),
                )
            )  # fmt: skip
        return self.twins[name]

    def _as_3d(self, name: str) -> str:
        """``name`` itself, materialised with a Squeeze when only its 4-D twin exists."""
        if name in self.twins and name not in self.has_3d:
            self.out.append(
                helper.make_node(
                    "Squeeze", [self._twin(name), self._axes_tensor([2])], [name],
                    name=self._fresh(f"varfx_layout_squeeze_{name}"),
                )
            )  # fmt: skip
            self.has_3d.add(name)
        return name

    def _is_scalar_const(self, name: str) -> bool:
        a = self.consts.get(name)
        return a is not None and a.size == 1 and a.ndim <= 3

    def _emit_lifted(self, node: NodeProto, inputs: list[str], **attrs: object) -> None:
        """Emit ``node`` on 4-D ``inputs``; its outputs become lifted-only tensors."""
        self.out.append(_renamed(node, inputs, [self._twin(o) for o in node.output], **attrs))

    def _attr(self, node: NodeProto, name: str) -> Any:
        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return None

    def _spatial_attrs(self, node: NodeProto) -> dict[str, object] | None:
        """2-D versions of a 1-D node's kernel_shape / pads / strides / dilations (or None)."""
        out: dict[str, object] = {}
        for key, fill in (("kernel_shape", 1), ("strides", 1), ("dilations", 1)):
            v = self._attr(node, key)
            if v is not None:
                if len(v) != 1:
                    return None
                out[key] = [fill, int(v[0])]
        pads = self._attr(node, "pads")
        if pads is not None:
            if len(pads) != 2:
                return None
            out["pads"] = [0, int(pads[0]), 0, int(pads[1])]
        return out

    # -- the pass -----------------------------------------------------------------------------
    def run(self) -> list[NodeProto]:
        for node in self.g.node:
            if not self._try_lift(node):
                ins = [self._as_3d(i) if i else i for i in node.input]
                del node.input[:]
                node.input.extend(ins)
                self.out.append(node)
                self.has_3d.update(node.output)
        for o in self.g.output:
            self._as_3d(o.name)
        return self.out

    def _try_lift(self, node: NodeProto) -> bool:
        op = node.op_type
        ins = list(node.input)
        if node.domain not in ("", "ai.onnx"):
            return False
        if op == "Conv":
            w = self.consts.get(ins[1]) if len(ins) > 1 and ins[1] in self.inits else None
            attrs = self._spatial_attrs(node)
            if w is None or w.ndim != 3 or attrs is None:
                return False
            wname = self._fresh(ins[1] + _SUFFIX)
            self.new_initializers.append(numpy_helper.from_array(w[:, :, None, :], wname))
            attrs.setdefault("kernel_shape", [1, int(w.shape[2])])
            self._emit_lifted(node, [self._as_4d(ins[0]), wname, *ins[2:]], **attrs)
            return True
        if op in _POOLS:
            attrs = self._spatial_attrs(node)
            if attrs is None or "kernel_shape" not in attrs or len(node.output) != 1:
                return False
            self._emit_lifted(node, [self._as_4d(ins[0])], **attrs)
            return True
        if not ins or not any(i in self.twins for i in ins):
            return False  # element-wise regions start only from lifted tensors
        if op in _UNARY and len(node.output) == 1 and len(ins) == 1:
            self._emit_lifted(node, [self._twin(ins[0])])
            return True
        if op in _NARY and all(i in self.twins or self._is_scalar_const(i) for i in ins):
            self._emit_lifted(node, [self._twin(i) if i in self.twins else i for i in ins])
            return True
        if op == "BatchNormalization" and len(node.output) == 1 and ins[0] in self.twins:
            self._emit_lifted(node, [self._twin(ins[0]), *ins[1:]])
            return True
        if op == "Flatten" and self._attr(node, "axis") in (None, 1) and ins[0] in self.twins:
            # [N, C, 1, L] -> [N, C*L]: the same order as flattening [N, C, L]
            self.out.append(_renamed(node, [self._twin(ins[0])], list(node.output)))
            self.has_3d.update(node.output)
            return True
        if op in _REDUCE_ATTR and len(ins) == 1 and ins[0] in self.twins:
            axes = self._attr(node, "axes")
            if axes is not None and list(axes) in ([2], [-1]) and self._attr(node, "keepdims") == 0:
                self.out.append(
                    _renamed(node, [self._twin(ins[0])], list(node.output), axes=[2, 3])
                )
                self.has_3d.update(node.output)
                return True
        return False


def _renamed(node: NodeProto, inputs: list[str], outputs: list[str], **attrs: object) -> NodeProto:
    """A copy of ``node`` reading ``inputs`` and writing ``outputs``, ``attrs`` overriding."""
    kept = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in attrs}
    kept.update(attrs)
    return helper.make_node(
        node.op_type, inputs, outputs, name=node.name,
        domain=node.domain or None, **kept,
    )  # fmt: skip
