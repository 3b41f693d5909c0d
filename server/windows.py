"""Reference and alternate sequence windows around variants (DESIGN.md convention).

For window length L (even), the first base of the variant sits at 0-based index ``c = L/2 - 1``.
With 1-based VCF position p, REF r and ALT a:

- ref window = genome[p-1-c, p-1-c+L)
- alt window = genome[p-1-c, p-1) + a + genome[p-1+len(r), ...), cut to L
- outside a chromosome the window is padded with N.

Plain SNVs (most of any VCF) are built for a whole request at once: one windowed gather per
contig (a memory-mapped FASTA where it is plain) and a lookup-table pass; every other variant
(indels, MNVs, unscorable ones, REF mismatches) takes one genome fetch of its own.
A variant that cannot be scored is never dropped: it gets a status code and a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from varfx.core.tokens import N_TOKEN, encode_batch, first_invalid, token_table
from varfx.proto.v1 import varfx_pb2
from varfx.server.genome import Genome

__all__ = ["VariantLike", "VariantWindows", "build_windows", "fit_sequence", "sequence_windows"]

_SC = varfx_pb2.StatusCode
_RP = varfx_pb2.RefPolicy
_BASE_CODE = {b: i for i, b in enumerate("ACGT")} | {b: i for i, b in enumerate("acgt")}
_TOKENS = token_table()  # ASCII byte -> token (anything outside ACGTN -> N)


class VariantLike(Protocol):
    """Anything with VCF-style fields; a ``varfx_pb2.Variant`` satisfies it."""

    @property
    def chrom(self) -> str: ...
    @property
    def pos(self) -> int: ...
    @property
    def ref(self) -> str: ...
    @property
    def alt(self) -> str: ...


@dataclass(frozen=True)
class VariantWindows:
    """Token windows for n variants (or sequence pairs).

    Attributes:
        ref: uint8 [n, L] tokens of the reference windows (all N where status is not OK).
        alt: uint8 [n, L] tokens of the alternate windows.
        status: int32 [n], ``varfx_pb2.StatusCode`` values (0 = OK).
        messages: n strings: '' or a message naming the offending value (a warning when OK).
    """

    ref: np.ndarray
    alt: np.ndarray
    status: np.ndarray
    messages: list[str]

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


def _alt_window(seg: bytes, c: int, ref_len: int, alt: bytes, length: int) -> bytes:
    """seg = genome[p-1-c, p-1-c+L+max(0, len(ref)-len(alt))); returns the alt window."""
    return (seg[:c] + alt + seg[c + ref_len :])[:length]


def _locus(chrom: str, pos: int) -> str:
    return f"{chrom}:{pos}"


def build_windows(
    genome: Genome,
    variants: Sequence[VariantLike],
    length: int,
    *,
    ref_policy: int = _RP.REF_POLICY_STRICT,
    max_indel: int | None = None,
) -> VariantWindows:
    """Build ref/alt token windows for variants with one ALT each.

    Args:
        genome: the reference genome.
        variants: n variants; ``pos`` is 1-based, ``ref``/``alt`` as in VCF (one ALT).
        length: window length L of the model (even).
        ref_policy: a ``varfx_pb2.RefPolicy``: STRICT (default; a REF mismatch is not scored),
            WARN (score against the genome, warn), FLIP (swap REF/ALT when ALT matches the genome).
        max_indel: longest allele change (bases) the window may show; default L/2.

    Returns:
        VariantWindows with ref/alt uint8 [n, L] and per-variant status and messages.
    """
    if length < 2 or length % 2:
        raise ValueError(f"window length must be even and >= 2, got {length}")
    c = length // 2 - 1
    limit = length // 2 if max_indel is None else max_indel
    n = len(variants)
    status = np.zeros(n, dtype=np.int32)
    messages = [""] * n
    ref_tokens = np.full((n, length), N_TOKEN, dtype=np.uint8)
    alt_tokens = np.full((n, length), N_TOKEN, dtype=np.uint8)
    rest = _snv_windows(genome, variants, c, length, ref_tokens, alt_tokens)

    blank = b"N" * length
    ref_seqs = [blank] * len(rest)
    alt_seqs = [blank] * len(rest)
    for j, i in enumerate(rest):
        v = variants[i]
        ref, alt, pos = v.ref.upper(), v.alt.upper(), int(v.pos)
        problem = _allele_problem(v.ref, "REF") or _allele_problem(v.alt, "ALT")
        if problem is None and ref == alt:
            problem = _SC.REF_EQUALS_ALT, f"REF equals ALT ({ref!r}): nothing to score"
        contig = None
        if problem is None:
            contig = genome.resolve(v.chrom)
            if contig is None:
                problem = (
                    _SC.UNKNOWN_CHROMOSOME,
                    f"chromosome {v.chrom!r} is not in the reference genome",
                )
        if problem is None and contig is not None:
            size = genome.contigs[contig]
            if pos < 1 or pos - 1 + len(ref) > size:
                problem = (
                    _SC.POSITION_OUT_OF_RANGE,
                    f"position {pos} (REF {ref!r}) is outside {contig} (length {size})",
                )
            elif abs(len(ref) - len(alt)) > limit or min(len(ref), len(alt)) > limit:
                problem = (
                    _SC.INDEL_TOO_LONG,
                    f"allele change {ref!r}>{alt!r} at {_locus(v.chrom, pos)} is longer than the"
                    f" {limit} bases the {length}-bp window can show",
                )
        if problem is not None or contig is None:
            status[i], messages[i] = problem if problem else (_SC.UNKNOWN_CHROMOSOME, "")
            continue

        start = pos - 1 - c
        seg = genome.fetch(contig, start, start + length + max(0, len(ref) - len(alt)))
        on_genome = seg[c : c + len(ref)].decode("ascii")
        if on_genome != ref:
            where = _locus(v.chrom, pos)
            if ref_policy == _RP.REF_POLICY_WARN:
                messages[i] = f"REF {ref!r} does not match the genome {on_genome!r} at {where}; "
                messages[i] += "scored against the genome"
            elif ref_policy == _RP.REF_POLICY_FLIP and genome.fetch(
                contig, pos - 1, pos - 1 + len(alt)
            ) == alt.encode("ascii"):
                ref, alt = alt, ref
                seg = genome.fetch(contig, start, start + length + max(0, len(ref) - len(alt)))
                messages[i] = f"REF {v.ref!r} does not match the genome at {where} but ALT does; "
                messages[i] += f"REF and ALT swapped (scored {ref}>{alt})"
            else:
                status[i] = _SC.REF_MISMATCH
                messages[i] = f"REF {ref!r} does not match the genome {on_genome!r} at {where}"
                continue
        ref_seqs[j] = seg[:length]
        alt_seqs[j] = _alt_window(seg, c, len(ref), alt.encode("ascii"), length)

    if rest:
        ref_tokens[rest] = encode_batch(ref_seqs, length)
        alt_tokens[rest] = encode_batch(alt_seqs, length)
    return VariantWindows(ref=ref_tokens, alt=alt_tokens, status=status, messages=messages)


def _snv_windows(
    genome: Genome,
    variants: Sequence[VariantLike],
    c: int,
    length: int,
    ref_tokens: np.ndarray,
    alt_tokens: np.ndarray,
) -> list[int]:
    """Fill the rows of the plain SNVs (one A/C/G/T base each side, different, on a known
    contig, REF matching the genome) with whole-array operations: one windowed gather per
    contig, then the alt base written into column c. Returns the indices of every other
    variant, in order, for the general per-variant path (indels, MNVs, problems, mismatches)."""
    rest: list[int] = []
    groups: dict[str, tuple[list[int], list[int], list[int], list[int]]] = {}
    resolve, contigs = genome.resolve, genome.contigs
    for i, v in enumerate(variants):
        ref, alt = v.ref, v.alt
        if ref in _BASE_CODE and alt in _BASE_CODE and ref.upper() != alt.upper():
            contig = resolve(v.chrom)
            pos = int(v.pos)
            if contig is not None and 1 <= pos <= contigs[contig]:
                group = groups.get(contig)
                if group is None:
                    group = groups[contig] = ([], [], [], [])
                group[0].append(i)
                group[1].append(pos)
                group[2].append(_BASE_CODE[ref])
                group[3].append(_BASE_CODE[alt])
                continue
        rest.append(i)
    for contig, (rows, positions, refs, alts) in groups.items():
        index = np.asarray(rows, dtype=np.intp)
        ascii_windows = genome.fetch_windows(contig, np.asarray(positions) - 1 - c, length)
        tokens = _TOKENS[ascii_windows]
        match = tokens[:, c] == np.asarray(refs, dtype=np.uint8)
        if not match.all():  # REF mismatch: the general path says why (or applies the policy)
            rest.extend(index[~match].tolist())
            index, tokens = index[match], tokens[match]
            alts = [a for a, m in zip(alts, match.tolist(), strict=True) if m]
        ref_tokens[index] = tokens
        tokens[:, c] = np.asarray(alts, dtype=np.uint8)
        alt_tokens[index] = tokens
    rest.sort()
    return rest


def fit_sequence(seq: str, length: int) -> bytes:
    """Centre a sequence in L bases: pad with N on both sides, or keep the central L bases."""
    raw = seq.upper().encode("ascii", "replace")
    if len(raw) >= length:
        off = (len(raw) - length) // 2
        return raw[off : off + length]
    left = (length - len(raw)) // 2
    return b"N" * left + raw + b"N" * (length - len(raw) - left)


def sequence_windows(pairs: Sequence[tuple[str, str]], length: int) -> VariantWindows:
    """Token windows for caller-supplied (ref, alt) sequence pairs, each fitted to L.

    Pairs with a character outside ACGTN, or an empty sequence, get INVALID_ALLELE.
    """
    n = len(pairs)
    status = np.zeros(n, dtype=np.int32)
    messages = [""] * n
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
            continue
        ref_seqs[i] = fit_sequence(ref, length)
        alt_seqs[i] = fit_sequence(alt, length)
    return VariantWindows(
        ref=encode_batch(ref_seqs, length),
        alt=encode_batch(alt_seqs, length),
        status=status,
        messages=messages,
    )
