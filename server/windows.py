"""Reference and alternate token windows for a batch of variants (``varfx.core.windows`` rule).

Input is a columnar ``VariantBatch``. Plain SNVs (one A/C/G/T base each side, on a known contig,
in range: most of any VCF) are classified and built with whole-array operations: one windowed
gather per contig (a memory-mapped FASTA where it is plain) and a lookup-table pass. Every other
variant (indels, MNVs, unscorable alleles, REF mismatches) takes the general path, one genome
fetch of its own: indels are normalised first (trimmed, left-aligned, as ``bcftools norm``) unless
the caller asks for them as written. A variant that cannot be scored is never dropped: it gets a
status code and a message. Windows that reach into N (contig ends, assembly gaps) are scored with
a message giving the number of N bases.

With ``device`` (a ``DeviceWindows``: the genome laid out where the model runs), plain SNVs on
its contigs are not built at all: they are checked (the genome's base under the centre, the N
bases of the window from the layout's N runs) and described (``DescribedSNVs``: the window's
index in the layout and the ALT token, 9 bytes a variant), with the same statuses and messages;
``described_rows`` turns a plan's rows into host tokens for the rest plus ``WindowRows`` that the
runner's gather graph builds on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from varfx.core.tokens import N_TOKEN, encode_batch, first_invalid, reverse_complement
from varfx.core.variants import VariantBatch
from varfx.core.windows import WindowRule, fit_sequence, normalize_indel
from varfx.proto.v1 import varfx_pb2
from varfx.server.device_windows import DeviceWindows, WindowRows
from varfx.server.genome import Genome

__all__ = [
    "SITE_SHIFT",
    "DescribedSNVs",
    "VariantWindows",
    "build_windows",
    "described_rows",
    "fit_sequence",
    "sequence_windows",
]

_SC = varfx_pb2.StatusCode
_RP = varfx_pb2.RefPolicy
# byte -> 0..3 for A/C/G/T (either case), 255 for anything else
_BASE = np.full(256, 255, dtype=np.uint8)
for _i, _b in enumerate(b"ACGT"):
    _BASE[_b] = _BASE[_b + 32] = _i
SITE_SHIFT = 40  # site key = contig row << 40 | (window start + 2**39)


@dataclass(frozen=True)
class DescribedSNVs:
    """Plain SNVs whose windows the device builds (``build_windows(device=...)``).

    Attributes:
        mask: bool [n]: which inputs are described (their rows of ``ref``/``alt`` are not
            built: undefined); all OK.
        starts: int64 [n]: the layout index of each described ref window's first base.
        alt_tok: uint8 [n]: the ALT token (A0 C1 G2 T3) at the window centre ``center``.
    """

    mask: np.ndarray
    starts: np.ndarray
    alt_tok: np.ndarray
    center: int


@dataclass(frozen=True)
class VariantWindows:
    """Token windows for n variants (or sequence pairs).

    Attributes:
        ref: uint8 [n, L] tokens of the reference windows (all N where status is not OK).
        alt: uint8 [n, L] tokens of the alternate windows.
        status: int32 [n], ``varfx_pb2.StatusCode`` values (0 = OK).
        messages: n strings: '' or a message naming the offending value (a warning when OK).
        site: int64 [n]: equal for variants whose ref windows are the same genome span
            (contig and start), -1 where not OK or not from the genome.
        noted: indices of the inputs that have a message, ascending.
        site_contigs: the genome contig of each site's contig row (``site >> 40``).
        length_change: int32 [n] ``len(ALT) - len(REF)`` as scored (after normalisation and
            any REF-policy swap; 0 for SNVs, MNVs and rows not OK); empty for sequence pairs.
        both: uint8 [2n, L] holding ``ref`` then ``alt`` (they are views of it), so that a
            plan whose rows are exactly these needs no copy; None for sequence pairs.
        described: the SNVs left to the device (``DescribedSNVs``), or None (all built here).
    """

    ref: np.ndarray
    alt: np.ndarray
    status: np.ndarray
    messages: list[str]
    site: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    noted: list[int] = field(default_factory=list)
    both: np.ndarray | None = None
    site_contigs: tuple[str | None, ...] = ()
    length_change: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    described: DescribedSNVs | None = None

    @property
    def ok(self) -> np.ndarray:
        """bool [n]: which rows can be scored."""
        return np.asarray(self.status == _SC.OK)


def _allele_problem(allele: str, what: str) -> tuple[int, str] | None:
    if allele in ("", "."):
        return _SC.INVALID_ALLELE, f"missing {what} allele {allele!r}"
    if (
        allele == "*"
        or allele.startswith("<")
        or "[" in allele
        or "]" in allele
        or allele.startswith(".")  # single breakends: ".A" and "A."
        or allele.endswith(".")
    ):
        return _SC.SYMBOLIC_ALLELE, f"symbolic {what} allele {allele!r} cannot be scored"
    bad = first_invalid(allele)
    if bad >= 0:
        return (
            _SC.INVALID_ALLELE,
            f"invalid base {allele[bad]!r} in {what} allele {allele!r} (expected A, C, G, T or N)",
        )
    return None


def _as_batch(variants: VariantBatch | Sequence[object]) -> VariantBatch:
    return variants if isinstance(variants, VariantBatch) else VariantBatch.from_variants(variants)


def build_windows(
    genome: Genome,
    variants: VariantBatch | Sequence[object],
    length: int,
    *,
    ref_policy: int = _RP.REF_POLICY_STRICT,
    max_indel: int | None = None,
    indels_as_written: bool = False,
    device: DeviceWindows | None = None,
) -> VariantWindows:
    """Build ref/alt token windows for variants with one ALT each.

    Args:
        genome: the reference genome.
        variants: a VariantBatch (or objects with chrom/pos/ref/alt, converted to one).
        length: window length L of the model (even).
        ref_policy: a ``varfx_pb2.RefPolicy``: STRICT (default; a REF mismatch is not scored),
            WARN (score against the genome, warn), FLIP (swap REF/ALT when ALT matches the genome).
        max_indel: longest allele change (bases) the window may show; default L/2.
        indels_as_written: build indel windows from the alleles as given (no normalisation).
        device: describe plain SNVs on its contigs instead of building them (module doc); its
            window length must be ``length`` and its genome ``genome``.

    Returns:
        VariantWindows with ref/alt uint8 [n, L] and per-variant status and messages.
    """
    rule = WindowRule(length)
    batch = _as_batch(variants)
    n = len(batch)
    if device is not None and device.length != length:
        raise ValueError(f"device windows of {device.length} bases for windows of {length}")
    out = _Builder(genome, batch, rule, max_indel, ref_policy, indels_as_written, device)
    rest = out.snvs()
    for i in rest.tolist():
        out.general(i)
    out.finish_general()
    unwritten = ~out.written
    if out.described is not None:
        unwritten &= ~out.described.mask
        if not out.described.mask.any():
            out.described = None
    if unwritten.any():
        out.ref_tokens[unwritten] = N_TOKEN
        out.alt_tokens[unwritten] = N_TOKEN
    return VariantWindows(
        ref=out.ref_tokens,
        alt=out.alt_tokens,
        status=out.status,
        messages=out.messages,
        site=np.where(out.status == _SC.OK, out.site, -1) if n else out.site,
        noted=sorted(out.noted),
        both=out.both,
        site_contigs=tuple(out.contigs),
        length_change=out.length_change,
        described=out.described,
    )


class _Builder:
    """The state of one build_windows call (arrays filled row by row group)."""

    def __init__(
        self,
        genome: Genome,
        batch: VariantBatch,
        rule: WindowRule,
        max_indel: int | None,
        ref_policy: int,
        as_written: bool,
        device: DeviceWindows | None = None,
    ) -> None:
        n = len(batch)
        self.device = device
        self.described = (
            None
            if device is None
            else DescribedSNVs(
                np.zeros(n, dtype=bool),
                np.zeros(n, dtype=np.int64),
                np.zeros(n, dtype=np.uint8),
                rule.center,
            )
        )
        self.genome, self.batch, self.rule = genome, batch, rule
        self.limit = rule.max_indel if max_indel is None else max_indel
        self.policy, self.as_written = ref_policy, as_written
        self.status = np.zeros(n, dtype=np.int32)
        self.messages = [""] * n
        self.noted: set[int] = set()
        self.site = np.full(n, -1, dtype=np.int64)
        self.length_change = np.zeros(n, dtype=np.int32)
        self.both = np.empty((2 * n, rule.length), dtype=np.uint8)
        self.ref_tokens, self.alt_tokens = self.both[:n], self.both[n:]
        self.written = np.zeros(n, dtype=bool)
        # each batch contig -> (genome contig or None, its length, its row number)
        self.contigs = [genome.resolve(name) for name in batch.contigs]
        self.sizes = np.array(
            [genome.contigs[c] if c is not None else -1 for c in self.contigs] + [-1],
            dtype=np.int64,
        )
        self.rows: list[int] = []
        self.ref_seqs: list[bytes] = []
        self.alt_seqs: list[bytes] = []

    def note(self, i: int, message: str) -> None:
        self.messages[i] = message
        self.noted.add(i)

    # -- plain SNVs, whole arrays ---------------------------------------------------------

    def snvs(self) -> np.ndarray:
        """Fill the rows of the plain SNVs; return the indices of every other variant."""
        b, rule = self.batch, self.rule
        n = len(b)
        if not n:
            return np.zeros(0, dtype=np.intp)
        off = b.allele_offsets
        lengths = np.diff(off)
        single = (lengths[0::2] == 1) & (lengths[1::2] == 1)
        alleles = np.frombuffer(b.alleles, dtype=np.uint8)
        ref_code = np.full(n, 255, dtype=np.uint8)
        alt_code = np.full(n, 255, dtype=np.uint8)
        if single.any():
            ref_code[single] = _BASE[alleles[off[0:-1:2][single]]]
            alt_code[single] = _BASE[alleles[off[1::2][single]]]
        size = self.sizes[b.contig_index]
        fast = (ref_code < 4) & (alt_code < 4) & (ref_code != alt_code)
        fast &= (b.pos >= 1) & (b.pos <= size)
        rest = [np.flatnonzero(~fast)]
        c = rule.center
        for k in np.unique(b.contig_index[fast]).tolist():
            index = np.flatnonzero(fast & (b.contig_index == k))
            starts = rule.starts(b.pos[index])
            contig = self.contigs[k]
            assert contig is not None  # fast rows are on known contigs
            if self.device is not None and contig in self.device.offsets:
                rest.append(self._describe(k, contig, index, starts, ref_code, alt_code))
                continue
            tokens = self.genome.fetch_windows(contig, starts, rule.length, tokens=True)
            match = tokens[:, c] == ref_code[index]
            if not match.all():  # REF mismatch or gap: the general path says why
                rest.append(index[~match])
                index, tokens, starts = index[match], tokens[match], starts[match]
            self.ref_tokens[index] = tokens
            tokens[:, c] = alt_code[index]
            self.alt_tokens[index] = tokens
            self.written[index] = True
            self.site[index] = (k << SITE_SHIFT) | (starts + (1 << (SITE_SHIFT - 1)))
            with_n = np.flatnonzero(tokens.max(axis=1) == N_TOKEN)
            for j in with_n.tolist():
                count = int(np.count_nonzero(tokens[j] == N_TOKEN))
                self.note(int(index[j]), f"window has {count} N bases (contig end or assembly gap)")
        return np.sort(np.concatenate(rest))

    def _describe(self, k: int, contig: str, index: np.ndarray, starts: np.ndarray,
                  ref_code: np.ndarray, alt_code: np.ndarray) -> np.ndarray:  # fmt: skip
        """Describe the fast SNVs ``index`` of contig row ``k`` for the device; return those
        whose REF does not match (the general path says why)."""
        d, device = self.described, self.device
        assert d is not None
        assert device is not None
        centers, n_count = device.check(contig, starts)
        match = centers == ref_code[index]
        mismatched = index[~match]
        index, starts, n_count = index[match], starts[match], n_count[match]
        d.mask[index] = True
        d.starts[index] = starts + device.offsets[contig]
        d.alt_tok[index] = alt_code[index]
        self.site[index] = (k << SITE_SHIFT) | (starts + (1 << (SITE_SHIFT - 1)))
        for j in np.flatnonzero(n_count).tolist():
            self.note(
                int(index[j]), f"window has {int(n_count[j])} N bases (contig end or assembly gap)"
            )
        return mismatched

    # -- everything else, one variant at a time ---------------------------------------------

    def general(self, i: int) -> None:
        b, rule = self.batch, self.rule
        chrom, pos = b.chrom(i), int(b.pos[i])
        raw_ref, raw_alt = b.ref(i), b.alt(i)
        problem = _allele_problem(raw_ref, "REF") or _allele_problem(raw_alt, "ALT")
        ref, alt = raw_ref.upper(), raw_alt.upper()
        if problem is None and ref == alt:
            problem = _SC.REF_EQUALS_ALT, f"REF equals ALT ({ref!r}): nothing to score"
        k = int(b.contig_index[i])
        contig = self.contigs[k]
        if problem is None and contig is None:
            problem = _SC.UNKNOWN_CHROMOSOME, f"chromosome {chrom!r} is not in the reference genome"
        if problem is None and contig is not None:
            size = int(self.sizes[k])
            if pos < 1 or pos - 1 + len(ref) > size:
                problem = (
                    _SC.POSITION_OUT_OF_RANGE,
                    f"position {pos} (REF {ref!r}) is outside {contig} (length {size})",
                )
            elif abs(len(ref) - len(alt)) > self.limit or min(len(ref), len(alt)) > self.limit:
                problem = (
                    _SC.INDEL_TOO_LONG,
                    f"allele change {ref!r}>{alt!r} at {chrom}:{pos} is longer than the"
                    f" {self.limit} bases the {rule.length}-bp window can show",
                )
        if problem is not None or contig is None:
            code, message = problem if problem else (_SC.UNKNOWN_CHROMOSOME, "")
            self.status[i] = code
            if message:
                self.note(i, message)
            return
        genome = self.genome
        on_genome = genome.fetch(contig, pos - 1, pos - 1 + len(ref)).decode("ascii")
        notes: list[str] = []
        where = f"{chrom}:{pos}"
        if set(on_genome) == {"N"}:
            self.status[i] = _SC.REFERENCE_GAP
            self.note(i, f"the genome is N (an assembly gap) under REF {ref!r} at {where}")
            return
        if on_genome != ref:
            if self.policy == _RP.REF_POLICY_WARN:
                notes.append(
                    f"REF {ref!r} does not match the genome {on_genome!r} at {where}; "
                    "scored against the genome"
                )
                ref = on_genome  # the ref window is the genome's; ALT replaces len(REF) bases
            elif self.policy == _RP.REF_POLICY_FLIP and genome.fetch(
                contig, pos - 1, pos - 1 + len(alt)
            ) == alt.encode("ascii"):
                notes.append(
                    f"REF {raw_ref!r} does not match the genome at {where} but ALT does; "
                    f"REF and ALT swapped (scored {alt}>{ref})"
                )
                ref, alt = alt, ref
            else:
                self.status[i] = _SC.REF_MISMATCH
                self.note(i, f"REF {ref!r} does not match the genome {on_genome!r} at {where}")
                return
        ref_b, alt_b = ref.encode("ascii"), alt.encode("ascii")
        if not self.as_written and (len(ref_b) > 1 or len(alt_b) > 1):
            new_pos, new_ref, new_alt = normalize_indel(
                lambda lo, hi: genome.fetch(contig, lo, hi), pos, ref_b, alt_b
            )
            if (new_pos, new_ref, new_alt) != (pos, ref_b, alt_b):
                notes.append(
                    f"normalised {chrom}:{pos}:{ref}>{alt} to "
                    f"{chrom}:{new_pos}:{new_ref.decode()}>{new_alt.decode()} (trimmed, "
                    "left-aligned against the genome)"
                )
                pos, ref_b, alt_b = new_pos, new_ref, new_alt
        self.length_change[i] = len(alt_b) - len(ref_b)
        start = pos - 1 - rule.center
        seg = genome.fetch(contig, start, start + rule.span(len(ref_b), len(alt_b)))
        ref_w = seg[: rule.length]
        n_count = ref_w.count(b"N")
        if n_count:
            notes.append(f"window has {n_count} N bases (contig end or assembly gap)")
        if notes:
            self.note(i, "; ".join(notes))
        self.site[i] = (k << SITE_SHIFT) | (start + (1 << (SITE_SHIFT - 1)))
        self.rows.append(i)
        self.ref_seqs.append(ref_w)
        self.alt_seqs.append(rule.alt_window(seg, len(ref_b), alt_b))

    def finish_general(self) -> None:
        if self.rows:
            length = self.rule.length
            self.ref_tokens[self.rows] = encode_batch(self.ref_seqs, length)
            self.alt_tokens[self.rows] = encode_batch(self.alt_seqs, length)
            self.written[self.rows] = True


def described_rows(
    windows: VariantWindows, ref_src: np.ndarray, alt_src: np.ndarray, reverse_complement_: bool
) -> tuple[np.ndarray, WindowRows, np.ndarray]:
    """A plan's rows (the ref windows of inputs ``ref_src``, then the alt windows of
    ``alt_src``, then with ``reverse_complement_`` the same reverse-complemented) split into
    host tokens uint8 [h, L] (the rows not described, in order), ``WindowRows`` [d] (the
    described ones, in order) and bool [h + d]: which plan rows are described."""
    d = windows.described
    assert d is not None
    u = len(ref_src)
    src = np.concatenate([ref_src, alt_src]).astype(np.int64)
    mask = d.mask[src]
    host = np.concatenate([windows.ref[ref_src[~mask[:u]]], windows.alt[alt_src[~mask[u:]]]])
    is_alt = np.arange(len(src)) >= u
    alt = is_alt[mask]
    picked = src[mask]
    rows = WindowRows(
        d.starts[picked],
        np.where(alt, d.center, -1).astype(np.int64),
        np.where(alt, d.alt_tok[picked], 0).astype(np.uint8),
        np.zeros(len(picked), dtype=bool),
    )
    if reverse_complement_:
        host = np.concatenate([host, reverse_complement(host)])
        rows = WindowRows.concat([rows, rows.with_rc(True)])
        mask = np.concatenate([mask, mask])
    return host, rows, mask


def sequence_windows(pairs: Sequence[tuple[str, str]], length: int) -> VariantWindows:
    """Token windows for caller-supplied (ref, alt) sequence pairs, each fitted to L.

    Pairs with a character outside ACGTN, or an empty sequence, get INVALID_ALLELE.
    """
    n = len(pairs)
    status = np.zeros(n, dtype=np.int32)
    messages = [""] * n
    noted = []
    blank = b"N" * length
    ref_seqs = [blank] * n
    alt_seqs = [blank] * n
    for i, (ref, alt) in enumerate(pairs):
        problem = None
        for what, seq in (("ref", ref), ("alt", alt)):
            bad = first_invalid(seq)
            if not seq:
                problem = f"empty {what} sequence"
            elif bad >= 0:
                problem = f"invalid base {seq[bad]!r} at position {bad} of the {what} sequence"
            if problem:
                break
        if problem:
            status[i], messages[i] = _SC.INVALID_ALLELE, problem
            noted.append(i)
            continue
        ref_seqs[i] = fit_sequence(ref, length)
        alt_seqs[i] = fit_sequence(alt, length)
    return VariantWindows(
        ref=encode_batch(ref_seqs, length),
        alt=encode_batch(alt_seqs, length),
        status=status,
        messages=messages,
        site=np.full(n, -1, dtype=np.int64),
        noted=noted,
    )
