"""Report layer: tables, intervals, paper comparison, figures and CLI on small hand-made TSVs (offline, fast).

Every expected number below is computed by hand from the rows written in the test."""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from scipy.stats import binom  # noqa: E402

from densepure import report  # noqa: E402
from densepure.smoothing import format_radius  # noqa: E402

HEADER = "idx label predict radius correct time dataset classifier method sigma b K N0 N alpha precision".split()
REPO = Path(__file__).resolve().parents[1]


def write_tsv(path: Path, rows, dataset="cifar10", classifier="vit-b16-cifar10", method="densepure", sigma=0.25,
              b=10, K=40, N=100000, precision="fp32") -> Path:
    """rows: (idx, label, predict, radius text, correct)."""
    lines = ["\t".join(HEADER)]
    for idx, label, pred, radius, correct in rows:
        lines.append("\t".join(map(str, [idx, label, pred, radius, correct, "0:00:01", dataset, classifier, method,
                                         sigma, b, K, 100, N, 0.001, precision])))
    path.write_text("\n".join(lines) + "\n")
    return path


def ok(idx, radius, label=3):
    return (idx, label, label, radius, 1)


def wrong(idx, radius, label=3):
    return (idx, label, (label + 1) % 10, radius, 0)


def abstain(idx, label=3):
    return (idx, label, -1, "0.0", 0)


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


def panel(**kw):
    base = {"dataset": "cifar10", "classifiers": ["vit-b16"], "sigmas": [0.25, 0.5], "bs": [10], "Ks": [40],
            "methods": ["densepure", "onestep"], "images": {"start": 0, "stop": 100, "step": 20, "n": 5},
            "radii": [0.0, 0.25, 0.5, 0.75, 1.0]}
    base.update(kw)
    return base


def cell(cells, **keys):
    m = np.ones(len(cells), dtype=bool)
    for k, v in keys.items():
        m &= np.isclose(cells[k].astype(float), v) if isinstance(v, float) else (cells[k] == v).to_numpy()
    assert m.sum() == 1, f"{m.sum()} cells match {keys}"
    return cells[m].iloc[0]


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


# --- certified accuracy and intervals ------------------------------------------------------------------------------
def test_certified_accuracy_table_by_hand(results):
    t = report.certified_accuracy_table(results, [0.0, 0.25, 0.5, 0.8, 0.81, 1.0])
    dp = t[(t["method_key"] == "densepure") & np.isclose(t["sigma"], 0.25)].set_index("radius")
    # correct rows: radii 0.8, 0.5, 0.3 (abstention and the wrong row never count) of n = 5
    assert dp["n"].tolist() == [5] * 6
    assert dp["count"].tolist() == [3, 3, 2, 1, 0, 0]
    assert dp["certified_accuracy"].tolist() == pytest.approx([60, 60, 40, 20, 0, 0])
    assert set(t["method_label"]) == {"Ours", "Carlini"}
    base = t[t["method_key"] == "onestep"].set_index("radius")["certified_accuracy"]
    assert base.tolist() == pytest.approx([100, 100, 0, 0, 0, 0])


def test_threshold_uses_three_significant_digits(tmp_path):
    # 0.7996 written as '0.8' by the certify job, or at full precision by someone else: both count at r = 0.8
    for text in (format_radius(0.7996), "0.7996"):
        df = report.load_results([write_tsv(tmp_path / "t.tsv", [ok(0, text), ok(1, "0.799")])])
        t = report.certified_accuracy_table(df, [0.8])
        assert t["count"].tolist() == [1]


def test_clopper_pearson_closed_forms():
    # k = 0: [0, 1 - 0.025**(1/n)]; k = n: [0.025**(1/n), 1]
    lo, hi = report.clopper_pearson([0, 5], [5, 5])
    assert lo[0] == 0 and hi[0] == pytest.approx(1 - 0.025 ** (1 / 5))
    assert lo[1] == pytest.approx(0.025 ** (1 / 5)) and hi[1] == 1
    # k = 3, n = 5: the bounds are the p where P(X >= 3 | p) = 0.025 and P(X <= 3 | p) = 0.025
    lo, hi = report.clopper_pearson(3, 5)
    assert binom.sf(2, 5, float(lo)) == pytest.approx(0.025) and binom.cdf(3, 5, float(hi)) == pytest.approx(0.025)
    assert 0.14 < lo < 0.15 and 0.94 < hi < 0.95


def test_table_cells_carry_ci(results):
    cells = report.table_cells(results, {"panels": [panel()]}, "tableA")
    c = cell(cells, method_key="densepure", sigma=0.25, radius=0.0)
    assert (c["n"], c["count"], c["certified_accuracy"]) == (5, 3, 60.0)
    # 95% Clopper-Pearson for 3 / 5, in percent: P(X >= 3 | low) = P(X <= 3 | high) = 0.025
    assert binom.sf(2, 5, c["ci_low"] / 100) == pytest.approx(0.025)
    assert binom.cdf(3, 5, c["ci_high"] / 100) == pytest.approx(0.025)
    assert c["n_expected"] == 5 and c["classifier"] == "vit-b16" and c["classifier_label"] == "ViT-B/16"


# --- artifacts -----------------------------------------------------------------------------------------------------
def test_table_a_cells_and_diff(results):
    cells = report.table_a(results, {"panels": [panel()]})
    # hand values: sigma 0.25 Ours 60/60/40/20/0, sigma 0.5 Ours 80/40/40/40/40, Carlini (sigma 0.25) 100/100/0/0/0
    ours = cells[cells["method_key"] == "densepure"]
    assert ours[np.isclose(ours["sigma"], 0.25)]["certified_accuracy"].tolist() == [60, 60, 40, 20, 0]
    assert ours[np.isclose(ours["sigma"], 0.5)]["certified_accuracy"].tolist() == [80, 40, 40, 40, 40]
    carlini = cells[cells["method_key"] == "onestep"]
    assert carlini["certified_accuracy"].tolist() == [100, 100, 0, 0, 0] and set(carlini["method_label"]) == {"Carlini"}
    assert set(carlini["b"]) == {1} and set(carlini["K"]) == {1} and set(carlini["source_method"]) == {"onestep"}
    assert cell(cells, method_key="densepure", sigma=0.25, radius=0.0)["diff_vs_carlini"] == -40
    assert cell(cells, method_key="densepure", sigma=0.25, radius=0.5)["diff_vs_carlini"] == 40
    assert np.isnan(cell(cells, method_key="densepure", sigma=0.5, radius=0.5)["diff_vs_carlini"])  # no baseline


def test_image_subset_and_baseline_methods(tmp_path, tsvs):
    car = write_tsv(tmp_path / "car.tsv", [wrong(i, "0.3") for i in (0, 20, 40, 60, 80)], method="carlini",
                    sigma=0.25, b=1, K=1)
    b1 = write_tsv(tmp_path / "b1.tsv", [ok(i, "0.6") for i in (0, 20, 40, 60, 80)], sigma=0.25, b=1, K=1)
    df = report.load_results(tsvs + [car, b1])
    spec = {"panels": [panel(sigmas=[0.25], images={"ids": [0, 40, 60]}, radii=[0.0, 0.5],
                             methods=["densepure", "onestep", "carlini"])]}
    cells = report.table_cells(df, spec)
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
    cells = report.table_cells(report.load_results(tsvs[:2] + [b1]), spec)
    onestep = cells[cells["method_key"] == "onestep"]
    assert onestep["certified_accuracy"].tolist() == [100, 100] and set(onestep["source_method"]) == {"densepure"}


def test_ambiguous_runs_raise(tmp_path, tsvs):
    other = write_tsv(tmp_path / "fp16.tsv", ROWS_S025, sigma=0.25, precision="fp16")
    with pytest.raises(ValueError, match="differ in precision"):
        report.table_cells(report.load_results(tsvs + [other]), {"panels": [panel()]})


def test_no_matching_results_raise(results):
    with pytest.raises(ValueError, match="no results match"):
        report.table_cells(results, {"panels": [panel(dataset="imagenet", classifiers=["beit-large"])]})
    with pytest.raises(ValueError, match="no panels"):
        report.table_cells(results, {})


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
    cells = report.table1(results, spec, paper_csv=paper)
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


def test_table1_default_paper_csv_quotes_baselines(results):
    cells = report.table1(results, {"panels": [panel(radii=[0.25])]})
    rs = cells[(cells["method_key"] == "rs") & (cells["radius"] == 0.25)]
    assert rs["certified_accuracy"].tolist() == [61.0] and rs["clean_accuracy"].tolist() == [75.0]
    assert not {"densepure", "carlini", "onestep"} & set(cells.loc[~cells["reproduced"].astype(bool), "method_key"])


def test_table2_extra_ks(tmp_path, tsvs):
    k20 = write_tsv(tmp_path / "k20.tsv", [ok(i, "0.1") for i in (0, 20, 40, 60, 80)], sigma=0.25, K=20)
    df = report.load_results(tsvs + [k20])
    cells = report.table2(df, {"panels": [panel(sigmas=[0.25], extra_Ks=[20], radii=[0.0, 0.25])]})
    ours = cells[cells["method_key"] == "densepure"]
    assert ours.groupby("K")["certified_accuracy"].apply(list).to_dict() == {20: [100, 0], 40: [60, 60]}


# --- writers -------------------------------------------------------------------------------------------------------
def test_write_table_layouts(results, tmp_path):
    cells = report.table_a(results, {"panels": [panel()]})
    paths = report.write_table(cells, "tableA", tmp_path / "out")
    assert [p.name for p in paths] == ["tableA.csv", "tableA.md", "tableA.tex", "tableA_cells.csv"]
    wide = pd.read_csv(paths[0], dtype=str, keep_default_na=False)
    assert list(wide.columns) == ["Method", "σ", "ε=0.0", "ε=0.25", "ε=0.5", "ε=0.75", "ε=1.0"]
    assert wide["Method"].tolist() == ["Carlini", "Ours", "Ours"]  # baseline first; rows = method x sigma
    assert wide.iloc[1].tolist() == ["Ours", "0.25", "60.0 (-40.0)", "60.0 (-40.0)", "40.0 (+40.0)",
                                     "20.0 (+20.0)", "0.0 (+0.0)"]
    md = paths[1].read_text()
    assert "| Ours | 0.25 | 60.0 (-40.0) |" in md and "|  | 0.5 | 80.0 |" in md  # repeated method blanked
    tex = paths[2].read_text()
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"$\sigma$", r"\multicolumn{5}{c}"):
        assert token in tex
    back = pd.read_csv(paths[3])
    assert len(back) == len(cells) and {"n", "ci_low", "ci_high"} <= set(back.columns)


def test_write_table1_groups_columns_by_dataset(results, tmp_path):
    paper = tmp_path / "table1.csv"
    pd.DataFrame({"table": "Table 1", "dataset": ["CIFAR-10", "ImageNet"], "method": ["RS", "RS"],
                  "citation": ["Cohen et al., 2019"] * 2, "method_key": ["rs", "rs"], "off_the_shelf": ["no", "no"],
                  "radius": [0.25, 3.0], "certified_accuracy": [61.0, 12.0], "clean_accuracy": [75.0, 44.0]}
                 ).to_csv(paper, index=False)
    spec = {"panels": [panel(radii=[0.25, 0.5]), panel(dataset="imagenet", radii=[3.0])]}
    cells = report.table1(results, spec, paper_csv=paper)  # no ImageNet results: ImageNet cells quoted only
    paths = report.write_table(cells, "table1", tmp_path)
    wide = pd.read_csv(paths[0], dtype=str, keep_default_na=False)
    assert list(wide.columns) == ["Method", "Off-the-shelf", "CIFAR-10 ε=0.25", "CIFAR-10 ε=0.5", "ImageNet ε=3.0"]
    assert wide.iloc[0].tolist() == ["RS (Cohen et al., 2019)", "no", "(75.0) 61.0", "-", "(44.0) 12.0"]
    assert wide.iloc[2].tolist() == ["Ours", "yes", "(60.0) 60.0", "(80.0) 40.0", "-"]
    assert r"\cmidrule(lr){3-4}" in paths[2].read_text()


# --- paper comparison ----------------------------------------------------------------------------------------------
def test_compare_with_paper_flags(results, tmp_path):
    cells = report.table_a(results, {"panels": [panel()]})
    assert set(cells["classifier"]) == {"vit-b16"}
    paper = tmp_path / "paper_tableA.csv"
    pd.DataFrame({
        "table": "Table A", "dataset": "CIFAR-10", "method": ["Ours", "Ours", "Carlini", "Ours"],
        "method_key": ["densepure", "densepure", "carlini", "densepure"], "classifier": "ViT-B/16",
        "sigma": [0.25, 0.25, 0.25, 1.0], "b": [10, 10, 1, 10], "K": [40, 40, 1, 40], "radius": [0.0, 0.5, 0.0, 0.0],
        "certified_accuracy": [90.0, 95.0, 100.0, 50.0]}).to_csv(paper, index=False)
    out = report.compare_with_paper(cells, paper, artifact="tableA")
    assert len(out) == 4
    # Ours sigma .25 r 0: 3/5 -> CI [14.7, 94.7]: 90 inside; r 0.5: 2/5 -> CI [5.3, 85.3]: 95 outside;
    # Carlini 5/5 -> CI [47.8, 100]: 100 inside; sigma 1.0 was not reproduced
    assert out["outside_ci"].tolist() == [False, True, False, False]
    assert out["status"].tolist() == ["ok", "outside_ci", "ok", "missing"]
    assert out["reproduced_certified_accuracy"].tolist()[:3] == [60.0, 40.0, 100.0]
    assert out["n"].tolist()[:3] == [5, 5, 5] and out["difference"].tolist()[:2] == [-30.0, -55.0]
    assert out.loc[1, "ci_low"] == pytest.approx(5.2745, abs=1e-3)
    # the same from the written cells CSV
    report.write_table(cells, "tableA", tmp_path)
    again = report.compare_with_paper(tmp_path / "tableA_cells.csv", paper, artifact="tableA")
    assert again["status"].tolist() == out["status"].tolist()
    with pytest.raises(ValueError, match="no published numbers"):
        report.compare_with_paper(cells, paper, artifact="fig3")


def test_compare_matches_both_baseline_code_paths(tmp_path, tsvs):
    car = write_tsv(tmp_path / "car.tsv", [wrong(i, "0.3") for i in (0, 20, 40, 60, 80)], method="carlini",
                    sigma=0.25, b=1, K=1)
    cells = report.table_cells(report.load_results(tsvs + [car]),
                               {"panels": [panel(sigmas=[0.25], radii=[0.0], methods=["onestep", "carlini"])]})
    paper = tmp_path / "p.csv"
    pd.DataFrame({"table": "Table A", "dataset": "CIFAR-10", "method_key": "carlini", "classifier": "ViT-B/16",
                  "sigma": [0.25], "b": [1], "K": [1], "radius": [0.0], "certified_accuracy": [88.0]}
                 ).to_csv(paper, index=False)
    out = report.compare_with_paper(cells, paper, artifact="tableA")
    # the paper's Carlini row against the DensePure one-shot (5/5, CI [47.8, 100]) and Carlini's code (0/5)
    assert out["reproduced_method_key"].tolist() == ["onestep", "carlini"]
    assert out["status"].tolist() == ["ok", "outside_ci"]


def test_classifier_aliases():
    assert report.classifier_matches("beit-large-512", "beit-large")
    assert report.classifier_matches("beit", "beit-large-512")
    assert report.classifier_matches("vit-b16-cifar10", "vit-b16")
    assert not report.classifier_matches("wrn-50-2", "wrn-28-10")
    assert report.classifier_label("vit-b16-cifar10") == "ViT-B/16" and report.classifier_label("WRN50-2") == "WRN50-2"


def test_compare_paper_k_ablation_file(results, tmp_path):
    paper = tmp_path / "ref.csv"
    pd.DataFrame({"figure": "Figure G (left)", "dataset": "CIFAR-10", "classifier": "ViT-B/16", "sigma": 0.25,
                  "b": 10, "K": [40, 20], "radius": 0.5, "certified_accuracy": [40.0, 50.0]}).to_csv(paper, index=False)
    data = report.table_cells(results, {"panels": [panel(sigmas=[0.25], radii=[0.5])]})
    out = report.compare_with_paper(data, paper, artifact="figG")
    # only the K = 40 point was reproduced
    assert out["status"].tolist() == ["ok", "missing"] and out["reproduced_K"].tolist()[0] == 40


# --- figures -------------------------------------------------------------------------------------------------------
@pytest.fixture
def ablation_results(tmp_path, tsvs):
    d = tmp_path / "abl"
    d.mkdir()
    extra = []
    for b in (2, 10):
        for k in (1, 3, 40):
            if (b, k) == (10, 40):
                continue
            rows = [ok(i, format_radius(0.1 * (i / 20 + 1) * (1 + k / 40))) for i in (0, 20, 40, 60)] + [abstain(80)]
            extra.append(write_tsv(d / f"b{b}_k{k}.tsv", rows, sigma=0.25, b=b, K=k))
    return report.load_results(tsvs + extra)


def _nonempty(paths):
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000, p


def test_curves_figure(results, tmp_path):
    fig, data = report.curves_figure(results, [panel(radii="curve", max_radius=1.0)], title="test")
    paths = report.save_figure(fig, "curves", tmp_path)
    _nonempty(paths)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    ours = data[(data["method_key"] == "densepure") & np.isclose(data["sigma"], 0.25)].set_index("radius")
    assert len(ours) == 101 and ours.loc[0.8, "certified_accuracy"] == 20 and ours.loc[0.81, "certified_accuracy"] == 0
    ax = fig.axes[0]
    assert ax.get_xlabel() == "radius (L2)" and ax.get_ylabel() == "certified accuracy (%)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["σ = 0.25", "σ = 0.5", "Ours (b = 10, K = 40)", "Carlini (one-shot)"]
    styles = {line.get_linestyle() for line in ax.get_lines()}
    assert styles == {"-", "--"}


def test_k_ablation_figure(ablation_results, tmp_path):
    p = panel(sigmas=[0.25], Ks=[1, 3, 40], radii=[0.0, 0.25])
    fig, data = report.k_ablation_figure(ablation_results, [p])
    _nonempty(report.save_figure(fig, "k", tmp_path))
    ours = data[data["method_key"] == "densepure"]
    assert sorted(ours["K"].unique()) == [1, 3, 40]
    assert fig.axes[0].get_xlabel() == "number of votes K"
    assert "Carlini (one-shot)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_b_ablation_figure(ablation_results, tmp_path):
    p = panel(sigmas=[0.25], bs=[2, 10], Ks=[1, 40], radii="curve", max_radius=0.5)
    fig, data = report.b_ablation_figure(ablation_results, [p])
    _nonempty(report.save_figure(fig, "b", tmp_path))
    assert set(zip(data["b"], data["K"])) == {(1, 1), (2, 1), (2, 40), (10, 1), (10, 40)}
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["b = 1, Carlini (one-shot)", "b = 2", "b = 10", "with MV (K = 40)", "without MV (K = 1)"]


def test_write_figure_mixed_panels(ablation_results, tmp_path):
    spec = {"source": "Figure G-like", "panels": [
        panel(name="left", sigmas=[0.25], Ks=[1, 3, 40], methods=["densepure"], radii=[0.0, 0.25]),
        panel(name="right", sigmas=[0.25], bs=[2, 10], Ks=[1, 40], radii="curve", max_radius=1.0)]}
    paths = report.write_figure(ablation_results, spec, "figG", tmp_path)
    _nonempty(paths[:2])
    data = pd.read_csv(paths[2])
    assert set(data["kind"]) == {"k_ablation", "b_ablation"} and set(data["panel"]) == {"left", "right"}


def test_figure_without_results_raises(results):
    with pytest.raises(ValueError, match="no results match"):
        report.curves_figure(results, [panel(dataset="imagenet", radii="curve")])


@pytest.mark.parametrize("name", ["paper.yaml", "README.md"])
def test_config_specs_resolve_and_have_known_kinds(name):
    path = REPO / "config" / name
    if not path.is_file():
        pytest.skip(f"config/{name} not present")
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
    report.add_report_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_table_figure_compare(tsvs, tmp_path, capsys):
    spec_file = tmp_path / "paper.yaml"
    spec_file.write_text(yaml.safe_dump({
        "image_sets": {"tiny": {"start": 0, "stop": 100, "step": 20, "n": 5}},
        "artifacts": {"tableA": {"panels": [panel(images="tiny")]},
                      "fig3": {"source": "Figure 3",
                               "panels": [panel(images="tiny", radii="curve", max_radius=1.0)]}}}))
    parser = _parser()
    out = tmp_path / "out"
    common = ["--spec", str(spec_file), "--results", *map(str, tsvs), "--outdir", str(out)]
    assert report.run_report(parser.parse_args(["table", "--artifact", "tableA", *common])) == 0
    assert report.run_report(parser.parse_args(["figure", "--artifact", "fig3", *common])) == 0
    _nonempty([out / "fig3.png", out / "fig3.pdf"])
    assert (out / "tableA.tex").is_file() and (out / "tableA_cells.csv").is_file()
    paper = tmp_path / "p.csv"
    pd.DataFrame({"table": "Table A", "dataset": "CIFAR-10", "method_key": "densepure", "classifier": "ViT-B/16",
                  "sigma": [0.25], "b": [10], "K": [40], "radius": [0.0], "certified_accuracy": [60.0]}
                 ).to_csv(paper, index=False)
    args = parser.parse_args(["compare", "--artifact", "tableA", "--reproduced", str(out / "tableA_cells.csv"),
                              "--paper", str(paper), "--out", str(out / "cmp.csv")])
    assert report.run_report(args) == 0
    assert pd.read_csv(out / "cmp.csv")["status"].tolist() == ["ok"]
    assert "1 within the 95% CI" in capsys.readouterr().out


def test_cli_errors(tsvs, tmp_path):
    spec_file = tmp_path / "paper.yaml"
    spec_file.write_text(yaml.safe_dump({"artifacts": {"tableA": {"panels": [panel()]}}}))
    parser = _parser()

    def run(*argv):
        return report.run_report(parser.parse_args(list(argv)))

    common = ["--spec", str(spec_file), "--outdir", str(tmp_path / "o")]
    with pytest.raises(ValueError, match="unknown table artifact 'tableZ'"):
        run("table", "--artifact", "tableZ", "--results", str(tsvs[0]), *common)
    with pytest.raises(ValueError, match="unknown artifact 'fig9'"):
        run("figure", "--artifact", "fig9", "--results", str(tsvs[0]), *common)
    with pytest.raises(ValueError, match="result file not found"):
        run("table", "--artifact", "tableA", "--results", str(tmp_path / "none.tsv"), *common)
    with pytest.raises(ValueError, match="spec file not found"):
        run("table", "--artifact", "tableA", "--results", str(tsvs[0]), "--spec", str(tmp_path / "x.yaml"),
            "--outdir", str(tmp_path))
    with pytest.raises(ValueError, match="reproduced cells not found"):
        run("compare", "--artifact", "tableA", "--reproduced", str(tmp_path / "r.csv"), "--paper", str(spec_file),
            "--out", str(tmp_path / "c.csv"))
