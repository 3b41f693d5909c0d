"""The KServe v2 / Triton inference protocol on the varfx port, called with the real tritonclient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from tests.conftest import eventually
from tests.onnx_models import TinyCNN, reference_predict

tg = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import model_config_pb2 as tmc  # noqa: E402
from tritonclient.grpc import service_pb2 as tpb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as tpb_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from varfx import __version__  # noqa: E402
from varfx.proto.kserve_v2 import grpc_service_pb2 as kpb  # noqa: E402
from varfx.proto.kserve_v2 import model_config_pb2 as kmc  # noqa: E402
from varfx.proto.v1 import varfx_pb2 as pb  # noqa: E402
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc  # noqa: E402

L = 20
NET = TinyCNN.random(4, seed=7)  # the weights conftest's model_repo writes as "tok" and "agct"
_DECODE = np.frombuffer(b"ACGTN", dtype=np.uint8)


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[Any]:
    c = tg.InferenceServerClient(server.target)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server: Any) -> Iterator[Any]:
    channel = grpc.insecure_channel(server.target)
    yield tpb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _tokens(n: int, seed: int) -> np.ndarray:
    tokens = np.random.default_rng(seed).integers(0, 4, size=(n, L), dtype=np.uint8)
    tokens[0, 3] = tokens[-1, 11] = 4  # N included
    return tokens


def _one_hot(tokens: np.ndarray, alphabet: str, n_value: float = 0.25) -> np.ndarray:
    """float32 [n, 4, L] written here, not with the server's encoder."""
    out = np.zeros((len(tokens), 4, tokens.shape[1]), dtype=np.float32)
    for channel, base in enumerate(alphabet):
        out[:, channel, :] = tokens == "ACGT".index(base)
    out[np.broadcast_to((tokens == 4)[:, None, :], out.shape)] = n_value
    return out


def _infer(
    client: Any,
    model: str,
    data: np.ndarray,
    datatype: str,
    name: str,
    output: str = "probabilities",
) -> np.ndarray:
    tensor = tg.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    result = client.infer(model, [tensor], outputs=[tg.InferRequestedOutput(output)])
    return result.as_numpy(output)


def _fields(desc: Any) -> dict[str, tuple[int, int, bool, str]]:
    return {
        f.name: (
            f.number,
            f.type,
            f.is_repeated,
            (f.message_type or f.enum_type).full_name if (f.message_type or f.enum_type) else "",
        )
        for f in desc.fields
    }


def _messages(desc: Any) -> Iterator[Any]:
    yield desc
    for nested in desc.nested_types:
        yield from _messages(nested)


def test_proto_matches_tritonclient() -> None:
    """Every message and RPC varfx declares is Triton's, field for field (the wire contract)."""
    pool = tpb.DESCRIPTOR.pool
    for top in kpb.DESCRIPTOR.message_types_by_name.values():
        for mine in _messages(top):
            theirs = pool.FindMessageTypeByName(mine.full_name)
            assert _fields(mine) == _fields(theirs), mine.full_name
    # model_config.proto declares a subset of Triton's ModelConfig: same fields, fewer of them
    for top in kmc.DESCRIPTOR.message_types_by_name.values():
        ours, theirs = _fields(top), _fields(pool.FindMessageTypeByName(top.full_name))
        assert ours == {name: theirs[name] for name in ours}, top.full_name
    ours_enum = kmc.DESCRIPTOR.enum_types_by_name["DataType"]
    theirs_enum = tmc.DESCRIPTOR.enum_types_by_name["DataType"]
    assert [(v.name, v.number) for v in ours_enum.values] == [
        (v.name, v.number) for v in theirs_enum.values
    ]
    service = kpb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    triton = tpb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == triton.full_name == "inference.GRPCInferenceService"
    for method in service.methods:
        other = triton.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name
        assert method.output_type.full_name == other.output_type.full_name
        assert (method.client_streaming, method.server_streaming) == (False, False)


def test_server_live_ready_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert (meta.name, meta.version) == ("varfx", __version__)
    assert client.is_model_ready("tok")
    assert client.is_model_ready("tok", "1")
    assert not client.is_model_ready("tok", "2")
    with pytest.raises(InferenceServerException) as err:
        client.is_model_ready("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    assert "'nope'" in err.value.message()


def test_health_names_the_service(server: Any) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(
            health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_model_metadata(client: Any, server: Any) -> None:
    tok = client.get_model_metadata("tok")
    assert (tok.name, list(tok.versions), tok.platform) == ("tok", ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in tok.inputs] == [
        ("tokens", "UINT8", [-1, L])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in tok.outputs] == [
        ("probabilities", "FP32", [-1, 4])
    ]
    agct = client.get_model_metadata("agct", "1")
    spec = server.handle.models["agct"].spec
    assert [(t.name, t.datatype, list(t.shape)) for t in agct.inputs] == [
        (spec.input_name, "FP32", [-1, 4, L])
    ]
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("tok", "7")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    assert "version '7'" in err.value.message()


def test_model_config_matches_config_pbtxt(client: Any, server: Any, model_repo: Any) -> None:
    """ModelConfig reports how this server batches, and the same tensors as the config.pbtxt
    varfx writes for Triton from the ONNX files."""
    from google.protobuf import text_format

    from varfx.training.triton_config import triton_config

    config = server.config
    for name, dims in (("tok", [L]), ("agct", [4, L])):
        got = client.get_model_config(name).config
        assert (got.name, got.platform) == (name, "onnxruntime_onnx")
        assert got.max_batch_size == config.max_batch
        delay = got.dynamic_batching.max_queue_delay_microseconds
        assert delay == round(config.max_delay_ms * 1000)
        assert list(got.input[0].dims) == dims
        pbtxt = text_format.Parse(triton_config(model_repo / name), tmc.ModelConfig())
        tensors = [(t.name, t.data_type, list(t.dims)) for t in [*got.input, *got.output]]
        assert tensors == [
            (t.name, t.data_type, list(t.dims)) for t in [*pbtxt.input, *pbtxt.output]
        ]
    with pytest.raises(InferenceServerException) as err:
        client.get_model_config("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_infer_equals_batcher_and_score_sequences(client: Any, server: Any) -> None:
    tokens = _tokens(9, seed=1)
    probs = _infer(client, "tok", tokens, "UINT8", "tokens")
    assert probs.shape == (9, 4)
    assert probs.dtype == np.float32
    model = server.handle.models["tok"]
    batcher = server.call(model.batcher.submit(tokens))
    np.testing.assert_allclose(probs, batcher, rtol=0, atol=1e-6)
    np.testing.assert_allclose(probs, reference_predict(NET, tokens), atol=1e-5)
    # ScoreSequences on the same windows (ref = the window, alt = its neighbour)
    seqs = [_DECODE[t].tobytes().decode() for t in tokens]
    request = pb.ScoreSequencesRequest(
        model="tok",
        pairs=[pb.SequencePair(id=str(i), ref=s, alt=seqs[i - 1]) for i, s in enumerate(seqs)],
    )
    with grpc.insecure_channel(server.target) as channel:
        reply = pb_grpc.VariantEffectServiceStub(channel).ScoreSequences(request)
    ref = np.array([list(s.ref) for s in reply.scores], dtype=np.float32)
    alt = np.array([list(s.alt) for s in reply.scores], dtype=np.float32)
    np.testing.assert_allclose(probs, ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.roll(probs, 1, axis=0), alt, rtol=0, atol=1e-6)


def test_infer_one_hot_model(client: Any) -> None:
    """The one-hot model (AGCT channel order, the same weights) gives the token model's numbers."""
    tokens = _tokens(6, seed=2)
    by_tokens = _infer(client, "tok", tokens, "UINT8", "tokens")
    by_one_hot = _infer(client, "agct", _one_hot(tokens, "AGCT"), "FP32", "onehot")
    np.testing.assert_allclose(by_one_hot, by_tokens, rtol=0, atol=1e-6)


def _typed_request(model: str, name: str, datatype: str, data: np.ndarray) -> Any:
    request = tpb.ModelInferRequest(model_name=model, id="typed-1")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=list(data.shape))
    if datatype == "UINT8":
        tensor.contents.uint_contents.extend(data.ravel().tolist())
    else:
        tensor.contents.fp32_contents.extend(data.ravel().tolist())
    return request


def test_infer_typed_contents(client: Any, stub: Any) -> None:
    tokens = _tokens(5, seed=3)
    expected = _infer(client, "tok", tokens, "UINT8", "tokens")
    for model, name, datatype, data in (
        ("tok", "tokens", "UINT8", tokens),
        ("agct", "onehot", "FP32", _one_hot(tokens, "AGCT")),
    ):
        reply = stub.ModelInfer(_typed_request(model, name, datatype, data))
        assert (reply.model_name, reply.model_version, reply.id) == (model, "1", "typed-1")
        (out,) = reply.outputs
        assert (out.name, out.datatype, list(out.shape)) == ("probabilities", "FP32", [5, 4])
        probs = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(5, 4)
        np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)


def test_infer_empty_batch(client: Any) -> None:
    probs = _infer(client, "tok", np.zeros((0, L), dtype=np.uint8), "UINT8", "tokens")
    assert probs.shape == (0, 4)


def _raw(model: str, name: str, datatype: str, shape: list[int], data: bytes) -> Any:
    request = tpb.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(data)
    return request


def _good() -> Any:
    return _raw("tok", "tokens", "UINT8", [2, L], bytes(2 * L))


def _edit(change: Callable[[Any], None]) -> Any:
    request = _good()
    change(request)
    return request


_BAD: list[tuple[str, Any, str, str]] = [
    ("unknown model", _raw("nope", "tokens", "UINT8", [2, L], bytes(2 * L)), "NOT_FOUND", "'nope'"),
    (
        "unknown version",
        _edit(lambda r: setattr(r, "model_version", "3")),
        "NOT_FOUND",
        "version '3'",
    ),
    (
        "wrong input name",
        _raw("tok", "seq", "UINT8", [2, L], bytes(2 * L)),
        "INVALID_ARGUMENT",
        "got inputs ['seq']",
    ),
    (
        "wrong datatype",
        _raw("tok", "tokens", "INT32", [2, L], bytes(8 * L)),
        "INVALID_ARGUMENT",
        "datatype INT32 not accepted; the model takes 'tokens' UINT8 [-1, 20]",
    ),
    (
        "wrong length",
        _raw("tok", "tokens", "UINT8", [2, L + 1], bytes(2 * (L + 1))),
        "INVALID_ARGUMENT",
        "shape [2, 21] does not fit the model's 'tokens' UINT8 [-1, 20]",
    ),
    (
        "wrong rank",
        _raw("tok", "tokens", "UINT8", [2 * L], bytes(2 * L)),
        "INVALID_ARGUMENT",
        "shape [40] does not fit",
    ),
    (
        "short raw data",
        _raw("tok", "tokens", "UINT8", [2, L], bytes(2 * L - 1)),
        "INVALID_ARGUMENT",
        "raw_input_contents has 39 bytes; shape [2, 20] UINT8 needs 40",
    ),
    (
        "token out of range",
        _raw("tok", "tokens", "UINT8", [2, L], bytes(L + 5) + b"\x07" + bytes(L - 6)),
        "INVALID_ARGUMENT",
        "window 1, position 5 is token 7",
    ),
    (
        "no data",
        _edit(lambda r: r.ClearField("raw_input_contents")),
        "INVALID_ARGUMENT",
        "input 'tokens': no data",
    ),
    (
        "raw and typed",
        _edit(lambda r: r.inputs[0].contents.uint_contents.extend([0] * 2 * L)),
        "INVALID_ARGUMENT",
        "both raw_input_contents and contents",
    ),
    (
        "unknown output",
        _edit(lambda r: r.outputs.add(name="logits")),
        "INVALID_ARGUMENT",
        "no output 'logits'; its output is 'probabilities' FP32 [-1, 4]",
    ),
    (
        "one-hot model given tokens",
        _raw("agct", "onehot", "UINT8", [2, L], bytes(2 * L)),
        "INVALID_ARGUMENT",
        "datatype UINT8 not accepted; the model takes 'onehot' FP32 [-1, 4, 20]",
    ),
    (
        "not one-hot",
        _raw(
            "agct",
            "onehot",
            "FP32",
            [1, 4, L],
            np.full((1, 4, L), 0.5, dtype="<f4").tobytes(),
        ),
        "INVALID_ARGUMENT",
        "window 0, position 0 is [0.5, 0.5, 0.5, 0.5], neither one base",
    ),
]


@pytest.mark.parametrize(
    ("request_", "code", "message"), [b[1:] for b in _BAD], ids=[b[0] for b in _BAD]
)
def test_infer_rejects_bad_requests(stub: Any, request_: Any, code: str, message: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request_)
    assert err.value.code().name == code
    assert message in str(err.value.details())


def test_typed_contents_checked(stub: Any) -> None:
    request = _typed_request("tok", "tokens", "UINT8", np.zeros((2, L), dtype=np.uint8))
    del request.inputs[0].contents.uint_contents[-1]
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert "contents.uint_contents has 39 values; shape [2, 20] needs 40" in str(
        err.value.details()
    )
    request = _typed_request("tok", "tokens", "UINT8", np.zeros((1, L), dtype=np.uint8))
    request.inputs[0].contents.uint_contents[0] = 300
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert "holds 300, outside UINT8" in str(err.value.details())


def test_metrics_count_model_infer(client: Any, server: Any) -> None:
    registry = server.metrics.registry

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    ok = sample("varfx_requests_total", method="ModelInfer", code="OK")
    bad = sample("varfx_requests_total", method="ModelInfer", code="INVALID_ARGUMENT")
    windows = sample("varfx_sequences_total", model="tok")
    tokens = np.random.default_rng(11).integers(0, 4, size=(13, L), dtype=np.uint8)
    _infer(client, "tok", tokens, "UINT8", "tokens")
    with pytest.raises(InferenceServerException):
        _infer(client, "tok", tokens[:, :-1], "UINT8", "tokens")
    # recorded when each call is done, just after the client has its answer
    assert (
        eventually(lambda: sample("varfx_requests_total", method="ModelInfer", code="OK"), ok + 1)
        == ok + 1
    )
    bad_now = eventually(
        lambda: sample("varfx_requests_total", method="ModelInfer", code="INVALID_ARGUMENT"),
        bad + 1,
    )
    assert bad_now == bad + 1
    assert sample("varfx_sequences_total", model="tok") == windows + 13
    assert sample("varfx_request_duration_seconds_count", method="ModelInfer") >= ok + 2


def test_bearer_tokens_guard_the_protocol(model_repo: Any, tmp_path: Any) -> None:
    """The auth interceptor covers the KServe service: only liveness and readiness are open."""
    from varfx.server import ServerConfig, start_in_thread

    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("s3cret-token\n")
    config = ServerConfig(
        model_repo=model_repo,
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        warmup_batch_sizes=(1,),
        auth_tokens_file=tokens_file,
    )
    tokens = _tokens(2, seed=4)
    with start_in_thread(config) as running:
        client = tg.InferenceServerClient(running.target)
        try:
            assert client.is_server_live()
            assert client.is_server_ready()
            tensor = tg.InferInput("tokens", [2, L], "UINT8")
            tensor.set_data_from_numpy(tokens)
            for call in (
                lambda h: client.get_model_metadata("tok", headers=h),
                lambda h: client.is_model_ready("tok", headers=h),
                lambda h: client.get_server_metadata(headers=h),
                lambda h: client.get_model_config("tok", headers=h),
                lambda h: client.infer("tok", [tensor], headers=h),
            ):
                for headers in (None, {"authorization": "Bearer wrong"}):
                    with pytest.raises(InferenceServerException) as err:
                        call(headers)
                    assert err.value.status() == "StatusCode.UNAUTHENTICATED"
                assert call({"authorization": "Bearer s3cret-token"})
            good = {"authorization": "Bearer s3cret-token"}
            probs = client.infer("tok", [tensor], headers=good).as_numpy("probabilities")
            np.testing.assert_allclose(probs, reference_predict(NET, tokens), atol=1e-5)
        finally:
            client.close()


def test_infer_batch_limit(client: Any, server: Any) -> None:
    """A request holds at most max_batch_size windows (what ModelConfig reports)."""
    limit = client.get_model_config("tok").config.max_batch_size
    assert limit == server.config.max_batch
    tokens = np.random.default_rng(12).integers(0, 4, size=(limit + 1, L), dtype=np.uint8)
    with pytest.raises(InferenceServerException) as err:
        _infer(client, "tok", tokens, "UINT8", "tokens")
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"{limit + 1} windows in one request; max_batch_size is {limit}" in err.value.message()
    probs = _infer(client, "tok", tokens[:limit], "UINT8", "tokens")
    np.testing.assert_allclose(probs, reference_predict(NET, tokens[:limit]), atol=1e-5)


def test_reflection_describes_every_service(server: Any) -> None:
    """grpcurl-style reflection lists the KServe service next to varfx's and can describe its
    messages (they live in a private descriptor pool)."""
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    def ask(**request: str) -> Any:
        with grpc.insecure_channel(server.target) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            (reply,) = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(**request)])
            )
        return reply

    names = {s.name for s in ask(list_services="").list_services_response.service}
    assert {"varfx.v1.VariantEffectService", "inference.GRPCInferenceService"} <= names
    for symbol, file_name in (
        ("inference.ModelInferRequest", "kserve/v2/grpc_service.proto"),
        ("inference.ModelConfig", "kserve/v2/model_config.proto"),
        ("varfx.v1.ScoreVariantsRequest", "varfx/v1/varfx.proto"),
    ):
        reply = ask(file_containing_symbol=symbol)
        protos = reply.file_descriptor_response.file_descriptor_proto
        files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in protos]
        assert files, reply
        assert files[0].name == file_name


def test_decode_one_hot_alphabet_and_n_value() -> None:
    from varfx.server.errors import InvalidRequestError
    from varfx.server.kserve import decode_one_hot

    tokens = _tokens(4, seed=5)
    for alphabet, n_value in (("ACGT", 0.25), ("TGCA", 0.0), ("AGCT", 1 / 3)):
        x = _one_hot(tokens, alphabet, n_value)
        np.testing.assert_array_equal(decode_one_hot(x, alphabet, n_value, "x"), tokens)
    x = _one_hot(tokens, "ACGT", 0.0)
    x[2, :, 7] = [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(
        InvalidRequestError, match=r"window 2, position 7 is \[1.0, 1.0, 0.0, 0.0\]"
    ):
        decode_one_hot(x, "ACGT", 0.0, "x")
    x[2, :, 7] = [np.nan, 0.0, 0.0, 0.0]
    with pytest.raises(InvalidRequestError, match="window 2, position 7"):
        decode_one_hot(x, "ACGT", 0.0, "x")


def test_logits_model_answers_probabilities(tmp_path: Any) -> None:
    """A model exported with output "logits" answers probabilities over the protocol too."""
    from tests.onnx_models import write_model
    from varfx.server import ServerConfig, start_in_thread

    write_model(tmp_path, name="lg", net=NET, length=L, output="logits")
    config = ServerConfig(
        model_repo=tmp_path, host="127.0.0.1", port=0, metrics_port=-1, warmup_batch_sizes=(1,)
    )
    tokens = _tokens(5, seed=6)
    with start_in_thread(config) as running:
        client = tg.InferenceServerClient(running.target)
        try:
            (output,) = client.get_model_metadata("lg").outputs
            assert output.name == "logits_out"  # the graph's name; the values are probabilities
            probs = _infer(client, "lg", tokens, "UINT8", "tokens", output.name)
        finally:
            client.close()
    np.testing.assert_allclose(probs, reference_predict(NET, tokens), atol=1e-5)
    assert probs.min() >= 0
    assert probs.max() <= 1
