"""Contig names: the one rule by which a chromosome name in a VCF, BED or request finds its
contig in a genome.

A name matches itself first, then the same name with or without a ``chr`` prefix (any case:
``Chr1``, ``CHR1`` and ``chr1`` all go by ``1``), and the mitochondrial synonyms chrM / MT /
chrMT / M match each other. The first alias present in the genome wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["ContigResolver", "contig_aliases"]

_MITO = ("chrM", "MT", "chrMT", "M")
_MITO_KEYS = {m.lower() for m in _MITO}


def contig_aliases(name: str) -> list[str]:
    """Names a contig may go by, in order of preference: itself, with/without ``chr`` (any
    case), and the mitochondrial synonyms chrM / MT / chrMT / M."""
    names = [name]
    bare = name[3:] if name[:3].lower() == "chr" else name
    if name.lower() in _MITO_KEYS or bare.lower() in _MITO_KEYS:
        names += [m for m in _MITO if m != name]
        return names
    for alias in (bare, "chr" + bare):
        if alias not in names:
            names.append(alias)
    return names


class ContigResolver:
    """Resolves names against one genome's contigs (``resolve("1") -> "chr1"`` or None).

    Only names that resolve are cached, so the cache holds at most a few aliases per contig of
    the genome, whatever names callers send.
    """

    def __init__(self, contigs: Mapping[str, int] | Iterable[str]) -> None:
        self._names = frozenset(contigs)
        self._found: dict[str, str] = {name: name for name in self._names}

    def resolve(self, name: str) -> str | None:
        """The genome's name for ``name``, or None when no alias of it is a contig."""
        hit = self._found.get(name)
        if hit is not None:
            return hit
        found = next((a for a in contig_aliases(name) if a in self._names), None)
        if found is not None and len(self._found) < 8 * len(self._names) + 64:
            self._found[name] = found
        return found
