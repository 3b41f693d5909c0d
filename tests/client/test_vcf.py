"""The forgiving VCF reader on the oddities real files have."""

from __future__ import annotations

import gzip
from pathlib import Path

import pysam
import pytest

from varfx.client import Variant, VcfFormatError
from varfx.client.vcf import VcfReader, count_records


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_no_chrom_line_short_rows_crlf_no_final_newline(tmp_path: Path) -> None:
    vcf = write(
        tmp_path / "a.vcf",
        "##fileformat=VCFv4.1\r\n1\t100\trs1\tA\tC,G\r\nchr2\t5\t.\tAC\tA\t50\r\n\r\nMT\t7\t.\tT\t.",
    )
    with VcfReader(vcf) as reader:
        assert reader.header.columns is None
        assert reader.header.fileformat == "VCFv4.1"
        records = list(reader)
    assert [r.index for r in records] == [0, 1, 2]
    assert [r.line_number for r in records] == [2, 3, 5]
    assert records[0].variants() == [
        Variant("1", 100, "A", "C", "rs1"),
        Variant("1", 100, "A", "G", "rs1"),
    ]
    assert records[1].fields == ("chr2", "5", ".", "AC", "A", "50")
    assert records[2].variants() == [Variant("MT", 7, "T", ".", "")]
    assert count_records(vcf) == (3, 4)


def test_header_with_space_and_gzip(tmp_path: Path) -> None:
    text = "#CHROM\tPOS\tID\tREF\tALT\t QUAL\nchr16\t67596294\trsDK1\tG\tA\t.\n"
    plain = write(tmp_path / "b.vcf", text)
    gz = tmp_path / "b.vcf.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(text)
    bgz = tmp_path / "c.vcf.gz"
    pysam.tabix_compress(str(plain), str(bgz))
    for path in (plain, gz, bgz):
        with VcfReader(path) as reader:
            assert reader.header.columns == ("#CHROM", "POS", "ID", "REF", "ALT", "QUAL")
            assert [r.variants() for r in reader] == [
                [Variant("chr16", 67596294, "G", "A", "rsDK1")]
            ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("chr1\t100\trs1\tA", "at least 5"),
        ("chr1\tabc\trs1\tA\tC", "POS 'abc'"),
        ("chr1\t100\t.\t\tC", "empty"),
    ],
)
def test_unparseable_line_names_line_number(tmp_path: Path, line: str, reason: str) -> None:
    vcf = write(tmp_path / "bad.vcf", f"##x\n#CHROM\tPOS\tID\tREF\tALT\nchr1\t1\t.\tA\tC\n{line}\n")
    with VcfReader(vcf) as reader, pytest.raises(VcfFormatError, match=reason) as info:
        list(reader)
    assert info.value.line_number == 4
    assert f"{vcf}:4:" in str(info.value)


def test_header_after_data_is_an_error(tmp_path: Path) -> None:
    vcf = write(tmp_path / "h.vcf", "chr1\t1\t.\tA\tC\n#CHROM\tPOS\n")
    with VcfReader(vcf) as reader, pytest.raises(VcfFormatError, match=":2: header line"):
        list(reader)
