"""`varfx simulate`: files, composition, planted motifs, grammar, peaks, VCF and truth."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pysam
import pytest

from varfx.core.tokens import encode as encode_tokens
from varfx.core.tokens import reverse_complement
from varfx.training._grammar import (
    FEATURES,
    feature_sites,
    motif_thresholds,
    planting_floors,
    scan_hits,
)
from varfx.training._simulate_cli import add_simulate_parser
from varfx.training._variants import variant_truth
from varfx.training.motifs import MotifScanner, load_motifs
from varfx.training.simulate import SIZES, SimulationConfig, SimulationError, simulate


def encode(seq: str) -> np.ndarray:
    return encode_tokens(seq, strict=False)


TINY = dataclasses.replace(SIZES["small"], n_variants=200)
SEED = 11
MOTIFS = load_motifs()
THRESHOLDS = motif_thresholds(MOTIFS)
SCANNER = MotifScanner(MOTIFS)
INDEX = {m.name: i for i, m in enumerate(MOTIFS)}
FEATURE_NAMES = [f.name for f in FEATURES]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory):
    return simulate(tmp_path_factory.mktemp("sim_a"), seed=SEED, config=TINY)


@pytest.fixture(scope="module")
def genome(sim) -> dict[str, str]:
    fa = pysam.FastaFile(str(sim.paths.genome))
    return {name: fa.fetch(name) for name in fa.references}


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(sim, tmp_path: Path) -> None:
    again = simulate(tmp_path / "b", seed=SEED, config=TINY)
    a, b = all_files(sim.out_dir), all_files(again.out_dir)
    assert len(a) >= 10 + 8
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    other = simulate(tmp_path / "c", seed=SEED + 1, config=TINY)
    assert other.paths.genome.read_bytes() != sim.paths.genome.read_bytes()


def test_fasta_layout_gaps_and_human_like_composition(sim, genome) -> None:
    assert list(genome) == ["chr1", "chr2", "chr3"]
    assert all(len(s) == TINY.chrom_length for s in genome.values())
    lines = sim.paths.genome.read_text().splitlines()
    assert {len(x) for x in lines if not x.startswith(">")} <= {60, TINY.chrom_length % 60}
    seq = "".join(genome.values())
    assert set(seq) <= set("ACGTN")
    for s in genome.values():  # N at both ends and one internal gap
        assert s[: TINY.end_gap] == "N" * TINY.end_gap
        assert s[-TINY.end_gap :] == "N" * TINY.end_gap
        assert "N" * TINY.internal_gap in s[TINY.end_gap : -TINY.end_gap]
    acgt = seq.replace("N", "")
    gc = (acgt.count("G") + acgt.count("C")) / len(acgt)
    assert 0.37 <= gc <= 0.46, gc
    cpg_oe = acgt.count("CG") * len(acgt) / (acgt.count("C") * acgt.count("G"))
    assert cpg_oe < 0.5, cpg_oe
    # not uniform: other dinucleotides keep roughly their expected frequency
    gpc_oe = acgt.count("GC") * len(acgt) / (acgt.count("C") * acgt.count("G"))
    assert gpc_oe > 0.7
    # low-complexity repeats (micro-satellites / poly-A, 5% mutated) are present
    assert re.search(r"(?:A{12,}|T{12,}|(?:CA){6,}|(?:TG){6,}|(?:AT){6,}|(?:GGAA){4,})", acgt)


REAL_FASTA = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "data"
    / "real"
    / "hg38_chr1_1mb"
    / "hg38_1m.plain.fa"
)


def _kmer_freq(seq: str, k: int = 4) -> np.ndarray:
    tok = encode(seq)
    win = np.lib.stride_tricks.sliding_window_view(tok, k)
    win = win[(win < 4).all(axis=1)].astype(np.int64)
    code = (win * (4 ** np.arange(k - 1, -1, -1))[None, :]).sum(axis=1)
    return np.bincount(code, minlength=4**k) / len(code)


def test_kmer_spectrum_resembles_grch38(genome) -> None:
    if not REAL_FASTA.exists():
        pytest.skip(f"real GRCh38 fragment not found at {REAL_FASTA}")
    real = _kmer_freq(pysam.FastaFile(str(REAL_FASTA)).fetch("chr1"))
    sim = _kmer_freq("".join(genome.values()))
    uniform = _kmer_freq("".join(np.random.default_rng(0).choice(list("ACGT"), 180_000)))
    r_sim = np.corrcoef(np.log(real), np.log(sim))[0, 1]
    r_uniform = np.corrcoef(np.log(real), np.log(uniform))[0, 1]
    assert r_sim > 0.9, r_sim
    assert r_sim > r_uniform + 0.2, (r_sim, r_uniform)


def test_planted_instances_score_high_at_their_loci(sim, genome) -> None:
    rows = read_tsv(sim.paths.sites)
    assert len(rows) == sim.counts["planted_sites"] > 100
    kinds = {r["kind"] for r in rows}
    assert "CTCF_CONVERGENT" in kinds
    assert any(k.startswith("decoy_") for k in kinds)
    ids = {m.name: m.id for m in MOTIFS}
    floors = planting_floors(MOTIFS, THRESHOLDS, TINY.score_margin)
    assert (floors > THRESHOLDS).all()
    seqs: dict[str, set[str]] = {}
    for r in rows:
        m = MOTIFS[INDEX[r["motif"]]]
        assert r["motif_id"] == ids[r["motif"]]
        tok = encode(genome[r["chrom"]][int(r["start"]) : int(r["end"])])
        if r["strand"] == "-":
            tok = reverse_complement(tok)
        score = float(m.score_windows(tok[None, :])[0])
        seqs.setdefault(m.name, set()).add(tok.tobytes().hex())
        assert score == pytest.approx(float(r["score"]), abs=1e-3)
        assert score >= floors[INDEX[m.name]] - 1e-6
    # instances are sampled from the matrix, not copies of the consensus
    # (motifs whose threshold is near the consensus, like FOS::JUN, have little room to vary)
    varied = [k for k, v in seqs.items() if len(v) >= 3]
    assert len(varied) >= 6, {k: len(v) for k, v in seqs.items()}
    assert {"CTCF", "RFX1", "HNF4A"} <= set(varied)


def _seq_sites(seq: str) -> dict[str, np.ndarray]:
    return feature_sites(scan_hits(encode(seq), SCANNER, THRESHOLDS), MOTIFS)


def _plant(parts: list[tuple[int, str, int]], length: int = 400) -> str:
    """A neutral AT-only background with motif consensus instances at given starts/strands."""
    tok = np.tile(np.array([0, 3, 3, 0, 0, 3], np.uint8), length // 6 + 1)[:length]
    for start, name, strand in parts:
        c = MOTIFS[INDEX[name]].consensus
        tok[start : start + len(c)] = c if strand > 0 else reverse_complement(c)
    return "".join("ACGTN"[i] for i in tok)


@pytest.mark.parametrize(
    ("parts", "feature", "holds"),
    [
        ([(100, "CTCF", 1), (180, "CTCF", -1)], "CTCF_CONVERGENT", True),
        ([(100, "CTCF", -1), (180, "CTCF", 1)], "CTCF_CONVERGENT", False),  # divergent
        ([(100, "CTCF", 1), (180, "CTCF", 1)], "CTCF_CONVERGENT", False),  # tandem
        ([(100, "NEUROD1", 1), (110, "NEUROD1", -1)], "EBOX_PAIR", True),
        ([(100, "NEUROD1", 1), (120, "NEUROD1", 1)], "EBOX_PAIR", False),
        ([(100, "GATA1", 1), (120, "TAL1::TCF3", -1)], "GATA1_TAL1", True),
        ([(100, "GATA1", 1), (200, "TAL1::TCF3", 1)], "GATA1_TAL1", False),
        ([(100, "FOXA1", -1), (140, "HNF4A", 1)], "FOXA1_HNF4A", True),
        ([(100, "FOXA1", 1)], "FOXA1_HNF4A", False),
        ([(100, "Spi1", -1)], "SPI1", True),
    ],
)
def test_grammar_rules(parts: list[tuple[int, str, int]], feature: str, holds: bool) -> None:
    sites = _seq_sites(_plant(parts))
    assert (len(sites[feature]) > 0) == holds
    assert (len(sites["ACCESSIBLE"]) > 0) == any(
        len(v) for k, v in sites.items() if k != "ACCESSIBLE"
    )


def test_features_table_and_summary(sim) -> None:
    summary = json.loads(sim.paths.summary.read_text())
    assert summary["seed"] == SEED
    assert summary["config"] == dataclasses.asdict(TINY)
    assert summary["counts"] == sim.counts
    assert [f["name"] for f in summary["features"]] == FEATURE_NAMES
    assert {m["id"] for m in summary["motifs"]} == {m.id for m in MOTIFS}
    rows = read_tsv(sim.paths.features)
    assert [r["feature"] for r in rows] == FEATURE_NAMES == list(sim.features)
    assert len(rows) >= 8
    assert {"single", "pair", "convergent", "spacing", "union"} <= {r["kind"] for r in rows}
    for r in rows:
        assert int(r["n_sites"]) > 0, r
        assert int(r["n_peaks"]) > 0, r


def test_every_peak_has_its_grammar_or_is_noise(sim, genome) -> None:
    order = {c: i for i, c in enumerate(genome)}
    for feature in FEATURE_NAMES:
        path = sim.paths.peaks[feature]
        assert path == sim.out_dir / "peaks" / f"{feature}.narrowPeak"
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        assert rows
        assert all(len(r) == 10 for r in rows)
        keys = [(order[r[0]], int(r[1])) for r in rows]
        assert keys == sorted(keys)
        n_real = 0
        for r in rows:
            chrom, start, end, name = r[0], int(r[1]), int(r[2]), r[3]
            assert 150 <= end - start <= 700
            assert 0 <= int(r[9]) < end - start
            assert 0 <= int(r[4]) <= 1000
            assert r[5] == "."
            lo = max(0, start - 300)
            sites = _seq_sites(genome[chrom][lo : end + 300])[feature] + lo
            inside = ((sites >= start) & (sites < end)).any()
            if re.fullmatch(rf"{feature}\.noise\.\d+", name):
                assert not inside, (feature, r)
            else:
                assert re.fullmatch(rf"{feature}\.\d+", name)
                assert inside, (feature, r)
                n_real += 1
        assert n_real >= 5


def test_grammar_sites_register_matches_peaks(sim) -> None:
    rows = read_tsv(sim.out_dir / "grammar_sites.tsv")
    peaks: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for f in FEATURE_NAMES:
        for line in sim.paths.peaks[f].read_text().splitlines():
            c, s, e = line.split("\t")[:3]
            peaks.setdefault((f, c), []).append((int(s), int(e)))
    missed = 0
    for r in rows:
        pos = int(r["centre"])
        covered = any(s <= pos < e for s, e in peaks.get((r["feature"], r["chrom"]), []))
        if r["in_peak"] == "1":
            assert covered, r
        else:
            missed += 1
    assert {r["origin"] for r in rows} <= {"planted", "chance"}
    assert missed == sum(sim.counts[f"missed:{f}"] for f in FEATURE_NAMES)


def test_vcf_parses_ref_matches_and_has_all_variant_kinds(sim, genome) -> None:
    vf = pysam.VariantFile(str(sim.paths.vcf))
    assert list(vf.header.contigs) == list(genome)
    assert {c: vf.header.contigs[c].length for c in genome} == {
        c: len(s) for c, s in genome.items()
    }
    assert {"VT", "SIMCLASS", "MOTIF"} <= set(vf.header.info)
    records = list(vf)
    assert len(records) == TINY.n_variants
    keys = [(list(genome).index(r.chrom), r.pos) for r in records]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    kinds = set()
    for r in records:
        ref, alts = r.ref or "", r.alts or ()
        assert genome[r.chrom][r.pos - 1 : r.pos - 1 + len(ref)] == ref, r
        assert all(a != ref and set(a) <= set("ACGT") for a in alts)
        kinds.update(r.info["VT"])
    assert {"SNV", "MNV", "INS", "DEL"} <= kinds
    assert sum(len(r.alts or ()) > 1 for r in records) >= 3
    assert sim.paths.tbi.exists()
    assert len(list(vf.fetch("chr2", 0, TINY.chrom_length))) == sum(
        r.chrom == "chr2" for r in records
    )


def _direction(text: str) -> np.ndarray:
    d = np.zeros(len(FEATURE_NAMES), dtype=np.int8)
    if text != ".":
        for item in text.split(","):
            name, v = item.split(":")
            d[FEATURE_NAMES.index(name)] = int(v)
    return d


def test_truth_rows_are_consistent_and_recomputable(sim, genome) -> None:
    rows = read_tsv(sim.paths.truth)
    records = list(pysam.VariantFile(str(sim.paths.vcf)))
    assert len(rows) == sum(len(r.alts or ()) for r in records)
    alts = {(r.id, a): r for r in records for a in r.alts or ()}
    assert {(t["id"], t["alt"]) for t in rows} == set(alts)
    classes = {t["class"] for t in rows}
    assert classes == {"break", "create", "neutral"}
    tokens = {c: encode(s) for c, s in genome.items()}
    planted = read_tsv(sim.paths.sites)
    for t in rows:
        d = _direction(t["direction"])
        feats = t["affected_features"]
        assert feats == (",".join(f for f, v in zip(FEATURE_NAMES, d, strict=True) if v) or ".")
        if t["class"] == "break":
            assert (d <= 0).all()
            assert (d < 0).any()
            assert float(t["alt_score"]) < float(t["ref_score"])
            pos0 = int(t["pos"]) - 1
            assert any(  # the variant touches a planted instance of that motif
                p["chrom"] == t["chrom"]
                and p["motif"] == t["motif"]
                and int(p["start"]) - 1 <= pos0 < int(p["end"])
                for p in planted
            )
        elif t["class"] == "create":
            assert (d >= 0).all()
            assert (d > 0).any()
            assert float(t["alt_score"]) > float(t["ref_score"])
        else:
            assert not d.any()
            assert t["motif"] == "."
        # independent recomputation (local reference scan, no genome-wide shortcut)
        alt = encode(t["alt"])
        again = variant_truth(
            tokens[t["chrom"]], int(t["pos"]) - 1, len(t["ref"]), alt, SCANNER, THRESHOLDS
        )
        assert again.tolist() == d.tolist(), t
    n = {c: sum(t["class"] == c for t in rows) for c in classes}
    assert n["neutral"] > n["break"] >= 0.1 * len(records)
    assert n["create"] >= 0.05 * len(records)


def test_config_errors_name_the_value(tmp_path: Path) -> None:
    with pytest.raises(SimulationError, match="n_chroms.*0"):
        simulate(tmp_path, config=SimulationConfig(n_chroms=0))
    with pytest.raises(SimulationError, match="break_fraction.*1.5"):
        simulate(tmp_path, config=SimulationConfig(break_fraction=1.5))
    with pytest.raises(SimulationError, match="seed"):
        simulate(tmp_path, seed=-1, config=TINY)
    with pytest.raises(SimulationError, match="loci"):  # more loci than the chromosome holds
        simulate(tmp_path, config=dataclasses.replace(TINY, feature_loci_per_mb=5000.0))


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="varfx")
    add_simulate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_writes_a_data_set_and_rejects_bad_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    argv = ["simulate", "--out", str(out), "--size", "small", "--chroms", "2"]
    assert _cli([*argv, "--chrom-length", "40000", "--variants", "50", "--seed", "5"]) == 0
    text = capsys.readouterr().out
    assert "2 chromosomes" in text
    assert "CTCF_CONVERGENT" in text
    assert len(list(pysam.VariantFile(str(out / "variants.vcf.gz")))) == 50
    assert _cli(["simulate", "--out", str(tmp_path / "bad"), "--chroms", "0"]) == 2
    assert "n_chroms must be >= 1, got 0" in capsys.readouterr().err
