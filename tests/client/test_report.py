"""`varfx report` on VCFs scored by a real server: content, inputs, errors, and the page as
headless Chromium renders it (skipped where Debian's chromium is absent)."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pysam
import pytest

from tests.client.test_score import make_vcf
from tests.conftest import REAL
from varfx.client import Client
from varfx.client import report as report_mod
from varfx.client.report import PositionTrack, ReportError, TopVariant, collect, write_report
from varfx.client.score import score_vcf

REPO = Path(__file__).resolve().parents[2]
VARFX = [sys.executable, "-m", "varfx"]
FEATURES = ["feat0", "feat1", "feat2", "feat3"]


@pytest.fixture(scope="module")
def scored(
    server: Any, tmp_path_factory: pytest.TempPathFactory, genome_seqs: dict[str, str]
) -> Path:
    """A bgzipped VCF scored with per-feature diff and log2fc keys (multi-allelic records,
    REF mismatches, unknown contigs, symbolic and missing ALTs included)."""
    tmp = tmp_path_factory.mktemp("report")
    vcf = make_vcf(tmp / "in.vcf", genome_seqs)
    out = tmp / "scored.vcf.gz"
    with Client(server.target) as client:
        score_vcf(client, vcf, out, features=FEATURES, scores="diff,log2fc", batch_size=16)
    return out


@pytest.fixture(scope="module")
def plain(scored: Path) -> Path:
    path = scored.with_name("scored.vcf")
    path.write_bytes(gzip.decompress(scored.read_bytes()))
    return path


def expected(path: Path) -> tuple[Counter[str], int, int, list[tuple[float, str]]]:
    """Status counts per ALT, records, multi-allelic records and (max |diff|, ID) of the scored
    ALTs by max |diff| (file order on ties), read with pysam."""
    status: Counter[str] = Counter()
    records = multi = 0
    ranked: list[tuple[float, int, str]] = []
    with pysam.VariantFile(str(path)) as vf:
        for rec in vf:
            records += 1
            st = rec.info["VARFX_STATUS"]
            multi += len(st) > 1
            for j, s in enumerate(st):
                status[s] += 1
                if s == "OK":
                    ranked.append((-rec.info["VARFX_MAX_ABS_DIFF"][j], len(ranked), rec.id or "."))
    ranked.sort()
    return status, records, multi, [(-m, vid) for m, _, vid in ranked]


@pytest.fixture(scope="module")
def explained(
    server: Any, scored: Path, genome_seqs: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, TopVariant, np.ndarray]:
    """A ``varfx explain``-style JSON for the strongest SNV on chr1: in-silico mutagenesis of
    +-4 bp on the REF and the ALT background, each mutant scored by the real model through
    ScoreSequences (diff = p(mutant) - p(background)). Returns the file, the variant and the
    ISM [2, P, 4, F]."""
    top = next(
        t
        for t in collect(scored, top=40).top
        if len(t.ref) == len(t.alt) == 1 and t.chrom == "chr1" and t.pos > 30
    )
    seq, length, w = genome_seqs["chr1"], 20, 4
    start = top.pos - 1 - length // 2
    ref_win = seq[start : start + length]
    i = top.pos - 1 - start
    assert ref_win[i] == top.ref
    alt_win = ref_win[:i] + top.alt + ref_win[i + 1 :]
    positions = list(range(top.pos - w, top.pos + w + 1))
    pairs = [
        (bg, bg[: p - 1 - start] + b + bg[p - start :])
        for bg in (ref_win, alt_win)
        for p in positions
        for b in "ACGT"
    ]
    with Client(server.target) as client:
        table = client.score_sequences(pairs)
    ism = np.asarray(table.diff, dtype=np.float64).reshape(2, len(positions), 4, -1)
    doc = {
        "variant": f"{top.chrom}:{top.pos}:{top.ref}:{top.alt}",
        "positions": positions,
        "bases": "ACGT",
        "features": list(table.features),
        "ref_ism": ism[0].tolist(),
        "alt_ism": ism[1].tolist(),
        "motifs": [{"name": "CTCF", "id": "MA0139.2", "strand": "+", "ref": 9.5, "alt": 3.25}],
    }
    path = tmp_path_factory.mktemp("explain") / "explain.json"
    path.write_text(json.dumps(doc))
    return path, top, ism


def test_explanations_are_drawn_and_linked(
    scored: Path, explained: tuple[Path, TopVariant, np.ndarray], tmp_path: Path
) -> None:
    path, top, ism = explained
    out = tmp_path / "r.html"
    run = run_report(str(scored), "-o", str(out), "--top", "40", "--explain", str(path))
    assert run.returncode == 0, run.stderr.decode()
    page = out.read_text()
    assert 'id="explain-0"' in page
    row = next(r for r in top_rows(page) if r[1].startswith(f"chr1:{top.pos:,} "))
    assert row[4] == f"{top.feature} ISM"
    assert re.search(rf'<td>{top.feature} <a href="#explain-0"', page)
    # every cell of both backgrounds is drawn, the strongest with its value
    assert page.count(" to A: ") + page.count(" to T: ") == 2 * 2 * ism.shape[1]
    f = FEATURES.index(top.feature)
    k = np.unravel_index(np.abs(ism[..., f]).argmax(), ism[..., f].shape)
    pos = top.pos - 4 + int(k[1])
    assert f"{pos:,} to {'ACGT'[int(k[2])]}: {ism[..., f][k]:.4g}</title>" in page
    assert "MA0139.2" in page
    # a file that does not fit the layout is refused before the VCF is read
    bad = json.loads(path.read_text())
    bad["ref_ism"] = bad["ref_ism"][:-1]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    run = run_report(str(scored), "-o", str(out), "--explain", str(tmp_path / "bad.json"))
    assert run.returncode == 1
    assert "bad.json: 'ref_ism' has shape [8, 4, 4], expected [positions=9]" in run.stderr.decode()
    (tmp_path / "bad.json").write_text("{\n  oops")
    run = run_report(str(scored), "-o", str(out), "--explain", str(tmp_path / "bad.json"))
    assert "bad.json:2: not JSON" in run.stderr.decode()


class _Table(HTMLParser):
    """The cells of each row of the table with id="top"."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in = self._cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", "top") in attrs:
            self._in = True
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag == "td":
            self._cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in = False
        elif tag == "td":
            self._cell = False

    def handle_data(self, data: str) -> None:
        if self._in and self._cell:
            self.rows[-1][-1] += data


def top_rows(page: str) -> list[list[str]]:
    parser = _Table()
    parser.feed(page)
    return [r for r in parser.rows if r]


def test_report_content_matches_the_vcf(scored: Path, tmp_path: Path) -> None:
    status, records, multi, ranked = expected(scored)
    assert multi > 0
    assert status["OK"] > 0
    assert status["REF_MISMATCH"] == 1
    data = collect(scored, top=15)
    assert data.records == records
    assert data.multiallelic == multi
    assert dict(data.status) == dict(status)
    assert data.manifest["model"] == "tok"
    assert data.manifest["features"] == ",".join(FEATURES)
    assert [(k, f) for k, f, _ in data.details] == [
        (k, f) for k in ("diff", "log2fc") for f in FEATURES
    ]
    assert data.hists["VARFX_DIFF_feat0"].n == status["OK"]
    assert [t.vid for t in data.top] == [vid for _, vid in ranked[:15]]
    assert [t.max_abs_diff for t in data.top] == pytest.approx([m for m, _ in ranked[:15]])
    exact = sum(1 for m, _ in ranked if m >= 0.1)
    assert int(data.hists["VARFX_MAX_ABS_DIFF"].gain[1]) == exact

    out = tmp_path / "report.html"
    summary = write_report(scored, out, top=15, title="<script>alert(1)</script>")
    assert f"{records} records" in summary
    page = out.read_text()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)" in page
    assert "http://" not in page
    assert "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(//|[a-z]+:)""", page, re.I)
    assert "default-src 'none'" in page  # the page may load nothing
    rows = top_rows(page)
    assert [r[2] for r in rows] == [vid for _, vid in ranked[:15]]
    assert [float(r[3]) for r in rows] == pytest.approx([m for m, _ in ranked[:15]], abs=6e-4)
    for name, n in status.items():
        assert re.search(rf"<b>{name}</b>.*?<td class=num>{n:,}</td>", page), name
    assert "feat3" in page
    assert "log2 odds ratio" in page


def test_chunks_heap_and_summary_only(
    scored: Path, server: Any, tmp_path: Path, genome_seqs: dict[str, str], monkeypatch: Any
) -> None:
    whole = collect(scored, top=10)
    monkeypatch.setattr(report_mod, "_CHUNK_LINES", 7)  # many chunks: the heap merges them
    parts = collect(scored, top=10)
    assert parts.top == whole.top
    assert parts.status == whole.status
    for key, h in whole.hists.items():
        assert np.array_equal(parts.hists[key].counts, h.counts), key
    for name, tr in whole.tracks.items():
        assert np.array_equal(parts.tracks[name].maxima, tr.maxima, equal_nan=True)
    # without --features: summary keys only; the page says how to get the per-feature ones
    vcf = make_vcf(tmp_path / "in.vcf", genome_seqs)
    out = tmp_path / "summary.vcf"
    with Client(server.target) as client:
        score_vcf(client, vcf, out)
    data = collect(out)
    assert data.details == []
    assert data.status == whole.status
    write_report(out, tmp_path / "s.html")
    assert "--features" in (tmp_path / "s.html").read_text()


def test_position_track_keeps_the_maxima() -> None:
    rng = np.random.default_rng(0)
    pos = rng.integers(1, 5_000_000, 20_000)
    mad = rng.random(20_000)
    track = PositionTrack(None, n_bins=64)
    for i in range(0, len(pos), 3_000):  # grows: the bin width doubles several times
        track.add(pos[i : i + 3_000], mad[i : i + 3_000])
    assert track.width * track.n_bins >= pos.max() > track.width * track.n_bins // 2
    idx = (pos - 1) // track.width
    want = np.full(track.n_bins, np.nan)
    np.fmax.at(want, idx, mad)
    assert np.array_equal(track.maxima, want, equal_nan=True)
    assert track.counts.sum() == len(pos)


def test_many_contigs_stay_small(tmp_path: Path) -> None:
    """A VCF over 300 scaffolds (varfx score's layout): the first 64 contigs get full tracks,
    the rest a few bins each; the page draws the 40 with the most scored variants."""
    lines = ["##fileformat=VCFv4.3", "##varfx_model=m"]
    lines += [f"##contig=<ID=s{i},length={10_000 + i}>" for i in range(300)]
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    for i in range(300):
        for j in range(1 + i % 3):
            lines.append(
                f"s{i}\t{100 + j}\tv{i}_{j}\tA\tC\t.\tPASS\tVARFX_STATUS=OK;"
                f"VARFX_MAX_ABS_DIFF={(i % 97) / 100};VARFX_MAX_FEATURE=f"
            )
    path = tmp_path / "scaffolds.vcf"
    path.write_text("\n".join(lines) + "\n")
    data = collect(path)
    assert list(data.tracks) == [f"s{i}" for i in range(300)]
    bins = [t.n_bins for t in data.tracks.values()]
    assert bins[:64] == [1024] * 64
    assert set(bins[64:]) <= {8, 16}  # ~2 per pixel of a 1/300 share of the page's width
    assert sum(int(t.counts.sum()) for t in data.tracks.values()) == data.scored == 600
    write_report(path, tmp_path / "s.html")
    assert (
        "260 contigs with fewer scored variants are not shown" in (tmp_path / "s.html").read_text()
    )


def run_report(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*VARFX, "report", *args], input=stdin, capture_output=True, timeout=120, cwd=REPO
    )


def test_cli_plain_bgzipped_and_stdin_agree(scored: Path, plain: Path, tmp_path: Path) -> None:
    pages = []
    for src, stdin in ((str(scored), None), (str(plain), None), ("-", scored.read_bytes())):
        out = tmp_path / f"r{len(pages)}.html"
        run = run_report(src, "-o", str(out), "--title", "t", stdin=stdin)
        assert run.returncode == 0, run.stderr.decode()
        page = out.read_text()
        pages.append(re.sub(r"<dt>file</dt><dd>.*?</dd>", "", page))
    # a pipe that delivers gzip's two magic bytes in separate writes
    proc = subprocess.Popen(
        [*VARFX, "report", "-", "-o", str(tmp_path / "pipe.html"), "--title", "t"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert proc.stdin is not None
    data = scored.read_bytes()
    proc.stdin.write(data[:1])
    proc.stdin.flush()
    time.sleep(0.5)
    proc.stdin.write(data[1:])
    proc.stdin.close()
    assert proc.wait(120) == 0
    pages.append(re.sub(r"<dt>file</dt><dd>.*?</dd>", "", (tmp_path / "pipe.html").read_text()))
    assert pages[0] == pages[1] == pages[2] == pages[3]
    run = run_report(str(plain), "-o", "-")
    assert run.returncode == 0
    assert run.stdout.startswith(b"<!doctype html>")


def test_quantiles_and_other_varfx_keys_are_shown(plain: Path, tmp_path: Path) -> None:
    """Keys a later varfx adds (VARFX_MAX_QUANTILE, anything VARFX_* declared) are rendered."""
    best = collect(plain, top=1).top[0]
    out = []
    for line in plain.read_text().splitlines():
        if line.startswith("#CHROM"):
            out += [
                '##INFO=<ID=VARFX_MAX_QUANTILE,Number=A,Type=Float,Description="q">',
                '##INFO=<ID=VARFX_SIGNED_QUANTILE_feat1,Number=A,Type=Float,Description="s">',
                '##INFO=<ID=VARFX_PVALUE_feat1,Number=A,Type=Float,Description="p">',
                '##INFO=<ID=VARFX_MOTIF,Number=A,Type=String,Description="m">',
            ]
        elif not line.startswith("#"):
            f = line.split("\t")
            n = f[4].count(",") + 1
            q = "0.999" if (f[0], f[1], f[2]) == (best.chrom, str(best.pos), best.vid) else "0.5"
            line += f";VARFX_MAX_QUANTILE={','.join([q] * n)};VARFX_MOTIF={','.join(['M<1>'] * n)}"
            line += f";VARFX_SIGNED_QUANTILE_feat1={','.join(['-0.995'] * n)}"
            line += f";VARFX_PVALUE_feat1={','.join(['0.004'] * n)}"
        out.append(line)
    path = tmp_path / "q.vcf"
    path.write_text("\n".join(out) + "\n")
    data = collect(path, top=5)
    assert data.top[0].quantile == pytest.approx(0.999)
    assert data.top[0].extras == {"VARFX_MOTIF": "M<1>"}
    assert data.extra_keys == ["VARFX_MOTIF"]
    assert data.hists["VARFX_MAX_QUANTILE"].n == data.scored
    assert data.details[-2:] == [
        ("signed_quantile", "feat1", "VARFX_SIGNED_QUANTILE_feat1"),
        ("pvalue", "feat1", "VARFX_PVALUE_feat1"),
    ]
    assert data.hists["VARFX_SIGNED_QUANTILE_feat1"].loss.tolist() == [data.scored] * 2 + [0]
    assert data.hists["VARFX_PVALUE_feat1"].gain.tolist() == [data.scored] * 2 + [0]  # p <= 0.01
    write_report(path, tmp_path / "q.html", top=5)
    page = (tmp_path / "q.html").read_text()
    assert "<th data-k=n class=num>quantile</th>" in page
    assert "M&lt;1&gt;" in page
    assert f"{data.scored:,} with p ≤ 0.01" in page
    rows = top_rows(page)
    assert rows[0][4:7] == [best.feature, "0.9990", "M<1>"]


def test_header_only_vcf_renders(plain: Path, tmp_path: Path) -> None:
    path = tmp_path / "empty.vcf"
    path.write_text(
        "".join(line + "\n" for line in plain.read_text().splitlines() if line.startswith("#"))
    )
    summary = write_report(path, tmp_path / "e.html")
    assert "0 records" in summary
    assert "No variant was scored" in (tmp_path / "e.html").read_text()


def test_real_brain_model_on_real_chr20_indels(tmp_path: Path) -> None:
    """The committed brain-hg19 model scoring vt's 194 real indels on real GRCh37 chr20."""
    folder = REAL / "hg19_ref_debian"
    vcf = folder / "vt-examples.normalize_IN.chr20_indels.vcf.gz"
    fasta = folder / "vt-examples.20.fa.gz"
    if not (vcf.exists() and fasta.exists()):
        pytest.skip("hg19_ref_debian not present")
    from varfx.server import ServerConfig, start_in_thread

    repo = tmp_path / "models"
    repo.mkdir()
    (repo / "brain-hg19").symlink_to(REPO / "models" / "brain-hg19")
    config = ServerConfig(
        model_repo=repo, genome=fasta, host="127.0.0.1", port=0, metrics_port=0,
        metrics_host="127.0.0.1", default_model="brain-hg19",
    )  # fmt: skip
    out = tmp_path / "scored.vcf.gz"
    with start_in_thread(config) as running, Client(running.target) as client:
        features = list(client.list_models()[0].features)
        score_vcf(client, vcf, out, features=features)
    status, records, _, ranked = expected(out)
    data = collect(out, top=10)
    assert (data.records, dict(data.status)) == (records, dict(status))
    assert records == 194
    assert data.manifest["model"] == "brain-hg19"
    assert len(features) == 12  # brain-hg19 is calibrated: diff and quantile per feature
    assert [k for k, _, _ in data.details] == ["diff"] * 12 + ["quantile"] * 12
    assert "VARFX_MAX_QUANTILE" in data.hists
    assert data.contig_lengths["20"] == 63_025_520  # from the input's ##contig lines
    assert set(data.tracks) == {"20"}
    assert data.tracks["20"].width == -(-63_025_520 // 1024)
    assert [t.vid for t in data.top] == [vid for _, vid in ranked[:10]]
    write_report(out, tmp_path / "real.html", top=10)
    page = (tmp_path / "real.html").read_text()
    top_value = ranked[0][0]
    assert ("The axis is zoomed to 0–" in page) == (top_value * 1.02 <= 0.5)
    assert [float(r[3]) for r in top_rows(page)] == pytest.approx(
        [m for m, _ in ranked[:10]], abs=6e-4
    )


def test_unannotated_records_and_bad_input(plain: Path, tmp_path: Path) -> None:
    lines = plain.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    extra = "chr1\t5\tnew\tA\tC,G\t.\tPASS\tDP=1"
    path = tmp_path / "mixed.vcf"
    path.write_text("\n".join([*lines, extra]) + "\n")
    data = collect(path)
    assert data.status["NOT_ANNOTATED"] == 2  # one per ALT
    assert data.records == len(lines) - first + 1

    def bad(name: str, text: str) -> str:
        p = tmp_path / name
        p.write_text(text)
        run = run_report(str(p), "-o", str(tmp_path / "x.html"))
        err = run.stderr.decode()
        assert run.returncode == 1, err
        assert "Traceback" not in err, err
        assert not (tmp_path / "x.html").exists()
        return err

    # a single-ALT scored record, replaced in each bad file by a broken copy
    k = next(
        i
        for i in range(first, len(lines))
        if "\tPASS\t" in lines[i] and "," not in lines[i].split("\t")[4] and "STATUS=OK" in lines[i]
    )
    line = lines[k]
    no = k + 1
    first = k
    err = bad(
        "num.vcf",
        "\n".join([*lines[:first], re.sub(r"MAX_ABS_DIFF=[^;]+", "MAX_ABS_DIFF=abc", line)]),
    )
    assert f"num.vcf:{no}: VARFX_MAX_ABS_DIFF value 'abc' is not a number" in err
    err = bad(
        "alts.vcf",
        "\n".join([*lines[:first], re.sub(r"VARFX_STATUS=[^;]+", "VARFX_STATUS=OK,OK", line)]),
    )
    assert f"alts.vcf:{no}: VARFX_STATUS has 2 value(s) for 1 ALT" in err
    err = bad("short.vcf", "\n".join([*lines[:first], "chr1\t7\tx\tA"]))
    assert f"short.vcf:{no}: a data line needs 8 tab-separated columns" in err
    err = bad("pos.vcf", "\n".join([*lines[:first], line.replace("\t", "\tx", 1)]))
    assert f"pos.vcf:{no}: POS" in err
    err = bad("raw.vcf", "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    assert "raw.vcf:2: no ##varfx_model header line" in err
    cut = tmp_path / "cut.vcf.gz"
    cut.write_bytes(gzip.compress(plain.read_bytes())[:-4000])
    run = run_report(str(cut), "-o", str(tmp_path / "x.html"))
    assert run.returncode == 1
    assert "cut.vcf.gz:" in run.stderr.decode()
    assert "Traceback" not in run.stderr.decode()
    # an existing symlink or device is not written through
    link = tmp_path / "link.html"
    link.symlink_to(tmp_path / "elsewhere.html")
    with pytest.raises(ReportError, match="not a regular file"):
        write_report(plain, link)
    assert not (tmp_path / "elsewhere.html").exists()
    run = run_report(str(plain), "-o", os.devnull)
    assert run.returncode == 1
    assert "not a regular file" in run.stderr.decode()


# -- headless Chromium ---------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium not installed")


def chromium(page: Path, tmp: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a local page, no network, console messages on stderr."""
    return subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr",
         "--v=0", "--hide-scrollbars", "--window-size=1280,2400", *mode, page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def console_lines(stderr: str) -> list[str]:
    """What the page logged (messages, uncaught errors, CSP violations): Chromium writes each
    as an ``INFO:CONSOLE`` line; the report itself logs nothing."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@needs_chromium
def test_page_renders_in_headless_chromium(
    scored: Path, explained: tuple[Path, TopVariant, np.ndarray], tmp_path: Path
) -> None:
    image = pytest.importorskip("PIL.Image")
    page = tmp_path / "report.html"
    write_report(scored, page, top=20, explain=[explained[0]])
    shot = tmp_path / "shot.png"
    run = chromium(page, tmp_path, f"--screenshot={shot}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.exists(), run.stderr[-2000:]
    assert console_lines(run.stderr) == []
    pixels = np.asarray(image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2400, 1280)
    assert pixels.std() > 20  # not blank: header band, cards, charts
    assert (pixels < 128).mean() > 0.02  # and a real amount of dark ink
    dom = chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0
    assert 'data-sortable="1"' in dom.stdout  # the page's script ran to its end
    assert console_lines(dom.stderr) == []
    # the table sorts: click "variant" (text, descending), then "max |diff|" twice
    clicks = page.read_text().replace(
        "</body>",
        "<script>function th(t){return [].slice.call(document.querySelectorAll('#top th'))"
        ".filter(function(x){return x.textContent===t;})[0];}function order(c){return [].slice"
        ".call(document.querySelectorAll('#top tbody tr')).map(function(r){return r.cells[c]"
        ".getAttribute('data-v');}).join(' ');}var b=document.body;th('variant').click();"
        "b.setAttribute('data-a',order(1));th('max |diff|').click();b.setAttribute('data-b',"
        "order(3));th('max |diff|').click();b.setAttribute('data-c',order(3));</script></body>",
    )
    (tmp_path / "clicks.html").write_text(clicks)
    run = chromium(tmp_path / "clicks.html", tmp_path, "--dump-dom")
    assert console_lines(run.stderr) == []
    got = {k: re.search(rf'data-{k}="([^"]*)"', run.stdout)[1].split() for k in "abc"}
    assert len(got["a"]) == 20
    assert got["a"] == sorted(got["a"], reverse=True)
    assert got["a"] != sorted(got["a"])  # the rows did move
    values = [float(v) for v in got["b"]]
    assert values == sorted(values, reverse=True)
    assert [float(v) for v in got["c"]] == sorted(values)
    # the same check sees a script error and a blocked network load
    broken = tmp_path / "broken.html"
    broken.write_text(
        page.read_text().replace(
            "</body>", '<script>nosuch();</script><img src="http://127.0.0.1:9/x.png"></body>'
        )
    )
    run = chromium(broken, tmp_path, "--dump-dom")
    logged = "\n".join(console_lines(run.stderr))
    assert "Uncaught ReferenceError" in logged
    assert "Content Security Policy" in logged
