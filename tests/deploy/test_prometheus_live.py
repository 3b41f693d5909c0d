"""A real Prometheus, configured from the shipped scrape config and rule files, scrapes a live
varfx server under a short bounded load; the test reads the results back over the Prometheus
HTTP API: counter increases equal what was sent, recording rules evaluate to sane values,
alert rules load, and VarfxDown goes pending when the server stops."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from tests.deploy._stack import (
    derived_prometheus_config,
    run_prometheus,
    score_variants,
    snvs,
    start_server,
)

pytestmark = pytest.mark.slow

OK, REF_MISMATCH = 0, 1


def test_prometheus_scrapes_varfx_and_evaluates_rules(
    tmp_path: Path, model_repo: Path, genome_fa: Path, genome_seqs: dict[str, str]
) -> None:
    seq = genome_seqs["chr1"]
    server = start_server(model_repo, genome_fa, max_queue=4096)
    try:
        with run_prometheus(derived_prometheus_config([server.metrics_port]), tmp_path) as prom:
            total = 'sum(varfx_variants_total{job="varfx"})'
            # Baseline: one OK variant and one REF mismatch, so that both counter series exist
            # before the load starts (rate() sees no increase in a series' first sample).
            baseline = snvs(seq, "chr1", range(100, 101))
            baseline += snvs(seq, "chr1", range(101, 102), ref_mismatch=True)
            score_variants(server.target, baseline)
            prom.wait_for("the baseline scrape", lambda: prom.value(total) == 2)
            t0 = time.time()

            # Bounded load: 20 calls x 10 scoreable SNVs, 1 call of 5 REF mismatches, and one
            # call naming an unknown model (a caller mistake: NOT_FOUND, not a service error).
            statuses: list[int] = []
            for k in range(20):
                batch = snvs(seq, "chr1", range(200 + 10 * k, 210 + 10 * k))
                statuses += [s.status.code for s in score_variants(server.target, batch).scores]
            mismatched = snvs(seq, "chr1", range(1500, 1505), ref_mismatch=True)
            statuses += [s.status.code for s in score_variants(server.target, mismatched).scores]
            with pytest.raises(grpc.RpcError) as err:
                score_variants(server.target, snvs(seq, "chr1", range(5, 6)), model="no-such")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert statuses.count(OK) == 200
            assert statuses.count(REF_MISMATCH) == 5

            prom.wait_for("the load to be scraped", lambda: prom.value(total) == 207)
            t1 = time.time()

            # The increase over the load, by status, equals what was sent.
            def by_status(at: float) -> dict[str, float]:
                rows = prom.query('sum by (status) (varfx_variants_total{job="varfx"})', at)
                return {r["metric"]["status"]: float(r["value"][1]) for r in rows}

            before, after = by_status(t0), by_status(t1)
            increase = {k: after[k] - before.get(k, 0.0) for k in after}
            assert increase == {"OK": 200.0, "REF_MISMATCH": 5.0}
            requests = prom.query('varfx_requests_total{job="varfx",method="ScoreVariants"}', t1)
            by_code = {r["metric"]["code"]: float(r["value"][1]) for r in requests}
            assert by_code == {"OK": 22.0, "NOT_FOUND": 1.0}  # baseline + 20 + 1 and the bad one

            # Every shipped rule loaded and evaluates without error.
            groups = prom.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            assert len(rules) >= 20
            assert all(r["health"] in ("ok", "unknown") for r in rules), rules

            # Recording rules: the throughput series exists with a sane rate ...
            rate = prom.wait_for(
                "job_model:varfx_variants:rate1m",
                lambda: prom.value('job_model:varfx_variants:rate1m{job="varfx",model="tok"}'),
            )
            assert 0 < rate <= 206
            mismatch_rate = prom.wait_for(
                "REF_MISMATCH rate",
                lambda: prom.value(
                    'job_model_status:varfx_variants:rate1m{model="tok",status="REF_MISMATCH"}'
                ),
            )
            assert 0 < mismatch_rate < rate
            # ... no server-side errors (NOT_FOUND is the caller's), an idle queue ...
            errors = 'job:varfx_requests_errors:ratio_rate5m{job="varfx"}'
            assert prom.wait_for("error ratio", lambda: prom.query(errors))
            assert prom.value(errors) == 0.0
            saturation = 'instance_model:varfx_queue_saturation:ratio{model="tok"}'
            assert prom.wait_for("queue saturation", lambda: prom.query(saturation))
            assert prom.value(saturation) == 0.0
            assert prom.value('varfx_queue_capacity{model="tok"}') == 4096

            # ... latency percentiles and batch size in range.
            def latency(q: str) -> float:
                expr = f'job_method:varfx_request_duration_seconds:{q}_5m{{method="ScoreVariants"}}'
                return float(prom.wait_for(f"{q} latency", lambda: prom.value(expr)))

            p50, p99 = latency("p50"), latency("p99")
            assert 0 < p50 <= p99 < 30
            mean_batch = prom.wait_for(
                "mean batch size",
                lambda: prom.value('job_model:varfx_batch_size:mean5m{model="tok"}'),
            )
            assert 1 <= mean_batch <= 64
            firing = [a for a in prom.api("alerts")["alerts"] if a["state"] == "firing"]
            assert firing == []

            # The server goes away: up drops to 0 and VarfxDown becomes pending (for: 1m).
            server.stop()
            prom.wait_for("up == 0", lambda: prom.value('up{job="varfx"}') == 0)
            prom.wait_for(
                "VarfxDown pending",
                lambda: prom.query('ALERTS{alertname="VarfxDown",alertstate="pending"}'),
            )
    finally:
        server.stop()
