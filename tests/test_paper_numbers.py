"""Checks of the hand-transcribed paper numbers in results/paper/ (see results/paper/README.md)."""

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PAPER = Path(__file__).resolve().parents[1] / "results" / "paper"

COLUMNS = [
    "table", "dataset", "method", "citation", "method_key", "off_the_shelf", "classifier",
    "sigma", "sigma_matched", "b", "K", "radius", "certified_accuracy", "clean_accuracy",
    "diff_vs_carlini", "note",
]
NUMERIC = ["sigma", "sigma_matched", "b", "K", "radius", "certified_accuracy", "clean_accuracy", "diff_vs_carlini"]
TABLES = {  # file -> (table label, expected rows)
    "table1.csv": ("Table 1", 89),
    "table2.csv": ("Table 2", 32),
    "tableA.csv": ("Table A", 30),
    "tableB.csv": ("Table B", 36),
}
FIG_FILE = "figure_k_ablation_refcode.csv"
FIG_COLUMNS = ["source_function", "figure", "dataset", "classifier", "sigma", "b", "K", "radius",
               "certified_accuracy", "n_images_inferred", "note"]
SIGMAS = [0.25, 0.5, 1.0]
RADII_A = [0.0, 0.25, 0.5, 0.75, 1.0]
RADII_B = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
T1_RADII = {"CIFAR-10": [0.25, 0.5, 0.75, 1.0], "ImageNet": [0.5, 1.0, 1.5, 2.0, 3.0]}
T1_METHODS = ["PixelDP", "RS", "SmoothAdv", "Consistency", "MACER", "Boosting", "SmoothMix",
              "Denoised", "Lee", "Carlini", "Ours"]


@lru_cache(maxsize=None)
def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(PAPER / name)


def load(name: str) -> pd.DataFrame:
    return _read(name).copy()


def cell(df: pd.DataFrame, **where) -> pd.Series:
    mask = np.ones(len(df), dtype=bool)
    for col, val in where.items():
        if isinstance(val, float):
            mask &= np.isclose(df[col].astype(float), val)
        else:
            mask &= (df[col] == val).to_numpy()
    hit = df[mask]
    assert len(hit) == 1, f"{where} matched {len(hit)} rows"
    return hit.iloc[0]


# ----------------------------------------------------------------------------- schema


@pytest.mark.parametrize("name", sorted(TABLES))
def test_schema(name):
    df = load(name)
    assert list(df.columns) == COLUMNS
    label, n_rows = TABLES[name]
    assert len(df) == n_rows
    assert (df["table"] == label).all()
    assert set(df["dataset"]) <= {"CIFAR-10", "ImageNet"}
    for col in NUMERIC:
        assert pd.api.types.is_numeric_dtype(df[col]), (name, col, df[col].dtype)
    for col in ("b", "K"):
        present = df[col].dropna()
        assert (present == present.round()).all() and (present >= 1).all()
    assert df["method"].notna().all() and df["method_key"].notna().all()
    assert df["radius"].notna().all() and (df["radius"] >= 0).all()
    acc = df["certified_accuracy"]
    assert acc.notna().all()
    assert ((acc >= 0) & (acc <= 100)).all()
    clean = df["clean_accuracy"].dropna()
    assert ((clean >= 0) & (clean <= 100)).all()
    present = df["sigma"].dropna()
    assert set(present) <= set(SIGMAS)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_cells_unique(name):
    df = load(name)
    key = ["dataset", "method", "classifier", "sigma", "radius"]
    assert not df[key].astype(str).duplicated().any()


def test_method_key_mapping():
    for name in TABLES:
        df = load(name)
        ours = df["method"] == "Ours"
        assert (df.loc[ours, "method_key"] == "densepure").all()
        assert (df.loc[~ours, "method_key"] == df.loc[~ours, "method"].str.lower()).all()
        car = df["method_key"] == "carlini"
        assert (df.loc[car, "citation"] == "Carlini et al., 2022").all()
        assert (df.loc[car, "b"] == 1).all() and (df.loc[car, "K"] == 1).all()


# ----------------------------------------------------------------------------- table shapes


def test_table1_shape():
    df = load("table1.csv")
    assert list(dict.fromkeys(df["method"])) == T1_METHODS
    counts = df.groupby("method").size().to_dict()
    # "-" cells are omitted: PixelDP has 6, Denoised 2, Lee 2
    expected = {m: 9 for m in T1_METHODS} | {"PixelDP": 3, "Denoised": 7, "Lee": 7}
    assert counts == expected
    for ds, radii in T1_RADII.items():
        assert set(df.loc[df["dataset"] == ds, "radius"]) == set(radii)
    assert df["sigma"].isna().all()  # Table 1 takes the best sigma per radius
    assert set(df["off_the_shelf"]) == {"yes", "no"}
    shelf = df.groupby("method")["off_the_shelf"].agg(set).to_dict()
    for m in ["PixelDP", "RS", "SmoothAdv", "Consistency", "MACER", "Boosting"]:
        assert shelf[m] == {"no"}
    for m in ["SmoothMix", "Denoised", "Lee", "Carlini", "Ours"]:
        assert shelf[m] == {"yes"}
    # clean accuracy in parentheses everywhere except Lee
    assert df.loc[df["method"] == "Lee", "clean_accuracy"].isna().all()
    assert df.loc[df["method"] != "Lee", "clean_accuracy"].notna().all()
    assert (df["clean_accuracy"].dropna() >= df.loc[df["clean_accuracy"].notna(), "certified_accuracy"]).all()
    ours_car = df["method_key"].isin(["densepure", "carlini"])
    assert df.loc[ours_car, "sigma_matched"].notna().all()
    assert df.loc[~ours_car, "sigma_matched"].isna().all()
    assert df.loc[~ours_car, ["b", "K"]].isna().all().all()


def test_table2_shape():
    df = load("table2.csv")
    assert (df["sigma"] == 0.25).all()
    combos = df.groupby(["dataset", "method", "classifier"]).size()
    assert len(combos) == 8 and (combos == 4).all()
    assert set(df.loc[df["dataset"] == "CIFAR-10", "classifier"]) == {"ViT-B/16", "WRN28-10"}
    assert set(df.loc[df["dataset"] == "ImageNet", "classifier"]) == {"BEiT", "WRN50-2"}
    assert set(df["radius"]) == {0.0, 0.25, 0.5, 0.75}
    # integers: certified on 100 images
    assert (df["certified_accuracy"] == df["certified_accuracy"].round()).all()


@pytest.mark.parametrize("name,dataset,radii,classifier", [
    ("tableA.csv", "CIFAR-10", RADII_A, "ViT-B/16"),
    ("tableB.csv", "ImageNet", RADII_B, "BEiT"),
])
def test_tables_ab_shape(name, dataset, radii, classifier):
    df = load(name)
    assert (df["dataset"] == dataset).all()
    assert (df["classifier"] == classifier).all()
    got = set(zip(df["method"], df["sigma"], df["radius"]))
    assert got == {(m, s, r) for m in ("Carlini", "Ours") for s in SIGMAS for r in radii}
    ours = df[df["method"] == "Ours"]
    assert (ours["b"] == 10).all() and (ours["K"] == 40).all()
    # multiples of 0.2: certified on 500 images
    tenths = (df["certified_accuracy"] * 5).round(6)
    assert (tenths == tenths.round()).all()


@pytest.mark.parametrize("name", ["table2.csv", "tableA.csv", "tableB.csv"])
def test_non_increasing_in_radius(name):
    df = load(name)
    for _, g in df.groupby(["method", "classifier", "sigma"]):
        acc = g.sort_values("radius")["certified_accuracy"].to_numpy()
        assert (np.diff(acc) <= 0).all()


# ----------------------------------------------------------------------------- spot checks

SPOT = [
    # (file, selector, certified_accuracy, clean_accuracy or None)
    ("tableA.csv", dict(method="Ours", sigma=0.25, radius=0.0), 87.6, None),
    ("tableA.csv", dict(method="Ours", sigma=0.25, radius=0.25), 76.6, None),
    ("tableA.csv", dict(method="Ours", sigma=0.25, radius=0.5), 64.6, None),
    ("tableA.csv", dict(method="Ours", sigma=0.25, radius=0.75), 50.4, None),
    ("tableA.csv", dict(method="Carlini", sigma=1.0, radius=1.0), 21.8, None),
    ("tableA.csv", dict(method="Ours", sigma=0.5, radius=1.0), 37.4, None),
    ("tableB.csv", dict(method="Ours", sigma=0.5, radius=0.0), 80.2, None),
    ("tableB.csv", dict(method="Ours", sigma=0.5, radius=0.5), 75.6, None),
    ("tableB.csv", dict(method="Ours", sigma=0.5, radius=1.0), 67.0, None),
    ("tableB.csv", dict(method="Ours", sigma=0.5, radius=1.5), 54.6, None),
    ("tableB.csv", dict(method="Ours", sigma=1.0, radius=3.0), 25.8, None),
    ("tableB.csv", dict(method="Carlini", sigma=1.0, radius=3.0), 19.0, None),
    ("tableB.csv", dict(method="Carlini", sigma=0.25, radius=1.0), 0.0, None),
    ("table1.csv", dict(method="PixelDP", dataset="ImageNet", radius=0.5), 16.0, 33.0),
    ("table1.csv", dict(method="RS", dataset="ImageNet", radius=3.0), 12.0, 44.0),
    ("table1.csv", dict(method="Consistency", dataset="CIFAR-10", radius=0.5), 58.1, 75.8),
    ("table1.csv", dict(method="Boosting", dataset="CIFAR-10", radius=0.75), 52.4, 71.6),
    ("table1.csv", dict(method="SmoothMix", dataset="ImageNet", radius=1.5), 38.0, 55.0),
    ("table1.csv", dict(method="Denoised", dataset="ImageNet", radius=1.5), 6.0, 38.0),
    ("table1.csv", dict(method="Lee", dataset="ImageNet", radius=1.5), 11.0, None),
    ("table1.csv", dict(method="Carlini", dataset="ImageNet", radius=1.0), 59.8, 77.2),
    ("table1.csv", dict(method="Ours", dataset="CIFAR-10", radius=1.0), 37.4, 73.6),
    ("table1.csv", dict(method="Ours", dataset="ImageNet", radius=3.0), 25.8, 67.8),
    ("table2.csv", dict(method="Carlini", classifier="WRN28-10", radius=0.0), 86.0, None),
    ("table2.csv", dict(method="Ours", classifier="ViT-B/16", radius=0.25), 82.0, None),
    ("table2.csv", dict(method="Ours", classifier="BEiT", radius=0.75), 71.0, None),
    ("table2.csv", dict(method="Ours", classifier="WRN50-2", radius=0.75), 61.0, None),
]


@pytest.mark.parametrize("name,where,acc,clean", SPOT)
def test_spot_checks(name, where, acc, clean):
    row = cell(load(name), **where)
    assert row["certified_accuracy"] == pytest.approx(acc)
    if clean is None:
        assert pd.isna(row["clean_accuracy"])
    else:
        assert row["clean_accuracy"] == pytest.approx(clean)


def test_table1_typos_noted():
    df = load("table1.csv")
    row = cell(df, method="Carlini", dataset="ImageNet", radius=1.0)
    assert "77.2.0" in row["note"]
    assert df.loc[df["method"] == "SmoothMix", "note"].str.contains("D.2").all()


# ----------------------------------------------------------------------------- cross-table identities


def test_tables_ab_brackets_are_differences():
    for name in ("tableA.csv", "tableB.csv"):
        df = load(name)
        assert df.loc[df["method"] == "Carlini", "diff_vs_carlini"].isna().all()
        ours = df[df["method"] == "Ours"].set_index(["sigma", "radius"])
        car = df[df["method"] == "Carlini"].set_index(["sigma", "radius"])
        diff = ours["certified_accuracy"] - car.loc[ours.index, "certified_accuracy"]
        assert np.allclose(diff, ours["diff_vs_carlini"], atol=0.051)


@pytest.mark.parametrize("dataset,name", [("CIFAR-10", "tableA.csv"), ("ImageNet", "tableB.csv")])
def test_table1_equals_best_sigma_of_appendix(dataset, name):
    t1 = load("table1.csv")
    app = load(name)
    for key in ("Carlini", "Ours"):
        rows = t1[(t1["dataset"] == dataset) & (t1["method"] == key)]
        assert len(rows) == len(T1_RADII[dataset])
        sub = app[app["method"] == key]
        for _, row in rows.iterrows():
            at_r = sub[np.isclose(sub["radius"], row["radius"])]
            assert row["certified_accuracy"] == pytest.approx(at_r["certified_accuracy"].max())
            matched = at_r[np.isclose(at_r["sigma"], row["sigma_matched"])]
            assert row["certified_accuracy"] == pytest.approx(matched["certified_accuracy"].iloc[0])
            clean = sub[np.isclose(sub["sigma"], row["sigma_matched"]) & (sub["radius"] == 0.0)]
            assert row["clean_accuracy"] == pytest.approx(clean["certified_accuracy"].iloc[0])
            assert row["classifier"] == app["classifier"].iloc[0]
            assert (row["b"], row["K"]) == (sub["b"].iloc[0], sub["K"].iloc[0])


# ----------------------------------------------------------------------------- reference-code figure data


def test_figure_k_ablation_schema_and_shape():
    df = load(FIG_FILE)
    assert list(df.columns) == FIG_COLUMNS
    assert len(df) == 264
    acc = df["certified_accuracy"]
    assert acc.notna().all() and ((acc >= 0) & (acc <= 100)).all()
    assert (df["b"] == 10).all()
    assert set(df["n_images_inferred"]) == {100, 500}
    sizes = df.groupby("source_function").size().to_dict()
    assert sizes == {
        "plot_figure5_accuracy_imagenet": 9 * 4,
        "plot_figure5_accuracy_imagenet1": 8 * 4,
        "plot_figure5_accuracy_imagenet2": 8 * 6,
        "plot_figure5_accuracy_cifar10": 9 * 4,
        "plot_figure5_accuracy_cifar101": 8 * 5,
        "plot_figure5_accuracy_cifar102": 8 * 5,
        "plot_figure5_hist": 8 * 4,
    }
    assert not df[["source_function", "K", "radius"]].duplicated().any()
    for _, g in df.groupby(["source_function", "K"]):
        a = g.sort_values("radius")["certified_accuracy"].to_numpy()
        assert (np.diff(a) <= 0).all()
    # granularity matches the inferred image count
    for n, g in df.groupby("n_images_inferred"):
        scaled = (g["certified_accuracy"] * n / 100).round(6)
        assert (scaled == scaled.round()).all()


def test_figure_k_ablation_matches_tables():
    fig = load(FIG_FILE)
    tab_a = load("tableA.csv")
    tab2 = load("table2.csv")
    hist = fig[(fig["source_function"] == "plot_figure5_hist") & (fig["K"] == 40)]
    for _, row in hist.iterrows():
        ref = cell(tab_a, method="Ours", sigma=0.25, radius=float(row["radius"]))
        assert row["certified_accuracy"] == pytest.approx(ref["certified_accuracy"])
    for fn, clf in (("plot_figure5_accuracy_cifar10", "ViT-B/16"), ("plot_figure5_accuracy_imagenet", "BEiT")):
        line = fig[(fig["source_function"] == fn) & (fig["K"] == 40)]
        assert len(line) == 4
        for _, row in line.iterrows():
            ref = cell(tab2, method="Ours", classifier=clf, radius=float(row["radius"]))
            assert row["certified_accuracy"] == pytest.approx(ref["certified_accuracy"])
    assert cell(fig, source_function="plot_figure5_accuracy_imagenet2", K=1, radius=3.0)[
        "certified_accuracy"] == pytest.approx(12.0)


def test_readme_lists_every_csv():
    readme = (PAPER / "README.md").read_text()
    for name in list(TABLES) + [FIG_FILE]:
        assert f"`{name}`" in readme
    assert sorted(p.name for p in PAPER.glob("*.csv")) == sorted(list(TABLES) + [FIG_FILE])
