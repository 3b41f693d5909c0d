"""The rules every part of varfx shares, once: tokens and the alphabet, reverse complement,
contig names, the window rule, the model contract and the columnar variant batch.

Imports numpy only, so the client, the server and training can all depend on it.
"""

from varfx.core.contigs import ContigResolver, contig_aliases
from varfx.core.tokens import (
    ALPHABET,
    N_TOKEN,
    TOKEN_TABLE,
    decode,
    encode,
    encode_batch,
    one_hot,
    reverse_complement,
)
from varfx.core.variants import VariantBatch, VariantBatchError
from varfx.core.windows import WindowRule

__all__ = [
    "ALPHABET",
    "N_TOKEN",
    "TOKEN_TABLE",
    "ContigResolver",
    "VariantBatch",
    "VariantBatchError",
    "WindowRule",
    "contig_aliases",
    "decode",
    "encode",
    "encode_batch",
    "one_hot",
    "reverse_complement",
]
