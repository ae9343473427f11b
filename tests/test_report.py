"""Report layer: loading, accuracy, tables, paired differences, layout, figures and CLI on small hand-made TSVs.

Every expected number below is computed by hand from the rows written in the test."""

import argparse
import logging
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from report_helpers import abstain, cell, hopeless, ok, panel, write_tsv, wrong  # noqa: E402
from scipy.stats import binom  # noqa: E402

from densepure import report  # noqa: E402
from densepure.cli import report as report_cli
from densepure.core.smoothing import certified_accuracy, format_radius  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# sigma 0.25: correct at 0.8 (written from 0.7996), 0.5, 0.3; one abstention; one wrong with a large radius.
ROWS_S025 = [ok(0, format_radius(0.7996)), ok(20, "0.5"), ok(40, "0.3"), abstain(60), wrong(80, "0.9")]
# sigma 0.5: correct at 1.5, 1.2, 0.1, 0.2; one abstention.
ROWS_S05 = [ok(0, "1.5"), ok(20, "1.2"), ok(40, "0.1"), ok(60, "0.2"), abstain(80)]
# one-shot baseline, sigma 0.25: all correct at 0.3.
ROWS_BASE = [ok(i, "0.3") for i in (0, 20, 40, 60, 80)]


@pytest.fixture
def tsvs(tmp_path):
    d = tmp_path / "tsv"
    d.mkdir()
    return [
        write_tsv(d / "dp_025.tsv", ROWS_S025, sigma=0.25),
        write_tsv(d / "dp_05.tsv", ROWS_S05, sigma=0.5),
        write_tsv(d / "os_025.tsv", ROWS_BASE, method="onestep", sigma=0.25, b=1, K=1),
    ]


@pytest.fixture
def results(tsvs):
    return report.load_results(tsvs)


# --- loading -------------------------------------------------------------------------------------------------------
def test_load_results_concatenates_and_keys_methods(tmp_path, tsvs):
    extra = [write_tsv(tmp_path / "b1.tsv", ROWS_BASE, sigma=0.5, b=1, K=1),
             write_tsv(tmp_path / "car.tsv", ROWS_BASE, method="carlini", sigma=1.0, b=1, K=1)]
    df = report.load_results(tsvs + extra)
    assert len(df) == 25
    assert df["radius"].dtype == float and df.loc[0, "radius"] == 0.8 and df.loc[0, "radius_text"] == "0.8"
    keys = df.groupby(["method", "sigma", "b"])["method_key"].first().to_dict()
    # b-step DensePure; the DensePure code's one-shot (onestep, or densepure with b = 1); Carlini's own code
    assert keys == {("densepure", 0.25, 10): "densepure", ("densepure", 0.5, 10): "densepure",
                    ("densepure", 0.5, 1): "onestep", ("onestep", 0.25, 1): "onestep",
                    ("carlini", 1.0, 1): "carlini"}
    assert set(df["source"]) == {"densepure"}


def test_load_results_errors(tmp_path, tsvs):
    with pytest.raises(ValueError, match="no result files"):
        report.load_results([])
    with pytest.raises(ValueError, match="not found"):
        report.load_results([tmp_path / "missing.tsv"])
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(ValueError, match="empty result file"):
        report.load_results([tmp_path / "empty.tsv"])
    header_only = write_tsv(tmp_path / "header.tsv", [])
    with pytest.raises(ValueError, match="no rows"):
        report.load_results([header_only])
    # the same rows twice (nested image sets of one run) are kept once; differing rows are an error
    assert len(report.load_results([tsvs[0], tsvs[0]])) == 5
    changed = write_tsv(tmp_path / "changed.tsv", [ok(0, "0.9")], sigma=0.25)
    with pytest.raises(ValueError, match="image 0 has different results"):
        report.load_results([tsvs[0], changed])
    # a Cohen-format log is pointed at `densepure import`
    (tmp_path / "cohen.tsv").write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.5\t1\t0:00:01\n")
    with pytest.raises(ValueError, match="missing column.*densepure import cohen"):
        report.load_results([tmp_path / "cohen.tsv"])


def test_results_directories_are_searched_recursively(tmp_path, tsvs, caplog):
    caplog.set_level(logging.INFO, logger="densepure")
    nested = tmp_path / "runs" / "a" / "b"
    nested.mkdir(parents=True)
    write_tsv(nested / "deep.tsv", ROWS_S05, sigma=1.0)
    files = report.result_files([tsvs[0].parent, tmp_path / "runs"])
    assert [f.name for f in files] == ["dp_025.tsv", "dp_05.tsv", "os_025.tsv", "deep.tsv"]
    assert "runs: 1 result file(s)" in caplog.text
    other = tmp_path / "logs"
    (other / "x").mkdir(parents=True)
    (other / "x" / "noise_0.25.txt").write_text("idx\tlabel\n")
    with pytest.raises(ValueError, match=r"no \*.tsv result files under .*logs \(searched 2 folder\(s\); other "
                                         r"files: x/noise_0.25.txt\).*densepure import"):
        report.load_results([other])


def test_vote_columns_and_hopeless_rows(tmp_path):
    # the columns nA n stop may follow the setting; a hopeless row has an empty predict and radius
    rows = [ok(0, "0.5"), hopeless(1), abstain(2), wrong(3, "0.2")]
    votes = [(95, 100, "complete"), ("", 0, "hopeless"), (40, 60, "abstain"), (90, 100, "complete")]
    df = report.load_results([write_tsv(tmp_path / "v.tsv", rows, votes=votes)])
    assert df["predict"].isna().tolist() == [False, True, False, False]
    assert np.isnan(df.loc[1, "radius"]) and df.loc[1, "radius_text"] == ""
    assert df["nA"].tolist()[:1] == [95] and df["stop"].tolist() == ["complete", "hopeless", "abstain", "complete"]
    t = report.certified_accuracy_table(df, [0.0, 0.5])
    assert t["count"].tolist() == [1, 1] and t["n"].tolist() == [4, 4]  # the hopeless image counts nowhere
    bad = tmp_path / "bad.tsv"
    write_tsv(bad, [(1, 3, "", "", 1)], votes=[("", 0, "hopeless")])
    with pytest.raises(ValueError, match="image 1 has correct = 1 but no radius"):
        report.load_results([bad])


# --- certified accuracy and intervals ------------------------------------------------------------------------------
def test_certified_accuracy_table_by_hand(results):
    t = report.certified_accuracy_table(results, [0.0, 0.25, 0.5, 0.8, 0.81, 1.0])
    dp = t[(t["method_key"] == "densepure") & np.isclose(t["sigma"], 0.25)].set_index("radius")
    # correct rows: radii 0.8, 0.5, 0.3 (abstention and the wrong row never count) of n = 5
    assert dp["n"].tolist() == [5] * 6
    assert dp["count"].tolist() == [3, 3, 2, 1, 0, 0]
    assert dp["certified_accuracy"].tolist() == pytest.approx([60, 60, 40, 20, 0, 0])
    base = t[t["method_key"] == "onestep"].set_index("radius")["certified_accuracy"]
    assert base.tolist() == pytest.approx([100, 100, 0, 0, 0, 0])


def test_threshold_is_the_radius_as_written(tmp_path):
    # a computed 0.7996 is written '0.8' by the certify job (3 significant digits, as the reference) and counts at
    # r = 0.8; a log that writes 0.7996 itself certifies less than 0.8, and 0.8000 is 0.8
    for text, count in ((format_radius(0.7996), 1), ("0.7996", 0), ("0.8000", 1)):
        df = report.load_results([write_tsv(tmp_path / "t.tsv", [ok(0, text), ok(1, "0.799")])])
        t = report.certified_accuracy_table(df, [0.8])
        assert t["count"].tolist() == [count], text


def test_certified_at_is_the_reference_rule(results):
    """Per-image flags agree with densepure.core.smoothing.certified_accuracy (the one definition of the rule)."""
    for _, rows in results.groupby(["sigma", "method"]):
        flags = report.certified_at(rows, [0.0, 0.3, 0.5, 0.8, 1.2])
        correct = (rows["correct"] == 1) & (rows["predict"] != -1)
        for j, r in enumerate([0.0, 0.3, 0.5, 0.8, 1.2]):
            assert flags[:, j].mean() == certified_accuracy(rows["radius_text"].tolist(), correct.tolist(), r)


def test_max_certifiable_radius():
    # sigma Phi^-1(alpha^(1/N)): N = 1e4 -> 3.199 sigma (0.7996 at sigma 0.25, written 0.8); N = 1e5 -> 3.811 sigma
    assert report.max_certifiable_radius(0.25, 10_000, 0.001) == 0.8
    assert report.max_certifiable_radius(1.0, 100_000, 0.001) == 3.81
    assert np.isnan(report.max_certifiable_radius(0.25, np.nan, 0.001))


def test_table_cells_carry_ci_and_largest_radius(results):
    cells = report.table_cells(results, {"panels": [panel()]}, "tableA", allow_missing=True).cells
    c = cell(cells, method_key="densepure", sigma=0.25, radius=0.0)
    assert (c["n"], c["count"], c["certified_accuracy"]) == (5, 3, 60.0)
    # 95% Clopper-Pearson for 3 / 5, in percent: P(X >= 3 | low) = P(X <= 3 | high) = 0.025
    assert binom.sf(2, 5, c["ci_low"] / 100) == pytest.approx(0.025)
    assert binom.cdf(3, 5, c["ci_high"] / 100) == pytest.approx(0.025)
    assert c["n_expected"] == 5 and c["classifier"] == "vit-b16" and c["classifier_label"] == "ViT-B/16"
    # N = 100000, alpha 0.001: 3.811 sigma = 0.953 at sigma 0.25, so r = 1.0 lies beyond it
    assert c["max_radius"] == 0.953
    assert cell(cells, method_key="densepure", sigma=0.25, radius=1.0)["beyond_max_radius"]
    assert not cell(cells, method_key="densepure", sigma=0.5, radius=1.0)["beyond_max_radius"]


# --- artifacts -----------------------------------------------------------------------------------------------------
def test_table_a_cells_and_paired_difference(results):
    table = report.table_artifact(results, {"panels": [panel()]}, "tableA", allow_missing=True)
    cells = table.cells
    # hand values: sigma 0.25 Ours 60/60/40/20/0, sigma 0.5 Ours 80/40/40/40/40, Carlini (sigma 0.25) 100/100/0/0/0
    ours = cells[cells["method_key"] == "densepure"]
    assert ours[np.isclose(ours["sigma"], 0.25)]["certified_accuracy"].tolist() == [60, 60, 40, 20, 0]
    assert ours[np.isclose(ours["sigma"], 0.5)]["certified_accuracy"].tolist() == [80, 40, 40, 40, 40]
    carlini = cells[cells["method_key"] == "onestep"]
    assert carlini["certified_accuracy"].tolist() == [100, 100, 0, 0, 0] and set(carlini["method_label"]) == {"Carlini"}
    assert set(carlini["b"]) == {1} and set(carlini["K"]) == {1} and set(carlini["source_method"]) == {"onestep"}
    # r = 0: Ours certifies ids 0, 20, 40, Carlini all five: 3 both, 2 Carlini only -> -40, McNemar 2 (1/2)^2 = 0.5
    c0 = cell(cells, method_key="densepure", sigma=0.25, radius=0.0)
    assert c0["diff_vs_carlini"] == -40 and c0["mcnemar_p"] == 0.5
    diff, low, high = report.newcombe_paired(3, 0, 2, 0)
    assert (c0["diff_low"], c0["diff_high"]) == pytest.approx((100 * low, 100 * high))
    c5 = cell(cells, method_key="densepure", sigma=0.25, radius=0.5)
    assert c5["diff_vs_carlini"] == 40 and c5["mcnemar_p"] == 0.5  # ids 0, 20 only Ours; Carlini none
    assert np.isnan(cell(cells, method_key="densepure", sigma=0.5, radius=0.5)["diff_vs_carlini"])  # no baseline
    paired = table.paired
    assert len(paired) == 5 and set(paired["pair"]) == {"default"}
    p0 = paired[paired["radius"] == 0.0].iloc[0]
    assert (p0["both"], p0["first_only"], p0["second_only"], p0["neither"], p0["n"]) == (3, 0, 2, 0, 5)
    assert (p0["method_label_first"], p0["method_label_second"]) == ("Ours", "Carlini")


def test_spec_pairs_any_two_settings(tmp_path, tsvs):
    k10 = write_tsv(tmp_path / "k10.tsv", [ok(i, "0.6") for i in (0, 20, 40, 60, 80)], sigma=0.25, K=10)
    df = report.load_results(tsvs + [k10])
    spec = {"pairs": [[{"method": "densepure", "K": 40}, {"method": "densepure", "K": 10}]],
            "panels": [panel(sigmas=[0.25], Ks=[40, 10], radii=[0.0, 0.5])]}
    paired = report.table_artifact(df, spec, "tableX").paired
    mine = paired[paired["pair"] == "spec0"]
    # K = 40 certifies ids 0, 20, 40 at r = 0 and 0, 20 at 0.5; K = 10 all five at both
    assert mine[["K_first", "K_second"]].drop_duplicates().values.tolist() == [[40, 10]]
    assert mine["difference"].tolist() == [-40, -60]
    assert mine["second_only"].tolist() == [2, 3]
    with pytest.raises(ValueError, match="each side of a pair needs a `method`"):
        report.table_artifact(df, {**spec, "pairs": [[{"K": 40}, {"method": "densepure"}]]}, "tableX")


def test_pairs_use_only_shared_images(tmp_path, tsvs):
    base = write_tsv(tmp_path / "os.tsv", [ok(i, "0.3") for i in (0, 20)], method="onestep", b=1, K=1)
    df = report.load_results(tsvs[:2] + [base])
    p = report.table_artifact(df, {"panels": [panel(sigmas=[0.25], radii=[0.0])]}, "t").paired.iloc[0]
    assert (p["n"], p["unpaired"], p["both"]) == (2, 3, 2)


def test_image_subset_and_baseline_methods(tmp_path, tsvs):
    car = write_tsv(tmp_path / "car.tsv", [wrong(i, "0.3") for i in (0, 20, 40, 60, 80)], method="carlini",
                    sigma=0.25, b=1, K=1)
    b1 = write_tsv(tmp_path / "b1.tsv", [ok(i, "0.6") for i in (0, 20, 40, 60, 80)], sigma=0.25, b=1, K=1)
    df = report.load_results(tsvs + [car, b1])
    spec = {"panels": [panel(sigmas=[0.25], images={"ids": [0, 40, 60]}, radii=[0.0, 0.5],
                             methods=["densepure", "onestep", "carlini"])]}
    cells = report.table_cells(df, spec).cells
    assert cells["method_key"].unique().tolist() == ["onestep", "carlini", "densepure"]  # baselines first
    # ids 0, 40, 60 of sigma 0.25: correct at 0.8 and 0.3, then an abstention -> 2/3 at r = 0, 1/3 at r = 0.5
    ours = cells[cells["method_key"] == "densepure"]
    assert ours["n"].tolist() == [3, 3] and ours["count"].tolist() == [2, 1]
    # the onestep run is preferred over densepure with b = 1; Carlini's own code is a separate row
    onestep = cells[cells["method_key"] == "onestep"]
    assert onestep["certified_accuracy"].tolist() == [100, 0] and set(onestep["source_method"]) == {"onestep"}
    own = cells[cells["method_key"] == "carlini"]
    assert own["certified_accuracy"].tolist() == [0, 0] and set(own["method_label"]) == {"Carlini (own code)"}
    # without the onestep run, densepure with b = 1 stands for it
    cells = report.table_cells(report.load_results(tsvs[:2] + [b1]), spec, allow_missing=True).cells
    onestep = cells[cells["method_key"] == "onestep"]
    assert onestep["certified_accuracy"].tolist() == [100, 100] and set(onestep["source_method"]) == {"densepure"}


def test_ambiguous_runs_raise(tmp_path, tsvs):
    other = write_tsv(tmp_path / "fp16.tsv", ROWS_S025, sigma=0.25, precision="fp16")
    with pytest.raises(ValueError, match="differ in precision"):
        report.table_cells(report.load_results(tsvs + [other]), {"panels": [panel(sigmas=[0.25])]})


def test_a_setting_without_results_is_an_error_naming_it(results, caplog):
    # the spec asks for Carlini at sigma 0.5, which has no results: never a silent skip
    with pytest.raises(ValueError, match=r"no results for cifar10/vit-b16/onestep sigma=0.5 on 5 images"):
        report.table_cells(results, {"panels": [panel()]})
    cells = report.table_cells(results, {"panels": [panel()]}, allow_missing=True).cells
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert caplog.records[0].getMessage().startswith("no results for cifar10/vit-b16/onestep sigma=0.5")
    assert len(cells) == 15
    with pytest.raises(ValueError, match="no results for cifar10/beit-large/densepure sigma=0.25 b=10 K=40"):
        report.table_cells(results, {"panels": [panel(classifiers=["beit-large"], methods=["densepure"])]})
    with pytest.raises(ValueError, match="no panels"):
        report.table_cells(results, {})


def test_imported_methods_with_a_label_are_rows(tmp_path, tsvs):
    cohen = write_tsv(tmp_path / "cohen.tsv", [ok(i, "0.6") for i in (0, 20, 40, 60, 80)], method="cohen", b=1,
                      K=1, classifier="vit-b16", extra={"method_label": "RS (Cohen et al.)", "source": "import"})
    df = report.load_results(tsvs + [cohen])
    spec = {"panels": [panel(sigmas=[0.25], methods=["densepure", "cohen", "onestep"], radii=[0.0, 0.5])]}
    cells = report.table_cells(df, spec).cells
    assert cells["method_label"].unique().tolist() == ["Carlini", "RS (Cohen et al.)", "Ours"]
    assert cell(cells, method_key="cohen", radius=0.5)["certified_accuracy"] == 100
    # a method without a label anywhere is refused by name; a spec can label it
    plain = write_tsv(tmp_path / "plain.tsv", [ok(0, "0.6")], method="macer", b=1, K=1)
    df = report.load_results(tsvs + [plain])
    spec = {"panels": [panel(sigmas=[0.25], methods=["macer"], images=None, radii=[0.0])]}
    with pytest.raises(ValueError, match="method 'macer' has no display label"):
        report.table_cells(df, spec)
    spec["method_labels"] = {"macer": "MACER"}
    assert report.table_cells(df, spec).cells["method_label"].tolist() == ["MACER"]


def test_table1_max_over_sigma_with_matching_clean(results, tmp_path):
    paper = tmp_path / "table1.csv"
    pd.DataFrame({
        "table": "Table 1", "dataset": ["CIFAR-10", "CIFAR-10", "ImageNet", "CIFAR-10"],
        "method": ["RS", "Lee", "RS", "Ours"],
        "citation": ["Cohen et al., 2019", "Lee, 2021", "Cohen et al., 2019", ""],
        "method_key": ["rs", "lee", "rs", "densepure"], "off_the_shelf": ["no", "yes", "no", "yes"],
        "radius": [0.25, 0.25, 0.5, 0.25], "certified_accuracy": [61.0, 60.0, 49.0, 76.6],
        "clean_accuracy": [75.0, np.nan, 67.0, 87.6]}).to_csv(paper, index=False)
    spec = {"panels": [panel(radii=[0.25, 0.5, 0.75, 1.0])]}
    cells = report.table1(results, spec, paper_csv=paper, allow_missing=True).cells
    ours = cells[(cells["method_key"] == "densepure")].set_index("radius")
    # r = 0.25: 60 (sigma 0.25, clean 60) beats 40; r = 0.5: tie 40 / 40 -> higher clean: sigma 0.5 (80);
    # r = 0.75: 40 (sigma 0.5) beats 20; r = 1.0: 40 (sigma 0.5) beats 0
    assert ours["certified_accuracy"].tolist() == [60, 40, 40, 40]
    assert ours["sigma_matched"].tolist() == [0.25, 0.5, 0.5, 0.5]
    assert ours["clean_accuracy"].tolist() == [60, 80, 80, 80]
    assert ours["sigma"].isna().all() and ours["reproduced"].all()
    base = cells[cells["method_key"] == "onestep"].set_index("radius")
    assert base["certified_accuracy"].tolist() == [100, 0, 0, 0] and base["clean_accuracy"].tolist() == [100] * 4
    quoted = cells[~cells["reproduced"].astype(bool)]
    assert quoted["method_label"].tolist() == ["RS (Cohen et al., 2019)", "Lee (Lee, 2021)"]  # CIFAR-10 only
    assert quoted["certified_accuracy"].tolist() == [61.0, 60.0]
    assert cells["method_key"].tolist()[:2] == ["rs", "lee"]  # quoted rows first, as in the paper


def test_table1_pairs_the_best_sigma_cells(results):
    table = report.table_artifact(results, {"panels": [panel(radii=[0.25, 0.5])]}, "table1", allow_missing=True)
    c = cell(table.cells[table.cells["reproduced"].astype(bool)], method_key="densepure", radius=0.5)
    # Ours at r = 0.5 comes from sigma 0.5 (ids 0 and 20, radii 1.5 and 1.2) and Carlini (sigma 0.25, all at 0.3)
    # certifies none there: 2 Ours-only images of 5 -> +40
    assert c["sigma_matched"] == 0.5 and c["diff_vs_carlini"] == 40


def test_table1_default_paper_csv_quotes_baselines(results):
    cells = report.table1(results, {"panels": [panel(radii=[0.25])]}, allow_missing=True).cells
    rs = cells[(cells["method_key"] == "rs") & (cells["radius"] == 0.25)]
    assert rs["certified_accuracy"].tolist() == [61.0] and rs["clean_accuracy"].tolist() == [75.0]
    assert not {"densepure", "carlini", "onestep"} & set(cells.loc[~cells["reproduced"].astype(bool), "method_key"])


def test_table2_extra_ks(tmp_path, tsvs):
    k20 = write_tsv(tmp_path / "k20.tsv", [ok(i, "0.1") for i in (0, 20, 40, 60, 80)], sigma=0.25, K=20)
    df = report.load_results(tsvs + [k20])
    cells = report.table2(df, {"panels": [panel(sigmas=[0.25], extra_Ks=[20], radii=[0.0, 0.25])]}).cells
    ours = cells[cells["method_key"] == "densepure"]
    assert ours.groupby("K")["certified_accuracy"].apply(list).to_dict() == {20: [100, 0], 40: [60, 60]}
    assert ours.groupby("K")["main"].first().to_dict() == {20: False, 40: True}


# --- writers -------------------------------------------------------------------------------------------------------
def test_write_table_layouts(results, tmp_path):
    spec = {"source": "App. D.3, Table A", "panels": [panel(sigmas=[0.25])]}
    table = report.table_artifact(results, spec, "tableA")
    paths = report.write_table(table, "tableA", tmp_path / "out")
    assert [p.name for p in paths] == ["tableA.csv", "tableA.md", "tableA.tex", "tableA.html", "tableA_cells.csv",
                                       "tableA_paired.csv"]
    wide = pd.read_csv(paths[0], dtype=str, keep_default_na=False)
    assert list(wide.columns) == ["Method", "ε=0.0", "ε=0.25", "ε=0.5", "ε=0.75", "ε=1.0"]
    assert wide["Method"].tolist() == ["Carlini", "Ours"]  # baseline first
    # the paired difference with its interval; r = 1.0 lies beyond sigma 0.25's largest radius (0.953): dagger
    _, low, high = report.newcombe_paired(3, 0, 2, 0)
    assert wide.iloc[1, 1] == f"60.0 (-40.0 [{100 * low:+.1f}, {100 * high:+.1f}])"
    assert wide.iloc[0, 5] == "0.0†" and wide.iloc[1, 5] == "0.0†"  # no difference shown where nothing can count
    md = paths[1].read_text()
    assert md.startswith("**tableA (App. D.3, Table A): CIFAR-10, ViT-B/16, σ = 0.25; Ours b = 10, K = 40; N0 = 100, "
                         "N = 100000, α = 0.001; 5 images**\n")
    assert "Newcombe" in md and "†: beyond the largest radius" in md
    tex = paths[2].read_text()
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\multicolumn{5}{c}", r"$^\dagger$"):
        assert token in tex
    assert "<table>" in paths[3].read_text() and "CIFAR-10, ViT-B/16" in paths[3].read_text()
    back = pd.read_csv(paths[4])
    assert len(back) == len(table.cells) and {"n", "ci_low", "ci_high", "max_radius"} <= set(back.columns)
    paired = pd.read_csv(paths[5])
    assert paired["mcnemar_p"].tolist()[0] == 0.5


def test_write_table1_groups_columns_by_dataset(results, tmp_path):
    paper = tmp_path / "table1.csv"
    pd.DataFrame({"table": "Table 1", "dataset": ["CIFAR-10", "ImageNet"], "method": ["RS", "RS"],
                  "citation": ["Cohen et al., 2019"] * 2, "method_key": ["rs", "rs"], "off_the_shelf": ["no", "no"],
                  "radius": [0.25, 3.0], "certified_accuracy": [61.0, 12.0], "clean_accuracy": [75.0, 44.0]}
                 ).to_csv(paper, index=False)
    spec = {"panels": [panel(radii=[0.25, 0.5]), panel(dataset="imagenet", radii=[3.0])]}
    # no ImageNet results: ImageNet cells quoted only (with --allow-missing's warnings)
    table = report.table_artifact(results, spec, "table1", paper_csv=paper, allow_missing=True)
    paths = report.write_table(table, "table1", tmp_path)
    wide = pd.read_csv(paths[0], dtype=str, keep_default_na=False)
    assert list(wide.columns) == ["Method", "Source", "Off-the-shelf", "CIFAR-10 ε=0.25", "CIFAR-10 ε=0.5",
                                  "ImageNet ε=3.0"]
    assert wide.iloc[0].tolist() == ["RS (Cohen et al., 2019)", "quoted from the paper", "no", "(75.0) 61.0", "-",
                                     "(44.0) 12.0"]
    assert wide.iloc[2, :3].tolist() == ["Ours", "reproduced here", "yes"]
    assert wide.iloc[2, 3].startswith("(60.0) 60.0 (-40.0 [")
    assert r"\cmidrule(lr){4-5}" in paths[2].read_text()
    assert "Quoted from the paper: RS (Cohen et al., 2019)." in paths[1].read_text()


def test_compact_cells_show_the_difference_only_where_its_interval_excludes_zero(tmp_path):
    # 20 images: Ours certifies each at 0.5, the baseline each at 0.3 (and one image less at r = 0)
    ours = write_tsv(tmp_path / "dp.tsv", [ok(i, "0.5") for i in range(20)], sigma=0.25)
    base = write_tsv(tmp_path / "os.tsv", [ok(i, "0.3") for i in range(19)] + [wrong(19, "0.3")], method="onestep",
                     b=1, K=1)
    spec = {"panels": [panel(sigmas=[0.25], images={"start": 0, "stop": 20, "step": 1, "n": 20},
                             radii=[0.0, 0.4])]}
    table = report.table_artifact(report.load_results([ours, base]), spec, "tableA")
    full, compact = report.table_layout(table.cells)[2], report.table_layout(table.cells, "compact")[2]
    cells = table.cells[table.cells["method_key"] == "densepure"].set_index("radius")
    assert cells.loc[0.0, "diff_low"] < 0 < cells.loc[0.0, "diff_high"]  # +5 points: interval includes 0
    assert cells.loc[0.4, "diff_low"] > 0  # +100 points: interval excludes 0
    assert compact.iloc[1, 1:].tolist() == ["100.0", "100.0 (+100.0)"]
    assert full.iloc[1, 1].startswith("100.0 (+5.0 [") and full.iloc[1, 2].startswith("100.0 (+100.0 [")


def test_tables_default_to_compact_text_and_keep_the_csv_full(results, tmp_path):
    table = report.table_artifact(results, {"panels": [panel(sigmas=[0.25])]}, "tableA")
    compact = report.write_table(table, "tableA", tmp_path / "c")
    full = report.write_table(table, "tableA", tmp_path / "f", style="full")
    assert compact[0].read_text() == full[0].read_text()  # the CSV holds every difference with its interval
    assert "[" in full[1].read_text().split("| Ours")[1] and "[" not in compact[1].read_text().split("| Ours")[1]
    assert "excludes 0" in compact[1].read_text() and "excludes 0" not in full[1].read_text()
    with pytest.raises(ValueError, match="--style: expected one of compact, full"):
        report.write_table(table, "tableA", tmp_path, style="wide")


def test_latex_table_has_a_caption(results, tmp_path):
    table = report.table_artifact(results, {"source": "Table A", "panels": [panel(sigmas=[0.25])]}, "tableA")
    tex = report.write_table(table, "tableA", tmp_path)[2].read_text()
    caption = [line for line in tex.splitlines() if line.startswith(r"\caption{")]
    assert len(caption) == 1 and caption[0].startswith(r"\caption{tableA (Table A): CIFAR-10, ViT-B/16, $\sigma$")
    assert tex.index(r"\begin{table}") < tex.index(r"\caption{") < tex.index(r"\begin{tabular}")
    assert tex.rstrip().endswith(r"\end{table}")


def test_latex_table_has_a_label(results, tmp_path):
    table = report.table_artifact(results, {"panels": [panel(sigmas=[0.25])]}, "tableA")
    tex = report.write_table(table, "tableA", tmp_path)[2].read_text()
    assert [line for line in tex.splitlines() if line.startswith(r"\label")] == [r"\label{tab:tableA}"]


def test_latex_table_prints_math_minus_signs(results, tmp_path):
    table = report.table_artifact(results, {"panels": [panel(sigmas=[0.25])]}, "tableA")
    tex = report.write_table(table, "tableA", tmp_path, style="full")[2].read_text()
    body = tex[tex.index(r"\midrule"):tex.index(r"\bottomrule")]
    assert "($-$40.0 [$-$" in body  # Ours minus Carlini at r = 0: -40 points
    assert not re.search(r"(?<![\w$])-\d", tex)  # no number keeps a hyphen for its minus
    from densepure.report.layout import _tex_escape

    assert _tex_escape("CIFAR-10, WRN28-10: -3.3 [-5.1, +2.0]") == "CIFAR-10, WRN28-10: $-$3.3 [$-$5.1, +2.0]"


def test_cli_table_style_option(tsvs, tmp_path):
    import subprocess
    import sys

    args = [sys.executable, "-m", "densepure", "table", "--artifact", "all", "--results", *map(str, tsvs),
            "--radii", "0", "0.5", "--outdir"]
    compact = subprocess.run([*args, str(tmp_path / "c")], capture_output=True, text=True)
    full = subprocess.run([*args, str(tmp_path / "f"), "--style", "full"], capture_output=True, text=True)
    assert compact.returncode == 0 and full.returncode == 0, compact.stderr + full.stderr
    assert (tmp_path / "c/all.csv").read_text() == (tmp_path / "f/all.csv").read_text()
    assert (tmp_path / "c/all.md").read_text() != (tmp_path / "f/all.md").read_text()
    bad = subprocess.run([*args, str(tmp_path), "--style", "wide"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--style" in bad.stderr and "Traceback" not in bad.stderr


# --- figures -------------------------------------------------------------------------------------------------------
@pytest.fixture
def ablation_results(tmp_path, tsvs):
    d = tmp_path / "abl"
    d.mkdir()
    extra = []
    for b in (2, 10):
        for k in (1, 3, 10, 40):
            if (b, k) == (10, 40):
                continue
            rows = [ok(i, format_radius(0.1 * (i / 20 + 1) * (1 + k / 40))) for i in (0, 20, 40, 60)] + [abstain(80)]
            extra.append(write_tsv(d / f"b{b}_k{k}.tsv", rows, sigma=0.25, b=b, K=k))
    return report.load_results(tsvs + extra)


def legend_texts(fig) -> list[str]:
    """The texts of the figure's one legend (no panel has its own)."""
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    return [t.get_text() for t in fig.legends[0].get_texts()]


def _nonempty(paths):
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000, p


def test_curves_figure_with_bands_and_largest_radius(results, tmp_path):
    spec = {"panels": [panel(radii="curve", max_radius=1.5)]}
    fig, data = report.panels_figure(results, spec, title="test", allow_missing=True, paper=False, bands="on")
    paths = report.save_figure(fig, "curves", tmp_path)
    _nonempty(paths)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    ours = data[(data["method_key"] == "densepure") & np.isclose(data["sigma"], 0.25)].set_index("radius")
    assert len(ours) == 151 and ours.loc[0.8, "certified_accuracy"] == 20 and ours.loc[0.81, "certified_accuracy"] == 0
    assert not ours.loc[0.95, "beyond_max_radius"] and ours.loc[0.96, "beyond_max_radius"]  # 0.953 for N = 1e5
    ax = fig.axes[0]
    assert ax.get_xlabel() == "radius (L2)" and ax.get_ylabel() == "certified accuracy (%)"
    assert legend_texts(fig) == ["σ = 0.25", "σ = 0.5", "Ours (b = 10, K = 40)", "Carlini (one-shot)"]
    lines = [line for line in ax.get_lines() if line.get_linestyle() in ("-", "--")]
    # the sigma 0.25 curves stop at 0.95 (the last grid radius they can reach), not at 1.5
    assert max(line.get_xdata().max() for line in lines if line.get_color() == lines[0].get_color()) == 0.95
    # one 95% band per curve, drawn while the accuracy is above zero (and one step after)
    bands = [b.get_paths()[0].vertices[:, 0].max() for b in ax.collections]
    assert sorted(bands) == pytest.approx([0.31, 0.81, 1.5])  # last images at 0.3 (Carlini), 0.8 and 1.5


def test_a_curve_that_ends_above_zero_gets_a_bar(tmp_path):
    # N = 100 at sigma 0.5: nothing beyond 0.5 Phi^-1(0.001^(1/100)) = 0.75 can be certified; 2 images reach it
    tsv = write_tsv(tmp_path / "t.tsv", [ok(0, "0.75"), ok(20, "0.75"), ok(40, "0.3"), abstain(60)], sigma=0.5, N=100)
    spec = {"panels": [panel(sigmas=[0.5], methods=["densepure"], images=None, radii="curve", max_radius=1.0)]}
    fig, data = report.panels_figure(report.load_results([tsv]), spec, paper=False)
    ax = fig.axes[0]
    assert "largest certifiable radius" in legend_texts(fig)
    bar = [line for line in ax.get_lines() if line.get_marker() == "|"]
    assert len(bar) == 1 and bar[0].get_xydata().tolist() == [[0.75, 50.0]]
    assert data.loc[data["radius"] == 0.76, "beyond_max_radius"].tolist() == [True]


def test_curves_figure_draws_extra_ks(tmp_path, tsvs):
    k20 = write_tsv(tmp_path / "k20.tsv", [ok(i, "0.1") for i in (0, 20, 40, 60, 80)], sigma=0.25, K=20)
    df = report.load_results(tsvs + [k20])
    spec = {"panels": [panel(sigmas=[0.25], extra_Ks=[20], radii="curve", max_radius=0.5)]}
    fig, data = report.panels_figure(df, spec, paper=False)
    assert sorted(data.loc[data["method_key"] == "densepure", "K"].unique()) == [20, 40]
    assert "Ours (b = 10, K = 20)" in legend_texts(fig)
    assert "-." in {line.get_linestyle() for line in fig.axes[0].get_lines()}


def test_k_ablation_figure(ablation_results, tmp_path):
    p = panel(sigmas=[0.25], Ks=[1, 3, 40], radii=[0.0, 0.25])
    fig, data = report.panels_figure(ablation_results, {"panels": [p]}, paper=False)
    _nonempty(report.save_figure(fig, "k", tmp_path))
    ours = data[data["method_key"] == "densepure"]
    assert sorted(ours["K"].unique()) == [1, 3, 40]
    assert fig.axes[0].get_xlabel() == "number of votes K"
    assert "Carlini (one-shot)" in legend_texts(fig)
    assert len(fig.axes[0].containers) == 2  # one error-bar series per radius


def test_b_ablation_figure_with_K_per_b(ablation_results, tmp_path):
    p = panel(sigmas=[0.25], bs=[2, 10], Ks=[1, 10, 40], mv_K={2: 10, 10: 40}, radii="curve", max_radius=0.5)
    fig, data = report.panels_figure(ablation_results, {"panels": [p]}, paper=False)
    _nonempty(report.save_figure(fig, "b", tmp_path))
    assert set(zip(data["b"], data["K"])) == {(1, 1), (2, 1), (2, 10), (10, 1), (10, 40)}
    assert legend_texts(fig) == ["b = 1, Carlini (one-shot)", "b = 2 (MV: K = 10)", "b = 10 (MV: K = 40)",
                                 "with MV (K > 1)", "without MV (K = 1)"]
    p = panel(sigmas=[0.25], bs=[2, 10], Ks=[1, 40], radii="curve", max_radius=0.5)
    fig, data = report.panels_figure(ablation_results, {"panels": [p]}, paper=False)
    assert set(zip(data["b"], data["K"])) == {(1, 1), (2, 1), (2, 40), (10, 1), (10, 40)}


def test_figures_draw_the_papers_numbers(tmp_path):
    """A CIFAR-10 ViT sigma 0.25 run on the paper's 500 ids gets Table A's points; K ablation on the ImageNet ids
    gets the reference plot data's points."""
    ids = range(0, 10000, 20)
    dp = write_tsv(tmp_path / "dp.tsv", [ok(i, "0.5") for i in ids], sigma=0.25)
    base = write_tsv(tmp_path / "os.tsv", [ok(i, "0.3") for i in ids], method="onestep", b=1, K=1)
    images = {"name": "cifar10_main", "start": 0, "stop": 10000, "step": 20, "n": 500}
    spec = {"panels": [panel(sigmas=[0.25], images=images, radii="curve", max_radius=1.0)]}
    fig, _ = report.panels_figure(report.load_results([dp, base]), spec)
    ax = fig.axes[0]
    def points(ax, marker):
        lines = [line for line in ax.get_lines() if line.get_marker() == marker and line.get_linestyle() == "None"]
        return sorted((float(x), float(y)) for line in lines for x, y in zip(line.get_xdata(), line.get_ydata()))

    # Table A, sigma 0.25: Ours (circles) 87.6 / 76.6 / 64.6 / 50.4 / 0.0, Carlini (squares) 88.0 / 73.8 / ...
    assert points(ax, "o") == [(0.0, 87.6), (0.25, 76.6), (0.5, 64.6), (0.75, 50.4), (1.0, 0.0)]
    assert points(ax, "s")[:2] == [(0.0, 88.0), (0.25, 73.8)]
    legend = legend_texts(fig)
    assert "paper: Ours (500 images)" in legend and "paper: Carlini" in legend
    imagenet = [write_tsv(tmp_path / f"in{k}.tsv", [ok(i, "0.3") for i in range(0, 50000, 500)], dataset="imagenet",
                          classifier="beit-large-512", sigma=0.25, K=k, N=10000) for k in (1, 40)]
    spec = {"panels": [panel(dataset="imagenet", classifiers=["beit-large"], sigmas=[0.25], Ks=[1, 40],
                             methods=["densepure"], radii=[0.0, 0.5],
                             images={"start": 0, "stop": 50000, "step": 500, "n": 100})]}
    fig, _ = report.panels_figure(report.load_results(imagenet), spec)
    xy = [(min((1, 40), key=lambda k: abs(np.log(x / k))), y) for x, y in points(fig.axes[0], "o")]  # dodged K
    assert (1, 79.0) in xy and (40, 80.0) in xy  # Figure 4 (left), r = 0: K = 1 79%, K = 40 80%


def test_write_figure_mixed_panels(ablation_results, tmp_path):
    spec = {"source": "Figure G-like", "panels": [
        panel(name="left", sigmas=[0.25], Ks=[1, 3, 40], methods=["densepure"], radii=[0.0, 0.25]),
        panel(name="right", sigmas=[0.25], bs=[2, 10], Ks=[1, 40], radii="curve", max_radius=1.0)]}
    paths = report.write_figure(ablation_results, spec, "figG", tmp_path, run="default")
    _nonempty(paths[:2])
    data = pd.read_csv(paths[2])
    assert set(data["kind"]) == {"k_ablation", "b_ablation"} and set(data["panel"]) == {"left", "right"}


def test_figure_without_results_raises(results):
    with pytest.raises(ValueError, match="no results for imagenet"):
        report.panels_figure(results, {"panels": [panel(dataset="imagenet", radii="curve")]})


# --- figures ready for a paper: titles, one legend, 0% curves, radius axis, bands -------------------------------------
def _bands(ax) -> int:
    """Number of 95% bands (filled areas) drawn on a panel."""
    from matplotlib.collections import PolyCollection

    return sum(isinstance(c, PolyCollection) for c in ax.collections)


def test_a_figure_has_one_legend_for_all_its_panels(ablation_results):
    spec = {"panels": [panel(name="left", sigmas=[0.25], Ks=[1, 3, 40], methods=["densepure"], radii=[0.0, 0.25]),
                       panel(name="right", sigmas=[0.25], bs=[2, 10], Ks=[1, 40], radii="curve", max_radius=1.0)]}
    fig, _ = report.panels_figure(ablation_results, spec, paper=False)
    labels = legend_texts(fig)
    assert "ε = 0.0" in labels and "b = 2" in labels and len(labels) == len(set(labels))


def test_titles_name_no_run_and_print_b_and_K_as_integers(ablation_results, tmp_path):
    spec = {"source": "Figure G-like", "panels": [
        panel(sigmas=[0.25], bs=[10.0], Ks=[1.0, 3.0, 40.0], methods=["densepure"], radii=[0.0, 0.25])]}
    paths = report.write_figure(ablation_results, spec, "figG", tmp_path, run="default")
    fig, _ = report.panels_figure(ablation_results, spec, title=report.figures.figure_title(spec, "figG"),
                                  paper=False)
    assert fig.get_suptitle() == "Figure G-like"
    assert fig.axes[0].get_title() == "CIFAR-10 · ViT-B/16 · σ = 0.25 · b = 10 · 5 images"
    from PIL import Image

    assert Image.open(paths[0]).text.get("Subject") == "run default"  # the run is in the metadata, not drawn
    curves = {"panels": [panel(sigmas=[0.25], bs=[10.0], Ks=[40.0], radii="curve", max_radius=1.0)]}
    fig, _ = report.panels_figure(ablation_results, curves, paper=False)
    assert "Ours (b = 10, K = 40)" in legend_texts(fig)


def test_a_curve_that_is_zero_everywhere_is_named_in_the_legend(tmp_path, tsvs):
    zero = write_tsv(tmp_path / "zero.tsv", [wrong(i, "0.4") for i in (0, 20, 40, 60, 80)], sigma=1.0)
    results = report.load_results(tsvs + [zero])
    spec = {"panels": [panel(sigmas=[0.25, 1.0], methods=["densepure"], radii="curve", max_radius=2.0)]}
    fig, data = report.panels_figure(results, spec, paper=False)
    ours = data[np.isclose(data["sigma"], 1.0)]
    assert (ours["certified_accuracy"] == 0).all()
    labels = legend_texts(fig)
    assert "Ours (b = 10, K = 40), σ = 1.0 (0% at every radius)" in labels
    assert not any("0.25 (0%" in label for label in labels)  # sigma 0.25 certifies images


def test_the_radius_axis_ends_shortly_after_the_last_nonzero_value(results):
    spec = {"panels": [panel(sigmas=[0.25], radii="curve", max_radius=4.0)]}
    fig, data = report.panels_figure(results, spec, paper=False)
    last = data.loc[data["certified_accuracy"] > 0, "radius"].max()
    assert last == 0.8  # the image certified at 0.8 (sigma 0.25)
    left, right = fig.axes[0].get_xlim()
    assert left == 0 and last < right <= last * 1.1 + 0.05 and right < 4.0
    spec = {"panels": [panel(sigmas=[0.25], radii="curve", max_radius=0.5)]}  # the data go beyond: max_radius
    fig, _ = report.panels_figure(results, spec, paper=False)
    assert fig.axes[0].get_xlim() == (0, 0.5)


def test_bands_are_off_by_default_where_curves_crowd_and_can_be_turned_on(results):
    three = {"panels": [panel(radii="curve", max_radius=1.5)]}  # 3 curves: Ours at two sigmas and Carlini
    fig, _ = report.panels_figure(results, three, paper=False, allow_missing=True)
    assert _bands(fig.axes[0]) == 0
    fig, _ = report.panels_figure(results, three, paper=False, allow_missing=True, bands="on")
    assert _bands(fig.axes[0]) == 3
    fig, _ = report.panels_figure(results, {**three, "bands": True}, paper=False, allow_missing=True)  # `bands: on`
    assert _bands(fig.axes[0]) == 3
    one = {"panels": [panel(sigmas=[0.5], methods=["densepure"], radii="curve", max_radius=1.5)]}
    fig, _ = report.panels_figure(results, one, paper=False)
    assert _bands(fig.axes[0]) == 1  # a single curve keeps its band
    fig, _ = report.panels_figure(results, {**one, "bands": "off"}, paper=False)
    assert _bands(fig.axes[0]) == 0
    with pytest.raises(ValueError, match="spec key `bands`: expected one of auto, on, off, got 'sometimes'"):
        report.panels_figure(results, {**one, "bands": "sometimes"}, paper=False)


def test_auto_bands_leave_out_two_curves_whose_bands_overlap_over_most_radii():
    from densepure.report.figure_layout import show_bands

    def curve(acc, low, high):
        return pd.DataFrame({"radius": [0.0, 0.1, 0.2], "certified_accuracy": acc, "ci_low": low, "ci_high": high})

    a = curve([80, 60, 40], [70, 50, 30], [90, 70, 50])
    near = curve([78, 58, 38], [68, 48, 28], [88, 68, 48])
    far = curve([20, 10, 5], [10, 5, 1], [30, 15, 9])
    assert not show_bands([a, near]) and show_bands([a, far]) and show_bands([a, near], "on")


def test_k_ablation_error_bars_follow_the_bands_option(ablation_results):
    p = {"panels": [panel(sigmas=[0.25], Ks=[1, 3, 40], radii=[0.0, 0.25])]}
    assert len(report.panels_figure(ablation_results, p, paper=False)[0].axes[0].containers) == 2
    assert len(report.panels_figure(ablation_results, p, paper=False, bands="off")[0].axes[0].containers) == 0


def test_cli_figure_bands_option(tsvs, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    args = [sys.executable, "-m", "densepure", "figure", "--artifact", "curves", "--results", str(tsvs[0].parent),
            "--outdir", str(out)]
    done = subprocess.run([*args, "--bands", "on"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "curves.png").stat().st_size > 1000
    bad = subprocess.run([*args, "--bands", "maybe"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--bands" in bad.stderr and "Traceback" not in bad.stderr


# --- specs ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["paper.yaml"])
def test_config_specs_resolve_and_have_known_kinds(name):
    path = REPO / "config" / name
    kinds = {}
    for artifact in ("fig3", "fig4_left", "fig4_right", "figA", "figB", "figC", "figD", "figE", "figF", "figG"):
        spec = report.load_spec(path, artifact)
        kinds[artifact] = [report.panel_kind(p) for p in spec["panels"]]
        assert all(isinstance(p["images"], dict) and "stop" in p["images"] for p in spec["panels"])
    assert kinds["fig3"] == ["curves", "curves"] and kinds["fig4_left"] == ["k_ablation"]
    assert kinds["fig4_right"] == ["b_ablation"] and kinds["figG"] == ["k_ablation", "b_ablation"]
    images = report.load_spec(path, "tableA")["panels"][0]["images"]
    assert images["n"] == 500 and report.image_ids(images) == set(range(0, 10000, 20))
    with pytest.raises(ValueError, match="unknown artifact 'nope'"):
        report.load_spec(path, "nope")


@pytest.mark.parametrize("name", ["paper.yaml"])
def test_config_specs_name_only_methods_with_results(name):
    """The paper's Carlini rows are method onestep: a spec saying `carlini` would ask for Carlini et al.'s own code
    path, which config/paper.yaml never runs."""
    text = (REPO / "config" / name).read_text()
    for artifact in ("table1", "tableA", "tableB", "table2", "fig3", "fig4_right", "figC", "figD", "figE", "figF"):
        methods = {m for p in report.load_spec(REPO / "config" / name, artifact)["panels"] for m in p["methods"]}
        assert methods <= {"densepure", "onestep"}, (name, artifact, methods)
    assert "carlini]" not in text


@pytest.mark.parametrize("name", ["paper.yaml"])
def test_b_ablation_figures_draw_what_the_reference_drew(name):
    """Figures C and D: b = 2 with K = 10 (CIFAR-10) and K = 30 (ImageNet), b = 10 with K = 40 (reference plot files)."""
    from densepure.report.spec import mv_K

    for artifact in ("figC", "figD"):
        cifar, imagenet = report.load_spec(REPO / "config" / name, artifact)["panels"]
        assert (mv_K(cifar, 2), mv_K(cifar, 10)) == (10, 40)
        assert (mv_K(imagenet, 2), mv_K(imagenet, 10)) == (30, 40)
        for p in (cifar, imagenet):
            assert {mv_K(p, b) for b in p["bs"]} <= set(p["Ks"])  # the grid aggregates every K drawn


def test_image_sets_from_dataset_strings(tmp_path):
    spec_file = tmp_path / "c.yaml"
    spec_file.write_text(yaml.safe_dump({
        "datasets": {"cifar10": {"image_sets": {"tiny": "0:100:20", "few": "0,40"}}},
        "artifacts": {"t": {"panels": [panel(images="tiny"), panel(images="few")]}}}))
    a, b = report.load_spec(spec_file, "t")["panels"]
    assert report.image_ids(a["images"]) == {0, 20, 40, 60, 80} and a["images"]["n"] == 5
    assert report.image_ids(b["images"]) == {0, 40} and b["images"]["n"] == 2
    with pytest.raises(ValueError, match="unknown image set 'other'"):
        report.resolve_spec({"panels": [panel(images="other")]}, {})


# --- CLI -----------------------------------------------------------------------------------------------------------
def _parser():
    parser = argparse.ArgumentParser(prog="densepure")
    report_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_table_and_figure(tsvs, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="densepure")
    spec_file = tmp_path / "paper.yaml"
    spec_file.write_text(yaml.safe_dump({
        "image_sets": {"tiny": {"start": 0, "stop": 100, "step": 20, "n": 5}},
        "artifacts": {"tableA": {"panels": [panel(images="tiny", sigmas=[0.25])]},
                      "fig3": {"source": "Figure 3",
                               "panels": [panel(images="tiny", sigmas=[0.25], radii="curve", max_radius=1.0)]}}}))
    parser = _parser()
    out = tmp_path / "out"
    common = ["--spec", str(spec_file), "--results", str(tsvs[0].parent), "--outdir", str(out)]
    assert report_cli.run_report(parser.parse_args(["table", "--artifact", "tableA", *common])) == 0
    assert report_cli.run_report(parser.parse_args(["figure", "--artifact", "fig3", "--run", "default", *common])) == 0
    _nonempty([out / "fig3.png", out / "fig3.pdf"])
    for name in ("tableA.tex", "tableA.html", "tableA_cells.csv", "tableA_paired.csv"):
        assert (out / name).is_file()
    err = caplog.text
    assert "tsv: 3 result file(s)" in err and "read 15 image rows of 3 setting(s) from 3 file(s)" in err


def test_cli_figure_without_spec_gives_tiny_radii_a_readable_axis(tmp_path):
    """Without --spec each setting's curve runs at least to its sigma, so radii of 0.001-0.012 get a grid of 51 points
    and an axis to 0.05 (trimmed to the data), not one grid step on an axis ending at 0.0126."""
    from densepure.report.figure_layout import x_limit

    tsv = write_tsv(tmp_path / "t.tsv", [ok(0, "0.004"), ok(1, "0.012"), wrong(2, "0.1"), ok(3, "0.001")], sigma=0.5)
    args = _parser().parse_args(["figure", "--artifact", "curves", "--results", str(tsv), "--outdir",
                                 str(tmp_path / "out")])
    assert report_cli.run_report(args) == 0
    data = pd.read_csv(tmp_path / "out" / "curves_data.csv")
    assert len(data) == 51 and data["radius"].max() == pytest.approx(0.5)
    assert data.loc[data["radius"] == 0.01, "certified_accuracy"].item() == 25.0
    assert x_limit([data], data["max_radius"].iloc[0]) == pytest.approx(0.05)


def test_cli_table_without_spec_shows_every_setting(tsvs, tmp_path):
    args = _parser().parse_args(["table", "--artifact", "all", "--results", *map(str, tsvs), "--outdir",
                                 str(tmp_path), "--radii", "0", "0.5"])
    assert report_cli.run_report(args) == 0
    wide = pd.read_csv(tmp_path / "all.csv", dtype=str, keep_default_na=False)
    assert wide[["Method", "σ"]].values.tolist() == [["Carlini", "0.25"], ["Ours", "0.25"], ["Ours", "0.5"]]
    assert list(wide.columns) == ["Method", "σ", "ε=0.0", "ε=0.5"]
    assert wide.iloc[1, 2].startswith("60.0 (-40.0 [") and wide.iloc[2, 2] == "80.0"  # paired within a sigma
    assert (tmp_path / "all.md").read_text().startswith("**all (every setting of the results): CIFAR-10, ViT-B/16, "
                                                        "σ = 0.25, 0.5; Ours b = 10, K = 40;")


def test_cli_errors(tsvs, tmp_path):
    spec_file = tmp_path / "paper.yaml"
    spec_file.write_text(yaml.safe_dump({"artifacts": {"tableA": {"panels": [panel()]}}}))
    parser = _parser()

    def run(*argv):
        return report_cli.run_report(parser.parse_args(list(argv)))

    common = ["--spec", str(spec_file), "--outdir", str(tmp_path / "o")]
    with pytest.raises(ValueError, match="unknown artifact 'tableZ'"):
        run("table", "--artifact", "tableZ", "--results", str(tsvs[0]), *common)
    with pytest.raises(ValueError, match="unknown artifact 'fig9'"):
        run("figure", "--artifact", "fig9", "--results", str(tsvs[0]), *common)
    with pytest.raises(ValueError, match="result file not found"):
        run("table", "--artifact", "tableA", "--results", str(tmp_path / "none.tsv"), *common)
    with pytest.raises(ValueError, match="spec file not found"):
        run("table", "--artifact", "tableA", "--results", str(tsvs[0]), "--spec", str(tmp_path / "x.yaml"),
            "--outdir", str(tmp_path))
    with pytest.raises(ValueError, match="no results for cifar10/vit-b16/onestep sigma=0.5"):
        run("table", "--artifact", "tableA", "--results", *map(str, tsvs), *common)
