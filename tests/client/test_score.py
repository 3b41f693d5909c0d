"""`varfx score` end to end: real server, real VCF in and out (pysam reads it back)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pysam
import pysam.bcftools
import pytest

from tests.client._proxy import FaultyProxy
from varfx.client import Client, RetryPolicy, ScoreTable, Status
from varfx.client.score import ScoreError, score_vcf
from varfx.client.vcf import VcfReader

REPO = Path(__file__).resolve().parents[2]
VARFX = [sys.executable, "-m", "varfx"]
FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


def make_vcf(path: Path, seqs: dict[str, str], n: int = 120) -> Path:
    """A sorted VCF on the test genome: SNVs, multi-allelic sites, indels and oddities."""
    rows = []
    seq = seqs["chr1"]
    for i in range(n):
        pos = 10 + i * 13
        ref = seq[pos - 1]
        others = [b for b in "ACGT" if b != ref]
        if i % 5 == 0:
            alt = ",".join(others[:2])  # multi-allelic
        elif i % 7 == 0:
            alt = ref + "GA"  # insertion
        elif i % 11 == 0:
            ref, alt = seq[pos - 1 : pos + 2], seq[pos - 1]  # deletion
        else:
            alt = others[i % 3]
        rows.append(("chr1", pos, f"rs{i}", ref, alt))
    rows[3] = ("chr1", rows[3][1], "mismatch", "N", "A")  # REF mismatch
    rows[4] = ("chr1", rows[4][1], ".", rows[4][3], rows[4][3])  # REF == ALT
    rows[6] = ("chr1", rows[6][1], ".", rows[6][3], "<DEL>")  # symbolic
    rows[8] = ("chr1", rows[8][1], ".", rows[8][3], ".")  # missing ALT
    rows.append(("chr2", 50, "two", seqs["chr2"][49], "A" if seqs["chr2"][49] != "A" else "C"))
    rows.append(("chrUn", 5, "unk", "A", "C"))
    lines = [
        "##fileformat=VCFv4.2",
        "##contig=<ID=chr1,length=2000>",
        "##contig=<ID=chr2,length=300>",
        "##contig=<ID=chrUn,length=100>",
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="depth">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    lines += [f"{c}\t{p}\t{i}\t{r}\t{a}\t.\tPASS\tDP={k}" for k, (c, p, i, r, a) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def data_lines(path: Path) -> list[str]:
    opener: Any = pysam.BGZFile if str(path).endswith(".gz") else open
    with opener(str(path), "rb") as fh:
        text = fh.read().decode()
    return [line for line in text.split("\n") if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def vcf(tmp_path_factory: pytest.TempPathFactory, genome_seqs: dict[str, str]) -> Path:
    return make_vcf(tmp_path_factory.mktemp("vcf") / "in.vcf", genome_seqs)


def test_vcf_output_read_back_by_pysam(server: Any, vcf: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.vcf.gz"
    with Client(server.target) as client:
        summary = score_vcf(client, vcf, out, features=["feat1", "feat3"], batch_size=16)
        records = [r for r in VcfReader(vcf)]
        variants = [v for r in records for v in r.variants()]
        direct = client.score_variants(variants, features=["feat1", "feat3"])
    assert summary.records == len(records) == len(data_lines(out))
    assert summary.variants == len(variants)
    assert summary.indexed
    assert Path(str(out) + ".tbi").exists()
    assert sum(summary.statuses.values()) == len(variants)
    assert summary.statuses["REF_MISMATCH"] == 1
    assert summary.statuses["UNKNOWN_CHROMOSOME"] == 1
    with pysam.VariantFile(str(out)) as vf:
        header = str(vf.header)
        assert "##varfx_model=tok" in header
        assert "log2 odds ratio" in header
        for key in ("VARFX_STATUS", "VARFX_MAX_ABS_DIFF", "VARFX_MAX_FEATURE", "VARFX_DIFF_feat1"):
            assert vf.header.info[key].number == "A"
        got = list(vf)
    assert len(got) == len(records)
    k = 0
    for rec, src in zip(got, records, strict=True):
        assert (rec.chrom, rec.pos, rec.ref) == (src.chrom, src.pos, src.fields[3])
        assert rec.info["DP"] == records.index(src)  # input INFO kept
        n_alt = len(src.alts)
        statuses = rec.info["VARFX_STATUS"]
        if src.fields[4] == ".":  # no ALT allele: pysam has no Number=A slot, the raw text does
            assert "VARFX_STATUS=INVALID_ALLELE" in data_lines(out)[records.index(src)]
            k += 1
            continue
        assert len(statuses) == n_alt
        for j in range(n_alt):
            assert statuses[j] == Status(int(direct.status[k])).name
            mad = rec.info["VARFX_MAX_ABS_DIFF"][j]
            if direct.ok[k]:
                assert mad == pytest.approx(float(direct.max_abs_diff[k]), rel=1e-5, abs=1e-7)
                assert rec.info["VARFX_MAX_FEATURE"][j] == direct.feature_name(k)
                assert rec.info["VARFX_DIFF_feat3"][j] == pytest.approx(
                    float(direct.diff[k, 1]),  # type: ignore[index]
                    rel=1e-5,
                    abs=1e-7,
                )
            else:
                assert mad is None
            k += 1
    assert k == len(variants)
    # bcftools (the copy inside pysam) reads it too, with the same per-ALT values
    query = pysam.bcftools.query("-f", "%INFO/VARFX_STATUS\t%INFO/VARFX_MAX_FEATURE\n", str(out))
    rows = [line.split("\t") for line in query.splitlines()]
    assert len(rows) == len(records)
    assert ",".join(r[0] for r in rows) == ",".join(Status(int(s)).name for s in direct.status)
    multi = [r for r in got if len(r.alts or ()) == 2]
    assert len(multi) >= 20  # multi-allelic records split and merged back


def test_tsv_one_row_per_alt(server: Any, vcf: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tsv"
    with Client(server.target) as client:
        score_vcf(client, vcf, out, scores="diff,log2fc", batch_size=7)
        variants = [v for r in VcfReader(vcf) for v in r.variants()]
        direct = client.score_variants(variants)
    lines = out.read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert header == []  # the first line names the columns: pandas reads it with defaults
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    assert "log2 odds ratio" in manifest["formulas"]
    assert manifest["model"] == "tok"
    assert manifest["ref_policy"] == "strict"
    cols = lines[len(header)].split("\t")
    rows = [line.split("\t") for line in lines[len(header) + 1 :]]
    assert cols[:10] == [
        "record", "chrom", "pos", "id", "ref", "alt", "status", "message", "max_abs_diff",
        "max_feature",
    ]  # fmt: skip
    assert cols[10:] == [f"{k}_feat{i}" for k in ("diff", "log2fc") for i in range(4)]
    assert len(rows) == len(variants)
    for row, v, i in zip(rows, variants, range(len(variants)), strict=True):
        assert (row[1], int(row[2]), row[4], row[5]) == (v.chrom, v.pos, v.ref, v.alt)
        assert row[6] == Status(int(direct.status[i])).name
        if direct.ok[i]:
            got = np.array(row[10:14], dtype=np.float32)
            np.testing.assert_allclose(got, direct.diff[i], rtol=1e-5, atol=1e-7)  # type: ignore[index]
        else:
            assert row[10:] == [""] * 8
    mismatch = [row for row in rows if row[3] == "mismatch"]
    assert mismatch[0][6] == "REF_MISMATCH"
    assert "chr1" in mismatch[0][7]  # the server's message is kept


def test_cli_subprocess_and_errors(server: Any, vcf: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.vcf"
    run = subprocess.run(
        [*VARFX, "score", str(vcf), "--server", server.target, "-o", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""  # the summary goes to stderr: stdout is for data
    assert "OK" in run.stderr
    assert "variants/s" in run.stderr
    assert len(data_lines(out)) == len(list(VcfReader(vcf)))
    bad = tmp_path / "bad.vcf"
    bad.write_text("#CHROM\tPOS\tID\tREF\tALT\nchr1\t5\t.\tA\tC\nchr1\tfive\t.\tA\tC\n")
    run = subprocess.run(
        [*VARFX, "score", str(bad), "--server", server.target, "-o", str(tmp_path / "b.vcf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert f"{bad}:3:" in run.stderr
    assert "'five'" in run.stderr
    run = subprocess.run(
        [*VARFX, "score", str(vcf), "--server", server.target, "-o", str(tmp_path / "x.vcf"),
         "--model", "nope"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2  # usage: no such model
    assert "nope" in run.stderr


def test_health_cli(server: Any) -> None:
    ok = subprocess.run(
        [*VARFX, "health", "--server", server.target], capture_output=True, text=True
    )
    assert ok.returncode == 0
    assert "SERVING" in ok.stdout
    dead = subprocess.run(
        [*VARFX, "health", "--server", "127.0.0.1:1", "--timeout", "1"],
        capture_output=True,
        text=True,
    )
    assert dead.returncode == 1
    assert "UNAVAILABLE" in dead.stdout


def test_kill_and_resume_is_byte_identical(
    server: Any, genome_seqs: dict[str, str], tmp_path: Path
) -> None:
    vcf = make_vcf(tmp_path / "big.vcf", genome_seqs, n=140)
    total = len(list(VcfReader(vcf)))
    reference = tmp_path / "ref.vcf.gz"
    with Client(server.target) as client:
        score_vcf(client, vcf, reference, features=["feat0"], batch_size=4)
    out = tmp_path / "out.vcf.gz"
    partial = Path(str(out) + ".partial")
    proxy = FaultyProxy(server.target, delay_s=0.05)  # slow: about 80 variants/s
    try:
        proc = subprocess.Popen(
            [*VARFX, "score", str(vcf), "--server", proxy.target, "-o", str(out),
             "--features", "feat0", "--batch-size", "4", "--max-in-flight", "1", "--no-progress"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.time() + 60
        while time.time() < deadline:
            if partial.exists() and len(data_lines(partial)) >= 30:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proxy.stop()
    done = len(data_lines(partial))
    assert 30 <= done < total
    assert not out.exists()
    with Client(server.target) as client:
        summary = score_vcf(client, vcf, out, features=["feat0"], batch_size=4, resume=True)
    assert summary.resumed_records == done
    assert summary.records == total - done  # nothing already written was scored again
    assert not partial.exists()
    assert out.read_bytes() == reference.read_bytes()
    with pysam.VariantFile(str(out)) as vf:
        assert sum(1 for _ in vf) == total
    # a resume with other settings refuses to mix outputs
    partial.write_text(partial_header(reference) + "\n")
    with Client(server.target) as client, pytest.raises(ScoreError, match="other settings"):
        score_vcf(client, vcf, out, features=["feat1"], resume=True)


def partial_header(path: Path) -> str:
    with pysam.BGZFile(str(path), "rb") as fh:
        text = fh.read().decode()
    return "\n".join(line for line in text.split("\n") if line.startswith("#"))


def test_resume_after_truncated_line_and_interrupt(server: Any, vcf: Path, tmp_path: Path) -> None:
    """A partial file cut mid-line (power loss) is cut back to its last complete record."""
    reference = tmp_path / "ref.tsv"
    with Client(server.target) as client:
        score_vcf(client, vcf, reference, batch_size=9)
    text = reference.read_bytes()
    cut = text.index(b"\n", len(text) // 2) + 25  # inside a row
    out = tmp_path / "out.tsv"
    Path(str(out) + ".partial").write_bytes(text[:cut])
    with Client(server.target) as client:
        summary = score_vcf(client, vcf, out, batch_size=9, resume=True)
    assert summary.resumed_records > 0
    assert out.read_bytes() == text


def test_job_survives_a_replica_stopping(
    model_repo: Path, genome_fa: Path, vcf: Path, tmp_path: Path
) -> None:
    """Round-robin over two replicas: unary calls reach both; the replica holding a streaming job
    stops midway and the job completes on the other with every variant, in order."""
    from varfx.server import ServerConfig, start_in_thread

    # two full passes: the job's 20-variant chunks are compared bit for bit with whole-request
    # scores, and local recomputation runs only request parts of >= 16 SNVs (docs/deploy.md)
    config = ServerConfig(
        model_repo=model_repo, genome=genome_fa, host="127.0.0.1", port=0, metrics_port=-1,
        default_model="tok", warmup_batch_sizes=(1,), local_recompute="off",
    )  # fmt: skip
    replicas = [start_in_thread(config), start_in_thread(config)]

    def count(srv: Any, name: str, **labels: str) -> float:
        return srv.metrics.registry.get_sample_value(name, labels) or 0.0

    try:
        target = "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)
        variants = [v for r in VcfReader(vcf) for v in r.variants()] * 4
        expected = None
        with Client(target, retry=FAST) as client:
            for _ in range(6):
                expected = client.score_variants(variants)
            served = [
                count(r, "varfx_requests_total", method="ScoreVariants", code="OK")
                for r in replicas
            ]
            assert all(n >= 1 for n in served), served  # round robin used both
            got = []
            stopped = None
            for table in client.iter_chunks(variants, batch_size=20, max_in_flight=2):
                got.append(table)
                if stopped is None and len(got) == 3:
                    busy = [count(r, "varfx_inflight_requests") for r in replicas]
                    stopped = replicas[busy.index(max(busy))]
                    assert max(busy) == 1
                    stopped.stop()
        assert expected is not None
        table = ScoreTable.concat(got)
        assert table.items == tuple(variants)
        np.testing.assert_array_equal(table.diff, expected.diff)  # type: ignore[arg-type]
    finally:
        for r in replicas:
            r.stop()


def test_job_survives_a_server_restart(
    model_repo: Path, genome_fa: Path, genome_seqs: dict[str, str], tmp_path: Path
) -> None:
    """The server stops mid-job and comes back on the same port: the stream resumes and the
    output equals an uninterrupted run's."""
    import threading

    from varfx.server import ServerConfig, start_in_thread

    vcf = make_vcf(tmp_path / "in.vcf", genome_seqs, n=150)
    lines = vcf.read_text().splitlines()
    head = [line for line in lines if line.startswith("#")]
    body = [line for line in lines if not line.startswith("#")]
    vcf.write_text("\n".join(head + body * 8) + "\n")  # 1216 records, unsorted: no index
    base = dict(model_repo=model_repo, genome=genome_fa, host="127.0.0.1", metrics_port=-1,
                default_model="tok", warmup_batch_sizes=(1,))  # fmt: skip
    first = start_in_thread(ServerConfig(port=0, **base))  # type: ignore[arg-type]
    port = first.port
    reference = tmp_path / "ref.vcf"
    with Client(first.target) as client:
        score_vcf(client, vcf, reference, batch_size=2, max_in_flight=1)
    out = tmp_path / "out.vcf"
    partial = Path(str(out) + ".partial")
    result: dict[str, Any] = {}

    def job() -> None:
        retry = RetryPolicy(max_attempts=50, initial_backoff=0.05, max_backoff=0.2)
        try:
            with Client(f"127.0.0.1:{port}", retry=retry) as client:
                result["summary"] = score_vcf(client, vcf, out, batch_size=2, max_in_flight=1)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.time() + 30
    while time.time() < deadline and not (partial.exists() and len(data_lines(partial)) >= 100):
        time.sleep(0.005)
    first.stop()
    stopped_at = len(data_lines(partial))
    time.sleep(0.3)
    second = start_in_thread(ServerConfig(port=port, **base))  # type: ignore[arg-type]
    try:
        thread.join(60)
    finally:
        second.stop()
    assert "error" not in result, result.get("error")
    assert stopped_at < 1216  # it really was cut off midway
    assert result["summary"].records == 1216
    assert out.read_bytes() == reference.read_bytes()


def test_resume_when_killed_while_writing_the_header(
    server: Any, vcf: Path, tmp_path: Path
) -> None:
    reference = tmp_path / "ref.vcf"
    with Client(server.target) as client:
        score_vcf(client, vcf, reference)
        out = tmp_path / "out.vcf"
        Path(str(out) + ".partial").write_bytes(reference.read_bytes()[:300])  # half a header
        summary = score_vcf(client, vcf, out, resume=True)
        assert summary.resumed_records == 0
        assert out.read_bytes() == reference.read_bytes()
        again = score_vcf(client, vcf, out, resume=True)  # complete already: nothing to do
        assert again.records == 0


def test_sample_columns_are_kept(server: Any, genome_seqs: dict[str, str], tmp_path: Path) -> None:
    seq = genome_seqs["chr1"]
    lines = [
        "##fileformat=VCFv4.2",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "##contig=<ID=chr1,length=2000>",
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\tS2",
    ]
    for p in (100, 200, 300):
        alt = "A" if seq[p - 1] != "A" else "C"
        lines.append(f"chr1\t{p}\t.\t{seq[p - 1]}\t{alt}\t.\t.\t.\tGT\t0/1\t1/1")
    vcf = tmp_path / "samples.vcf"
    vcf.write_text("\n".join(lines) + "\n")
    out = tmp_path / "samples.out.vcf.gz"
    with Client(server.target) as client:
        score_vcf(client, vcf, out)
    with pysam.VariantFile(str(out)) as vf:
        assert list(vf.header.samples) == ["S1", "S2"]
        recs = list(vf)
    assert [r.info["VARFX_STATUS"] for r in recs] == [("OK",)] * 3
    assert [[s["GT"] for s in r.samples.values()] for r in recs] == [[(0, 1), (1, 1)]] * 3


def test_tsv_resume_when_a_multiallelic_record_was_half_written(
    server: Any, vcf: Path, tmp_path: Path
) -> None:
    """TSV has one line per ALT: a partial holding only the first ALT line of a record must
    score that record again, and the result still equals an uninterrupted run."""
    reference = tmp_path / "ref.tsv"
    with Client(server.target) as client:
        score_vcf(client, vcf, reference)
        lines = reference.read_text().splitlines(keepends=True)
        body = [i for i, line in enumerate(lines) if line[0].isdigit()]
        # first multi-allelic record past the middle: two consecutive lines with one number
        rec = next(
            i
            for i in body[len(body) // 2 :]
            if lines[i].split("\t")[0] == lines[i + 1].split("\t")[0]
        )
        out = tmp_path / "out.tsv"
        Path(str(out) + ".partial").write_text("".join(lines[: rec + 1]))  # its first ALT only
        summary = score_vcf(client, vcf, out, resume=True)
    assert summary.resumed_records == int(lines[rec].split("\t")[0]) - 1
    assert out.read_bytes() == reference.read_bytes()
