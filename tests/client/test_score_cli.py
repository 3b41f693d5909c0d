"""`varfx score` as a Unix tool: pipes and -, exit codes, input errors as FILE:LINE, Parquet
and pandas-readable TSV, --parallel, region shards merged with bcftools, bounded memory."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pysam
import pytest

from tests.client.test_score import data_lines, make_vcf
from tests.conftest import REAL
from varfx.client import Client
from varfx.client._blocks import VcfBlocks
from varfx.client._score_errors import PartialMismatchError, ScoreError, ScoreUsageError
from varfx.client.errors import VcfFormatError
from varfx.client.score import chunk_bounds, score_vcf

VARFX = [sys.executable, "-m", "varfx"]
BCFTOOLS = shutil.which("bcftools")
needs_bcftools = pytest.mark.skipif(BCFTOOLS is None, reason="bcftools not installed")


def varfx(*args: str, stdin: bytes | None = None, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*VARFX, "score", *args, "--no-progress"],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
        **kw,
    )


@pytest.fixture(scope="module")
def vcf(tmp_path_factory: pytest.TempPathFactory, genome_seqs: dict[str, str]) -> Path:
    return make_vcf(tmp_path_factory.mktemp("cli") / "in.vcf", genome_seqs)


@pytest.fixture(scope="module")
def vcf_gz(vcf: Path) -> Path:
    """The same records bgzipped and tabix-indexed."""
    gz = vcf.with_name("in.vcf.gz")
    pysam.tabix_compress(str(vcf), str(gz), force=True)
    pysam.tabix_index(str(gz), preset="vcf", force=True)
    return gz


def records(path: Path) -> list[str]:
    return data_lines(path)


# -- pipes, -, devices -----------------------------------------------------------------------


def test_stdin_stdout_pipe_equals_file_to_file(server: Any, vcf: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref.vcf"
    assert varfx(str(vcf), "--server", server.target, "-o", str(ref)).returncode == 0
    piped = varfx("-", "--server", server.target, "-o", "-", stdin=vcf.read_bytes())
    assert piped.returncode == 0, piped.stderr
    body = [x for x in piped.stdout.decode().split("\n") if x and not x.startswith("#")]
    assert body == records(ref)
    assert b"wrote" in piped.stderr  # the summary is on stderr, stdout is pure VCF
    # TSV to stdout, chosen by --format
    tsv = varfx(str(vcf), "--server", server.target, "-o", "-", "--format", "tsv")
    assert tsv.stdout.decode().split("\n", 1)[0].startswith("record\tchrom\tpos")


def test_named_pipes_and_process_substitution(server: Any, vcf: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref.vcf"
    assert varfx(str(vcf), "--server", server.target, "-o", str(ref)).returncode == 0
    gz = tmp_path / "in.vcf.gz"
    gz.write_bytes(gzip.compress(vcf.read_bytes()))
    out = tmp_path / "ps.vcf"
    cmd = (
        f"{sys.executable} -m varfx score <(zcat {gz}) --server {server.target} "
        f"-o {out} --no-progress"
    )
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert records(out) == records(ref)
    # a FIFO as output is written through, not replaced
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    assert varfx(str(vcf), "--server", server.target, "-o", str(fifo)).returncode == 0
    text = reader.communicate(timeout=60)[0].decode()
    assert [x for x in text.split("\n") if x and not x.startswith("#")] == records(ref)
    assert fifo.is_fifo()


def test_dev_stdout_is_written_through_not_replaced(server: Any, vcf: Path, tmp_path: Path) -> None:
    sink = tmp_path / "sink.vcf"
    with open(sink, "wb") as fh:
        done = subprocess.run(
            [
                *VARFX,
                "score",
                str(vcf),
                "--server",
                server.target,
                "-o",
                "/dev/stdout",
                "--no-progress",
            ],
            stdout=fh,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert os.path.islink("/dev/stdout")
    assert len(records(sink)) == len(records(vcf))
    assert not Path("/dev/stdout.partial").exists()


# -- exit codes and usage ----------------------------------------------------------------------


def test_exit_codes(
    server: Any, vcf: Path, tmp_path: Path, model_repo: Path, genome_fa: Path
) -> None:
    bad_ext = varfx(str(vcf), "--server", server.target, "-o", str(tmp_path / "x.csv"))
    assert bad_ext.returncode == 2
    assert b"parquet" in bad_ext.stderr
    assert b"tsv" in bad_ext.stderr
    assert not (tmp_path / "x.csv").exists()
    # more than --max-unscored of the ALTs not scored: exit 3, the output is still complete
    strict = varfx(
        str(vcf), "--server", server.target, "-o", str(tmp_path / "s.vcf"), "--max-unscored", "0.01"
    )
    assert strict.returncode == 3, strict.stderr
    assert b"--max-unscored" in strict.stderr
    assert len(records(tmp_path / "s.vcf")) == len(records(vcf))
    # several models and no default: usage error listing them
    from varfx.server import ServerConfig, start_in_thread

    config = ServerConfig(
        model_repo=model_repo,
        genome=genome_fa,
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        warmup_batch_sizes=(1,),
    )
    with start_in_thread(config) as no_default:
        many = varfx(str(vcf), "--server", no_default.target, "-o", str(tmp_path / "m.vcf"))
    assert many.returncode == 2
    assert b"'agct'" in many.stderr
    assert b"'tok'" in many.stderr
    assert b"--model" in many.stderr


def test_server_from_environment_and_config(server: Any, vcf: Path, tmp_path: Path) -> None:
    env = {**os.environ, "VARFX_SERVER": server.target}
    done = varfx(str(vcf), "-o", str(tmp_path / "e.vcf"), env=env)
    assert done.returncode == 0, done.stderr
    cfg = tmp_path / "score.toml"
    cfg.write_text(f'server = "{server.target}"\nfeatures = "feat1"\nmax_unscored = 1\n')
    done = varfx(str(vcf), "-o", str(tmp_path / "c.vcf"), "--config", str(cfg), "-q")
    assert done.returncode == 0, done.stderr
    assert "VARFX_DIFF_feat1=" in records(tmp_path / "c.vcf")[0]
    cfg.write_text("serverr = 1\n")
    done = varfx(str(vcf), "-o", str(tmp_path / "d.vcf"), "--config", str(cfg))
    assert done.returncode == 2
    assert b"serverr" in done.stderr


# -- input errors: FILE:LINE, no traceback, resumable ---------------------------------------


HEAD = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
GOOD = "chr1\t10\t.\tA\tC\t.\t.\t.\n"


@pytest.mark.parametrize(
    ("body", "line", "what"),
    [
        (GOOD + "chr1\t9223372036854775808\t.\tA\tC\t.\t.\t.\n", 4, b"out of range"),
        (GOOD + "chr1\t\xc2\xb2\t.\tA\tC\t.\t.\t.\n", 4, b"is not an integer"),
        (GOOD + "chr1\t12\t.\tA\tC\t.\t.\tX=\xff\n", 4, b"not UTF-8"),
        (GOOD + "chr1\t12\t.\tA\n", 4, b"at least 5"),
        (GOOD + "#late header\n", 4, b"header line"),
    ],
)
def test_input_errors_name_file_and_line(
    server: Any, tmp_path: Path, body: str, line: int, what: bytes
) -> None:
    bad = tmp_path / "bad.vcf"
    bad.write_bytes((HEAD + body).encode("latin-1"))  # each char one byte: \xc2\xb2 is '²'
    done = varfx(str(bad), "--server", server.target, "-o", str(tmp_path / "o.vcf"))
    assert done.returncode == 1
    assert f"{bad}:{line}:".encode() in done.stderr, done.stderr
    assert what in done.stderr
    assert b"Traceback" not in done.stderr


def test_bom_accepted_and_empty_input_says_so(server: Any, tmp_path: Path) -> None:
    bom = tmp_path / "bom.vcf"
    bom.write_bytes(b"\xef\xbb\xbf" + (HEAD + GOOD).encode())
    assert (
        varfx(
            str(bom),
            "--server",
            server.target,
            "-o",
            str(tmp_path / "b.vcf"),
            "--max-unscored",
            "1",
        ).returncode
        == 0
    )
    assert len(records(tmp_path / "b.vcf")) == 1
    empty = tmp_path / "empty.vcf"
    empty.write_bytes(b"")
    done = varfx(str(empty), "--server", server.target, "-o", str(tmp_path / "e.vcf"))
    assert done.returncode == 1
    assert b"empty input" in done.stderr
    old = tmp_path / "v40.vcf"
    old.write_text(HEAD.replace("VCFv4.2", "VCFv4.0") + GOOD)
    assert (
        varfx(
            str(old),
            "--server",
            server.target,
            "-o",
            str(tmp_path / "v.vcf"),
            "--max-unscored",
            "1",
        ).returncode
        == 0
    )
    assert (tmp_path / "v.vcf").read_text().startswith("##fileformat=VCFv4.2\n")


def test_truncated_bgzip_fails_with_line_and_stays_resumable(
    server: Any, genome_seqs: dict[str, str], tmp_path: Path
) -> None:
    text = make_vcf(tmp_path / "small.vcf", genome_seqs, n=150).read_bytes()
    body = [line for line in text.split(b"\n") if line and not line.startswith(b"#")]
    full = tmp_path / "full.vcf"
    full.write_bytes(text + b"".join(line + b"\n" for _ in range(300) for line in body))
    gz = tmp_path / "full.vcf.gz"
    pysam.tabix_compress(str(full), str(gz), force=True)
    cut = tmp_path / "cut.vcf.gz"
    cut.write_bytes(gz.read_bytes()[: int(gz.stat().st_size * 0.6)])
    out = tmp_path / "out.vcf"
    partial = Path(f"{out}.partial")
    with Client(server.target) as client:
        with pytest.raises(VcfFormatError, match=r"cut\.vcf\.gz:\d+: the compressed stream") as e:
            score_vcf(client, cut, out, block_bytes=64 << 10)
        assert partial.exists()
        first = partial.read_bytes()
        written = len(data_lines(partial))
        assert 0 < written < len(data_lines(full))
        assert first.endswith(b"\n")  # complete records only
        # resuming the same input goes on from there and stops at the same line, adding nothing
        with pytest.raises(VcfFormatError) as again:
            score_vcf(client, cut, out, resume=True, block_bytes=64 << 10)
        assert again.value.line_number == e.value.line_number
        assert partial.read_bytes() == first
        # a repaired input is other content: refused, never mixed into the partial output
        cut.write_bytes(gz.read_bytes())
        with pytest.raises(PartialMismatchError, match="varfx_input"):
            score_vcf(client, cut, out, resume=True)


def test_resume_compares_content_not_spelling(server: Any, vcf: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.vcf"
    with Client(server.target) as client:
        score_vcf(client, vcf, tmp_path / "ref.vcf", batch_size=4)
        score_vcf(client, vcf, out, batch_size=4)
        full = out.read_bytes()
        head_end = full.index(b"\nchr1") + 1
        keep = full[: head_end + 200]
        Path(f"{out}.partial").write_bytes(keep[: keep.rindex(b"\n") + 1] + b"chr1\t12")
        out.unlink()
        spelled = Path(os.path.relpath(vcf))  # another spelling of the same file
        summary = score_vcf(client, spelled, out, batch_size=4, resume=True)
        assert summary.resumed_records > 0
        assert out.read_bytes() == (tmp_path / "ref.vcf").read_bytes()
        other = tmp_path / "other.vcf"
        other.write_bytes(vcf.read_bytes().replace(b"DP=1\t", b"DP=9\t", 1) + b"\n")
        Path(f"{out}.partial").write_bytes(keep[: keep.rindex(b"\n") + 1])
        with pytest.raises(PartialMismatchError, match="header line"):
            score_vcf(client, other.rename(tmp_path / "in.vcf"), out, batch_size=4, resume=True)


# -- what goes into the output ----------------------------------------------------------------


def test_ref_policy_warnings_reach_the_vcf(server: Any, vcf: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.vcf"
    with Client(server.target) as client:
        score_vcf(client, vcf, out, ref_policy="warn")
    text = out.read_text()
    assert "##INFO=<ID=VARFX_NOTE,Number=A" in text
    row = next(line for line in records(out) if "\tmismatch\t" in line)
    note = next(kv for kv in row.split("\t")[7].split(";") if kv.startswith("VARFX_NOTE="))
    assert note != "VARFX_NOTE=."
    assert " " not in note
    with pysam.VariantFile(str(out)) as vf:  # htslib accepts every record
        assert sum(1 for _ in vf) == len(records(vcf))


def test_tsv_reads_with_pandas_defaults_and_parquet_is_typed(
    server: Any, vcf: Path, tmp_path: Path
) -> None:
    pd = pytest.importorskip("pandas")
    pq = pytest.importorskip("pyarrow.parquet")
    tsv, par = tmp_path / "o.tsv", tmp_path / "o.parquet"
    with Client(server.target) as client:
        score_vcf(client, vcf, tsv, scores="diff")
        score_vcf(client, vcf, par, scores="diff")
    frame = pd.read_csv(tsv, sep="\t")
    table = pq.read_table(par)
    assert len(frame) == table.num_rows == sum(len(b.batch) for b in VcfBlocks(vcf).blocks())
    assert list(frame.columns) == table.column_names
    assert str(table.schema.field("pos").type) == "int64"
    assert str(table.schema.field("diff_feat0").type) == "float"
    ok = frame["status"] == "OK"
    np.testing.assert_allclose(
        table.column("diff_feat0").to_numpy(zero_copy_only=False)[ok.to_numpy()],
        frame.loc[ok, "diff_feat0"].to_numpy(),
        rtol=1e-5,
    )
    assert table.column("diff_feat0").null_count == int((~ok).sum())
    assert frame["alt"].tolist() == table.column("alt").to_pylist()
    meta = table.schema.metadata
    manifest = json.loads(meta[b"varfx_manifest"])
    assert manifest["model"] == "tok"
    assert meta[b"varfx_window_length"] == b"20"
    assert (
        json.loads(Path(f"{tsv}.manifest.json").read_text())["model_sha256"]
        == manifest["model_sha256"]
    )


def test_parallel_is_byte_identical_to_serial(
    server: Any, genome_seqs: dict[str, str], tmp_path: Path
) -> None:
    vcf = make_vcf(tmp_path / "p.vcf", genome_seqs, n=150)
    with Client(server.target) as client:
        if not hasattr(client, "stream_batches"):
            pytest.skip("this client has no stream_batches")
        score_vcf(client, vcf, tmp_path / "serial.vcf.gz", batch_size=7, features=["feat1"])
        score_vcf(
            client, vcf, tmp_path / "par.vcf.gz", batch_size=7, features=["feat1"], parallel=3
        )
        score_vcf(client, vcf, tmp_path / "par.tsv", batch_size=5, parallel=4)
        score_vcf(client, vcf, tmp_path / "serial.tsv", batch_size=5)
    assert (tmp_path / "par.vcf.gz").read_bytes() == (tmp_path / "serial.vcf.gz").read_bytes()
    assert (tmp_path / "par.tsv").read_bytes() == (tmp_path / "serial.tsv").read_bytes()


# -- shards ----------------------------------------------------------------------------------


@needs_bcftools
def test_region_shards_merged_equal_one_run(server: Any, vcf_gz: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole.vcf.gz"
    assert varfx(str(vcf_gz), "--server", server.target, "-o", str(whole)).returncode == 0
    bed = tmp_path / "rest.bed"
    bed.write_text("chr1\t800\t2000\nchr2\t0\t300\nchrUn\t0\t100\nchrNone\t0\t10\n")
    shards = [
        ("--regions", "chr1:1-400"),
        ("--regions", "chr1:401-800"),
        ("--regions-file", str(bed)),
    ]
    parts = []
    for i, (flag, value) in enumerate(shards):
        part = tmp_path / f"part{i}.vcf.gz"
        done = varfx(
            str(vcf_gz),
            "--server",
            server.target,
            "-o",
            str(part),
            flag,
            value,
            "--max-unscored",
            "1",
        )
        assert done.returncode == 0, done.stderr
        parts.append(str(part))
    merged = tmp_path / "merged.vcf"
    subprocess.run([BCFTOOLS, "concat", "-o", str(merged), *parts], check=True)  # type: ignore[list-item]
    assert records(merged) == records(whole)
    assert len(records(whole)) == len(records(vcf_gz))
    bad = varfx(
        str(vcf_gz.with_suffix("")),
        "--server",
        server.target,
        "-o",
        str(tmp_path / "x.vcf"),
        "--regions",
        "chr1",
    )
    assert bad.returncode == 2
    assert b"tabix index" in bad.stderr


def test_overlapping_regions_refused() -> None:
    from varfx.client.regions import parse_regions

    with pytest.raises(ScoreUsageError, match="overlap"):
        parse_regions("chr1:1-100,chr1:50-200")
    assert [str(r) for r in parse_regions("chr1:1-5000000,chr2")] == ["chr1:1-5000000", "chr2"]


# -- bounds ----------------------------------------------------------------------------------


def test_long_alleles_are_cut_into_small_requests(
    server: Any, genome_seqs: dict[str, str], tmp_path: Path
) -> None:
    """140 kb insertions: requests bounded in bytes, so none exceeds a message limit."""
    seq = genome_seqs["chr1"]
    ins = "".join(np.random.default_rng(0).choice(list("ACGT"), 140_000))
    rows = [f"chr1\t{p}\t.\t{seq[p - 1]}\t{seq[p - 1]}{ins}\t.\t.\t." for p in range(10, 1010, 10)]
    vcf = tmp_path / "long.vcf"
    vcf.write_text(HEAD + "\n".join(rows) + "\n")
    with VcfBlocks(vcf) as reader:
        for block in reader.blocks():
            for lo, hi in chunk_bounds(block, 500, 1 << 20):
                part = block.slice(lo, hi)
                assert len(part.batch.alleles) <= (1 << 20) or hi - lo == 1
    with Client(server.target) as client:
        summary = score_vcf(client, vcf, tmp_path / "o.vcf", batch_size=500)
    assert summary.records == 100
    assert sum(summary.statuses.values()) == 100


def test_client_memory_does_not_grow_with_the_input(
    server: Any, genome_seqs: dict[str, str], tmp_path: Path
) -> None:
    """Peak RSS (VmHWM; ru_maxrss would carry pytest's over the exec) of `varfx score` on 100k
    and on 300k records differ by little: memory is bounded, so a 10M-record run stays under
    100 MB the same way."""
    seq = genome_seqs["chr1"]

    def write(n: int) -> Path:
        path = tmp_path / f"n{n}.vcf"
        pos = 10 + np.arange(n) % 1900
        with open(path, "w") as fh:
            fh.write(HEAD)
            for start in range(0, n, 20000):
                fh.write(
                    "".join(
                        f"chr1\t{p}\trs{start + i}\t{seq[p - 1]}\tA\t.\tPASS\tDP=1\n"
                        for i, p in enumerate(pos[start : start + 20000].tolist())
                    )
                )
        return path

    peaks = []
    for n in (100_000, 300_000):
        code = (
            "import sys;from varfx.cli import main;"
            f"rc=main(['score','{write(n)}','--server','{server.target}','-o',"
            f"'{tmp_path}/o{n}.vcf.gz','--no-progress','--max-unscored','1','--batch-size','2000']);"
            "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]);sys.exit(rc)"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr
        peaks.append(int(done.stdout.split()[-1]) / 1024)  # MiB
    assert peaks[1] - peaks[0] < 16, peaks
    assert peaks[1] < 100, peaks


@pytest.mark.skipif(not (REAL / "hg19_ref_debian").exists(), reason="real data not present")
@needs_bcftools
def test_bcftools_pipeline_on_real_chr20(tmp_path: Path) -> None:
    """bcftools view x.vcf.gz | varfx score - -o - | bcftools view == file to file."""
    from tests.client.test_real_data import start

    folder = REAL / "hg19_ref_debian"
    vcf = folder / "vt-examples.normalize_IN.chr20_indels.vcf.gz"
    with start(folder / "vt-examples.20.fa.gz", tmp_path, assembly="GRCh37") as srv:
        ref = tmp_path / "ref.vcf.gz"
        assert varfx(str(vcf), "--server", srv.target, "-o", str(ref)).returncode == 0
        cmd = (
            f"{BCFTOOLS} view {vcf} | {sys.executable} -m varfx score - --server {srv.target} "
            f"-o - --no-progress | {BCFTOOLS} view -H"
        )
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, timeout=120, check=False
        )
    assert done.returncode == 0, done.stderr
    direct = subprocess.run([BCFTOOLS, "view", "-H", str(ref)], capture_output=True, check=True)  # type: ignore[list-item]
    assert done.stdout == direct.stdout
    assert len(done.stdout.splitlines()) == 194


def test_bgzf_writer_blocks_do_not_depend_on_write_sizes(tmp_path: Path) -> None:
    from varfx.client._bgzf import BgzfWriter

    data = b"".join(b"chr1\t%d\t.\tA\tC\t.\t.\t.\n" % i for i in range(20000))
    outs = []
    for step in (1000, 65280, 300_001):
        w = BgzfWriter(str(tmp_path / f"{step}.gz"))
        for i in range(0, len(data), step):
            w.write(data[i : i + step])
        w.close()
        outs.append((tmp_path / f"{step}.gz").read_bytes())
    assert outs[0] == outs[1] == outs[2]
    with pysam.BGZFile(str(tmp_path / "1000.gz"), "rb") as fh:  # htslib reads it back
        assert fh.read() == data
    assert gzip.decompress(outs[0]) == data
    # a resumed writer: the plain prefix first, then the rest
    plain = tmp_path / "prefix.txt"
    plain.write_bytes(data[:123_457] + b"appended later")
    w = BgzfWriter(str(tmp_path / "r.gz"), prefix_from=str(plain), prefix_size=123_457)
    w.write(data[123_457:])
    w.close()
    assert (tmp_path / "r.gz").read_bytes() == outs[0]


def test_responses_must_carry_the_headers_manifest(server: Any, vcf: Path, tmp_path: Path) -> None:
    from varfx.client.score import _check_manifest

    out = tmp_path / "m.vcf"
    with Client(server.target) as client:
        score_vcf(client, vcf, out)
        table = next(iter(client.iter_chunks([("chr1", 10, "A", "C")], "tok")))
    header = dict(
        line[len("##varfx_") :].split("=", 1)
        for line in out.read_text().splitlines()
        if line.startswith("##varfx_")
    )
    assert table.manifest is not None
    assert table.manifest.model_sha256 == header["model_sha256"]  # the run checked real ones
    _check_manifest(table.manifest, header)
    other = dataclasses.replace(table.manifest, model_sha256="0" * 64)
    with pytest.raises(ScoreError, match="another manifest: model_sha256"):
        _check_manifest(other, header)


def test_every_subcommand_takes_v_q_and_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from varfx.cli import build_parser, log_level

    monkeypatch.delenv("VARFX_LOG_LEVEL", raising=False)
    parser = build_parser()
    assert log_level(parser.parse_args(["score", "x.vcf", "-o", "y.vcf", "-v"])) == logging.DEBUG
    assert log_level(parser.parse_args(["health", "-q"])) == logging.WARNING
    assert log_level(parser.parse_args(["report", "x", "-o", "y", "-qq"])) == logging.ERROR
    assert log_level(parser.parse_args(["score", "x", "-o", "y", "--log-level", "ERROR"])) == 40
    monkeypatch.setenv("VARFX_LOG_LEVEL", "debug")
    assert log_level(parser.parse_args(["health"])) == logging.DEBUG
