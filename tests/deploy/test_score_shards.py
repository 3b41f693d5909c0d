"""deploy/k8s/score-shards: the Indexed Job and the merge Job are schema-valid, and their own
shell scripts, run here with JOB_COMPLETION_INDEX = 0..N-1 against a real server and then
the merge script, give one whole run's records."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pysam
import pytest
import yaml

from tests.client.test_score import data_lines, make_vcf
from tests.deploy._kustomize import render

REPO = Path(__file__).resolve().parents[2]
SHARDS = REPO / "deploy" / "k8s" / "score-shards"
K8S_VERSION = "1.30.0"


def _docs() -> list[dict[str, Any]]:
    docs = render(SHARDS)
    docs += [yaml.safe_load((SHARDS / "merge-job.yaml").read_text())]
    return docs


def test_manifests_are_schema_valid() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    docs = _docs()
    assert {d["kind"] for d in docs} == {"ConfigMap", "PersistentVolumeClaim", "Job"}
    for doc in docs:
        kv.validate(doc, K8S_VERSION, strict=True)
    job = next(
        d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "varfx-score-shards"
    )
    lines = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["shards.txt"].splitlines()
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == len(lines)  # one pod per line of shards.txt


@pytest.mark.skipif(shutil.which("bcftools") is None, reason="bcftools not installed")
def test_job_scripts_run_locally_equal_one_whole_run(
    server: Any, genome_seqs: dict[str, str], tmp_path: Path
) -> None:
    plain = make_vcf(tmp_path / "in.vcf", genome_seqs)
    vcf = tmp_path / "in.vcf.gz"
    pysam.tabix_compress(str(plain), str(vcf), force=True)
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    shards = tmp_path / "shards.txt"
    shards.write_text("chr1:1-500\nchr1:501-1200\nchr1:1201-2000,chr2,chr3,chrUn\n")
    bindir = tmp_path / "bin"  # `varfx` on PATH, as in the image
    bindir.mkdir()
    (bindir / "varfx").write_text(f'#!/bin/sh\nexec {sys.executable} -m varfx "$@"\n')
    (bindir / "varfx").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "VARFX_SERVER": server.target,
        "VARFX_MAX_UNSCORED": "1",
        "VCF": str(vcf),
        "OUT_DIR": str(tmp_path / "parts"),
        "SHARDS": str(shards),
        "OUT": str(tmp_path / "scored.vcf.gz"),
    }
    docs = _docs()
    job = next(
        d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "varfx-score-shards"
    )
    merge = next(d for d in docs if d["metadata"]["name"] == "varfx-score-merge")
    score_script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    merge_script = merge["spec"]["template"]["spec"]["containers"][0]["args"][0]
    merge_script = merge_script.replace("/tmp/parts.txt", str(tmp_path / "parts.txt"))
    for index in range(3):
        done = subprocess.run(
            ["sh", "-c", score_script],
            env={**env, "JOB_COMPLETION_INDEX": str(index)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    missing = subprocess.run(
        ["sh", "-c", score_script],
        env={**env, "JOB_COMPLETION_INDEX": "3"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2
    assert "no line 4" in missing.stderr
    done = subprocess.run(
        ["sh", "-c", merge_script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    whole = tmp_path / "whole.vcf.gz"
    run = subprocess.run(
        [sys.executable, "-m", "varfx", "score", str(vcf), "-o", str(whole), "--no-progress"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert data_lines(tmp_path / "scored.vcf.gz") == data_lines(whole)
    assert (tmp_path / "scored.vcf.gz.tbi").exists()
