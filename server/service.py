"""The varfx.v1 VariantEffectService servicer (grpc.aio).

Per-variant problems come back as per-variant statuses; only a malformed request fails the call
(unknown model: NOT_FOUND; too many variants, empty sequence pair, unknown feature:
INVALID_ARGUMENT; full queue: RESOURCE_EXHAUSTED for unary calls, while streams, which
have flow control, wait for room). Errors map to gRPC codes in one place
(``errors.grpc_code``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

import grpc
import numpy as np

from varfx.core.tokens import reverse_complement
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server.batching import DynamicBatcher
from varfx.server.errors import (
    GenomeUnavailableError,
    InvalidRequestError,
    ModelNotFoundError,
    VarfxServerError,
    grpc_code,
)
from varfx.server.genome import Genome
from varfx.server.metrics import Metrics
from varfx.server.repository import ModelSpec
from varfx.server.responses import ALL_KINDS, Scored, fill_messages, fill_packed
from varfx.server.runtime import ModelRunner
from varfx.server.scores import compute_scores
from varfx.server.windows import VariantWindows, build_windows, sequence_windows

__all__ = ["ServedModel", "VariantEffectServicer"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_STATUS_NAMES = {v.number: v.name for v in pb.StatusCode.DESCRIPTOR.values}
# Requests up to this many variants build their windows on the event loop; larger ones in a thread.
_INLINE_WINDOWS = 64
# Requests of one stream scored concurrently (pipelining; the transport's flow control does the rest).
_STREAM_WINDOW = 4


@dataclass
class ServedModel:
    """A loaded model: its runner and its batcher."""

    runner: ModelRunner
    batcher: DynamicBatcher
    genome: Genome | None = None  # the reference of the model's assembly

    @property
    def spec(self) -> ModelSpec:
        return self.runner.spec


class VariantEffectServicer(pb_grpc.VariantEffectServiceServicer):
    """Scores variants and sequence pairs with the served models."""

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
        log_requests: bool = False,
    ) -> None:
        if not models:
            raise ValueError("no models to serve")
        self._models = models
        self._genome = genome
        self._metrics = metrics
        self._executor = executor
        self._max_variants = max_variants
        self._max_message_bytes = max_message_bytes
        self._log_requests = log_requests
        if default_model and default_model not in models:
            raise ModelNotFoundError(f"default model {default_model!r} not in {sorted(models)}")
        self._default = default_model or (next(iter(models)) if len(models) == 1 else "")

    # -- helpers ---------------------------------------------------------------------------

    def _model(self, name: str, version: int) -> ServedModel:
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

    def _record(self, method: str, code: grpc.StatusCode, t0: float) -> None:
        seconds = time.perf_counter() - t0
        m = self._metrics
        m.inflight.dec()
        m.requests.labels(method=method, code=code.name).inc()
        m.request_duration.labels(method=method).observe(seconds)
        if self._log_requests:
            log.info("%s %s %.1f ms", method, code.name, seconds * 1000)

    @staticmethod
    def _cancel_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED

    async def _instrument(
        self, method: str, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[T]]
    ) -> T:
        """Run a unary handler: metrics recorded before the reply goes out, errors mapped."""
        self._metrics.inflight.inc()
        t0 = time.perf_counter()
        try:
            result = await work()
        except VarfxServerError as exc:
            code = grpc_code(exc)
            self._record(method, code, t0)
            await context.abort(code, str(exc))
            raise  # not reached: abort raises
        except asyncio.CancelledError:
            self._record(method, self._cancel_code(context), t0)
            raise
        except Exception as exc:
            log.exception("%s failed", method)
            self._record(method, grpc.StatusCode.INTERNAL, t0)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
            )
            raise
        self._record(method, grpc.StatusCode.OK, t0)
        return result

    def _feature_index(self, spec: ModelSpec, wanted: Sequence[str]) -> np.ndarray | None:
        if not wanted:
            return None
        lookup = {f: i for i, f in enumerate(spec.features)}
        missing = [f for f in wanted if f not in lookup]
        if missing:
            raise InvalidRequestError(
                f"unknown feature(s) {missing[:5]} for model {spec.name!r} "
                f"({len(spec.features)} features; see ListModels)"
            )
        return np.array([lookup[f] for f in wanted], dtype=np.intp)

    async def _score_windows(
        self,
        model: ServedModel,
        windows: VariantWindows,
        options: pb.ScoreOptions,
        *,
        wait: bool = False,
    ) -> Scored:
        spec = model.spec
        select = self._feature_index(spec, options.features)
        features = spec.features if select is None else tuple(spec.features[i] for i in select)
        ok = np.flatnonzero(windows.ok)
        k = len(ok)
        if k == 0:
            empty = np.zeros((0, len(features)), dtype=np.float32)
            z = np.zeros(0)
            return Scored(features, empty, empty, empty, empty, z, z.astype(np.int64))
        ref, alt = windows.ref[ok], windows.alt[ok]
        parts = [ref, alt]
        if options.reverse_complement:
            parts += [reverse_complement(ref), reverse_complement(alt)]
        probs = await model.batcher.submit(np.concatenate(parts, axis=0), wait=wait)
        ref_p, alt_p = probs[:k], probs[k : 2 * k]
        if options.reverse_complement:
            ref_p = (ref_p + probs[2 * k : 3 * k]) / 2
            alt_p = (alt_p + probs[3 * k :]) / 2
        if select is not None:
            ref_p, alt_p = ref_p[:, select], alt_p[:, select]
        s = compute_scores(ref_p, alt_p)
        return Scored(features, s.ref, s.alt, s.diff, s.log2fc, s.max_abs_diff, s.max_index)

    def _count(self, model: ServedModel, status: np.ndarray) -> None:
        codes, counts = np.unique(status, return_counts=True)
        for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
            self._metrics.variants.labels(
                model=model.spec.name, status=_STATUS_NAMES.get(code, str(code))
            ).inc(count)

    def _check_size(
        self, spec: ModelSpec, windows: VariantWindows, options: pb.ScoreOptions
    ) -> None:
        """Fail before inference when the response could not be sent: packed float32 arrays
        dominate its size (OK rows x score kinds x features x 4 bytes)."""
        limit = self._max_message_bytes
        if limit is None:
            return
        n = len(windows.status)
        n_ok = int(np.count_nonzero(windows.ok))
        features = len(options.features) or len(spec.features)
        kinds = len(set(options.scores)) or len(ALL_KINDS)
        size = n_ok * kinds * (4 * features + 6) + n * 100
        if size > limit:
            raise InvalidRequestError(
                f"the response to {n} variants would be about {size / 2**20:.1f} MiB, over the "
                f"{limit / 2**20:.0f} MiB message limit (max_message_mb): send fewer variants "
                "per request, or ask for fewer score kinds (options.scores) or features "
                "(options.features)"
            )

    async def _build_windows(
        self, model: ServedModel, variants: Sequence[pb.Variant], policy: int
    ) -> VariantWindows:
        genome = model.genome or self._genome
        if genome is None:
            raise GenomeUnavailableError(
                "this server was started without a reference genome (--genome); "
                "only ScoreSequences is available"
            )
        length = model.spec.sequence_length
        if len(variants) <= _INLINE_WINDOWS:
            return build_windows(genome, variants, length, ref_policy=policy)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, lambda: build_windows(genome, variants, length, ref_policy=policy)
        )

    # -- RPCs --------------------------------------------------------------------------------

    async def _score_variants(
        self, request: pb.ScoreVariantsRequest, *, wait: bool = False
    ) -> pb.ScoreVariantsResponse:
        """Score one request; ``wait``: wait for room in a full queue (streams) instead of
        failing with RESOURCE_EXHAUSTED (unary calls)."""
        model = self._model(request.model, request.model_version)
        n = len(request.variants)
        if n > self._max_variants:
            raise InvalidRequestError(
                f"{n} variants in one request; the limit is {self._max_variants} "
                "(use StreamScoreVariants for more)"
            )
        options = request.options
        windows = await self._build_windows(model, request.variants, options.ref_policy)
        self._check_size(model.spec, windows, options)
        scored = await self._score_windows(model, windows, options, wait=wait)
        response = pb.ScoreVariantsResponse(
            model=model.spec.name, model_version=model.spec.version, features=scored.features
        )
        kinds = options.scores or ALL_KINDS
        if options.packed:
            fill_packed(response.packed, windows, scored, kinds)
        else:
            out = [response.scores.add(variant=v) for v in request.variants]
            fill_messages(out, windows, scored, kinds)
        self._count(model, windows.status)
        return response

    async def ScoreVariants(
        self, request: pb.ScoreVariantsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreVariantsResponse:
        return await self._instrument(
            "ScoreVariants", context, lambda: self._score_variants(request)
        )

    async def StreamScoreVariants(
        self,
        request_iterator: AsyncIterator[pb.ScoreVariantsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ScoreVariantsResponse]:
        method = "StreamScoreVariants"
        self._metrics.inflight.inc()
        t0 = time.perf_counter()
        # A reader task takes requests while earlier ones are scored, up to _STREAM_WINDOW ahead
        # of the responses sent; each response goes out as soon as it (and all before it) is
        # ready, so a client that waits for each answer before sending more is served too.
        slots = asyncio.Semaphore(_STREAM_WINDOW)
        pending: asyncio.Queue[asyncio.Task[pb.ScoreVariantsResponse] | None] = asyncio.Queue()
        failure: list[Exception] = []

        async def read() -> None:
            requests = aiter(request_iterator)
            try:
                while True:
                    await slots.acquire()
                    try:
                        request = await anext(requests)
                    except StopAsyncIteration:
                        return
                    task = asyncio.create_task(self._score_variants(request, wait=True))
                    pending.put_nowait(task)
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
        except VarfxServerError as exc:
            code = grpc_code(exc)
            self._record(method, code, t0)
            await context.abort(code, str(exc))
        except asyncio.CancelledError:
            self._record(method, self._cancel_code(context), t0)
            raise
        except Exception as exc:
            log.exception("%s failed", method)
            self._record(method, grpc.StatusCode.INTERNAL, t0)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
            )
        else:
            self._record(method, grpc.StatusCode.OK, t0)
        finally:
            reader.cancel()
            while not pending.empty():
                leftover = pending.get_nowait()
                if leftover is None:
                    continue
                if leftover.done() and not leftover.cancelled():
                    leftover.exception()  # retrieved: the stream already failed for a reason
                leftover.cancel()

    async def _score_sequences(
        self, request: pb.ScoreSequencesRequest
    ) -> pb.ScoreSequencesResponse:
        model = self._model(request.model, request.model_version)
        n = len(request.pairs)
        if n > self._max_variants:
            raise InvalidRequestError(f"{n} sequence pairs; the limit is {self._max_variants}")
        for i, pair in enumerate(request.pairs):
            if not pair.ref or not pair.alt:
                raise InvalidRequestError(
                    f"sequence pair {i} (id {pair.id!r}) has an empty "
                    f"{'ref' if not pair.ref else 'alt'} sequence"
                )
        windows = sequence_windows(
            [(p.ref, p.alt) for p in request.pairs], model.spec.sequence_length
        )
        self._check_size(model.spec, windows, request.options)
        scored = await self._score_windows(model, windows, request.options)
        response = pb.ScoreSequencesResponse(
            model=model.spec.name, model_version=model.spec.version, features=scored.features
        )
        kinds = request.options.scores or ALL_KINDS
        if request.options.packed:
            fill_packed(response.packed, windows, scored, kinds)
        else:
            out = [response.scores.add(id=p.id) for p in request.pairs]
            fill_messages(out, windows, scored, kinds)
        self._count(model, windows.status)
        return response

    async def ScoreSequences(
        self, request: pb.ScoreSequencesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreSequencesResponse:
        return await self._instrument(
            "ScoreSequences", context, lambda: self._score_sequences(request)
        )

    async def _list_models(self) -> pb.ListModelsResponse:
        response = pb.ListModelsResponse()
        for name, model in self._models.items():
            spec = model.spec
            response.models.add(
                name=name,
                version=spec.version,
                versions=spec.versions,
                features=spec.features,
                sequence_length=spec.sequence_length,
                assembly=spec.assembly,
                device=model.runner.device,
                input_kind=spec.input_kind,
                output_kind=spec.output,
                alphabet=spec.alphabet,
                is_default=name == self._default,
                max_batch=model.batcher.max_batch,
                metadata_json=json.dumps(spec.metadata, sort_keys=True, default=str),
            )
        return response

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return await self._instrument("ListModels", context, self._list_models)
