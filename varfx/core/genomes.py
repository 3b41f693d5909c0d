"""Genome identity: contig names, lengths and MD5s, and the rule that says whether two genomes
are the same assembly.

Each contig is identified by its name, length and the MD5 (hex) of its upper-cased sequence, the
VCF ``##contig=<...,md5=...>`` and SAM ``M5`` convention. A genome's ``digest`` is the SHA-256
over ``name\\tlength\\tmd5\\n`` of every contig in FASTA order. Contig names are compared through
``varfx.core.contigs`` (``1`` and ``chr1`` are one contig).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from varfx.core.contigs import ContigResolver

__all__ = [
    "SIM_FAMILY",
    "ContigIdentity",
    "GenomeIdentity",
    "canonical_assembly",
    "genome_conflict",
    "same_assembly",
]

SIM_FAMILY = "varfx-sim"  # the family of every genome `varfx simulate` writes

# Names of one assembly (lower case -> the name varfx reports): UCSC, NCBI and common builds.
_ASSEMBLY_ALIASES = {
    "hg19": "GRCh37",
    "grch37": "GRCh37",
    "b37": "GRCh37",
    "hs37d5": "GRCh37",
    "hg38": "GRCh38",
    "grch38": "GRCh38",
    "mm10": "GRCm38",
    "grcm38": "GRCm38",
    "mm39": "GRCm39",
    "grcm39": "GRCm39",
}


def canonical_assembly(name: str) -> str:
    """The one name of an assembly: ``hg19``, ``b37``, ``hs37d5`` -> ``GRCh37``; ``hg38`` ->
    ``GRCh38`` (any case); other names unchanged ("unknown" -> "")."""
    name = name.strip()
    if name.lower() in ("", "unknown", "none"):
        return ""
    return _ASSEMBLY_ALIASES.get(name.lower(), name)


def same_assembly(a: str, b: str) -> bool:
    """Whether two assembly names name one assembly (``canonical_assembly``)."""
    return canonical_assembly(a) == canonical_assembly(b)


@dataclass(frozen=True)
class ContigIdentity:
    """One contig: name, length in bases, MD5 (hex, lower case) of its upper-cased sequence
    ("" when unknown, e.g. a VCF ##contig line without md5)."""

    name: str
    length: int
    md5: str = ""


@dataclass(frozen=True)
class GenomeIdentity:
    """A reference genome's identity.

    Attributes:
        assembly: assembly name (e.g. "GRCh37"; "" when unknown).
        contigs: every contig, in FASTA order.
        family: for simulated genomes, the family of genomes a model applies to (e.g.
            "varfx-sim"): any genome of the same family is accepted, whatever its contigs.
    """

    assembly: str = ""
    contigs: tuple[ContigIdentity, ...] = ()
    family: str = ""

    @cached_property
    def _by_name(self) -> dict[str, ContigIdentity]:
        return {c.name: c for c in self.contigs}

    @cached_property
    def _resolver(self) -> ContigResolver:
        return ContigResolver(self._by_name)

    @cached_property
    def digest(self) -> str:
        """SHA-256 (hex) over ``name\\tlength\\tmd5\\n`` of every contig ("" without contigs)."""
        if not self.contigs:
            return ""
        h = hashlib.sha256()
        for c in self.contigs:
            h.update(f"{c.name}\t{c.length}\t{c.md5}\n".encode())
        return h.hexdigest()

    def contig(self, name: str) -> ContigIdentity | None:
        """The contig ``name`` refers to (aliases: ``1`` = ``chr1``), or None."""
        found = self._resolver.resolve(name)
        return self._by_name[found] if found is not None else None

    def to_json(self) -> dict[str, Any]:
        """Plain data for model metadata: ``{"assembly", "family", "contigs": [[name, length, md5]]}``."""
        out: dict[str, Any] = {"assembly": self.assembly}
        if self.family:
            out["family"] = self.family
        out["contigs"] = [[c.name, c.length, c.md5] for c in self.contigs]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, assembly: str = "") -> GenomeIdentity:
        """The inverse of ``to_json``; raises ValueError naming the bad entry."""
        contigs = []
        for i, entry in enumerate(data.get("contigs", ()) or ()):
            if (
                not isinstance(entry, Sequence)
                or isinstance(entry, str)
                or len(entry) not in (2, 3)
            ):
                raise ValueError(f"genome contig {i} must be [name, length, md5], got {entry!r}")
            name, length = str(entry[0]), entry[1]
            if isinstance(length, bool) or not isinstance(length, int) or length < 0:
                raise ValueError(f"genome contig {name!r}: length {length!r} is not an integer")
            contigs.append(ContigIdentity(name, length, str(entry[2]) if len(entry) == 3 else ""))
        return cls(
            assembly=str(data.get("assembly", assembly) or assembly),
            contigs=tuple(contigs),
            family=str(data.get("family", "") or ""),
        )


def genome_conflict(
    expected: GenomeIdentity,
    actual: GenomeIdentity,
    *,
    expected_name: str = "the model's genome",
    actual_name: str = "the genome",
    contigs: Iterable[str] | None = None,
) -> str | None:
    """Why ``actual`` is not the genome ``expected`` describes, or None when nothing contradicts.

    Compares assembly names (when both have one, through ``canonical_assembly``: hg19 is
    GRCh37; a shared family accepts any pair), then, for
    every contig of ``expected`` (or only those in ``contigs``) that ``actual`` also has, the
    length and, where both know it, the MD5. A contig missing on one side is no contradiction
    (a fragment of a genome is still that genome). The message names both sides and the first
    contig that differs.
    """
    if expected.family and expected.family == actual.family:
        return None
    a, b = canonical_assembly(actual.assembly), canonical_assembly(expected.assembly)
    if a and b and a != b:
        return (
            f"{actual_name} is assembly {actual.assembly!r} but {expected_name} is "
            f"{expected.assembly!r}"
        )
    wanted = set(contigs) if contigs is not None else None
    for c in expected.contigs:
        if wanted is not None and c.name not in wanted:
            continue
        other = actual.contig(c.name)
        if other is None:
            continue
        named = f"contig {other.name!r}" + ("" if other.name == c.name else f" (= {c.name!r})")
        if other.length != c.length:
            return (
                f"{named} is {other.length:,} bp in {actual_name} but {c.length:,} bp in "
                f"{expected_name}{_assembly_hint(expected, actual)}"
            )
        if c.md5 and other.md5 and c.md5 != other.md5:
            return (
                f"{named} has MD5 {other.md5} in {actual_name} but {c.md5} in "
                f"{expected_name}{_assembly_hint(expected, actual)}"
            )
    return None


def _assembly_hint(expected: GenomeIdentity, actual: GenomeIdentity) -> str:
    a, b = actual.assembly or "?", expected.assembly or "?"
    return f" (assemblies {a} vs {b})" if a != b else ""
