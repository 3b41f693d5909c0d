"""Score arrays vs an independent element-by-element computation with the math module."""

from __future__ import annotations

import math

import numpy as np
import pytest

from varfx.server.scores import DEFAULT_EPS, compute_scores


def log2_odds(p: float, eps: float) -> float:
    p = min(max(p, eps), 1.0 - eps)
    return math.log2(p / (1.0 - p))


@pytest.mark.parametrize(("n", "f"), [(1, 1), (64, 5), (7, 919)])
def test_scores_match_elementwise_math(n: int, f: int) -> None:
    rng = np.random.default_rng(n * 1000 + f)
    ref = rng.uniform(0, 1, (n, f)).astype(np.float32)
    alt = rng.uniform(0, 1, (n, f)).astype(np.float32)
    s = compute_scores(ref, alt)
    for name in ("ref", "alt", "diff", "log2fc", "max_abs_diff"):
        assert getattr(s, name).dtype == np.float32, name
    assert s.max_index.dtype == np.int64
    assert s.diff.shape == s.log2fc.shape == (n, f)
    assert s.max_abs_diff.shape == s.max_index.shape == (n,)
    for i in range(n):
        best, best_j = -1.0, -1
        for j in range(f):
            r, a = float(ref[i, j]), float(alt[i, j])
            assert s.diff[i, j] == pytest.approx(a - r, abs=1e-7)
            expected = log2_odds(a, DEFAULT_EPS) - log2_odds(r, DEFAULT_EPS)
            assert s.log2fc[i, j] == pytest.approx(expected, rel=1e-5, abs=1e-4)
            if abs(a - r) > best:
                best, best_j = abs(a - r), j
        assert s.max_index[i] == best_j
        assert s.max_abs_diff[i] == pytest.approx(best, abs=1e-7)
    np.testing.assert_array_equal(s.ref, ref)
    np.testing.assert_array_equal(s.alt, alt)


def test_clipping_keeps_log2fc_finite() -> None:
    ref = np.array([[0.0, 1.0, 0.5, 0.0]], dtype=np.float32)
    alt = np.array([[1.0, 0.0, 0.5, 0.0]], dtype=np.float32)
    for eps in (1e-6, 1e-3):
        s = compute_scores(ref, alt, eps=eps)
        assert np.isfinite(s.log2fc).all()
        bound = 2 * math.log2((1 - eps) / eps)
        assert s.log2fc[0, 0] == pytest.approx(bound, rel=1e-5)
        assert s.log2fc[0, 1] == pytest.approx(-bound, rel=1e-5)
        assert s.log2fc[0, 2] == 0.0
        assert s.log2fc[0, 3] == 0.0


def test_swapping_ref_and_alt_negates() -> None:
    rng = np.random.default_rng(9)
    ref = rng.uniform(0, 1, (20, 6)).astype(np.float32)
    alt = rng.uniform(0, 1, (20, 6)).astype(np.float32)
    a, b = compute_scores(ref, alt), compute_scores(alt, ref)
    np.testing.assert_allclose(a.diff, -b.diff)
    np.testing.assert_allclose(a.log2fc, -b.log2fc, atol=1e-5)
    np.testing.assert_array_equal(a.max_index, b.max_index)
    np.testing.assert_allclose(a.max_abs_diff, b.max_abs_diff)


def test_ties_pick_the_first_feature_and_sign_is_ignored() -> None:
    ref = np.array([[0.5, 0.5, 0.5], [0.2, 0.9, 0.2]], dtype=np.float32)
    alt = np.array([[0.5, 0.5, 0.5], [0.2, 0.1, 0.3]], dtype=np.float32)
    s = compute_scores(ref, alt)
    assert s.max_index.tolist() == [0, 1]
    assert s.max_abs_diff.tolist() == pytest.approx([0.0, 0.8])
    assert s.diff[1, 1] == pytest.approx(-0.8)


def test_float64_input_and_empty_shapes() -> None:
    s = compute_scores(np.full((2, 3), 0.25), np.full((2, 3), 0.75))
    assert s.diff.dtype == np.float32
    assert s.log2fc[0, 0] == pytest.approx(math.log2(3) - math.log2(1 / 3), rel=1e-6)
    empty = compute_scores(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
    assert empty.diff.shape == (0, 4)
    assert empty.max_index.shape == (0,)
    nofeat = compute_scores(np.zeros((3, 0), np.float32), np.zeros((3, 0), np.float32))
    assert nofeat.max_abs_diff.tolist() == [0.0, 0.0, 0.0]


def test_shape_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        compute_scores(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="not \\[n, F\\]"):
        compute_scores(np.zeros(3), np.zeros(3))
