"""Token windows built by ONNX Runtime from a genome held in its memory (CUDA: on the GPU).

The genome is laid out once as one uint8 token array ``[G]``: the served contigs back to back,
each preceded by ``L`` N tokens (and one run of ``L`` N tokens after the last), so that every
window of the ``varfx.core.windows`` rule for a position inside a contig (start >= -L/2, end
<= contig length + L/2) lies inside the array and reads N past the contig ends, as
``Genome.fetch_windows`` does. On CUDA it is copied to the device once (an ``OrtValue`` bound
through IO binding); per batch only the rows' descriptions cross PCIe, 18 bytes a row:

- ``starts`` int64 [R]: the array index of each window's first base (contig offset + start);
- ``alt_pos`` int64 [R]: the window position replaced by ``alt_tok`` (-1: none, a ref row);
- ``alt_tok`` uint8 [R]: the replacing token (A0 C1 G2 T3);
- ``rc`` bool [R]: reverse-complement the (substituted) window.

The gather graph (:func:`gather_graph`, opset 17: Add, Gather, Equal, Where, Cast, Concat)
returns ``windows`` uint8 [H + R, L]: ``host`` uint8 [H, L] (host-built windows of the same run,
H may be 0) then the R described windows; for B SNVs, rows ``[ref_0..ref_{B-1},
alt_0..alt_{B-1}]`` give the ``[2B, L]`` layout of ``VariantWindows.both``
(:meth:`DeviceWindows.snv_rows`). The windows stay on the device and feed the model's session
directly (:meth:`DeviceWindows.bind`, ``ModelRunner.predict_mixed``).

The host keeps what ``server/windows.py`` needs to give a described SNV the same status and
message as a host-built one: the base under each window's centre (a one-base genome read) and
the N runs of the array (start/end pairs), so the N bases of a window are counted without
reading it (:meth:`DeviceWindows.check`).

Memory: ``G`` bytes on the device (the GRCh37 primary assembly: ~3.1 GB; chr20 alone 63 MB),
plus ``R x L`` bytes of windows per batch; only the contigs the model serves are loaded, and a
genome above ``max_bytes`` is refused (:class:`DeviceWindowsError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from varfx.core.tokens import N_TOKEN
from varfx.core.windows import WindowRule
from varfx.server.genome import Genome

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ROW_BYTES",
    "DeviceWindows",
    "DeviceWindowsError",
    "WindowRows",
    "gather_graph",
]

DEFAULT_MAX_BYTES = 4 << 30  # 4 GiB: a whole human assembly fits, a pangenome does not
_ROW_FIELDS = ("starts", "alt_pos", "alt_tok", "rc")
ROW_BYTES = 8 + 8 + 1 + 1  # starts, alt_pos, alt_tok, rc
_CHUNK = 1 << 24  # bases read per genome fetch while building the array


class DeviceWindowsError(Exception):
    """The genome cannot be laid out for device windows (size cap, unknown contig)."""


@dataclass(frozen=True)
class WindowRows:
    """Descriptions of R windows (see the module doc): int64 starts [R], int64 alt_pos [R],
    uint8 alt_tok [R], bool rc [R]."""

    starts: np.ndarray
    alt_pos: np.ndarray
    alt_tok: np.ndarray
    rc: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: slice) -> WindowRows:
        return WindowRows(
            self.starts[index], self.alt_pos[index], self.alt_tok[index], self.rc[index]
        )

    @property
    def nbytes(self) -> int:
        """Bytes these descriptions take on the wire to the runner (18 a row)."""
        return ROW_BYTES * len(self)

    def with_rc(self, rc: bool) -> WindowRows:
        """The same rows, every one reverse-complemented (``rc``) or not."""
        return WindowRows(self.starts, self.alt_pos, self.alt_tok, np.full(len(self), rc))

    @classmethod
    def concat(cls, parts: Sequence[WindowRows]) -> WindowRows:
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in _ROW_FIELDS))

    def feeds(self) -> dict[str, np.ndarray]:
        return {
            "starts": np.ascontiguousarray(self.starts, dtype=np.int64),
            "alt_pos": np.ascontiguousarray(self.alt_pos, dtype=np.int64),
            "alt_tok": np.ascontiguousarray(self.alt_tok, dtype=np.uint8),
            "rc": np.ascontiguousarray(self.rc, dtype=bool),
        }


def gather_graph(length: int) -> bytes:
    """The ONNX gather graph for windows of ``length`` bases (inputs and output as above)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    ar = np.arange(length, dtype=np.int64)
    inits = [
        numpy_helper.from_array(ar[None, :], "positions"),
        numpy_helper.from_array(ar[::-1].copy(), "reversed"),
        numpy_helper.from_array(np.array([3, 2, 1, 0, 4], dtype=np.uint8), "complement"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    n = helper.make_node
    nodes = [
        n("Unsqueeze", ["starts", "axis1"], ["starts2"]),
        n("Add", ["starts2", "positions"], ["index"]),  # int64 [R, L]
        n("Gather", ["genome", "index"], ["ref"], axis=0),  # uint8 [R, L]
        n("Unsqueeze", ["alt_pos", "axis1"], ["alt_pos2"]),
        n("Equal", ["positions", "alt_pos2"], ["at_alt"]),  # bool [R, L]
        n("Unsqueeze", ["alt_tok", "axis1"], ["alt_tok2"]),
        n("Where", ["at_alt", "alt_tok2", "ref"], ["forward"]),
        n("Gather", ["forward", "reversed"], ["backward"], axis=1),
        n("Cast", ["backward"], ["backward64"], to=T.INT64),
        n("Gather", ["complement", "backward64"], ["revcomp"], axis=0),
        n("Unsqueeze", ["rc", "axis1"], ["rc2"]),
        n("Where", ["rc2", "revcomp", "forward"], ["described"]),
        n("Concat", ["host", "described"], ["windows"], axis=0),
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "varfx_device_windows",
        [
            vi("genome", T.UINT8, ["G"]),
            vi("starts", T.INT64, ["R"]),
            vi("alt_pos", T.INT64, ["R"]),
            vi("alt_tok", T.UINT8, ["R"]),
            vi("rc", T.BOOL, ["R"]),
            vi("host", T.UINT8, ["H", length]),
        ],
        [vi("windows", T.UINT8, ["W", length])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _n_runs(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of N tokens of ``tokens``: int64 starts, ends (half-open) and the N count
    before each run, each led by an empty run at -1 (read in chunks: no G-sized temporary)."""
    lo, hi = [np.array([-1], np.int64)], [np.array([-1], np.int64)]
    for at in range(0, len(tokens), _CHUNK):
        isn = (tokens[at : at + _CHUNK] == N_TOKEN).view(np.int8)
        edge = np.diff(isn, prepend=np.int8(0), append=np.int8(0))
        lo.append(np.flatnonzero(edge == 1).astype(np.int64) + at)
        hi.append(np.flatnonzero(edge == -1).astype(np.int64) + at)
    starts, ends = np.concatenate(lo), np.concatenate(hi)
    cum = np.concatenate([[0], np.cumsum(ends - starts)[:-1]]).astype(np.int64)
    return starts, ends, cum


def _layout_size(sizes: Sequence[int], length: int) -> int:
    return int(sum(sizes)) + (len(sizes) + 1) * length


class DeviceWindows:
    """A genome laid out for the gather graph, and an ONNX Runtime session that runs it.

    Args:
        genome: the served genome; contigs: the contigs to load (the genome's names; default
            all); length: window length L (even); providers: ONNX Runtime providers (the model's,
            so the genome lives where the model runs); max_bytes: refuse a larger array.
    """

    def __init__(
        self,
        genome: Genome,
        length: int,
        *,
        contigs: Sequence[str] | None = None,
        providers: Sequence[Any] = ("CPUExecutionProvider",),
        device_id: int = 0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        import onnxruntime as ort

        self.rule = WindowRule(length)
        names = list(genome.contigs) if contigs is None else list(contigs)
        unknown = [c for c in names if c not in genome.contigs]
        if unknown:
            raise DeviceWindowsError(f"contigs {unknown[:5]} are not in the genome {genome.path}")
        sizes = [int(genome.contigs[c]) for c in names]
        self.nbytes = _layout_size(sizes, length)
        if self.nbytes > max_bytes:
            raise DeviceWindowsError(
                f"device windows need {self.nbytes / 2**20:.0f} MiB for {len(names)} contigs of "
                f"{genome.path}, above the cap of {max_bytes / 2**20:.0f} MiB"
            )
        tokens = np.full(self.nbytes, N_TOKEN, dtype=np.uint8)
        self.offsets: dict[str, int] = {}
        at = length
        for name, size in zip(names, sizes, strict=True):
            self.offsets[name] = at
            for lo in range(0, size, _CHUNK):
                hi = min(size, lo + _CHUNK)
                tokens[at + lo : at + hi] = genome.fetch_windows(name, [lo], hi - lo, tokens=True)[
                    0
                ]
            at += size + length
        self.contigs = tuple(names)
        self.genome = genome
        self._n_runs = _n_runs(tokens)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(gather_graph(length), opts, providers=list(providers))
        self.on_cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.device = f"cuda:{device_id}" if self.on_cuda else "cpu"
        # the genome as an OrtValue where the session runs, bound once per IO binding
        self._genome = ort.OrtValue.ortvalue_from_numpy(
            tokens, "cuda" if self.on_cuda else "cpu", device_id if self.on_cuda else 0
        )
        # the CPU OrtValue aliases this buffer: keep it alive (and read centres from it); on
        # CUDA the device holds the copy and the host reads centres from the genome
        self._host_tokens = None if self.on_cuda else tokens
        self._empty_host = np.zeros((0, length), dtype=np.uint8)

    @property
    def length(self) -> int:
        return self.rule.length

    def rows_for(self, contig: str, starts: np.ndarray, alt_pos: np.ndarray | None = None,
                 alt_tok: np.ndarray | None = None, rc: np.ndarray | bool = False) -> WindowRows:  # fmt: skip
        """Rows for windows of ``contig`` starting at ``starts`` (0-based, the rule's starts)."""
        starts = np.asarray(starts, dtype=np.int64)
        r = len(starts)
        if contig not in self.offsets:
            raise DeviceWindowsError(f"contig {contig!r} is not loaded for device windows")
        return WindowRows(
            starts + self.offsets[contig],
            np.full(r, -1, np.int64) if alt_pos is None else np.asarray(alt_pos, np.int64),
            np.zeros(r, np.uint8) if alt_tok is None else np.asarray(alt_tok, np.uint8),
            np.broadcast_to(np.asarray(rc, dtype=bool), (r,)),
        )

    def snv_rows(self, contig: str, pos: np.ndarray, alt_tok: np.ndarray,
                 rc: bool = False) -> WindowRows:  # fmt: skip
        """2B rows for B SNVs of ``contig`` (1-based ``pos``, ALT tokens): ref rows then alt
        rows, the layout of ``VariantWindows.both`` (rc: both reverse-complemented)."""
        pos = np.asarray(pos, dtype=np.int64)
        starts = self.rule.starts(pos)
        b = len(pos)
        center = np.full(b, self.rule.center, np.int64)
        return self.rows_for(
            contig,
            np.concatenate([starts, starts]),
            np.concatenate([np.full(b, -1, np.int64), center]),
            np.concatenate([np.zeros(b, np.uint8), np.asarray(alt_tok, np.uint8)]),
            rc,
        )

    def check(self, contig: str, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For windows of ``contig`` at ``starts`` (0-based rule starts): uint8 [B] the token at
        each window's centre (``rule.center``) and int64 [B] its number of N tokens (contig
        ends, gaps), read without building the windows."""
        starts = np.asarray(starts, dtype=np.int64)
        if contig not in self.offsets:
            raise DeviceWindowsError(f"contig {contig!r} is not loaded for device windows")
        at = starts + self.offsets[contig]
        c = self.rule.center
        if self._host_tokens is not None:
            centers = self._host_tokens[at + c]
        else:
            centers = self.genome.fetch_windows(contig, starts + c, 1, tokens=True)[:, 0]
        return centers, self._n_before(at + self.length) - self._n_before(at)

    def _n_before(self, x: np.ndarray) -> np.ndarray:
        """int64: N tokens of the array before each index ``x``."""
        lo, hi, cum = self._n_runs
        j = np.searchsorted(lo, x, side="right") - 1  # the last run starting at or before x
        return cum[j] + np.clip(x - lo[j], 0, hi[j] - lo[j])

    def bind(self, rows: WindowRows, host: np.ndarray | None = None) -> Any:
        """Run the gather graph; the windows stay where the session runs (an ``OrtValue``
        uint8 [H + R, L], on the GPU under CUDA), ready to bind as a model's input: ``host``
        uint8 [H, L] (host-built windows of the same run, copied over) then the R rows."""
        binding = self.session.io_binding()
        binding.bind_ortvalue_input("genome", self._genome)
        for name, arr in rows.feeds().items():
            binding.bind_cpu_input(name, arr)
        extra = self._empty_host if host is None else np.ascontiguousarray(host, dtype=np.uint8)
        binding.bind_cpu_input("host", extra)
        if self.on_cuda:
            binding.bind_output("windows", "cuda", int(self.device.split(":")[1]))
        else:
            binding.bind_output("windows")
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    def windows(self, rows: WindowRows) -> np.ndarray:
        """uint8 [R, L] windows on the host (copied back from the device under CUDA)."""
        if not len(rows):
            return np.zeros((0, self.length), dtype=np.uint8)
        return np.asarray(self.bind(rows).numpy())
