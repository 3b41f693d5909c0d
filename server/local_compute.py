"""Local recomputation: an alternate window that differs from its reference in a few bases is run
through the conv trunk only where those bases reach, on the reference's feature maps.

A row pair (ref, alt) whose tokens differ only inside a span of at most ``MAX_SPAN`` bases (SNVs,
MNVs, ISM mutants) costs one full reference pass, which also returns the reference feature maps
the cone reads (``server/local_graph.py`` says which), plus for the alt: each trunk layer's cone
(numpy, float32, im2col + one matrix product per conv over the whole batch), the cone spliced
into the reference's boundary maps, and the head (ONNX Runtime). Everything else (indels, whose
windows shift; third-party graphs; rows without a pair) runs as full passes.

Checked at load: on random windows (N included), SNVs at both edges and the centre and 3-base
MNVs, local and full predictions must agree within ``TOLERANCE`` (1e-5) and the local alt must
cost at most ``MAX_COST`` of a full pass; otherwise the model has no local path (logged once).

Memory: reference maps are held only for the rows of one run, in chunks of at most
``map_bytes`` (default 64 MiB) of maps, and the spliced boundary maps of the alts likewise; no
feature map is kept between runs (the reference cache keeps predictions only).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from varfx.server.local_graph import Geometry, TrunkGraph, TrunkOp, UnsupportedGraph, read_trunk

__all__ = ["MAX_COST", "MAX_SPAN", "TOLERANCE", "LocalRecompute", "changed_span", "load_local"]

log = logging.getLogger(__name__)

MAX_SPAN = 16  # widest changed span (bases) recomputed locally
TOLERANCE = 1e-5  # max abs difference of probabilities, local vs full, at the load check
MAX_COST = 0.75  # local alt MACs / full MACs above which local recomputation is not used
_WIDTHS = (1, 2, 4, 8, 16)


def changed_span(ref: np.ndarray, alt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, span) int64 [n] of the positions where rows uint8 [n, L] differ: the first one
    and the width up to the last (1 where the rows are equal). A row pair is recomputed
    locally when span <= MAX_SPAN."""
    diff = ref != alt
    first = diff.argmax(axis=1)
    last = ref.shape[1] - 1 - diff[:, ::-1].argmax(axis=1)
    return first, np.where(diff.any(axis=1), last - first + 1, 1)


def _erf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf

        return np.asarray(erf(x), dtype=np.float32)
    except ImportError:  # Abramowitz & Stegun 7.1.26 in float64 (|error| < 1.5e-7)
        z = np.abs(x.astype(np.float64))
        t = 1.0 / (1.0 + 0.3275911 * z)
        poly = t * (
            0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
        )
        return (np.sign(x) * (1.0 - poly * np.exp(-z * z))).astype(np.float32)


def _unary(op: TrunkOp, x: np.ndarray) -> np.ndarray:
    name = op.op
    if name in ("Identity", "Dropout"):
        return x
    if name == "Relu":
        return np.maximum(x, 0)
    if name == "LeakyRelu":
        return np.where(x >= 0, x, x * np.float32(op.alpha))
    if name == "Sigmoid":
        return (1 / (1 + np.exp(-x))).astype(np.float32)
    if name == "Erf":
        return _erf(x)
    return getattr(np, {"Tanh": "tanh", "Neg": "negative", "Abs": "abs", "Exp": "exp"}[name])(x)


_BIN = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


@dataclass(frozen=True)
class _Cone:
    """One batch of alts: ref row ``r`` [B], change start ``a`` [B]; ``maps`` of the refs."""

    r: np.ndarray
    a: np.ndarray
    maps: dict[str, np.ndarray]  # name -> float32 [R, C, n]
    ref_tokens: np.ndarray  # uint8 [R, L]


class LocalRecompute:
    """Local alt passes for one model (see the module docstring).

    ``predict``: the runner's full pass, uint8 [B, L] -> float32 [B, F] probabilities.
    """

    def __init__(
        self,
        trunk: TrunkGraph,
        model: Any,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        logits: bool,
        intra_op_threads: int = 0,
        map_bytes: int = 64 << 20,
        max_batch: int = 256,
    ) -> None:
        import onnxruntime as ort

        self.trunk = trunk
        self._predict = predict
        self._logits = logits
        self.geometry = {w: Geometry.of(trunk, w) for w in _WIDTHS if w <= trunk.length}
        self._tokens = {trunk.ops[0].out}  # tensors that are the one-hot of the tokens
        for op in trunk.ops[1:]:
            if op.kind == "unary" and op.op == "Identity" and op.inputs[0] in self._tokens:
                self._tokens.add(op.out)
        names: list[str] = []
        for geo in self.geometry.values():
            names += [m for m in geo.maps if m not in names and m not in self._tokens]
        self._linear = trunk.linear
        if self._linear is not None:  # the ref's first dense layer output, for the alt's delta
            names.append(self._linear[0])
        self.map_names = names
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        cpu = ["CPUExecutionProvider"]
        self._maps = ort.InferenceSession(trunk.maps_model(model, names), opts, providers=cpu)
        self._head = ort.InferenceSession(trunk.head, opts, providers=cpu)
        self._head2 = (
            ort.InferenceSession(trunk.head2, opts, providers=cpu) if trunk.head2 else None
        )
        self._out = trunk.output
        c = dict(trunk.shape)
        c[trunk.ops[0].out] = (0, trunk.length)
        if self._linear is not None:
            c[self._linear[0]] = (int(self._linear[1].shape[2]), 1)
        self.ref_bytes = sum(4 * c[m][0] * c[m][1] for m in names)  # maps per ref window
        self.alt_bytes = sum(4 * c[b][0] * c[b][1] for b in trunk.boundary)  # spliced per alt
        self.map_bytes, self.max_batch = map_bytes, max_batch
        self.col_bytes = max(  # the largest im2col block of one alt (widest change)
            4
            * self.geometry[max(self.geometry)].width[op.out]
            * op.weight.size
            // max(1, op.bias.size)
            for op in trunk.ops
            if op.kind == "conv"
        )
        self.local_rows = 0  # rows computed locally so far (statistics; not locked)
        self.full_rows = 0  # rows run as full passes (references included)
        head = self._head_macs()
        self.full_macs = head + sum(self._conv_macs(op, c[op.out][1]) for op in trunk.ops)
        w1 = self.geometry[1]
        self.local_macs = head + sum(self._conv_macs(op, w1.width[op.out]) for op in trunk.ops)
        if self._linear is not None:  # the first dense layer only on the changed positions
            n, ch, h = self._linear[1].shape
            self.local_macs -= (n - w1.width[trunk.boundary[0]]) * ch * h

    def _conv_macs(self, op: TrunkOp, positions: int) -> int:
        if op.kind != "conv":
            return 0
        return positions * int(op.weight.shape[0]) * int(op.weight.shape[1])

    def _head_macs(self) -> int:
        import onnx
        from onnx import numpy_helper

        head = onnx.load_from_string(self.trunk.head)
        sizes = {i.name: numpy_helper.to_array(i).size for i in head.graph.initializer}
        return sum(
            sizes.get(n.input[1], 0) for n in head.graph.node if n.op_type in ("Gemm", "MatMul")
        )

    @property
    def cost(self) -> float:
        """Multiply-accumulates of a local SNV alt pass over those of a full pass."""
        return self.local_macs / max(1, self.full_macs)

    # -- the row-pair interface ---------------------------------------------------------------

    def predict_pairs(self, tokens: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """Probabilities float32 [m, F] of token rows uint8 [m, L]; ``pairs`` int64 [m]: the row
        each row is an alternate of (-1: none). A paired row that differs from its reference
        within ``MAX_SPAN`` bases (and whose reference is not itself paired) is computed
        locally; every other row in full."""
        m, length = tokens.shape
        alt = np.flatnonzero(pairs >= 0)
        ref = pairs[alt]
        keep = pairs[ref] < 0
        alt, ref = alt[keep], ref[keep]
        first, span = changed_span(tokens[ref], tokens[alt])
        local = span <= MAX_SPAN
        alt, ref, first, span = alt[local], ref[local], first[local], span[local]
        full = np.ones(m, dtype=bool)
        full[alt] = False
        self.local_rows += len(alt)
        self.full_rows += m - len(alt)
        refs = np.unique(ref)
        plain = np.flatnonzero(full)
        plain = plain[~np.isin(plain, refs)]
        out: np.ndarray | None = None
        step = self.max_batch
        for i in range(0, len(plain), step):
            rows = plain[i : i + step]
            got = self._predict(tokens[rows])
            out = out if out is not None else np.empty((m, got.shape[1]), dtype=np.float32)
            out[rows] = got
        per = max(1, min(self.max_batch, self.map_bytes // max(1, self.ref_bytes)))
        alt_step = max(1, min(1024, self.map_bytes // max(1, self.alt_bytes + self.col_bytes)))
        order = np.argsort(ref, kind="stable")
        alt, ref, first, span = alt[order], ref[order], first[order], span[order]
        for i in range(0, len(refs), per):
            chunk = refs[i : i + per]
            probs, maps = self._ref_pass(tokens[chunk])
            out = out if out is not None else np.empty((m, probs.shape[1]), dtype=np.float32)
            out[chunk] = probs
            lo, hi = np.searchsorted(ref, [chunk[0], chunk[-1] + 1])
            r = np.searchsorted(chunk, ref[lo:hi])
            bucket = np.searchsorted(np.array(_WIDTHS), span[lo:hi])
            for b in np.unique(bucket):
                w = _WIDTHS[int(b)]
                sel = np.flatnonzero(bucket == b)
                a = np.minimum(first[lo:hi][sel], length - w)
                cone = _Cone(r[sel], a, maps, tokens[chunk])
                rows = alt[lo:hi][sel]
                win = tokens[rows[:, None], a[:, None] + np.arange(w)]
                for j in range(0, len(sel), alt_step):
                    part = slice(j, j + alt_step)
                    sub = _Cone(cone.r[part], cone.a[part], maps, cone.ref_tokens)
                    out[rows[part]] = self._alt_pass(sub, win[part], self.geometry[w])
        if out is None:
            return np.zeros((0, 0), dtype=np.float32)
        return out

    # -- the passes -----------------------------------------------------------------------------

    def _finish(self, x: np.ndarray) -> np.ndarray:
        if self._logits:
            from varfx.server.runtime import _sigmoid

            return _sigmoid(x)
        return np.asarray(x, dtype=np.float32)

    def _ref_pass(self, tokens: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        outs = self._maps.run(
            [self._out, *self.map_names], {self._maps.get_inputs()[0].name: tokens}
        )
        maps = {}
        for name, value in zip(self.map_names, outs[1:], strict=True):
            value = np.asarray(value, dtype=np.float32)
            if name in self.trunk.shape:
                c, n = self.trunk.shape[name]
                value = value.reshape(len(tokens), c, n)
            maps[name] = value
        return self._finish(outs[0]), maps

    def _take(self, cone: _Cone, vals: dict[str, np.ndarray], starts: dict[str, np.ndarray],
              x: str, start: np.ndarray, span: int, fill: float) -> np.ndarray:  # fmt: skip
        """Tensor x over positions ``start .. start+span`` of each alt: float32 [B, span, C]
        (its computed window, the reference map elsewhere, ``fill`` outside 0..n-1)."""
        own, st = vals[x], starts[x]
        if own.shape[1] == span and np.array_equal(st, start):
            return own
        n = self.trunk.shape[x][1] if x in self.trunk.shape else self.trunk.length
        b = len(start)
        pos = start[:, None] + np.arange(span)
        valid = (pos >= 0) & (pos < n)
        rel = pos - st[:, None]
        mine = valid & (rel >= 0) & (rel < own.shape[1])
        out = np.full((b, span, own.shape[2]), fill, dtype=np.float32)
        bi, ji = np.nonzero(mine)
        out[bi, ji] = own[bi, rel[bi, ji]]
        rest = valid & ~mine
        if rest.any():
            bi, ji = np.nonzero(rest)
            p = pos[bi, ji]
            if x in self._tokens:
                table = self.trunk.ops[0].weight
                out[bi, ji] = table[cone.ref_tokens[cone.r[bi], p]]
            else:
                out[bi, ji] = cone.maps[x][cone.r[bi], :, p]
        return out

    def _alt_pass(self, cone: _Cone, win: np.ndarray, geo: Geometry) -> np.ndarray:
        """Probabilities float32 [B, F] of the alts: window tokens ``win`` uint8 [B, w] at
        positions ``cone.a .. cone.a+w``, every other base as in their reference rows."""
        vals: dict[str, np.ndarray] = {}
        starts = {t: s[cone.a] for t, s in geo.start.items()}
        b = len(cone.a)
        for op in self.trunk.ops:
            t, wid, st = op.out, geo.width[op.out], starts[op.out]
            if op.kind == "onehot":
                table = op.weight
                pos = np.clip(st[:, None] + np.arange(wid), 0, self.trunk.length - 1)
                toks = cone.ref_tokens[cone.r[:, None], pos]
                rel = cone.a[:, None] - st[:, None] + np.arange(geo.w)
                toks[np.arange(b)[:, None], rel] = win
                vals[t] = table[toks]
                continue
            if op.kind in ("conv", "maxpool", "avgpool"):
                d = op.d if op.kind == "conv" else 1
                span = (wid - 1) * op.s + (op.k - 1) * d + 1
                fill = -np.inf if op.kind == "maxpool" else 0.0
                x = self._take(cone, vals, starts, op.inputs[0], st * op.s - op.p, span, fill)
                sb, sp, sc = x.strides  # [B, W, k, C] as a view: one copy for the product
                cols = np.lib.stride_tricks.as_strided(
                    x, (b, wid, op.k, x.shape[2]), (sb, sp * op.s, sp * d, sc), writeable=False
                )
                if op.kind == "conv":
                    flat = cols.reshape(b * wid, -1) @ op.weight + op.bias
                    vals[t] = flat.reshape(b, wid, -1)
                else:
                    vals[t] = cols.max(axis=2) if op.kind == "maxpool" else cols.mean(axis=2)
                continue
            ins = [self._take(cone, vals, starts, i, st, wid, 0.0) for i in op.inputs]
            if op.kind == "unary":
                vals[t] = _unary(op, ins[0])
            elif op.kind == "affine":
                vals[t] = ins[0] * op.weight + op.bias
            elif op.kind == "const":
                c = op.weight
                vals[t] = _BIN[op.op](c, ins[0]) if op.left else _BIN[op.op](ins[0], c)
            else:
                vals[t] = _BIN[op.op](ins[0], ins[1])
            vals[t] = np.asarray(vals[t], dtype=np.float32)
        if self._linear is not None and self._head2 is not None:
            return self._linear_pass(cone, vals, starts, geo, self._head2)
        feed = {}
        for name in self.trunk.boundary:
            full = cone.maps[name][cone.r]  # [B, C, n] copy
            pos = starts[name][:, None] + np.arange(geo.width[name])
            full[np.arange(b)[:, None], :, pos] = vals[name]
            if self.trunk.rank == 4:
                full = full.reshape(b, full.shape[1], 1, full.shape[2])
            feed[name] = full
        (out,) = self._head.run([self._out], feed)
        return self._finish(out)

    def _linear_pass(self, cone: _Cone, vals: dict[str, np.ndarray],
                     starts: dict[str, np.ndarray], geo: Geometry, head2: Any) -> np.ndarray:  # fmt: skip
        """The head of a Flatten -> Gemm model: the ref's Gemm output plus the alt's change on
        its boundary window times those rows of the weight."""
        assert self._linear is not None
        name, wt = self._linear
        bnd = self.trunk.boundary[0]
        wid, st = geo.width[bnd], starts[bnd]
        pos = st[:, None] + np.arange(wid)
        ref_win = cone.maps[bnd][cone.r[:, None], :, pos]  # [B, wid, C]
        delta = vals[bnd] - ref_win
        y = cone.maps[name][cone.r]  # [B, H] copy
        # one product per boundary position, over the alts whose window holds it: each weight
        # block [C, H] is read once per batch (per window start it was read ~wid times)
        for p in np.unique(pos).tolist():
            bi, ji = np.nonzero(pos == p)
            y[bi] += delta[bi, ji] @ wt[p]
        (out,) = head2.run([self._out], {name: y})
        return self._finish(out)

    # -- the load check -------------------------------------------------------------------------

    def verify(self, seed: int = 0) -> float:
        """Max abs difference, local vs full, on random windows with SNVs at both edges and the
        centre and MNVs of 3 bases (the module docstring)."""
        rng = np.random.default_rng(seed)
        length = self.trunk.length
        refs = rng.integers(0, 4, size=(3, length), dtype=np.uint8)
        refs[1, rng.random(length) < 0.05] = 4
        rows, pairs = [refs], [np.full(3, -1)]
        for p in sorted({0, 1, length // 2, length - 2, length - 1, int(rng.integers(length))}):
            for r in range(3):
                alt = refs[r].copy()
                alt[p] = (alt[p] + 1 + rng.integers(3)) % 4
                rows.append(alt[None])
                pairs.append(np.array([r]))
        for p in (0, length // 2 - 1, max(0, length - 3)):
            alt = refs[0].copy()
            alt[p : p + 3] = (alt[p : p + 3] + 1) % 4
            rows.append(alt[None])
            pairs.append(np.array([0]))
        tokens, pair = np.concatenate(rows), np.concatenate(pairs).astype(np.int64)
        return float(np.max(np.abs(self.predict_pairs(tokens, pair) - self._predict(tokens))))


def load_local(
    path: Path,
    predict: Callable[[np.ndarray], np.ndarray],
    *,
    name: str,
    logits: bool,
    tokens: bool = True,
    intra_op_threads: int = 0,
    max_batch: int = 256,
) -> LocalRecompute | None:
    """The local path of the model file ``path``, or None (logged once, with the reason) when
    it takes one-hot input (``tokens`` false), its graph has no trunk this can recompute, the
    load check fails, or it would not save."""
    if not tokens:
        log.info("model %s: local recomputation off (one-hot input: not a varfx export)", name)
        return None
    try:
        import onnx
    except ImportError:
        log.info("model %s: local recomputation off (the onnx package is not installed)", name)
        return None
    try:
        model = onnx.load(str(path))
        trunk = read_trunk(model)
        local = LocalRecompute(trunk, model, predict, logits=logits,
                               intra_op_threads=intra_op_threads, max_batch=max_batch)  # fmt: skip
        diff = local.verify()
    except UnsupportedGraph as exc:
        log.info("model %s: local recomputation off (%s)", name, exc)
        return None
    except Exception as exc:  # an unexpected graph: no local path, the model still serves
        log.warning("model %s: local recomputation off (%s: %s)", name, type(exc).__name__, exc)
        return None
    if not diff <= TOLERANCE or math.isnan(diff):
        log.warning("model %s: local recomputation off (load check: max abs diff %.3g > %.0e)",
                    name, diff, TOLERANCE)  # fmt: skip
        return None
    if local.cost > MAX_COST:
        log.info("model %s: local recomputation off (an SNV alt costs %.0f%% of a full pass)",
                 name, 100 * local.cost)  # fmt: skip
        return None
    log.info(
        "model %s: local recomputation on: SNV alt %.3g of %.3g GMAC (%.0f%%), load check %.2g, "
        "maps %.0f kB per ref window", name, local.local_macs / 1e9, local.full_macs / 1e9,
        100 * local.cost, diff, local.ref_bytes / 1e3,
    )  # fmt: skip
    return local
