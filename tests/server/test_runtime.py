"""ModelRunner on real ONNX files: token vs one-hot inputs of the same network, logits, N handling,
numpy reference, thread safety, provider selection (CUDA parts skip without a CUDA provider)."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.onnx_models import TinyCNN, reference_predict, write_model
from varfx.server.repository import scan_repository
from varfx.server.runtime import DEFAULT_CUDA_OPTIONS, ModelRunner, cuda_available, select_providers

L = 40
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def runner(repo: Path, name: str, device: str = "cpu", **kw: object) -> ModelRunner:
    entry = next(e for e in scan_repository(repo) if e.name == name)
    return ModelRunner(entry, device, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def net() -> TinyCNN:
    return TinyCNN.random(5, channels=12, kernel=9, seed=42)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, net: TinyCNN) -> Path:
    root = tmp_path_factory.mktemp("runtime_models")
    write_model(root, name="tok", net=net, length=L)
    write_model(root, name="agct", net=net, length=L, input_kind="onehot", alphabet="AGCT")
    write_model(root, name="tgca", net=net, length=L, input_kind="onehot", alphabet="TGCA")
    write_model(root, name="acgt_logits", net=net, length=L, input_kind="onehot", output="logits")
    write_model(root, name="tok_logits", net=net, length=L, output="logits", sidecar=True)
    write_model(root, name="tok_n0", net=net, length=L, n_value=0.0)
    write_model(root, name="agct_n0", net=net, length=L, input_kind="onehot", alphabet="AGCT",
                n_value=0.0)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (33, L), dtype=np.uint8)
    x[0, :10] = 4  # N run at the start
    x[1, -7:] = 4  # and at the end
    x[2, :] = 4  # all N
    x[3, ::3] = 4
    return x


def test_token_model_equals_agct_onehot_model(repo: Path, tokens: np.ndarray) -> None:
    tok, agct = runner(repo, "tok"), runner(repo, "agct")
    assert (tok.spec.input_kind, agct.spec.input_kind) == ("tokens", "onehot")
    assert agct.spec.alphabet == "AGCT"
    p_tok, p_agct = tok.predict(tokens), agct.predict(tokens)
    assert p_tok.dtype == p_agct.dtype == np.float32
    assert p_tok.shape == (33, 5)
    np.testing.assert_allclose(p_tok, p_agct, atol=1e-5)
    # the comparison is not vacuous: predictions vary between windows and features
    assert p_tok.std(axis=0).min() > 1e-3
    np.testing.assert_allclose(runner(repo, "tgca").predict(tokens), p_tok, atol=1e-5)


def test_predictions_match_numpy_reference(repo: Path, net: TinyCNN, tokens: np.ndarray) -> None:
    expected = reference_predict(net, tokens)
    np.testing.assert_allclose(runner(repo, "tok").predict(tokens), expected, atol=1e-5)
    expected0 = reference_predict(net, tokens, n_value=0.0)
    for name in ("tok_n0", "agct_n0"):
        got = runner(repo, name).predict(tokens)
        np.testing.assert_allclose(got, expected0, atol=1e-5)
    # n_value matters on windows with N (rows 0-3) and not elsewhere
    assert np.abs(expected0[:4] - expected[:4]).max() > 1e-4
    np.testing.assert_allclose(expected0[4:], expected[4:], atol=1e-6)


def test_logits_models_return_probabilities(repo: Path, tokens: np.ndarray) -> None:
    probs = runner(repo, "tok").predict(tokens)
    for name in ("tok_logits", "acgt_logits"):
        r = runner(repo, name)
        assert r.spec.output == "logits"
        got = r.predict(tokens)
        assert ((got > 0) & (got < 1)).all()
        np.testing.assert_allclose(got, probs, atol=1e-6)


def test_extreme_logits_saturate_without_warnings(tmp_path: Path) -> None:
    base = TinyCNN.random(2, seed=1)
    huge = TinyCNN(base.conv_w, base.conv_b, base.dense_w * 0, np.array([-800.0, 800.0], "f4"))
    write_model(tmp_path, name="huge", net=huge, length=L, output="logits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = runner(tmp_path, "huge").predict(np.zeros((3, L), np.uint8))
    assert out.tolist() == [[0.0, 1.0]] * 3


def test_batch_sizes_and_empty_batch(repo: Path, tokens: np.ndarray) -> None:
    r = runner(repo, "agct")
    full = r.predict(tokens)
    for b in (1, 2, 17):
        np.testing.assert_allclose(r.predict(tokens[:b]), full[:b], atol=1e-6)
    assert r.predict(tokens[:0]).shape == (0, 5)
    # non-contiguous and wider-int input is accepted
    np.testing.assert_allclose(r.predict(tokens[::2].astype(np.int64)), full[::2], atol=1e-6)


@pytest.mark.parametrize("shape", [(2, L + 1), (L,), (2, L, 1)])
def test_wrong_window_shape(repo: Path, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=f"expected tokens \\[B, {L}\\]"):
        runner(repo, "tok").predict(np.zeros(shape, np.uint8))


def test_predict_is_thread_safe(repo: Path) -> None:
    r = runner(repo, "agct", intra_op_threads=1)
    rng = np.random.default_rng(7)
    batches = [rng.integers(0, 5, (int(rng.integers(1, 20)), L), dtype=np.uint8) for _ in range(40)]
    expected = [r.predict(b) for b in batches]
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(r.predict, batches))
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(e, g)


def test_warmup_and_device(repo: Path) -> None:
    r = runner(repo, "tok")
    r.warmup([1, 8, 64])
    assert r.device == "cpu"
    assert r.session.get_providers() == ["CPUExecutionProvider"]
    auto = runner(repo, "tok", device="auto")
    assert auto.device == ("cuda:0" if HAS_CUDA else "cpu")


def test_select_providers_cpu_and_errors() -> None:
    assert select_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="'gpu'"):
        select_providers("gpu")
    assert cuda_available() == HAS_CUDA


@pytest.mark.skipif(HAS_CUDA, reason="CUDA provider present")
def test_cuda_without_provider_is_a_clear_error(repo: Path) -> None:
    assert select_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match=r"no CUDAExecutionProvider.*varfx\[gpu\]"):
        select_providers("cuda")
    with pytest.raises(RuntimeError, match="CUDAExecutionProvider"):
        runner(repo, "tok", device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="onnxruntime has no CUDAExecutionProvider here")
def test_cuda_providers_and_predictions(repo: Path, tokens: np.ndarray) -> None:
    providers = select_providers("cuda", {"device_id": 0, "cudnn_conv_algo_search": "DEFAULT"})
    assert providers[-1] == "CPUExecutionProvider"
    name, opts = providers[0]
    assert name == "CUDAExecutionProvider"
    assert opts["cudnn_conv_algo_search"] == "DEFAULT"  # caller override wins
    for key in ("cudnn_conv1d_pad_to_nc1d", "arena_extend_strategy", "do_copy_in_default_stream"):
        assert opts[key] == DEFAULT_CUDA_OPTIONS[key]
    assert select_providers("auto")[0][0] == "CUDAExecutionProvider"
    for name in ("tok", "agct", "tok_logits"):
        gpu = runner(repo, name, device="cuda")
        assert gpu.device == "cuda:0"
        np.testing.assert_allclose(
            gpu.predict(tokens), runner(repo, name).predict(tokens), atol=1e-4
        )


def test_thread_spinning_is_off_unless_asked(repo: Path) -> None:
    """CPU threads do not busy-wait between runs by default (the cores are shared with gRPC
    and the batcher); ``spinning=True`` (ServerConfig.ort_spinning) turns it on."""
    key = "session.intra_op.allow_spinning"
    default = runner(repo, "tok").session.get_session_options()
    assert default.get_session_config_entry(key) == "0"
    spinning = runner(repo, "tok", spinning=True).session.get_session_options()
    assert spinning.get_session_config_entry(key) == "1"
