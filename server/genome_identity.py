"""Which genome each served model scores on, checked at start-up, and what callers are told.

Rules (``pair_models``):

- ``--genomes ASM=FASTA`` pairs FASTA with every model whose assembly is ASM (``hg19`` and
  ``GRCh37`` are one assembly, ``varfx.core.genomes.canonical_assembly``). A key that names no
  served model's assembly is an error. A FASTA that contradicts such a model (assembly name,
  a contig's length or MD5; or no contig in common) is an error naming both sides.
- ``--genome FASTA`` is the genome of every other model, including third-party models that
  record no assembly (that is how such a model gets a genome: explicitly). A model whose
  training genome it contradicts is served without a genome (sequences only; a clear log line,
  and ScoreVariants says why), and ``--genome`` that every model it was offered to refused is
  an error.
- ``allow_genome_mismatch`` pairs them anyway; ListModels and the manifest record it.

A model's training genome is its metadata's ``genome`` (varfx-trained models: assembly, contig
lengths and MD5s, and ``family`` for simulated genomes: any genome of the same family is
accepted), else just its ``assembly``. A genome's identity is ``varfx.core.fasta_identity``
(MD5s computed once and cached beside the FASTA; its assembly is the ``--genomes`` key, else
what ``<fasta>.varfx-genome.json`` declares).

``model_info`` and ``manifest_for`` build the ListModels entry and the per-response manifest;
``public_metadata`` drops host paths and commands from what callers see.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from varfx.core.fasta_identity import FastaIdentityError, fasta_identity
from varfx.core.genomes import GenomeIdentity, canonical_assembly, genome_conflict
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.errors import VarfxServerError
from varfx.server.genome import Genome
from varfx.server.repository import ModelSpec

if TYPE_CHECKING:
    from varfx.server.service import ServedModel

__all__ = [
    "GenomePairing",
    "GenomePairingError",
    "ServedGenome",
    "file_sha256",
    "manifest_for",
    "model_info",
    "pair_models",
    "pairing_conflict",
    "pairing_of",
    "public_metadata",
    "served_genome",
    "training_genome",
]

log = logging.getLogger(__name__)


class ScoreOptionsLike(Protocol):
    """``varfx_pb2.ScoreOptions`` or the servicer's typed options: what a manifest records."""

    @property
    def reverse_complement(self) -> bool: ...
    @property
    def ref_policy(self) -> Any: ...
    @property
    def indels_as_written(self) -> bool: ...


class GenomePairingError(VarfxServerError):
    """A genome the server was told to use contradicts its models, or is used by none."""


@dataclass(frozen=True)
class ServedGenome:
    """A genome the server holds: the open FASTA, its identity and how it was given.

    Attributes:
        genome: the open FASTA.
        identity: contigs (name, length, MD5), assembly (the ``--genomes`` key or the FASTA's
            declaration; "" when unknown) and family.
        option: how it was given, for messages: ``--genome`` or ``--genomes KEY``.
    """

    genome: Genome
    identity: GenomeIdentity
    option: str

    @property
    def label(self) -> str:
        """``genome NAME.fa (ASSEMBLY)``: the file name only, no directories."""
        asm = f" ({self.identity.assembly})" if self.identity.assembly else ""
        return f"genome {Path(self.genome.path).name}{asm}"


@dataclass(frozen=True)
class GenomePairing:
    """How one model is served: its ONNX file's SHA-256, its training genome and the genome
    it scores on.

    Attributes:
        model_sha256: SHA-256 (hex) of the served model.onnx.
        training: the model's recorded training genome (None: it records no assembly).
        served: the genome it scores variants on (None: sequences only).
        mismatch: the contradiction between the two ("" when none was found).
        mismatch_allowed: served despite ``mismatch`` (``allow_genome_mismatch``).
        unpaired_reason: why ``served`` is None, for callers (no host paths).
    """

    model_sha256: str
    training: GenomeIdentity | None
    served: ServedGenome | None
    mismatch: str = ""
    mismatch_allowed: bool = False
    unpaired_reason: str = ""

    @property
    def genome(self) -> Genome | None:
        return self.served.genome if self.served is not None else None

    @property
    def assembly(self) -> str:
        """The served genome's assembly; where it declares none and nothing contradicts the
        model's, the model's."""
        if self.served is None:
            return ""
        if self.served.identity.assembly:
            return canonical_assembly(self.served.identity.assembly)
        if self.training is not None and not self.mismatch:
            return canonical_assembly(self.training.assembly)
        return ""


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def training_genome(spec: ModelSpec) -> GenomeIdentity | None:
    """The genome a model records: metadata ``genome``, else only its ``assembly`` (None
    when it records neither, or the assembly is "unknown")."""
    contract = spec.contract
    if contract.genome is not None:
        g = contract.genome
        return GenomeIdentity(g.assembly or contract.assembly, g.contigs, g.family)
    if canonical_assembly(contract.assembly):
        return GenomeIdentity(assembly=contract.assembly)
    return None


def served_genome(genome: Genome, *, assembly: str = "", option: str = "--genome") -> ServedGenome:
    """Identify an open genome (``varfx.core.fasta_identity``, cached) and check that the
    identity agrees with what pysam sees (the lengths of its .fai)."""
    try:
        ident = fasta_identity(genome.path, assembly=assembly)
    except FastaIdentityError as exc:
        raise GenomePairingError(f"{option}: {exc}") from None
    for c in ident.contigs:
        if genome.contigs.get(c.name, c.length) != c.length:
            raise GenomePairingError(
                f"{option} {genome.path}: contig {c.name!r} is {c.length:,} bp in the FASTA but "
                f"{genome.contigs[c.name]:,} bp in its .fai index; rebuild the index "
                f"(samtools faidx {genome.path})"
            )
    return ServedGenome(genome, ident, option)


def pairing_conflict(model: str, training: GenomeIdentity, served: ServedGenome) -> str | None:
    """Why ``served`` is not the genome ``model`` was trained on, or None.

    ``varfx.core.genomes.genome_conflict`` (assembly names, then each shared contig's length
    and MD5; one family accepts any pair), plus: genomes with contigs but none in common
    contradict each other.
    """
    model_side = f"the training genome of model {model!r}"
    genome_side = f"genome {Path(served.genome.path).name}"
    why = genome_conflict(
        training, served.identity, expected_name=model_side, actual_name=genome_side
    )
    if why is not None:
        return why
    if training.family and training.family == served.identity.family:
        return None
    shared = any(served.identity.contig(c.name) is not None for c in training.contigs)
    if training.contigs and served.identity.contigs and not shared:
        mine = _names(training)
        theirs = _names(served.identity)
        return f"{served.label} has no contig of {model_side} (model: {mine}; genome: {theirs})"
    return None


def _names(ident: GenomeIdentity, most: int = 4) -> str:
    names = ", ".join(c.name for c in ident.contigs[:most])
    return names + (", ..." if len(ident.contigs) > most else "")


def pair_models(
    specs: Mapping[str, ModelSpec],
    *,
    default: ServedGenome | None,
    by_assembly: Mapping[str, ServedGenome],
    allow_mismatch: bool = False,
) -> dict[str, GenomePairing]:
    """Pair every model with its genome by the rules of the module docstring.

    Args:
        specs: served models by name.
        default: ``--genome`` (None: not given).
        by_assembly: ``--genomes``, by key as given.

    Raises:
        GenomePairingError: a key that names no model's assembly, a keyed genome that
            contradicts its model, or a ``--genome`` every model refused; the message names
            every problem and both sides of each.
    """
    assemblies = {name: canonical_assembly(spec.assembly) for name, spec in specs.items()}
    keyed = {canonical_assembly(k): g for k, g in by_assembly.items()}
    problems: list[str] = []
    for key in by_assembly:
        if canonical_assembly(key) not in assemblies.values():
            served = ", ".join(f"{n} ({a or 'no assembly'})" for n, a in sorted(assemblies.items()))
            problems.append(f"--genomes key {key!r} is the assembly of no served model ({served})")
    pairings: dict[str, GenomePairing] = {}
    offered = refused = 0
    refusals: list[str] = []
    for name, spec in specs.items():
        sha = file_sha256(spec.path)
        training = training_genome(spec)
        candidate = keyed.get(assemblies[name]) if assemblies[name] else None
        explicit = candidate is not None
        if candidate is None:
            candidate = default
            offered += candidate is not None
        if candidate is None:
            need = (
                f"start the server with --genomes {spec.assembly}=FASTA"
                if assemblies[name]
                else "start the server with --genome FASTA"
            )
            pairings[name] = GenomePairing(
                sha,
                training,
                None,
                unpaired_reason=f"this server has no genome for model {name!r}: {need}",
            )
            continue
        why = pairing_conflict(name, training, candidate) if training is not None else None
        if why is None:
            pairings[name] = GenomePairing(sha, training, candidate)
            continue
        if allow_mismatch:
            log.warning("model %s: %s; served on it anyway (allow_genome_mismatch)", name, why)
            pairings[name] = GenomePairing(sha, training, candidate, why, mismatch_allowed=True)
            continue
        hint = "; pass --allow-genome-mismatch to serve it anyway"
        if explicit:
            problems.append(f"{candidate.option}: {why}{hint}")
            continue
        refused += 1
        refusals.append(why)
        pairings[name] = GenomePairing(
            sha,
            training,
            None,
            mismatch=why,
            unpaired_reason=f"{why}; start the server with --genomes "
            f"{spec.assembly or 'ASSEMBLY'}=FASTA (or --allow-genome-mismatch)",
        )
    if default is not None and not offered:
        log.warning("--genome %s is used by no model (each has its --genomes entry)", default.label)
    if default is not None and offered and refused == offered:
        problems.append(
            f"--genome {default.genome.path} is the genome of none of the served models: "
            + "; ".join(refusals)
            + "; pass --allow-genome-mismatch to serve them on it anyway"
        )
    if problems:
        raise GenomePairingError("; ".join(problems))
    return pairings


def _identity_pb(ident: GenomeIdentity, out: pb.GenomeIdentity, assembly: str = "") -> None:
    out.assembly = assembly or ident.assembly
    out.digest = ident.digest
    for c in ident.contigs:
        out.contigs.add(name=c.name, length=c.length, md5=c.md5)


# keys of ``provenance`` that carry no host path and may be served
_PUBLIC_PROVENANCE = ("varfx_version", "git_commit", "exported_utc", "trained_by")
_HOST_PATH = re.compile(r"(^|[\s=:'\"])(/|~/|\.\.?/)")


def _scrub(value: Any) -> Any:
    """``value`` without strings that name host paths (absolute, ``~/``, ``./``, ``../``)."""
    if isinstance(value, str):
        return None if _HOST_PATH.search(value) else value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if _HOST_PATH.search(str(k)):
                continue
            clean = _scrub(v)
            if clean is not None or v is None:
                out[k] = clean
        return out
    if isinstance(value, list | tuple):
        return [x for x in (_scrub(v) for v in value) if x is not None]
    return value


def public_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A model's metadata as served to callers: ``provenance`` keeps only
    ``varfx_version``, ``git_commit``, ``exported_utc`` and ``trained_by``; commands, data
    paths and run directories stay in the file; any other string naming a host path is
    dropped."""
    out = dict(meta)
    prov = out.get("provenance")
    if isinstance(prov, Mapping):
        out["provenance"] = {k: prov[k] for k in _PUBLIC_PROVENANCE if k in prov}
    return _scrub(out)  # type: ignore[no-any-return]


def pairing_of(model: ServedModel) -> GenomePairing:
    """``model.pairing`` (set by ``create_server``); for a ServedModel built without one, the
    pairing of its own ``genome`` field, unchecked, computed once."""
    if model.pairing is None:
        served = None
        if model.genome is not None:
            served = served_genome(model.genome, option="genome")
        model.pairing = GenomePairing(
            file_sha256(model.spec.path), training_genome(model.spec), served
        )
    return model.pairing


def model_info(model: ServedModel, *, is_default: bool) -> pb.ModelInfo:
    """The ListModels entry of a served model: its contract, identity (SHA-256, training
    genome, the genome it is served on, whether a mismatch was allowed) and public metadata."""
    spec = model.spec
    pairing = pairing_of(model)
    info = pb.ModelInfo(
        name=spec.name,
        version=spec.version,
        versions=spec.versions,
        features=spec.features,
        sequence_length=spec.sequence_length,
        assembly=spec.assembly,
        device=model.runner.device,
        input_kind=spec.input_kind,
        output_kind=spec.output,
        alphabet=spec.alphabet,
        is_default=is_default,
        max_batch=model.batcher.max_batch,
        metadata_json=json.dumps(public_metadata(spec.metadata), sort_keys=True, default=str),
        sha256=pairing.model_sha256,
        genome_mismatch_allowed=pairing.mismatch_allowed,
        local_recompute=model.local is not None,
        precision=model.runner.precision,
        device_windows=model.runner.device_windows is not None,
    )
    if pairing.served is not None:
        _identity_pb(pairing.served.identity, info.genome, pairing.assembly)
    if pairing.training is not None:
        _identity_pb(pairing.training, info.training_genome)
    return info


def manifest_for(
    model: ServedModel,
    options: ScoreOptionsLike | None = None,
    *,
    variants: bool = True,
    out: pb.Manifest | None = None,
) -> pb.Manifest:
    """The manifest of one response: model name, version and SHA-256, the genome's assembly
    and digest (``variants=False``, for ScoreSequences: empty, no genome was read), window
    length, the options' reverse complement, REF policy (unspecified = STRICT) and indel
    representation, the server's varfx version and whether a genome mismatch was allowed.
    Fills ``out`` when given (e.g. ``response.manifest``)."""
    from varfx import __version__

    spec = model.spec
    pairing = pairing_of(model)
    target = out if out is not None else pb.Manifest()
    target.Clear()
    target.model = spec.name
    target.model_version = spec.version
    target.model_sha256 = pairing.model_sha256
    target.window_length = spec.sequence_length
    target.server_version = __version__
    target.genome_mismatch_allowed = pairing.mismatch_allowed
    if variants and pairing.served is not None:
        target.assembly = pairing.assembly
        target.genome_digest = pairing.served.identity.digest
    if options is not None:
        target.reverse_complement = bool(options.reverse_complement)
        target.ref_policy = int(options.ref_policy) or pb.REF_POLICY_STRICT  # type: ignore[assignment]
        as_written = bool(options.indels_as_written)
    else:
        target.ref_policy = pb.REF_POLICY_STRICT
        as_written = False
    if variants:
        target.indel_normalization = "as-written" if as_written else "left-align"
    return target
