"""DNA sequence <-> uint8 token arrays, reverse complement and one-hot encoding: the one
alphabet table of varfx (server, client, training, bench and scripts all use this one).

Tokens follow the varfx ONNX contract: A=0, C=1, G=2, T=3, N=4 (uint8); lower case (soft-masked)
bases are the same tokens. Everything works on whole numpy arrays through lookup tables; no
per-base Python loops.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "ALPHABET",
    "N_TOKEN",
    "TOKEN_TABLE",
    "InvalidSequenceError",
    "decode",
    "encode",
    "encode_batch",
    "first_invalid",
    "one_hot",
    "reverse_complement",
    "token_table",
]

#: The token alphabet: token t is the base ALPHABET[t].
ALPHABET = "ACGTN"
N_TOKEN = 4
_INVALID = 255

_LUT = np.full(256, _INVALID, dtype=np.uint8)
for _i, _b in enumerate(b"ACGTN"):
    _LUT[_b] = _i
    _LUT[ord(chr(_b).lower())] = _i
# the same table for bytes.translate (a C loop over bytes), with anything invalid mapped to N
_TRANSLATE = bytes(N_TOKEN if t == _INVALID else int(t) for t in _LUT)
#: uint8 [256]: the token of every byte, A/C/G/T/N either case, anything else N (read-only).
TOKEN_TABLE = np.frombuffer(_TRANSLATE, dtype=np.uint8)
_BAD_STR = re.compile(r"[^ACGTNacgtn]")
_BAD_BYTES = re.compile(rb"[^ACGTNacgtn]")
_DECODE = np.frombuffer(b"ACGTN", dtype=np.uint8)
# complement of token t is _COMPLEMENT[t]: A<->T, C<->G, N->N
_COMPLEMENT = np.array([3, 2, 1, 0, 4], dtype=np.uint8)


class InvalidSequenceError(ValueError):
    """A sequence holds a character outside ACGTN (any case)."""

    def __init__(self, char: str, position: int) -> None:
        super().__init__(f"invalid base {char!r} at position {position} (expected A, C, G, T or N)")
        self.char = char
        self.position = position


def _as_bytes(seq: bytes | str) -> bytes:
    # one byte per character: anything outside ASCII becomes '?', which is invalid
    return seq.encode("ascii", "replace") if isinstance(seq, str) else seq


def first_invalid(seq: bytes | str) -> int:
    """Index of the first character outside ACGTN (any case), or -1 when there is none."""
    found = _BAD_STR.search(seq) if isinstance(seq, str) else _BAD_BYTES.search(seq)
    return found.start() if found else -1


def encode(seq: bytes | str, *, strict: bool = True) -> np.ndarray:
    """Encode one sequence into tokens.

    Args:
        seq: DNA text (either case).
        strict: raise on a character outside ACGTN; with False it becomes N (IUPAC codes and
            gaps in a reference FASTA, as training reads them).

    Returns:
        uint8 array [len(seq)] with A=0, C=1, G=2, T=3, N=4.

    Raises:
        InvalidSequenceError: (strict) on a character outside ACGTN, naming it and its position.
    """
    raw = _as_bytes(seq)
    if not strict:
        return TOKEN_TABLE[np.frombuffer(raw, dtype=np.uint8)]
    tokens = _LUT[np.frombuffer(raw, dtype=np.uint8)]
    bad = np.flatnonzero(tokens == _INVALID)
    if bad.size:
        pos = int(bad[0])
        char = seq[pos] if isinstance(seq, str) else raw[pos : pos + 1].decode("latin-1")
        raise InvalidSequenceError(str(char), pos)
    return tokens


def encode_batch(seqs: Sequence[bytes], length: int) -> np.ndarray:
    """Encode equal-length sequences with one lookup-table pass.

    Args:
        seqs: n sequences of exactly ``length`` bytes each (already validated).
        length: window length L.

    Returns:
        uint8 array [n, L]; characters outside ACGTN become N.
    """
    if not seqs:
        return np.empty((0, length), dtype=np.uint8)
    joined = bytearray().join(seqs)
    if len(joined) != len(seqs) * length:
        raise ValueError(f"encode_batch: expected {len(seqs)} sequences of length {length}")
    tokens = np.frombuffer(joined.translate(_TRANSLATE), dtype=np.uint8)
    return tokens.reshape(len(seqs), length)


def token_table() -> np.ndarray:
    """uint8 [256]: the token of every ASCII byte (A/C/G/T/N either case; anything else N)."""
    return TOKEN_TABLE.copy()


def decode(tokens: np.ndarray) -> str:
    """Tokens [L] back to an uppercase ACGTN string."""
    return _DECODE[np.asarray(tokens, dtype=np.intp)].tobytes().decode("ascii")


def reverse_complement(tokens: np.ndarray) -> np.ndarray:
    """Reverse complement of token arrays [..., L] (N stays N); returns a new array."""
    return np.ascontiguousarray(_COMPLEMENT[tokens[..., ::-1]])


def one_hot(tokens: np.ndarray, alphabet: str = "ACGT", n_value: float = 0.25) -> np.ndarray:
    """One-hot encode tokens for models that take float input.

    Args:
        tokens: uint8 [B, L] (A=0, C=1, G=2, T=3, N=4).
        alphabet: channel order of the model, a permutation of "ACGT" (DeepSEA uses "AGCT").
        n_value: value of every channel at an N (0.25 by default, 0 for some models).

    Returns:
        float32 [B, 4, L], channel c = base ``alphabet[c]``.
    """
    if sorted(alphabet) != list("ACGT"):
        raise ValueError(f"alphabet must be a permutation of ACGT, got {alphabet!r}")
    if tokens.ndim != 2:
        raise ValueError(f"one_hot expects tokens [B, L], got shape {tokens.shape}")
    # one comparison per channel written straight into the output rows: ~15x faster than a
    # table gather + transpose, which matters in front of a GPU
    out = np.empty((tokens.shape[0], 4, tokens.shape[1]), dtype=np.float32)
    for channel, base in enumerate(alphabet):
        np.equal(tokens, "ACGT".index(base), out=out[:, channel, :], casting="unsafe")
    if n_value:
        is_n = tokens == N_TOKEN
        if is_n.any():
            for channel in range(4):
                np.copyto(out[:, channel, :], np.float32(n_value), where=is_n)
    return out
