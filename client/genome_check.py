"""Does a VCF's header describe the genome the model scores on?

``check_genome(header, model)`` reads the header's ``##contig=<ID=..,length=..[,md5=..]>`` lines
and ``##assembly=`` / ``##reference=`` (an assembly named in the reference's file name, e.g.
``hg19`` or ``human_g1k_v37``), and compares them through ``varfx.core.genomes.genome_conflict``
with the model's genome as ListModels describes it: the genome the server scores it on (the
server refuses to pair a model with a genome that contradicts its own), else the genome it was
trained on, else only the model's assembly name. A contradiction raises
``GenomeMismatchError`` naming the first contig that differs; ``skip=True`` records the skip.
"""

from __future__ import annotations

import re
from typing import Any

from varfx.client._blocks import VcfHeader
from varfx.client._score_errors import GenomeMismatchError
from varfx.core.genomes import ContigIdentity, GenomeIdentity, genome_conflict

__all__ = ["check_genome", "header_genome"]

_FIELD = re.compile(r'([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|[^,>]*)')
_ASSEMBLY_TOKENS = (
    (re.compile(r"(?i)(hg19|grch37|\bb37\b|hs37d5|g1k_v37|_v37\b|\bhs37\b)"), "GRCh37"),
    (re.compile(r"(?i)(hg38|grch38|\bb38\b|hs38)"), "GRCh38"),
)


def _canonical(name: str) -> str:
    for pattern, canonical in _ASSEMBLY_TOKENS:
        if pattern.search(name):
            return canonical
    return name.strip()


def header_genome(header: VcfHeader) -> GenomeIdentity:
    """The genome a VCF header describes: its ##contig lines and assembly ("" when none)."""
    contigs = []
    assembly = ""
    for line in header.meta:
        if line.startswith("##contig=<") and line.endswith(">"):
            fields = {k: v.strip('"') for k, v in _FIELD.findall(line[len("##contig=<") : -1])}
            name, length = fields.get("ID", ""), fields.get("length", "")
            if name and length.isdigit():
                contigs.append(ContigIdentity(name, int(length), fields.get("md5", "").lower()))
            if not assembly and fields.get("assembly"):
                assembly = _canonical(fields["assembly"])
        elif line.startswith("##assembly="):
            assembly = _canonical(line.split("=", 1)[1])
        elif line.startswith("##reference=") and not assembly:
            value = line.split("=", 1)[1]
            guess = _canonical(value)
            assembly = guess if guess in ("GRCh37", "GRCh38") else ""
    return GenomeIdentity(assembly=assembly, contigs=tuple(contigs))


def check_genome(header: VcfHeader, model: Any, path: str, *, skip: bool = False) -> str:
    """``"passed"``, ``"skipped"`` or ``"not-checked"`` (nothing to compare) for the manifest;
    raises GenomeMismatchError when the header contradicts ``model``'s genome."""
    if skip:
        return "skipped"
    vcf = header_genome(header)
    if not vcf.contigs and not vcf.assembly:
        return "not-checked"
    served = getattr(model, "genome", None)
    trained = getattr(model, "training_genome", None)
    theirs = served if served is not None else trained
    if theirs is None:  # only the model's assembly name: compared when it names a known build
        if _canonical(model.assembly) not in ("GRCh37", "GRCh38"):
            return "not-checked"
        theirs = GenomeIdentity(assembly=model.assembly)
    expected = GenomeIdentity(
        assembly=_canonical(theirs.assembly),
        contigs=theirs.contigs,
        family=getattr(theirs, "family", ""),
    )
    if expected.family:
        return "not-checked"  # a simulated genome family: any build of it applies
    problem = genome_conflict(
        expected, vcf, expected_name=f"model {model.name}'s genome", actual_name=f"{path}'s header"
    )
    if problem:
        raise GenomeMismatchError(
            f"{path}: {problem}; score it against a model of that genome, or pass "
            "--skip-genome-check to score anyway (recorded in the output)"
        )
    return "passed"
