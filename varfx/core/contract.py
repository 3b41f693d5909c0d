"""The ONNX model contract: what a model must declare to be served, as one typed value.

A served model has one input, uint8 tokens ``[batch, L]`` (A=0, C=1, G=2, T=3, N=4; varfx's own
export) or float32 one-hot ``[batch, 4, L]`` (channel order ``alphabet``, N as ``n_value`` in
every channel), and one output float32 ``[batch, F]`` (probabilities or logits). Its metadata, in
the ONNX ``metadata_props`` under key ``varfx`` (JSON) or a ``model.json`` sidecar (which wins
key by key), holds:

- ``features``: the F feature names (non-empty, distinct);
- ``sequence_length``: L (even);
- ``alphabet``: one-hot channel order, a permutation of ACGT (default "ACGT"; DeepSEA "AGCT");
- ``n_value``: one-hot value of N (default 0.25);
- ``output``: "probabilities" (default) or "logits";
- ``assembly``: the genome assembly it was trained on (e.g. "GRCh37");
- ``genome`` (varfx-trained models): that genome's identity, ``{"assembly", "family",
  "contigs": [[name, length, md5], ...]}`` (see ``varfx.core.genomes``);
- anything else (training summary, provenance) passes through.

``export``, the server's repository, the benchmarks and the tests all build and read metadata
through ``ModelContract``, so there is one copy of these rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from varfx.core.genomes import GenomeIdentity

__all__ = ["ContractError", "ModelContract"]

OutputKind = Literal["probabilities", "logits"]


class ContractError(ValueError):
    """Metadata that breaks the contract; the message names the key and the value."""


@dataclass(frozen=True)
class ModelContract:
    """A model's declared interface (see the module docstring).

    Attributes:
        features: the F output feature names, in output column order.
        sequence_length: L, bases per window (even).
        alphabet: one-hot channel order (a permutation of "ACGT").
        n_value: one-hot value of every channel at an N (0..1).
        output: "probabilities" or "logits".
        assembly: training genome assembly ("" when unknown).
        genome: the training genome's identity (None for models that do not record it).
    """

    features: tuple[str, ...]
    sequence_length: int
    alphabet: str = "ACGT"
    n_value: float = 0.25
    output: OutputKind = "probabilities"
    assembly: str = ""
    genome: GenomeIdentity | None = None

    def __post_init__(self) -> None:
        f = self.features
        if not f or not all(isinstance(x, str) and x for x in f):
            raise ContractError("metadata 'features' must be a non-empty list of names")
        if len(set(f)) != len(f):
            dup = sorted({x for x in f if f.count(x) > 1})[:3]
            raise ContractError(f"metadata 'features' has duplicate names {dup}")
        length = self.sequence_length
        if isinstance(length, bool) or not isinstance(length, int) or length < 2 or length % 2:
            raise ContractError(f"metadata 'sequence_length' must be an even int, got {length!r}")
        if sorted(self.alphabet) != list("ACGT"):
            raise ContractError(
                f"metadata 'alphabet' {self.alphabet!r} is not a permutation of ACGT"
            )
        if self.output not in ("probabilities", "logits"):
            raise ContractError(
                f"metadata 'output' must be probabilities or logits, got {self.output!r}"
            )
        n = self.n_value
        if isinstance(n, bool) or not isinstance(n, int | float) or not 0.0 <= n <= 1.0:
            raise ContractError(f"metadata 'n_value' must be a number in [0, 1], got {n!r}")

    @property
    def n_features(self) -> int:
        return len(self.features)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> ModelContract:
        """The contract a metadata mapping declares; raises ContractError naming the key."""
        features = meta.get("features")
        if not isinstance(features, Sequence) or isinstance(features, str | bytes):
            raise ContractError("metadata 'features' must be a non-empty list of names")
        genome = None
        raw_genome = meta.get("genome")
        if raw_genome is not None:
            if not isinstance(raw_genome, Mapping):
                raise ContractError(f"metadata 'genome' must be an object, got {raw_genome!r}")
            try:
                genome = GenomeIdentity.from_json(
                    raw_genome, assembly=str(meta.get("assembly", ""))
                )
            except ValueError as exc:
                raise ContractError(f"metadata 'genome': {exc}") from None
        n_value = meta.get("n_value", 0.25)
        return cls(
            features=tuple(features),
            sequence_length=meta.get("sequence_length"),  # type: ignore[arg-type]  # checked
            alphabet=str(meta.get("alphabet", "ACGT")).upper(),
            n_value=float(n_value)
            if isinstance(n_value, int | float) and not isinstance(n_value, bool)
            else n_value,
            output=meta.get("output", "probabilities"),
            assembly=str(meta.get("assembly", "") or ""),
            genome=genome,
        )

    def to_metadata(self) -> dict[str, Any]:
        """The contract's keys as metadata (JSON-ready); merge other keys around it."""
        out: dict[str, Any] = {
            "features": list(self.features),
            "sequence_length": self.sequence_length,
            "alphabet": self.alphabet,
            "n_value": self.n_value,
            "output": self.output,
            "assembly": self.assembly,
        }
        if self.genome is not None:
            out["genome"] = self.genome.to_json()
        return out
