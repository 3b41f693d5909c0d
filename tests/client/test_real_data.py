"""`varfx score` on the real public files in ../shared/data/real/ with all their oddities.

Every record comes out, each either scored or carrying a clear status. Skips where absent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pysam
import pytest

from tests.conftest import REAL
from varfx.client import Client
from varfx.client._score_errors import GenomeMismatchError
from varfx.client.genome_check import header_genome
from varfx.client.score import score_vcf
from varfx.client.vcf import VcfReader

HG38 = REAL / "hg38_chr1_1mb"
pytestmark = pytest.mark.skipif(not REAL.exists(), reason=f"shared data not present: {REAL}")


def start(genome: Path, tmp: Path, assembly: str = "test") -> Any:
    from tests.onnx_models import TinyCNN, write_model
    from varfx.server import ServerConfig, start_in_thread

    repo = tmp / "models"
    repo.mkdir()
    write_model(repo, name="tok", net=TinyCNN.random(4, seed=7), length=20, assembly=assembly)
    return start_in_thread(
        ServerConfig(
            model_repo=repo,
            genome=genome,
            host="127.0.0.1",
            port=0,
            metrics_port=-1,
            warmup_batch_sizes=(1,),
        )
    )


@pytest.fixture(scope="module")
def hg38(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (HG38 / "hg38_1m.fa.gz").exists():
        pytest.skip("hg38_chr1_1mb not present")
    with start(HG38 / "hg38_1m.fa.gz", tmp_path_factory.mktemp("hg38"), "GRCh38") as srv:
        yield srv


def statuses_of(out: Path) -> list[str]:
    """VARFX_STATUS values (one per ALT) read from the plain-text output."""
    found = []
    for line in out.read_text().splitlines():
        if not line.startswith("#"):
            info = line.split("\t")[7]
            value = next(kv for kv in info.split(";") if kv.startswith("VARFX_STATUS="))
            found += value.split("=", 1)[1].split(",")
    return found


def run(server: Any, vcf: Path, tmp: Path, **kwargs: Any) -> tuple[list[str], Path]:
    out = tmp / (vcf.name.removesuffix(".gz") + ".out.vcf")
    with Client(server.target) as client:
        summary = score_vcf(client, vcf, out, batch_size=5, **kwargs)
    n_in = sum(1 for _ in VcfReader(vcf))
    n_out = sum(1 for line in out.read_text().splitlines() if not line.startswith("#"))
    assert n_in == n_out == summary.records  # every record comes out
    statuses = statuses_of(out)
    assert len(statuses) == summary.variants == sum(summary.statuses.values())
    return statuses, out


def read_back(out: Path) -> int:
    with pysam.VariantFile(str(out)) as vf:
        return sum(1 for rec in vf if rec.info.get("VARFX_STATUS") is not None)


@pytest.mark.parametrize(
    ("name", "policy", "expected"),
    [
        ("snp_eqtl.vcf", "strict", {"OK": 8}),
        ("snp_eqtl_flip.vcf", "strict", {"REF_MISMATCH": 8}),
        ("snp_eqtl_flip.vcf", "flip", {"OK": 8}),
        ("ism_snp.vcf", "strict", {"OK": 1}),
    ],
)
def test_hg38_snps(
    hg38: Any, tmp_path: Path, name: str, policy: str, expected: dict[str, int]
) -> None:
    statuses, out = run(hg38, HG38 / name, tmp_path, ref_policy=policy)
    assert Counter(statuses) == expected
    assert read_back(out) == sum(expected.values())  # no #CHROM line in, a valid VCF out


def test_hg38_kidney_eqtl_outside_the_fragment(hg38: Any, tmp_path: Path) -> None:
    statuses, out = run(hg38, HG38 / "snp_kidney_eqtl.vcf", tmp_path)
    counts = Counter(statuses)
    assert sum(counts.values()) == 54
    chr1 = sum(1 for r in VcfReader(HG38 / "snp_kidney_eqtl.vcf") if r.chrom == "chr1")
    assert counts == {"POSITION_OUT_OF_RANGE": chr1, "UNKNOWN_CHROMOSOME": 54 - chr1}
    assert read_back(out) == 54


@pytest.mark.parametrize(
    "name",
    [
        "kipoi-veff.rbp.variants.vcf",
        "kipoi-veff.rbp.variants.vcf.gz",
        "kipoi-veff.non_bedinput.variants.vcf",
        "kipoi-veff.rbp.variants_ref_out.vcf",
    ],
)
def test_edge_cases_on_chr22_without_fasta(hg38: Any, tmp_path: Path, name: str) -> None:
    vcf = REAL / "edge_case_vcfs" / name
    if not vcf.exists():
        pytest.skip(f"{vcf} not present")
    statuses, _ = run(hg38, vcf, tmp_path)
    # chr22 is not in the genome; '.' alleles and REF==ALT are caught whatever the genome
    assert set(statuses) <= {"UNKNOWN_CHROMOSOME", "INVALID_ALLELE", "REF_EQUALS_ALT"}
    assert "UNKNOWN_CHROMOSOME" in statuses
    if "rbp.variants.vcf" in name:
        assert "INVALID_ALLELE" in statuses  # the '.' REF / '.' ALT records at 30630220
        assert "REF_EQUALS_ALT" in statuses  # C>C


@pytest.mark.parametrize(
    "name",
    [
        "basenji.regulatory_validated.vcf",  # rows with 7 columns under an 8-column header
        "basenji.regulatory_validated_misorder.vcf",
        "basenji.regulatory_validated_misref.vcf",
        "basenji.variants.vcf",  # header with a space before QUAL, 6 columns
        "kipoi-models.DeepSEA_beluga.example.vcf",  # chrom '1', no final newline
    ],
)
def test_hg19_variants_on_a_hg38_fragment(hg38: Any, tmp_path: Path, name: str) -> None:
    vcf = REAL / "hg19_variants" / name
    if not vcf.exists():
        pytest.skip(f"{vcf} not present")
    with Client(hg38.target) as client:
        served = getattr(client.list_models()[0], "genome", None)
    if served is not None and header_genome(VcfReader(vcf).header).contigs:  # hg19: refused
        with Client(hg38.target) as client, pytest.raises(GenomeMismatchError) as info:
            score_vcf(client, vcf, tmp_path / "refused.vcf")
        assert "GRCh37" in str(info.value) or "contig '1'" in str(info.value), info.value
        assert not (tmp_path / "refused.vcf").exists()
        assert not (tmp_path / "refused.vcf.partial").exists()
        statuses, out = run(hg38, vcf, tmp_path, skip_genome_check=True)
        assert "##varfx_genome_check=skipped" in out.read_text()
    else:
        statuses, out = run(hg38, vcf, tmp_path)
    chr1 = sum(1 for r in VcfReader(vcf) for _ in r.alts if r.chrom in ("chr1", "1"))
    assert Counter(statuses) == {
        k: v
        for k, v in {
            "POSITION_OUT_OF_RANGE": chr1,
            "UNKNOWN_CHROMOSOME": len(statuses) - chr1,
        }.items()
        if v
    }
    assert read_back(out) == sum(1 for _ in VcfReader(vcf))


def test_real_chr20_indels_are_scored(tmp_path: Path) -> None:
    """vt's 194 normalisation test records (indels, all REF matching) on real GRCh37 chr20."""
    folder = REAL / "hg19_ref_debian"
    vcf, fasta = (
        folder / "vt-examples.normalize_IN.chr20_indels.vcf.gz",
        folder / "vt-examples.20.fa.gz",
    )
    if not (vcf.exists() and fasta.exists()):
        pytest.skip("hg19_ref_debian not present")
    with start(fasta, tmp_path, assembly="GRCh37") as srv:
        statuses, _out = run(srv, vcf, tmp_path)
    counts = Counter(statuses)
    assert "REF_MISMATCH" not in counts
    assert counts["OK"] > 100
    assert set(counts) <= {"OK", "INDEL_TOO_LONG", "REF_EQUALS_ALT"}


def test_grch37_vcf_refused_on_the_grch38_fragment(hg38: Any, tmp_path: Path) -> None:
    """The real chr20 indels (##contig ... assembly=b37) against a model served on the GRCh38
    fragment: refused before anything is written, naming both assemblies; with
    --skip-genome-check scored anyway, and the output says so."""
    vcf = REAL / "hg19_ref_debian" / "vt-examples.normalize_IN.chr20_indels.vcf.gz"
    if not vcf.exists():
        pytest.skip(f"{vcf} not present")
    out = tmp_path / "refused.vcf.gz"
    with Client(hg38.target) as client:
        if getattr(client.list_models()[0], "genome", None) is None:
            pytest.skip("this server does not report genome identity")
        with pytest.raises(GenomeMismatchError) as info:
            score_vcf(client, vcf, out)
        assert "'GRCh37'" in str(info.value)
        assert "'GRCh38'" in str(info.value)
        assert "--skip-genome-check" in str(info.value)
        assert not out.exists()
        assert not Path(f"{out}.partial").exists()
        summary = score_vcf(client, vcf, out, skip_genome_check=True)
    assert summary.records == 194
    assert read_back(out) == 194
    with pysam.VariantFile(str(out)) as vf:
        assert "##varfx_genome_check=skipped" in str(vf.header)
