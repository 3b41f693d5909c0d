"""Validate calibration and ExplainVariant on a simulated genome's ground truth.

    varfx simulate --seed 1 --out /tmp/sim1          # a genome the model never saw
    python bench/explain_validation.py --sim /tmp/sim1 --model-dir models/sim-chromatin/1

For every variant of the truth file marked ``break`` (a planted motif instance broken):

- the top motif call against the planted TF, as the server ranks calls (relative-score change
  weighted by the ISM importance of the variant's max-quantile feature over the matched bases,
  ``server/motifs.py``) and, for comparison, by sequence alone (``[...:sequence]``), at two
  levels: *name* (the call's TF name is the
  planted one, case-insensitive: any JASPAR matrix of that TF, e.g. both HNF4A base IDs) and
  *family* (the name matches, or the called matrix shares a JASPAR ``family`` annotation with
  the planted matrix, read from the same JASPAR SQLite file: FOS::JUN and NFE2 are both
  "Jun-related", FOXA1 and FOXG1 "FOX"); paralogues' matrices match the same planted instance
  and lose as many bits, so sequence alone cannot tell them apart;
- the ISM's most important position (ref background, the first affected feature, max over
  bases of |ISM|) against the planted site (sites.tsv), and against the planted *locus* (every
  planted site of the same locus: the broken site and, for the two-motif features, its partner,
  which the feature needs as much); and the important positions as a set (importance at
  least half the window's largest): whether most of them lie in the site, in the locus;
- the variant's max quantile.

For ``neutral`` variants: the median per-feature quantile, by variant type (SNVs and MNVs are
ranked against the calibration's substitution null, indels against its indel null), and the
median max quantile; and the same for fresh random SNV and random indel sets drawn on the
evaluation genome by the calibration's own rules (``--random``). In process
(the server's plan/finish code, no gRPC), one thread.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import time
from pathlib import Path

import numpy as np

from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.background import random_indels, random_snvs
from varfx.server.calibration import load_calibration
from varfx.server.explain import motif_feature, plan_explain
from varfx.server.genome import Genome
from varfx.server.genome_identity import file_sha256
from varfx.server.motifs import jaspar_sqlite, motif_database
from varfx.server.repository import ModelEntry
from varfx.server.runtime import ModelRunner
from varfx.server.scoring import ALL_KINDS, CALIBRATED_KINDS, ScoringOptions, score


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _site_of(sites: list[dict[str, str]], chrom: str, pos: int, motif: str) -> tuple[int, int]:
    """1-based inclusive span of the planted site of ``motif`` holding ``pos`` (or (0, -1))."""
    best = (0, -1)
    for s in sites:
        if s["chrom"] == chrom and s["motif"] == motif and int(s["start"]) < pos <= int(s["end"]):
            best = (int(s["start"]) + 1, int(s["end"]))
    return best


def _locus_of(
    sites: list[dict[str, str]], chrom: str, pos: int, motif: str
) -> list[tuple[int, int]]:
    """1-based inclusive spans of every planted site of the locus whose ``motif`` site holds
    ``pos`` (the broken site and its grammar partners)."""
    locus = ""
    for s in sites:
        if s["chrom"] == chrom and s["motif"] == motif and int(s["start"]) < pos <= int(s["end"]):
            locus = s["locus"]
    return [(int(s["start"]) + 1, int(s["end"])) for s in sites if locus and s["locus"] == locus]


def _families() -> dict[str, frozenset[str]]:
    """JASPAR base ID (e.g. "MA0099") -> its ``family`` annotations, from pyjaspar's SQLite."""
    path = jaspar_sqlite()
    if path is None:
        return {}
    out: dict[str, set[str]] = {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        for base, val in db.execute(
            "SELECT m.BASE_ID, a.VAL FROM MATRIX m JOIN MATRIX_ANNOTATION a ON a.ID = m.ID "
            "WHERE a.TAG = 'family'"
        ):
            out.setdefault(base, set()).add(val)
    return {k: frozenset(v) for k, v in out.items()}


def _in_any_site(sites: list[dict[str, str]], chrom: str, positions: np.ndarray) -> np.ndarray:
    """bool [P]: whether each 1-based position lies in any planted site (any motif)."""
    out = np.zeros(len(positions), dtype=bool)
    for s in sites:
        if s["chrom"] == chrom:
            out |= (positions > int(s["start"])) & (positions <= int(s["end"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sim", required=True, type=Path, help="varfx simulate output folder")
    ap.add_argument("--model-dir", required=True, type=Path, help="REPO/NAME/VERSION")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--limit", type=int, default=0, help="at most this many breakers (0: all)")
    ap.add_argument(
        "--random",
        type=int,
        default=3000,
        help="fresh random SNVs (and as many random indels) on the evaluation genome",
    )
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = ap.parse_args()

    version = int(args.model_dir.name)
    onnx = args.model_dir / "model.onnx"
    runner = ModelRunner(ModelEntry(args.model_dir.parent.name, version, (version,), onnx), "cpu")
    spec = runner.spec
    calibration = load_calibration(
        args.model_dir, model_sha256=file_sha256(onnx), features=spec.features
    )
    if calibration is None:
        raise SystemExit(f"{args.model_dir}: no calibration (run varfx calibrate)")
    truth = _rows(args.sim / "truth.tsv")
    sites = _rows(args.sim / "sites.tsv")
    dbs = {"jaspar": motif_database("auto"), "shipped": motif_database("shipped")}
    families = _families()
    t0 = time.monotonic()
    summary = json.loads((args.sim / "summary.json").read_text())
    out: dict[str, object] = {
        "sim_seed": summary.get("seed"),
        "model": f"{spec.name}/{version}",
        "calibration": calibration.description,
        "motif_databases": {k: v.name for k, v in dbs.items()},
    }
    with Genome(args.sim / "genome.fa") as genome:
        # quantiles of every truth variant
        batch = VariantBatch.from_columns(
            [r["chrom"] for r in truth], [int(r["pos"]) for r in truth],
            [r["ref"] for r in truth], [r["alt"] for r in truth],
        )  # fmt: skip
        kinds = ALL_KINDS + CALIBRATED_KINDS
        result = score(runner, genome, batch, ScoringOptions(kinds=kinds), calibration=calibration)
        assert result.quantile is not None
        assert result.max_quantile is not None
        ok = result.ok_index.tolist()
        klass = np.array([truth[i]["class"] for i in ok])
        vtype = np.array([truth[i]["vtype"] for i in ok])
        out["scored"] = len(result.ok_index)
        brk = klass == "break"
        neu = klass == "neutral"
        out["break_max_quantile_gt_0.99"] = float(np.mean(result.max_quantile[brk] > 0.99))
        out["break_max_quantile_median"] = float(np.median(result.max_quantile[brk]))
        out["neutral_quantile_median"] = float(np.median(result.quantile[neu]))
        out["neutral_max_quantile_median"] = float(np.median(result.max_quantile[neu]))
        out["break_n"], out["neutral_n"] = int(brk.sum()), int(neu.sum())
        by_type = {}
        for t in sorted(set(vtype[neu].tolist())):
            m = neu & (vtype == t)
            by_type[t] = {
                "n": int(m.sum()),
                "quantile_median": round(float(np.median(result.quantile[m])), 4),
                "max_quantile_median": round(float(np.median(result.max_quantile[m])), 4),
            }
        out["neutral_by_vtype"] = by_type
        n_feat = result.quantile.shape[1]
        out["max_of_F_uniform_quantiles_median"] = round(0.5 ** (1.0 / n_feat), 4)
        # the model "sees" a break when a feature it affects ranks above 0.99 of the background
        seen = {
            (truth[i]["chrom"], truth[i]["pos"], truth[i]["ref"], truth[i]["alt"]): any(
                result.quantile[j, spec.features.index(f)] > 0.99
                for f in truth[i]["affected_features"].split(",")
            )
            for j, i in enumerate(ok)
            if truth[i]["class"] == "break"
        }
        if args.random:
            for key, draw in (("random_snvs", random_snvs), ("random_indels", random_indels)):
                fresh = draw(genome, args.random, spec.sequence_length, seed=12345)
                rnd = score(
                    runner, genome, fresh.variants, ScoringOptions(kinds=kinds),
                    calibration=calibration,
                )  # fmt: skip
                assert rnd.quantile is not None
                assert rnd.max_quantile is not None
                out[key] = {
                    "description": fresh.description,
                    "n": len(rnd.ok_index),
                    "quantile_median": round(float(np.median(rnd.quantile)), 4),
                    "max_quantile_median": round(float(np.median(rnd.max_quantile)), 4),
                }
        # explanations of the breakers
        breakers = [r for r in truth if r["class"] == "break"]
        if args.limit:
            breakers = breakers[: args.limit]
        # "jaspar"/"shipped": the server's ranking (weighted by the ISM of the variant's max
        # quantile feature); "...:sequence": the same databases, sequence alone
        modes = [(k, True) for k in dbs] + [(f"{k}:sequence", False) for k in dbs]
        hits: dict[str, list[bool]] = {k: [] for k, _ in modes}
        top3: dict[str, list[bool]] = {k: [] for k, _ in modes}
        fam1: dict[str, list[bool]] = {k: [] for k, _ in modes if k.startswith("jaspar")}
        fam3: dict[str, list[bool]] = {k: [] for k in fam1}
        misses: dict[str, dict[str, int]] = {}
        name_misses: dict[str, dict[str, int]] = {}
        set_site, set_locus, set_touch, set_size = [], [], [], []
        inside_top1, inside_frac, vtypes, any_top1, locus_top1, seen_v = [], [], [], [], [], []
        by_motif: dict[str, list[int]] = {}
        options = ScoringOptions(indels_as_written=True)
        for r in breakers:
            v = pb.Variant(chrom=r["chrom"], pos=int(r["pos"]), ref=r["ref"], alt=r["alt"])
            plan = plan_explain(
                genome, v, length=spec.sequence_length, features=spec.features,
                model=spec.name, window=args.window, options=options,
            )  # fmt: skip
            if not plan.ok:
                continue
            vtypes.append(r["vtype"])
            res = plan.finish(runner.predict(plan.tokens))
            feature = motif_feature(res.score.with_calibration(calibration))
            planted_family = families.get(r["motif_id"].split(".")[0], frozenset())
            for k, weighted in modes:
                db = dbs[k.split(":")[0]]
                found = (
                    plan.motif_calls(db, 3, res, feature) if weighted else plan.motif_calls(db, 3)
                )
                calls = [c for c, _ in found]
                names = [c.name.upper() for c in calls]
                hits[k].append(bool(names) and names[0] == r["motif"].upper())
                top3[k].append(r["motif"].upper() in names)
                if k in fam1:
                    same = [
                        n == r["motif"].upper()
                        or bool(planted_family & families.get(c.jaspar_id.split(".")[0], set()))
                        for n, c in zip(names, calls, strict=True)
                    ]
                    fam1[k].append(bool(same) and same[0])
                    fam3[k].append(any(same))
                    top_name = names[0] if names else "(none)"
                    if k == "jaspar" and not (same and same[0]):
                        got = misses.setdefault(r["motif"], {})
                        got[top_name] = got.get(top_name, 0) + 1
                    if k == "jaspar" and top_name != r["motif"].upper():
                        got = name_misses.setdefault(r["motif"], {})
                        got[top_name] = got.get(top_name, 0) + 1
            f = spec.features.index(r["affected_features"].split(",")[0])
            importance = np.abs(res.ref_ism[:, :, f]).max(axis=1)
            lo, hi = _site_of(sites, r["chrom"], int(r["pos"]), r["motif"])
            inside = (res.positions >= lo) & (res.positions <= hi)
            width = max(1, hi - lo + 1)
            top = np.argsort(-importance, kind="stable")[:width]
            inside_top1.append(bool(inside[top[0]]))
            in_locus = np.zeros(len(res.positions), dtype=bool)
            for a, b in _locus_of(sites, r["chrom"], int(r["pos"]), r["motif"]):
                in_locus |= (res.positions >= a) & (res.positions <= b)
            locus_top1.append(bool(in_locus[top[0]]))
            seen_v.append(seen.get((r["chrom"], r["pos"], r["ref"], r["alt"]), False))
            any_top1.append(bool(_in_any_site(sites, r["chrom"], res.positions)[top[0]]))
            # the important positions as a set: importance >= half the window's largest
            important = importance >= 0.5 * importance.max()
            set_size.append(int(important.sum()))
            set_site.append(bool((important & inside).sum() > important.sum() / 2))
            set_locus.append(bool((important & in_locus).sum() > important.sum() / 2))
            set_touch.append(bool((important & inside).any()))
            tally = by_motif.setdefault(r["motif"], [0, 0])
            tally[0] += 1
            tally[1] += int(inside[top[0]])
            inside_frac.append(float(inside[top].mean()))
    snv = np.array([t == "SNV" for t in vtypes])
    seen_a = np.array(seen_v, dtype=bool)
    for k in hits:
        h = np.array(hits[k])
        out[f"top_motif_is_planted_tf[{k}]"] = float(h.mean())
        out[f"top_motif_is_planted_tf[{k}]_snv"] = float(h[snv].mean())
        out[f"planted_tf_in_top3_calls[{k}]"] = float(np.mean(top3[k]))
    if families:
        for k in fam1:
            f1 = np.array(fam1[k])
            out[f"top_motif_is_planted_tf_or_family[{k}]"] = float(f1.mean())
            out[f"top_motif_is_planted_tf_or_family[{k}]_snv"] = float(f1[snv].mean())
            out[f"planted_tf_or_family_in_top3_calls[{k}]"] = float(np.mean(fam3[k]))
            out[f"top_motif_is_planted_tf_or_family[{k}]_seen"] = float(f1[seen_a].mean())
        out["family_misses_by_planted_tf[jaspar]"] = misses
        out["name_misses_by_planted_tf[jaspar]"] = name_misses
    out["ism_top_position_in_site"] = float(np.mean(inside_top1))
    out["ism_top_position_in_site_snv"] = float(np.array(inside_top1)[snv].mean())
    out["ism_top_position_in_any_planted_site"] = float(np.mean(any_top1))
    out["ism_top_position_in_planted_locus"] = float(np.mean(locus_top1))
    out["ism_top_position_in_planted_locus_snv"] = float(np.array(locus_top1)[snv].mean())
    out["breaks_seen_by_model"] = f"{int(seen_a.sum())}/{len(seen_a)}"
    out["ism_top_position_in_site_seen"] = float(np.array(inside_top1)[seen_a].mean())
    out["ism_top_position_in_planted_locus_seen"] = float(np.array(locus_top1)[seen_a].mean())
    out["ism_top_position_in_site_by_motif"] = {k: f"{v[1]}/{v[0]}" for k, v in by_motif.items()}
    out["ism_top_w_positions_in_site_mean"] = float(np.mean(inside_frac))
    seen_set = np.array(set_locus)[seen_a]
    out["ism_half_max_set_majority_in_site"] = float(np.mean(set_site))
    out["ism_half_max_set_majority_in_site_seen"] = float(np.array(set_site)[seen_a].mean())
    out["ism_half_max_set_majority_in_locus"] = float(np.mean(set_locus))
    out["ism_half_max_set_majority_in_locus_seen"] = float(seen_set.mean())
    out["ism_half_max_set_touches_site"] = float(np.mean(set_touch))
    out["ism_half_max_set_size_median"] = float(np.median(set_size))
    out["explained"] = len(vtypes)
    out["explained_snv"] = int(snv.sum())
    out["seconds"] = round(time.monotonic() - t0, 1)
    text = json.dumps(out, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
