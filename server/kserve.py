"""The KServe Open Inference Protocol v2 (Triton's ``inference.GRPCInferenceService``) on varfx's
gRPC port, so tritonclient and KServe probes can call the served models.

Served RPCs: ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata, ModelConfig
(Triton's configuration fields for batching and tensors, as the running server batches), and
ModelInfer; the protocol's others answer UNIMPLEMENTED. Handlers raise ``VarfxServerError``s;
the server's interceptors give every call the same auth (server/auth.py), metrics
(``varfx_requests_total{method="ModelInfer",...}``, latency, in-flight) and error mapping
(server/calls.py) as varfx's own service. ModelInfer's windows go through the model's
DynamicBatcher, batched with ScoreVariants' windows; a request holds at most ``max_batch``
windows (ModelConfig's ``max_batch_size``, as Triton enforces it).

Tensor contract, per model (ModelMetadata reports it; names are the ONNX graph's):

- input, token models: ``<input name>`` UINT8 [-1, L], A=0 C=1 G=2 T=3 N=4 (values above 4 are
  rejected).
- input, one-hot models: ``<input name>`` FP32 [-1, 4, L], channel c = base ``alphabet[c]``;
  every column is one base (one 1.0, three 0.0) or N (all four ``n_value``); anything else is
  rejected, because windows are decoded to tokens and batched with every other caller's.
- output: ``<output name>`` FP32 [-1, F] probabilities, F = the model's features in metadata
  order (a model exported with ``output: logits`` still answers probabilities: the sigmoid is
  applied as for ScoreVariants; Triton serving the same file would return the logits).

Data come in ``raw_input_contents`` (little-endian, row-major) or the typed ``contents``
(``uint_contents`` for UINT8, ``fp32_contents`` for FP32); results go out in
``raw_output_contents``. A bad request fails with INVALID_ARGUMENT naming the tensor and the
datatype, shape, size or value at fault; an unknown model or version with NOT_FOUND.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pool

from varfx import __version__
from varfx.core.tokens import N_TOKEN
from varfx.proto.kserve_v2 import POOL as KSERVE_POOL
from varfx.proto.kserve_v2 import grpc_service_pb2 as kpb
from varfx.proto.kserve_v2 import grpc_service_pb2_grpc as kpb_grpc
from varfx.proto.kserve_v2 import model_config_pb2 as mc
from varfx.server.errors import InvalidRequestError, ModelNotFoundError
from varfx.server.repository import ModelSpec
from varfx.server.service import ServedModel

__all__ = [
    "KSERVE_SERVICE_NAME",
    "PLATFORM",
    "KServeServicer",
    "TensorSpec",
    "decode_one_hot",
    "reflection_pool",
    "tensor_specs",
]

KSERVE_SERVICE_NAME = kpb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
PLATFORM = "onnxruntime_onnx"  # what Triton reports for the same model files
_NUMPY: dict[str, np.dtype[Any]] = {"UINT8": np.dtype("<u1"), "FP32": np.dtype("<f4")}
_CONTENTS = {"UINT8": "uint_contents", "FP32": "fp32_contents"}


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of the protocol's contract: name, datatype ("UINT8", "FP32") and shape
    (-1 for the batch dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.name!r} {self.datatype} {list(self.shape)}"


def tensor_specs(spec: ModelSpec) -> tuple[TensorSpec, TensorSpec]:
    """The (input, output) tensors a model takes and returns over the protocol."""
    length = spec.sequence_length
    if spec.input_kind == "tokens":
        inp = TensorSpec(spec.input_name, "UINT8", (-1, length))
    else:
        inp = TensorSpec(spec.input_name, "FP32", (-1, 4, length))
    return inp, TensorSpec(spec.output_name, "FP32", (-1, len(spec.features)))


def reflection_pool(service_names: Iterable[str]) -> descriptor_pool.DescriptorPool:
    """A descriptor pool for gRPC reflection holding the files that define ``service_names``
    (and their imports), looked up in the default pool or, for KServe v2, in its private one
    (see scripts/gen_proto.py), so that grpcurl and other reflection clients see every service.
    """
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: Any) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        pool.AddSerializedFile(file.serialized_pb)
        added.add(file.name)

    for name in service_names:
        source = KSERVE_POOL if name == KSERVE_SERVICE_NAME else descriptor_pool.Default()
        add(source.FindServiceByName(name).file)
    return pool


def decode_one_hot(x: np.ndarray, alphabet: str, n_value: float, name: str) -> np.ndarray:
    """One-hot windows float32 [n, 4, L] (channel c = ``alphabet[c]``) -> tokens uint8 [n, L].

    Raises:
        InvalidRequestError: a column is neither one base (one 1, three 0) nor N (all
            ``n_value``); the message names the tensor, the window and the position.
    """
    ones = x == 1.0
    is_base = (ones.sum(axis=1) == 1) & ((x == 0.0).sum(axis=1) == 3)
    is_n = (x == np.float32(n_value)).all(axis=1)
    bad = ~(is_base | is_n)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        column = [float(v) for v in x[i, :, j]]
        raise InvalidRequestError(
            f"input {name!r}: window {i}, position {j} is {column}, neither one base (one 1.0 and"
            f" three 0.0, channels {'/'.join(alphabet)}) nor N (all four {n_value:g})"
        )
    channel_token = np.array(["ACGT".index(b) for b in alphabet], dtype=np.uint8)
    tokens = channel_token[ones.argmax(axis=1)]
    tokens[is_n & ~is_base] = N_TOKEN
    return tokens


def _tensor_data(
    tensor: kpb.ModelInferRequest.InferInputTensor, raw: bytes | None, want: TensorSpec
) -> np.ndarray:
    """The request's input tensor as a numpy array of ``want``'s shape, checked."""
    label = f"input {tensor.name!r}"
    if tensor.datatype != want.datatype:
        raise InvalidRequestError(
            f"{label}: datatype {tensor.datatype or '(empty)'} not accepted; the model takes"
            f" {want.describe()}"
        )
    shape = tuple(int(d) for d in tensor.shape)
    fixed_ok = len(shape) == len(want.shape) and all(
        w in (-1, s) for s, w in zip(shape[1:], want.shape[1:], strict=True)
    )
    if not fixed_ok or shape[0] < 0:
        raise InvalidRequestError(
            f"{label}: shape {list(shape)} does not fit the model's {want.describe()}"
        )
    count = math.prod(shape)
    dtype = _NUMPY[want.datatype]
    field = _CONTENTS[want.datatype]
    has_contents = tensor.HasField("contents")
    if raw is not None:
        if has_contents:
            raise InvalidRequestError(
                f"{label}: both raw_input_contents and contents are set; send one"
            )
        if len(raw) != count * dtype.itemsize:
            raise InvalidRequestError(
                f"{label}: raw_input_contents has {len(raw)} bytes; shape {list(shape)}"
                f" {want.datatype} needs {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    if not has_contents:
        raise InvalidRequestError(f"{label}: no data (neither raw_input_contents nor contents)")
    values: Sequence[Any] = getattr(tensor.contents, field)
    others = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
    if others:
        raise InvalidRequestError(
            f"{label}: {want.datatype} data go in contents.{field}, got contents.{others[0]}"
        )
    if len(values) != count:
        raise InvalidRequestError(
            f"{label}: contents.{field} has {len(values)} values; shape {list(shape)} needs {count}"
        )
    if want.datatype == "UINT8":
        wide = np.asarray(values, dtype=np.uint32)
        if wide.size and int(wide.max()) > 255:
            raise InvalidRequestError(
                f"{label}: contents.{field} holds {int(wide.max())}, outside UINT8"
            )
        return wide.astype(np.uint8).reshape(shape)
    return np.asarray(values, dtype=np.float32).reshape(shape)


class KServeServicer(kpb_grpc.GRPCInferenceServiceServicer):
    """The protocol's RPCs over the served models (see the module docstring).

    ``ready`` is set by the server with its health status (False while warming up and draining).
    """

    def __init__(self, models: dict[str, ServedModel]) -> None:
        self._models = models
        self.ready = False

    def add_to(self, server: grpc.aio.Server) -> None:
        kpb_grpc.add_GRPCInferenceServiceServicer_to_server(self, server)

    def _model(self, name: str, version: str) -> ServedModel:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFoundError(
                f"model {name!r} not found; served: {sorted(self._models)}"
                if name
                else f"no model named (model_name is empty); served: {sorted(self._models)}"
            )
        if version and version != str(model.spec.version):
            raise ModelNotFoundError(
                f"model {name!r} version {version!r} is not served (serving {model.spec.version})"
            )
        return model

    # -- health and metadata ---------------------------------------------------------------

    async def ServerLive(
        self, request: kpb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ServerLiveResponse:
        return kpb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: kpb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ServerReadyResponse:
        return kpb.ServerReadyResponse(ready=self.ready)

    async def ServerMetadata(
        self, request: kpb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ServerMetadataResponse:
        return kpb.ServerMetadataResponse(name="varfx", version=__version__, extensions=[])

    async def ModelReady(
        self, request: kpb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ModelReadyResponse:
        model = self._models.get(request.name)
        if model is None:
            raise ModelNotFoundError(
                f"model {request.name!r} not found; served: {sorted(self._models)}"
            )
        version_ok = request.version in ("", str(model.spec.version))
        return kpb.ModelReadyResponse(ready=self.ready and version_ok)

    async def ModelMetadata(
        self, request: kpb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ModelMetadataResponse:
        model = self._model(request.name, request.version)
        inp, out = tensor_specs(model.spec)
        meta = kpb.ModelMetadataResponse.TensorMetadata
        return kpb.ModelMetadataResponse(
            name=model.spec.name,
            versions=[str(model.spec.version)],
            platform=PLATFORM,
            inputs=[meta(name=inp.name, datatype=inp.datatype, shape=inp.shape)],
            outputs=[meta(name=out.name, datatype=out.datatype, shape=out.shape)],
        )

    async def ModelConfig(
        self, request: kpb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ModelConfigResponse:
        model = self._model(request.name, request.version)
        inp, out = tensor_specs(model.spec)
        batcher = model.batcher
        config = mc.ModelConfig(
            name=model.spec.name,
            platform=PLATFORM,
            max_batch_size=batcher.max_batch,
            input=[
                mc.ModelInput(
                    name=inp.name,
                    data_type=mc.DataType.Value(f"TYPE_{inp.datatype}"),
                    dims=inp.shape[1:],
                )
            ],
            output=[
                mc.ModelOutput(
                    name=out.name,
                    data_type=mc.DataType.Value(f"TYPE_{out.datatype}"),
                    dims=out.shape[1:],
                )
            ],
            dynamic_batching=mc.ModelDynamicBatching(
                max_queue_delay_microseconds=round(batcher.max_delay_s * 1e6)
            ),
        )
        return kpb.ModelConfigResponse(config=config)

    # -- inference -------------------------------------------------------------------------

    def _tokens(self, model: ServedModel, request: kpb.ModelInferRequest) -> np.ndarray:
        """The request's windows as tokens uint8 [n, L], checked against the contract."""
        spec = model.spec
        want, out = tensor_specs(spec)
        names = [t.name for t in request.inputs]
        if names != [want.name]:
            raise InvalidRequestError(
                f"model {spec.name!r} takes one input {want.describe()}; got inputs {names}"
            )
        raw_count = len(request.raw_input_contents)
        if raw_count not in (0, 1):
            raise InvalidRequestError(
                f"raw_input_contents has {raw_count} entries for 1 input {want.name!r}"
            )
        for requested in request.outputs:
            if requested.name != out.name:
                raise InvalidRequestError(
                    f"model {spec.name!r} has no output {requested.name!r}; its output is"
                    f" {out.describe()}"
                )
            if "classification" in requested.parameters:
                raise InvalidRequestError(
                    f"output {out.name!r}: the classification extension is not supported"
                )
        raw = request.raw_input_contents[0] if raw_count else None
        data = _tensor_data(request.inputs[0], raw, want)
        if len(data) > model.batcher.max_batch:
            raise InvalidRequestError(
                f"input {want.name!r}: {len(data)} windows in one request; max_batch_size is"
                f" {model.batcher.max_batch} (ModelConfig): send them in several requests"
            )
        if spec.input_kind == "onehot":
            return decode_one_hot(data, spec.alphabet, spec.n_value, want.name)
        if data.size and int(data.max()) > N_TOKEN:
            i, j = (int(v) for v in np.argwhere(data > N_TOKEN)[0])
            raise InvalidRequestError(
                f"input {want.name!r}: window {i}, position {j} is token {int(data[i, j])};"
                " tokens are 0-4 (A C G T N)"
            )
        return data

    async def ModelInfer(
        self, request: kpb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ModelInferResponse:
        model = self._model(request.model_name, request.model_version)
        tokens = self._tokens(model, request)
        _, out = tensor_specs(model.spec)
        features = len(model.spec.features)
        if len(tokens):
            probs = await model.batcher.submit(tokens)
        else:
            probs = np.zeros((0, features), dtype=np.float32)
        tensor = kpb.ModelInferResponse.InferOutputTensor(
            name=out.name, datatype=out.datatype, shape=[len(tokens), features]
        )
        return kpb.ModelInferResponse(
            model_name=model.spec.name,
            model_version=str(model.spec.version),
            id=request.id,
            outputs=[tensor],
            raw_output_contents=[np.ascontiguousarray(probs, dtype="<f4").tobytes()],
        )
