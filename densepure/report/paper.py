"""The paper's numbers next to the reproduction's, with the variation that separates them.

Every published Carlini / Ours cell (results/paper/*.csv) is matched with the reproduced cell of the same dataset,
classifier (up to aliases), method (the paper's ``carlini`` = our ``onestep``, and ``carlini`` when present: one row
each), sigma, radius, and b / K where the paper gives them (where it does not, only the spec's main Ks, never its
``extra_Ks``). Then, with ``d = reproduced count - paper count`` (the paper's count is its percentage times its
number of images, results/paper/image_sets.yaml):

* **same images** (the reproduction certified exactly the paper's ids): only Monte-Carlo variation separates the two
  runs. Under a faithful reproduction both counts are independent Poisson-binomial draws with the per-image rerun
  probabilities of :mod:`densepure.report.montecarlo`; ``p = P(|X - Y| >= |d|)`` exactly, and the 95% interval of
  the difference is ``d -+ h``, h the 95% point of ``|X - Y|``;
* **different images** (other or unknown ids, another n): image sampling adds its variation; two independent
  binomials, Fisher's exact test and Newcombe's hybrid score interval for the difference.

Holm's step-down adjustment over the artifact's tested cells controls the family-wise error: ``status`` is
``differs`` where the adjusted p-value is below 0.05, ``ok`` where it is not, ``missing`` where nothing was
reproduced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from densepure.report.intervals import (
    difference_pmf,
    fisher_exact,
    holm,
    newcombe_independent,
    poisson_binomial_pmf,
    symmetric_quantile,
    two_sided_tail,
)
from densepure.report.labels import PAPER_METHOD_KEY, classifier_label, dataset_label
from densepure.report.montecarlo import estimate_source, rerun_probabilities
from densepure.report.spec import image_ids, image_set
from densepure.report.tables import PAPER_DIR, read_csv

PAPER_LABELS = {"table1": "Table 1", "table2": "Table 2", "tableA": "Table A", "tableB": "Table B",
                "fig4_left": "Figure 4 (left)", "figA": "Figure A", "figB": "Figure B", "figG": "Figure G (left)"}
REFERENCE_PLOT_DATA = "figure_k_ablation_refcode.csv"
LEVEL = 0.05


def paper_csv(artifact: str) -> Path:
    """The file of published numbers of an artifact: results/paper/<table>.csv, or the reference plot data."""
    if artifact not in PAPER_LABELS:
        raise ValueError(f"artifact {artifact!r} has no published numbers (known: {', '.join(PAPER_LABELS)})")
    return PAPER_DIR / (f"{artifact}.csv" if artifact.startswith("table") else REFERENCE_PLOT_DATA)


def load_image_sets(path: str | Path | None = None) -> list[dict]:
    from densepure.files.yamlfile import read_yaml

    path = Path(path) if path else PAPER_DIR / "image_sets.yaml"
    if not path.is_file():
        raise ValueError(f"paper image sets not found: {path}")
    sets = read_yaml(path, "image sets file") or []
    if not isinstance(sets, list) or not all(isinstance(s, dict) and "dataset" in s for s in sets):
        raise ValueError(f"{path}: an image sets file is a list of mappings with a dataset, a source and the "
                         "images (see results/paper/image_sets.yaml)")
    return sets


def _paper_images(source: str, dataset: str, n: float, image_sets: list[dict]) -> tuple[float, set | None]:
    """(n, ids or None) of the images behind a published cell."""
    for entry in image_sets:
        if entry["source"] == source and entry["dataset"] == dataset and (np.isnan(n) or entry["n"] == n):
            ids = image_ids(image_set(source, str(entry["ids"]))) if entry.get("ids") else None
            return float(entry["n"]), ids
    return n, None


def paper_rows(path: str | Path, artifact: str | None = None, image_sets: list[dict] | None = None,
               methods: set[str] | None = None) -> pd.DataFrame:
    """Published numbers of ``artifact`` (all rows when None) of the paper's method keys ``methods`` (default Carlini
    and Ours) with the columns ``source, dataset,
    classifier, method_key, sigma, b, K, radius, certified_accuracy, clean_accuracy, n, ids`` (labels as printed;
    ``ids`` a set, or None where the paper's ids are unknown)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"paper CSV not found: {path}")
    paper = read_csv(path)
    if "table" in paper:
        paper["source"] = paper["table"]
    else:
        paper["source"] = "reference plot data"
        paper["method_key"] = "densepure"
        paper["n"] = paper["n_images_inferred"].astype(float)
    if artifact is not None:
        label = PAPER_LABELS.get(artifact)
        if label is None:
            raise ValueError(f"artifact {artifact!r} has no published numbers (known: {', '.join(PAPER_LABELS)})")
        column = "table" if "table" in paper else "figure"
        paper = paper[paper[column].astype(str).str.startswith(label)]
        if paper.empty:
            raise ValueError(f"no rows for {label} in {path}")
    paper = paper[paper["method_key"].isin(sorted(methods or {"densepure", "carlini"}))].copy()
    for col in ("sigma", "b", "K", "clean_accuracy", "n"):
        if col not in paper:
            paper[col] = np.nan
    paper["classifier"] = paper["classifier"].map(classifier_label)
    sets = image_sets if image_sets is not None else load_image_sets()
    images = [_paper_images(s, d, float(n), sets) for s, d, n in zip(paper["source"], paper["dataset"], paper["n"])]
    paper["n"] = [n for n, _ in images]
    paper["ids"] = [ids for _, ids in images]
    cols = ["source", "dataset", "classifier", "method_key", "sigma", "b", "K", "radius", "certified_accuracy",
            "clean_accuracy", "n", "ids"]
    return paper[cols].reset_index(drop=True)


def same_images_test(q: np.ndarray, d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For cells [cells, images] of rerun probabilities ``q`` and observed count differences ``d``: the two-sided
    p-value ``P(|X - Y| >= |d|)`` (X, Y independent Poisson-binomial(q)), the 95% half-width h of ``X - Y`` and its
    standard deviation. Only images with 0 < q < 1 vary; the others add the same count to X and Y."""
    q = np.atleast_2d(np.asarray(q, dtype=float))
    uncertain = (q > 1e-12) & (q < 1 - 1e-12)
    M = int(uncertain.sum(axis=1).max()) if q.size else 0
    packed = np.zeros((q.shape[0], M))
    for i, row in enumerate(q):
        vals = row[uncertain[i]]
        packed[i, :len(vals)] = vals
    dpmf = difference_pmf(poisson_binomial_pmf(packed))
    sd = np.sqrt(2 * np.sum(q * (1 - q), axis=1))
    return two_sided_tail(dpmf, d), symmetric_quantile(dpmf), sd


def _match(paper: pd.DataFrame, cells: pd.DataFrame, method_map: dict | None = None) -> pd.DataFrame:
    """Paper rows (columns prefixed ``paper_``) joined with the reproduced cells they stand for: one row per paper
    cell and reproduced method; a paper cell without a reproduced cell once, with NaNs. ``method_map`` maps our
    method keys to the paper's (a spec's ``paper_methods``, e.g. ``{cohen: rs}`` for Table 1's RS row); a paper row
    that names no classifier (Table 1's baselines) matches any classifier of its method."""
    keys = {**PAPER_METHOD_KEY, **(method_map or {})}
    rep = cells[cells["setting"].notna()].copy()
    rep["paper_method_key"] = rep["method_key"].map(lambda m: keys.get(m, m))
    rep["dataset_label"] = rep["dataset"].map(dataset_label)
    rep["classifier_label"] = rep["classifier"].map(classifier_label)
    left = paper.rename(columns={"dataset": "dataset_label", "classifier": "classifier_label",
                                 "method_key": "paper_method_key"})
    left = left.rename(columns={c: f"paper_{c}" for c in left.columns
                                if c not in ("dataset_label", "classifier_label", "paper_method_key")})
    left["_pid"] = np.arange(len(left))
    left["_sigma"] = left["paper_sigma"].astype(float).fillna(-1.0).round(6)
    left["_radius"] = left["paper_radius"].astype(float).round(6)
    rep["_sigma"] = rep["sigma"].astype(float).fillna(-1.0).round(6)
    rep["_radius"] = rep["radius"].astype(float).round(6)
    on = ["dataset_label", "paper_method_key", "_sigma", "_radius"]
    named = ~left["classifier_label"].astype(str).isin(["", "nan", "None"])
    out = pd.concat([left[named].merge(rep, on=on + ["classifier_label"], how="left"),
                     left[~named].drop(columns="classifier_label").merge(rep, on=on, how="left")],
                    ignore_index=True)
    found = out["setting"].notna()
    for col in ("b", "K"):  # where the paper gives b / K, the reproduced cell must have the same
        out = out[~(found & out[f"paper_{col}"].notna() & (out[f"paper_{col}"] != out[col]))]
        found = out["setting"].notna()
    out = out[~(found & out["paper_K"].isna() & ~out["main"].fillna(True).astype(bool))]  # extra_Ks: not the paper's
    matched = set(out.loc[out["setting"].notna(), "_pid"])
    out = out[out["setting"].notna() | ~out["_pid"].isin(matched)]
    return out.drop_duplicates(["_pid", "setting"]).sort_values("_pid", kind="stable").reset_index(drop=True)


def compare_with_paper(table, paper: str | Path | pd.DataFrame | None = None, artifact: str | None = None,
                       image_sets: list[dict] | None = None, method_map: dict | None = None) -> pd.DataFrame:
    """Each published cell of ``artifact`` (default: the table's name) next to its reproduced cell, tested as the
    module docstring says. ``paper``: the published numbers (a CSV or :func:`paper_rows`' frame; default
    :func:`paper_csv`). Columns: the cell's keys, ``paper_certified_accuracy``, ``paper_n``, ``paper_count``,
    ``reproduced_certified_accuracy``, ``n``, ``count``, ``ci_low``/``ci_high`` (the reproduction's own 95% interval),
    ``difference`` (reproduced - paper, points) with its 95% interval ``diff_low``/``diff_high``, ``test``
    (``same images`` / ``different images``), ``mc_estimate`` (how the rerun probabilities were estimated),
    ``mc_sd`` (the Monte-Carlo standard deviation of the difference), ``p_value``, ``p_holm`` and ``status``."""
    artifact = artifact or table.name
    if not isinstance(paper, pd.DataFrame):
        methods = set(PAPER_METHOD_KEY.values()) | set((method_map or {}).values())
        paper = paper_rows(paper or paper_csv(artifact), artifact, image_sets, methods)
    out = _match(paper, table.cells, method_map)
    rep = out["setting"].notna().to_numpy()
    out["paper_count"] = np.rint(out["paper_certified_accuracy"] * out["paper_n"] / 100.0)
    out["difference"] = 100.0 * (out["count"] / out["n"] - out["paper_count"] / out["paper_n"])
    for col in ("diff_low", "diff_high", "p_value", "mc_sd"):
        out[col] = np.nan
    out["test"], out["mc_estimate"] = "", ""
    same, same_q = [], []
    for i in np.flatnonzero(rep):
        row = out.iloc[i]
        rows = table.settings[int(row["setting"])].rows
        source = estimate_source(rows)
        ids = row["paper_ids"]
        if isinstance(ids, (set, frozenset)) and set(rows["idx"]) == ids and source != "none":
            same.append(i)
            same_q.append(rerun_probabilities(rows, [row["paper_radius"]])[:, 0])
            out.loc[i, ["test", "mc_estimate"]] = ["same images", source]
        else:
            p = fisher_exact(row["count"], row["n"], row["paper_count"], row["paper_n"])[0]
            _, low, high = newcombe_independent(row["count"], row["n"], row["paper_count"], row["paper_n"])
            out.loc[i, ["test", "p_value", "diff_low", "diff_high"]] = [
                "different images", p, 100.0 * float(low), 100.0 * float(high)]
    if same:
        width = max(len(q) for q in same_q)
        p, h, sd = same_images_test(np.stack([np.pad(q, (0, width - len(q))) for q in same_q]),
                                    (out.loc[same, "count"] - out.loc[same, "paper_count"]).to_numpy(float))
        n, d = out.loc[same, "n"].to_numpy(float), (out.loc[same, "count"] - out.loc[same, "paper_count"]).to_numpy()
        out.loc[same, "p_value"] = p
        out.loc[same, "diff_low"] = 100.0 * (d - h) / n
        out.loc[same, "diff_high"] = 100.0 * (d + h) / n
        out.loc[same, "mc_sd"] = 100.0 * sd / n
    out["p_holm"] = holm(out["p_value"].to_numpy(float))
    out["status"] = np.where(~rep, "missing", np.where(out["p_holm"] < LEVEL, "differs", "ok"))
    result = pd.DataFrame({
        "artifact": artifact, "dataset": out["dataset_label"], "classifier": out["classifier_label"],
        "method_key": out["paper_method_key"], "reproduced_method_key": out["method_key"],
        "sigma": out["paper_sigma"], "b": out["b"].where(rep, out["paper_b"]),
        "K": out["K"].where(rep, out["paper_K"]), "radius": out["paper_radius"],
        "paper_certified_accuracy": out["paper_certified_accuracy"], "paper_n": out["paper_n"].astype("Int64"),
        "paper_count": out["paper_count"].astype("Int64"),
        "paper_ids": ["known" if isinstance(ids, (set, frozenset)) else "unknown" for ids in out["paper_ids"]],
        "reproduced_certified_accuracy": out["certified_accuracy"], "n": out["n"].astype("Int64"),
        "count": out["count"].astype("Int64"), "ci_low": out["ci_low"], "ci_high": out["ci_high"],
        "difference": out["difference"], "diff_low": out["diff_low"], "diff_high": out["diff_high"],
        "test": out["test"], "mc_estimate": out["mc_estimate"], "mc_sd": out["mc_sd"], "p_value": out["p_value"],
        "p_holm": out["p_holm"], "status": out["status"]})
    if "sigma_matched" in out:
        result.insert(result.columns.get_loc("radius"), "sigma_matched", out["sigma_matched"])
    if out["paper_clean_accuracy"].notna().any():
        result["paper_clean_accuracy"] = out["paper_clean_accuracy"]
        result["reproduced_clean_accuracy"] = out["clean_accuracy"] if "clean_accuracy" in out else np.nan
    return result


def all_paper_numbers(image_sets: list[dict] | None = None) -> pd.DataFrame:
    """Every published Carlini / Ours number with the paper's n (the points figures draw)."""
    sets = image_sets if image_sets is not None else load_image_sets()
    files = ["tableA.csv", "tableB.csv", "table2.csv", REFERENCE_PLOT_DATA]
    return pd.concat([paper_rows(PAPER_DIR / f, None, sets) for f in files if (PAPER_DIR / f).is_file()],
                     ignore_index=True)


def compare_artifact(results: pd.DataFrame, spec: dict, artifact: str, paper_csv=None, image_sets=None
                     ) -> pd.DataFrame:
    """:func:`compare_with_paper` of an artifact's table cells; a figure contributes its K-ablation panels (those
    at table radii)."""
    from densepure.report.spec import panels
    from densepure.report.tables import table_artifact

    table_spec = {**spec, "panels": [p for p in panels(spec) if p.get("radii") != "curve"]}
    if not table_spec["panels"]:
        raise ValueError(f"artifact {artifact!r} has no panel at table radii to compare")
    table = table_artifact(results, table_spec, artifact, allow_missing=True)  # unmatched paper cells: "missing"
    return compare_with_paper(table, paper_csv, artifact, image_sets, method_map=spec.get("paper_methods"))


COMPARISON_COLUMNS = ["dataset", "classifier", "method_key", "sigma", "b", "K", "radius", "paper_certified_accuracy",
                      "paper_n", "reproduced_certified_accuracy", "n", "difference", "diff_low", "diff_high", "test",
                      "p_holm", "status"]


def write_comparison(out: pd.DataFrame, path: Path, artifact: str) -> tuple[list[Path], str]:
    """Write the comparison as CSV at ``path`` and as an HTML page beside it; returns the paths and a one-line
    summary (cells consistent, differing, not reproduced)."""
    from densepure.files.atomic import atomic_write_text
    from densepure.report.layout import html_page

    path = Path(path)
    atomic_write_text(path, out.to_csv(index=False))
    counts = out["status"].value_counts()
    summary = (f"{len(out)} cells: {counts.get('ok', 0)} consistent with the paper, {counts.get('differs', 0)} "
               f"differ (Holm-adjusted p < 0.05), {counts.get('missing', 0)} not reproduced")
    shown = out[COMPARISON_COLUMNS].round(3).astype(object)
    shown = shown.where(shown.notna(), "")  # empty cells where nothing was reproduced (any column dtype)
    html_path = atomic_write_text(path.with_suffix(".html"),
                                  html_page(f"{artifact}: reproduction vs paper", shown, summary))
    return [path, html_path], summary
