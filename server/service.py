"""The varfx.v1 VariantEffectService: thin glue between the wire and the scoring verb.

Requests arrive as bytes and leave as bytes (``service_handler``), so that large messages are
decoded and encoded off the event loop, a request too big to be legal is refused before it is
parsed, and a malformed one is one INVALID_ARGUMENT, not a traceback. Scoring is
``varfx.server.scoring`` with the model's dynamic batcher between plan and finish; admission
comes before window building (``DynamicBatcher.reserve``), and a request bigger than the queue
runs in parts that each fit. Metrics and error mapping are ``calls.CallInterceptor``'s.

Per-variant problems come back as per-variant statuses; only a malformed request fails the call
(unknown model: NOT_FOUND; too many variants, empty sequence pair, unknown feature:
INVALID_ARGUMENT; full queue: RESOURCE_EXHAUSTED for unary calls, while streams, which have flow
control, wait for room).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np

from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.batching import DynamicBatcher, Reservation
from varfx.server.calibration import Calibration, CalibrationFileError, load_calibration
from varfx.server.errors import (
    CalibrationUnavailableError,
    GenomeUnavailableError,
    InvalidRequestError,
    ModelNotFoundError,
)
from varfx.server.explain import DEFAULT_WINDOW, ExplainPlan, motif_feature, plan_explain
from varfx.server.genome import Genome
from varfx.server.genome_identity import GenomePairing, manifest_for, model_info, pairing_of
from varfx.server.local_compute import MAX_SPAN, LocalRecompute
from varfx.server.metrics import Metrics
from varfx.server.motifs import motif_database
from varfx.server.refcache import RefCache
from varfx.server.repository import ModelSpec
from varfx.server.requests import decode_message, max_request_bytes, variants_of
from varfx.server.responses import fill_messages, response_bytes
from varfx.server.runtime import ModelRunner
from varfx.server.scoring import (
    ALL_KINDS,
    CALIBRATED_KINDS,
    ScoreResult,
    ScoringOptions,
    ScoringPlan,
    plan_sequences,
    plan_variants,
    windows_per_input,
)

__all__ = ["SERVICE_NAME", "ServedModel", "VariantEffectServicer"]

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VariantEffectService"].full_name
_STATUS_NAMES = {v.number: v.name for v in pb.StatusCode.DESCRIPTOR.values}
# Messages up to this size are decoded/encoded on the event loop; larger ones in a thread.
_INLINE_BYTES = 64 * 1024
# Requests up to this many variants build their windows on the event loop; larger ones in a thread.
_INLINE_WINDOWS = 64
# Rows paired with a reference row below which a plan goes through the batcher as plain rows
# (a few variants are cheaper batched with other callers' rows than recomputed locally).
_LOCAL_MIN_PAIRS = 16


async def _predict(
    model: ServedModel, tokens: np.ndarray, pairs: np.ndarray, room: Any
) -> np.ndarray:
    """Probabilities of a plan's rows: locally recomputed alts where the model has a local path
    and the plan enough paired rows, else through the batcher as plain rows."""
    local = model.local
    if local is not None and int(np.count_nonzero(pairs >= 0)) >= _LOCAL_MIN_PAIRS:
        return await model.batcher.run_job(
            lambda: local.predict_pairs(tokens, pairs), rows=len(tokens), reservation=room
        )
    return await model.batcher.submit(tokens, reservation=room)


async def _predict_plan(model: ServedModel, plan: ScoringPlan, room: Reservation) -> np.ndarray:
    """Probabilities of a plan's rows: with device windows (``plan.rows``) its described rows
    and its host windows go to the batcher as two submissions under the request's room (a
    run may hold both, from any callers), else as ``_predict``."""
    rows = plan.rows
    if rows is None:
        return await _predict(model, plan.tokens, plan.pairs, room)
    described = model.batcher.submit(rows, reservation=room.split(len(rows)))
    if not len(plan.tokens):
        room.release()
        return plan.assemble(plan.tokens, await described)
    host = model.batcher.submit(plan.tokens, reservation=room.split(len(plan.tokens)))
    room.release()
    tasks = [asyncio.ensure_future(described), asyncio.ensure_future(host)]
    try:
        on_device, on_host = await asyncio.gather(*tasks)
    except BaseException:  # one failed (or the call was cancelled): the other is not needed
        for task in tasks:
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise
    return plan.assemble(on_host, on_device)


# Requests of one stream scored concurrently (pipelining; the transport's flow control does the rest).
_STREAM_WINDOW = 4


def _parts(n: int, step: int) -> list[tuple[int, int]]:
    """[start, stop) of the consecutive parts of ``step`` inputs a request of n runs in (one
    empty part for an empty request, so that it still gets a response)."""
    return [(s, min(s + step, n)) for s in range(0, n, step)] or [(0, 0)]


@dataclass
class ServedModel:
    """A loaded model: its runner, its batcher and the genome it scores variants on."""

    runner: ModelRunner
    batcher: DynamicBatcher
    genome: Genome | None = None  # the reference of the model's assembly
    # genome identity, ONNX SHA-256 and why there is no genome (server/genome_identity.py)
    pairing: GenomePairing | None = None
    # the calibration beside the model (server/calibration.py), or why there is none
    calibration: Calibration | None = None
    calibration_problem: str = ""
    # ref-window predictions shared by all callers (server/refcache.py), or None
    ref_cache: RefCache | None = None
    # SNV/MNV alts recomputed on the ref's feature maps (server/local_compute.py), or None
    local: LocalRecompute | None = None

    @property
    def cache_scope(self) -> tuple[str, int, str, str]:
        """What a cached ref prediction depends on besides the window: the model (name,
        version, ONNX SHA-256) and the genome (digest)."""
        p = self.pairing
        sha = p.model_sha256 if p is not None else str(self.spec.path)
        digest = p.served.identity.digest if p is not None and p.served is not None else ""
        return (self.spec.name, self.spec.version, sha, digest or str(id(self.genome)))

    @property
    def spec(self) -> ModelSpec:
        return self.runner.spec


class VariantEffectServicer:
    """Scores variants and sequence pairs with the served models (see the module docstring)."""

    def __init__(
        self,
        models: dict[str, ServedModel],
        *,
        genome: Genome | None,
        metrics: Metrics,
        executor: Executor,
        default_model: str = "",
        max_variants: int = 10000,
        max_message_bytes: int | None = None,
    ) -> None:
        if not models:
            raise ValueError("no models to serve")
        self._models = models
        self._genome = genome
        self._metrics = metrics
        self._executor = executor
        self._max_variants = max_variants
        self._max_message_bytes = max_message_bytes
        # larger requests cannot be legal: refused unparsed (gRPC core refuses them at their
        # length prefix already where the port's receive limit is this; server/requests.py)
        self._max_request_bytes = max_request_bytes(max_variants)
        if default_model and default_model not in models:
            raise ModelNotFoundError(f"default model {default_model!r} not in {sorted(models)}")
        self._default = default_model or (next(iter(models)) if len(models) == 1 else "")
        for model in models.values():
            if model.calibration is None and not model.calibration_problem:
                _load_calibration(model)

    # -- helpers ---------------------------------------------------------------------------

    def model(self, name: str, version: int = 0) -> ServedModel:
        """The served model a request names ("" = the default), or a typed error."""
        key = name or self._default
        if not key:
            raise InvalidRequestError(
                f"several models are served ({sorted(self._models)}): name one in 'model'"
            )
        model = self._models.get(key)
        if model is None:
            raise ModelNotFoundError(f"model {key!r} not found; served: {sorted(self._models)}")
        if version and version != model.spec.version:
            raise ModelNotFoundError(
                f"model {key!r} version {version} is not served (serving {model.spec.version})"
            )
        return model

    async def _off_loop(self, size: int, fn: Callable[[], T]) -> T:
        """``fn()`` on the event loop when the work is small, else in the executor."""
        if size <= _INLINE_BYTES:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _decode(self, parse: Callable[[bytes], T], data: bytes, what: str) -> T:
        if len(data) > self._max_request_bytes:
            raise InvalidRequestError(
                f"{what} of {len(data) / 2**20:.1f} MiB is larger than any request of at most "
                f"{self._max_variants} variants can be (send fewer per request)"
            )
        return await self._off_loop(len(data), lambda: decode_message(parse, data, what))

    def _count(self, model: ServedModel, status: np.ndarray) -> None:
        codes, counts = np.unique(status, return_counts=True)
        for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
            self._metrics.variants.labels(
                model=model.spec.name, status=_STATUS_NAMES.get(code, str(code))
            ).inc(count)

    def _check_size(self, spec: ModelSpec, n: int, options: ScoringOptions) -> None:
        """Fail before any work when the response could not be sent: float32 arrays dominate
        its size (inputs x score kinds x features x 4 bytes)."""
        limit = self._max_message_bytes
        if limit is None:
            return
        features = len(options.features) or len(spec.features)
        size = n * len(options.kinds) * (4 * features + 6) + n * 100
        if size > limit:
            raise InvalidRequestError(
                f"the response to {n} variants would be about {size / 2**20:.1f} MiB, over the "
                f"{limit / 2**20:.0f} MiB message limit (max_message_mb): send fewer variants "
                "per request, or ask for fewer score kinds (options.scores) or features "
                "(options.features)"
            )

    @staticmethod
    def _require_calibration(model: ServedModel, options: ScoringOptions) -> None:
        """Refuse calibrated kinds for a model without a current calibration (before any work)."""
        if options.calibrated and model.calibration is None:
            raise CalibrationUnavailableError(
                f"model {model.spec.name!r} v{model.spec.version} has no calibration "
                f"({model.calibration_problem or 'no calibration.json beside model.onnx'}): "
                "QUANTILE, SIGNED_QUANTILE and PVALUE need one; run `varfx calibrate "
                f"REPO/{model.spec.name}/{model.spec.version} --genome FASTA` and restart"
            )

    @staticmethod
    def _calibrated(
        model: ServedModel, result: ScoreResult, options: ScoringOptions
    ) -> ScoreResult:
        if options.calibrated and model.calibration is not None:
            return result.with_calibration(model.calibration)
        return result

    def _manifest(self, model: ServedModel, options: ScoringOptions, genome: bool) -> pb.Manifest:
        """What computed a response (model file, genome, settings; ``genome_identity``)."""
        manifest = manifest_for(model, options, variants=genome)
        if model.calibration is not None:
            manifest.calibration = model.calibration.description
        return manifest

    async def _run(
        self, model: ServedModel, parts: Sequence[Callable[[], ScoringPlan]], sizes: Sequence[int],
        per: int, wait: bool,
    ) -> list[ScoreResult]:  # fmt: skip
        """Admit, plan, predict and finish each part in turn. The first part is refused at
        once when the queue is full (unless ``wait``); later parts of an admitted request wait
        for their turn."""
        results = []
        loop = asyncio.get_running_loop()
        for i, (make_plan, n) in enumerate(zip(parts, sizes, strict=True)):
            async with await model.batcher.reserve(per * n, wait=wait or i > 0) as room:
                if n <= _INLINE_WINDOWS:
                    plan = make_plan()
                else:
                    plan = await loop.run_in_executor(self._executor, make_plan)
                probs = await _predict_plan(model, plan, room)
            results.append(plan.finish(probs))
            if plan.found is not None:
                hits = plan.cache_hits
                lookups = self._metrics.ref_cache_lookups
                lookups.labels(model=model.spec.name, result="hit").inc(hits)
                lookups.labels(model=model.spec.name, result="miss").inc(len(plan.found) - hits)
        return results

    @staticmethod
    def _part_size(model: ServedModel, per: int, wait: bool) -> int:
        """Inputs per part: a part fits the room its caller may take (streams: their share)."""
        room = model.batcher.stream_room if wait else model.batcher.max_queue
        return max(1, room // per)

    # -- scoring ------------------------------------------------------------------------------

    async def score_request(self, request: pb.ScoreVariantsRequest, *, wait: bool) -> bytes:
        """Score one ScoreVariantsRequest; returns the serialized response. ``wait``: wait for
        room in a full queue (streams) instead of failing with RESOURCE_EXHAUSTED (unary)."""
        model = self.model(request.model, request.model_version)
        batch = variants_of(request, self._max_variants)
        options = ScoringOptions.from_proto(request.options)
        spec = model.spec
        self._require_calibration(model, options)
        self._check_size(spec, len(batch), options)
        genome = model.genome or self._genome
        if genome is None:
            why = model.pairing.unpaired_reason if model.pairing is not None else ""
            raise GenomeUnavailableError(
                (why or "this server was started without a reference genome (--genome)")
                + "; only ScoreSequences is available"
            )
        per = windows_per_input(options)
        step = self._part_size(model, per, wait)
        bounds = _parts(len(batch), step)

        cache, scope = model.ref_cache, model.cache_scope
        # SNV windows built where the model runs (server/device_windows.py), when it keeps
        # this genome there (create_server attaches it to the model's own genome)
        device = model.runner.device_windows if model.batcher.accepts_rows else None
        if device is not None and device.genome is not genome:
            device = None

        def planner(part: VariantBatch) -> Callable[[], ScoringPlan]:
            return lambda: plan_variants(
                genome, part, length=spec.sequence_length, features=spec.features,
                model=spec.name, options=options, cache=cache, scope=scope,
                fresh_span=MAX_SPAN if model.local is not None else 0, device=device,
            )  # fmt: skip

        parts = [planner(batch.take(a, b) if len(bounds) > 1 else batch) for a, b in bounds]
        results = await self._run(model, parts, [b - a for a, b in bounds], per, wait)
        result = self._calibrated(model, ScoreResult.concat(results), options)
        response = pb.ScoreVariantsResponse(
            model=spec.name,
            model_version=spec.version,
            manifest=self._manifest(model, options, genome=True),
        )
        self._count(model, result.status)
        packed = request.options.packed

        def row(i: int) -> Any:
            if request.variants:
                return response.scores.add(variant=request.variants[i])
            v = pb.Variant(
                id=batch.id(i), chrom=batch.chrom(i), pos=int(batch.pos[i]),
                ref=batch.ref(i), alt=batch.alt(i),
            )  # fmt: skip
            return response.scores.add(variant=v)

        return await self._off_loop(
            0 if packed else len(batch) * 64,
            lambda: response_bytes(response, result, options.kinds, packed, row),
        )

    async def ScoreVariants(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = await self._decode(
            pb.ScoreVariantsRequest.FromString, data, "ScoreVariantsRequest"
        )
        return await self.score_request(request, wait=False)

    async def StreamScoreVariants(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        # A reader task takes requests while earlier ones are scored, up to _STREAM_WINDOW ahead
        # of the responses sent; each response goes out as soon as it (and all before it) is
        # ready, so a client that waits for each answer before sending more is served too.
        slots = asyncio.Semaphore(_STREAM_WINDOW)
        pending: asyncio.Queue[asyncio.Task[bytes] | None] = asyncio.Queue()
        failure: list[Exception] = []

        async def score(data: bytes) -> bytes:
            request = await self._decode(
                pb.ScoreVariantsRequest.FromString, data, "ScoreVariantsRequest"
            )
            return await self.score_request(request, wait=True)

        async def read() -> None:
            requests = aiter(request_iterator)
            try:
                while True:
                    await slots.acquire()
                    try:
                        data = await anext(requests)
                    except StopAsyncIteration:
                        return
                    pending.put_nowait(asyncio.create_task(score(data)))
            except Exception as exc:
                failure.append(exc)
            finally:
                pending.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (task := await pending.get()) is not None:
                response = await task
                yield response
                slots.release()
            if failure:
                raise failure[0]
        finally:
            reader.cancel()
            while not pending.empty():
                leftover = pending.get_nowait()
                if leftover is None:
                    continue
                if leftover.done() and not leftover.cancelled():
                    leftover.exception()  # retrieved: the stream already failed for a reason
                leftover.cancel()

    async def ScoreSequences(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = await self._decode(
            pb.ScoreSequencesRequest.FromString, data, "ScoreSequencesRequest"
        )
        model = self.model(request.model, request.model_version)
        n = len(request.pairs)
        if n > self._max_variants:
            raise InvalidRequestError(f"{n} sequence pairs; the limit is {self._max_variants}")
        for i, pair in enumerate(request.pairs):
            if not pair.ref or not pair.alt:
                raise InvalidRequestError(
                    f"sequence pair {i} (id {pair.id!r}) has an empty "
                    f"{'ref' if not pair.ref else 'alt'} sequence"
                )
        options = ScoringOptions.from_proto(request.options)
        spec = model.spec
        self._require_calibration(model, options)
        self._check_size(spec, n, options)
        per = windows_per_input(options)
        step = self._part_size(model, per, wait=False)
        bounds = _parts(n, step)
        pairs = [(p.ref, p.alt) for p in request.pairs]

        def planner(a: int, b: int) -> Callable[[], ScoringPlan]:
            return lambda: plan_sequences(
                pairs[a:b], length=spec.sequence_length, features=spec.features,
                model=spec.name, options=options,
            )  # fmt: skip

        parts = [planner(a, b) for a, b in bounds]
        result = self._calibrated(
            model,
            ScoreResult.concat(
                await self._run(model, parts, [b - a for a, b in bounds], per, wait=False)
            ),
            options,
        )
        response = pb.ScoreSequencesResponse(
            model=spec.name,
            model_version=spec.version,
            manifest=self._manifest(model, options, genome=False),
        )
        self._count(model, result.status)
        packed = request.options.packed
        return await self._off_loop(
            0 if packed else n * 64,
            lambda: response_bytes(
                response, result, options.kinds, packed,
                lambda i: response.scores.add(id=request.pairs[i].id),
            ),
        )  # fmt: skip

    # -- explanation ------------------------------------------------------------------------

    async def ExplainVariant(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """ISM around one variant on its ref and alt background (server/explain.py), through
        the model's batcher, plus the motif calls (server/motifs.py)."""
        request = await self._decode(
            pb.ExplainVariantRequest.FromString, data, "ExplainVariantRequest"
        )
        model = self.model(request.model, request.model_version)
        spec = model.spec
        genome = model.genome or self._genome
        if genome is None:
            why = model.pairing.unpaired_reason if model.pairing is not None else ""
            raise GenomeUnavailableError(
                (why or "this server was started without a reference genome (--genome)")
                + "; ExplainVariant needs one"
            )
        v = request.variant
        if not v.chrom or v.pos < 1 or not v.ref or not v.alt:
            raise InvalidRequestError(
                f"variant {v.chrom}:{v.pos}:{v.ref}:{v.alt} needs chrom, pos >= 1, ref and alt"
            )
        calibrated = model.calibration is not None
        options = ScoringOptions(
            kinds=ALL_KINDS + (CALIBRATED_KINDS if calibrated else ()),
            reverse_complement=bool(request.reverse_complement),
            ref_policy=int(request.ref_policy) or pb.REF_POLICY_STRICT,
            features=tuple(request.features),
            indels_as_written=True,  # ISM positions map onto the alleles as written
        )
        window = request.window or DEFAULT_WINDOW
        loop = asyncio.get_running_loop()

        def make() -> ExplainPlan:
            return plan_explain(
                genome, v, length=spec.sequence_length, features=spec.features,
                model=spec.name, window=window, options=options,
            )  # fmt: skip

        plan = await loop.run_in_executor(self._executor, make)
        if len(plan.tokens) > model.batcher.max_queue:
            raise InvalidRequestError(
                f"window {window} needs {len(plan.tokens)} model rows, more than the queue "
                f"holds ({model.batcher.max_queue}); ask for a smaller window"
            )
        async with await model.batcher.reserve(len(plan.tokens), wait=False) as room:
            probs = await _predict(model, plan.tokens, plan.pairs, room)
        result = plan.finish(probs)
        score = self._calibrated(model, result.score, options)
        self._count(model, score.status)
        top = request.top_motifs or 5
        calls = []
        feature = motif_feature(score)
        if plan.ok and not request.no_motifs:
            calls = await loop.run_in_executor(
                self._executor, lambda: plan.motif_calls(motif_database(), top, result, feature)
            )
        response = pb.ExplainVariantResponse(
            variant=v,
            status=pb.Status(code=int(score.status[0]), message=score.messages[0]),  # type: ignore[arg-type]
            positions=result.positions.tolist(),
            bases="ACGT",
            features=result.features,
            ref_ism=np.ascontiguousarray(result.ref_ism, dtype="<f4").tobytes(),
            alt_ism=np.ascontiguousarray(result.alt_ism, dtype="<f4").tobytes(),
            ref_bases=result.ref_bases,
            alt_bases=result.alt_bases,
            manifest=self._manifest(model, options, genome=True),
            motif_feature=result.features[feature] if calls and feature >= 0 else "",
        )
        for call, position in calls:
            response.motifs.add(
                name=call.name, jaspar_id=call.jaspar_id, strand=call.strand,
                position=position, ref_score=call.ref_score, alt_score=call.alt_score,
                width=call.width, relative_change=call.relative_change,
                model_importance=call.model_importance,
            )  # fmt: skip
        response.score.variant.CopyFrom(v)
        fill_messages([response.score], score, options.kinds)
        return bytes(response.SerializeToString())

    # -- listing --------------------------------------------------------------------------------

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        response = pb.ListModelsResponse()
        for name, model in self._models.items():  # identity and public metadata: genome_identity
            info = model_info(model, is_default=name == self._default)
            info.calibration = model.calibration.description if model.calibration else ""
            response.models.append(info)
        return response

    # -- registration -----------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's method handlers: the scoring methods take and return raw bytes (this
        class parses and serializes them); ListModels uses the generated message classes."""
        raw: dict[str, Any] = {"request_deserializer": None, "response_serializer": None}
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "ListModels": grpc.unary_unary_rpc_method_handler(
                    self.ListModels,
                    request_deserializer=pb.ListModelsRequest.FromString,
                    response_serializer=pb.ListModelsResponse.SerializeToString,
                ),
                "ScoreVariants": grpc.unary_unary_rpc_method_handler(self.ScoreVariants, **raw),
                "StreamScoreVariants": grpc.stream_stream_rpc_method_handler(
                    self.StreamScoreVariants, **raw
                ),
                "ScoreSequences": grpc.unary_unary_rpc_method_handler(self.ScoreSequences, **raw),
                "ExplainVariant": grpc.unary_unary_rpc_method_handler(self.ExplainVariant, **raw),
            },
        )


def _load_calibration(model: ServedModel) -> None:
    """Load the calibration beside a served model. A stale (other SHA-256) or malformed one is
    not used: the model is served without calibration, the problem is logged and named in the
    FAILED_PRECONDITION answer to calibrated kinds."""
    spec = model.spec
    try:
        model.calibration = load_calibration(
            spec.path.parent, model_sha256=pairing_of(model).model_sha256, features=spec.features
        )
    except CalibrationFileError as exc:
        model.calibration_problem = str(exc)
        log.warning("model %s v%d: calibration not used: %s", spec.name, spec.version, exc)
        return
    if model.calibration is not None:
        log.info(
            "model %s v%d: calibration %s", spec.name, spec.version, model.calibration.description
        )
