"""Tables, figures and the paper comparison, computed from the per-image certification TSVs.

Input: the TSVs written by ``densepure certify`` / ``aggregate``, header
``idx label predict radius correct time dataset classifier method sigma b K N0 N alpha precision`` (one file per
setting; radius written with ``{:.3}``; predict -1 = abstain).

Conventions used throughout:

* **Certified accuracy** at radius r of a setting with n images = ``count / n``, ``count = #{rows : correct == 1 and
  predict != -1 and written_radius >= r}``, computed by :func:`densepure.smoothing.certified_accuracy`, which
  thresholds the radius rounded to 3 significant digits (so 0.7996 counts at r = 0.8, SPEC §7). Reported in percent.
* **95% interval**: two-sided Clopper–Pearson for the binomial ``count / n``:
  ``[BetaPPF(0.025; count, n - count + 1), BetaPPF(0.975; count + 1, n - count)]`` (0 / 1 at the ends).
* **Method key**: a row is a one-shot baseline when ``method != 'densepure' or b == 1``. Keys: ``densepure``
  (b-step DensePure, b > 1), ``onestep`` (the DensePure code's one-shot, also ``densepure`` with b = 1: the paper's
  "Carlini" rows, labelled ``Carlini``) and ``carlini`` (Carlini et al.'s own code path, labelled ``Carlini (own
  code)``; not in the paper). A spec's ``methods`` use the same names. Baselines are reported with b = 1, K = 1 (their
  K votes are identical); the TSV's method is kept in ``source_method``. The paper's ``carlini`` cells are compared
  with the reproduced ``onestep`` cells (and ``carlini`` ones, when present).
* **Artifact specs** are the dicts ``artifacts.<name>`` of config/paper.yaml (or config/README.md's YAML): a list
  of ``panels`` with ``dataset, classifiers, sigmas, bs, Ks, methods, images, radii`` (a list, or ``curve`` with
  ``max_radius``) and optionally ``extra_Ks`` (tables only), ``mv_K`` (b ablation: the "with majority vote" K,
  default max(Ks)), ``name``. ``images`` is an image-set name resolved by :func:`load_spec` to ``{start, stop, step,
  n}`` (or an ``ids`` list);
  only the rows of those ids count, so runs on a superset (``*_main``) serve the ablation subsets.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta

from . import resources
from .smoothing import certified_accuracy, format_radius

REQUIRED_COLUMNS = ["idx", "label", "predict", "radius", "correct", "dataset", "classifier", "method", "sigma", "b",
                    "K"]
OPTIONAL_COLUMNS = ["N0", "N", "alpha", "precision"]
SETTING_KEYS = ["dataset", "classifier", "method", "sigma", "b", "K", "N0", "N", "alpha", "precision"]

DATASET_LABELS = {"cifar10": "CIFAR-10", "imagenet": "ImageNet", "digits": "digits"}
CLASSIFIER_LABELS = {"vit-b16": "ViT-B/16", "wrn-28-10": "WRN28-10", "beit-large": "BEiT", "wrn-50-2": "WRN50-2",
                     "resnet-152": "ResNet-152", "mixer-b16": "MLP-Mixer"}
# Other names of the same classifier: registered names, reference CLI names, paper spellings (lower case).
CLASSIFIER_ALIASES = {"vit-b16": {"vit-b16-cifar10", "vit", "vit-b/16"},
                      "wrn-28-10": {"cifar-wrn", "wrn28-10"},
                      "beit-large": {"beit-large-512", "beit", "beit_large_patch16_512"},
                      "wrn-50-2": {"wrn", "wrn50-2", "wide_resnet50_2"},
                      "resnet-152": {"resnet", "resnet152"},
                      "mixer-b16": {"mixer-b16-miil", "mixer"}}
METHOD_LABELS = {"densepure": "Ours", "onestep": "Carlini", "carlini": "Carlini (own code)"}
LEGEND_LABELS = {"onestep": "Carlini (one-shot)", "carlini": "Carlini, own code (one-shot)"}
METHOD_ORDER = ("onestep", "carlini", "densepure")  # table rows: baselines first, as the paper
BASELINES = ("onestep", "carlini")
PAPER_METHOD_KEY = {"densepure": "densepure", "onestep": "carlini", "carlini": "carlini"}
LINESTYLES = {"densepure": "-", "onestep": "--", "carlini": ":"}
PAPER_LABELS = {"table1": "Table 1", "table2": "Table 2", "tableA": "Table A", "tableB": "Table B",
                "fig4_left": "Figure 4 (left)", "figA": "Figure A", "figB": "Figure B", "figG": "Figure G"}
CURVE_STEP = 0.01
AXIS_RADIUS = "radius (L2)"
AXIS_ACCURACY = "certified accuracy (%)"


# ----------------------------------------------------------------------------------------------------------- loading
def _expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; a directory stands for the ``*.tsv`` files inside it (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(p.glob("*.tsv")) if p.is_dir() else [p])
    return out


def load_results(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate certification TSVs into one frame (one row per image and setting).

    ``radius`` is ``float(text as written)`` and ``radius_text`` keeps the text. Adds ``method_key`` (see
    :func:`method_keys`) and ``source_file``. Identical rows given twice (e.g. the TSVs of two nested image sets of one
    run) are kept once. Raises ValueError for no paths, a missing/empty file, missing columns, a non-numeric radius or
    an image whose rows differ between files of one setting.
    """
    files = _expand_paths(paths)
    if not files:
        raise ValueError("no result files given")
    frames = []
    for path in files:
        if not path.is_file():
            raise ValueError(f"result file not found: {path}")
        try:
            df = pd.read_csv(path, sep="\t", dtype={"radius": str, "time": str, "dataset": str, "classifier": str,
                                                    "method": str, "precision": str})
        except pd.errors.EmptyDataError:
            raise ValueError(f"empty result file: {path}") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a result TSV ({' '.join(str(err).split())})") from None
        if df.empty:
            raise ValueError(f"result file has no rows: {path}")
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        for col in OPTIONAL_COLUMNS:
            if col not in df.columns:
                df[col] = np.nan
        df["radius_text"] = df["radius"].astype(str).str.strip()
        radius = pd.to_numeric(df["radius_text"], errors="coerce")
        if radius.isna().any():
            raise ValueError(f"{path}: non-numeric radius {df['radius_text'][radius.isna()].iloc[0]!r}")
        df["radius"] = radius.astype(float)
        df["source_file"] = str(path)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    for col in ("idx", "label", "predict", "correct", "b", "K"):
        out[col] = pd.to_numeric(out[col], errors="raise").astype(int)
    out["sigma"] = out["sigma"].astype(float)
    for col in ("dataset", "classifier", "method"):
        out[col] = out[col].astype(str).str.strip()
    out["method_key"] = method_keys(out)
    out = out.drop_duplicates(SETTING_KEYS + ["idx", "label", "predict", "radius_text", "correct"]).reset_index(
        drop=True)
    dup = out.duplicated(SETTING_KEYS + ["idx"], keep=False)
    if dup.any():
        row = out[dup].iloc[0]
        raise ValueError(f"image {row['idx']} has different results in files of setting {_setting_text(row)} "
                         f"({', '.join(sorted(set(out.loc[dup, 'source_file'])))})")
    return out


def is_baseline(df: pd.DataFrame) -> pd.Series:
    """True for one-shot baseline rows: ``method != 'densepure' or b == 1``."""
    return (df["method"] != "densepure") | (df["b"] == 1)


def method_keys(df: pd.DataFrame) -> np.ndarray:
    """``densepure`` (method densepure, b > 1), ``onestep`` (method onestep, or densepure with b = 1) or the TSV's
    method otherwise (``carlini``: Carlini et al.'s own code path)."""
    return np.where(~is_baseline(df), "densepure",
                    np.where((df["method"] == "densepure") | (df["method"] == "onestep"), "onestep", df["method"]))


def _setting_text(row) -> str:
    return (f"{row['dataset']}/{row['classifier']}/{row['method']} sigma={row['sigma']} b={row['b']} K={row['K']}")


# ------------------------------------------------------------------------------------------------------- statistics
def clopper_pearson(count, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper–Pearson interval for a binomial proportion ``count / n`` (fractions, not percent).

    ``low = BetaPPF((1 - level)/2; count, n - count + 1)`` (0 if count = 0),
    ``high = BetaPPF((1 + level)/2; count + 1, n - count)`` (1 if count = n). Works elementwise on arrays.
    """
    count = np.asarray(count, dtype=float)
    n = np.asarray(n, dtype=float)
    a = (1.0 - level) / 2.0
    with np.errstate(all="ignore"):
        low = np.where(count > 0, beta.ppf(a, np.maximum(count, 1e-300), n - count + 1), 0.0)
        high = np.where(count < n, beta.ppf(1 - a, count + 1, np.maximum(n - count, 1e-300)), 1.0)
    return low, high


def _accuracy_rows(g: pd.DataFrame, radii: Sequence[float]) -> pd.DataFrame:
    """Per radius: n, count, certified_accuracy (%), ci_low/ci_high (%) of the rows ``g`` of one setting."""
    n = len(g)
    correct = ((g["correct"] == 1) & (g["predict"] != -1)).to_numpy()
    # Only correct rows can count, so certified_accuracy runs on them alone (count = fraction * their number), on
    # the 3-significant-digit text computed once.
    written = [format_radius(r) for r in g["radius"].to_numpy(float)[correct]]
    ones = [1] * len(written)
    counts = np.array([int(round(certified_accuracy(written, ones, float(r)) * len(written))) if written else 0
                       for r in radii], dtype=int)
    low, high = clopper_pearson(counts, n)
    return pd.DataFrame({"radius": [float(r) for r in radii], "n": n, "count": counts,
                         "certified_accuracy": 100.0 * counts / n, "ci_low": 100.0 * low, "ci_high": 100.0 * high})


def certified_accuracy_table(df: pd.DataFrame, radii: Sequence[float]) -> pd.DataFrame:
    """Tidy certified accuracy of every setting in ``df`` at every radius in ``radii``.

    One row per (dataset, classifier, method, method_key, sigma, b, K, N0, N, alpha, precision, radius) with ``n``
    images, ``count`` certified, ``certified_accuracy = 100 * count / n`` and the 95% Clopper–Pearson interval
    ``ci_low``/``ci_high`` (percent). ``method_label``: ``Ours``, ``Carlini`` (onestep) or ``Carlini (own code)``.
    """
    if df.empty:
        raise ValueError("no result rows")
    if len(radii) == 0:
        raise ValueError("no radii given")
    parts = []
    for keys, g in df.groupby(SETTING_KEYS + ["method_key"], dropna=False, sort=True):
        acc = _accuracy_rows(g, radii)
        for key, value in zip(SETTING_KEYS + ["method_key"], keys):
            acc.insert(len(acc.columns) - 6, key, value)
        parts.append(acc)
    out = pd.concat(parts, ignore_index=True)
    out.insert(out.columns.get_loc("method_key") + 1, "method_label",
               out["method_key"].map(lambda m: METHOD_LABELS.get(m, m)))
    return out


# -------------------------------------------------------------------------------------------------------- selection
def canonical_classifier(name: str) -> str:
    """The key of :data:`CLASSIFIER_LABELS` that ``name`` (or an alias, case-insensitive) stands for, else ``name``
    lower-cased: ``beit-large-512`` -> ``beit-large``."""
    n = str(name).strip().lower()
    for key, aliases in CLASSIFIER_ALIASES.items():
        if n == key or n in aliases:
            return key
    return n


def classifier_label(name: str) -> str:
    """Printed name of a classifier (the paper's spelling): ``vit-b16-cifar10`` -> ``ViT-B/16``."""
    return CLASSIFIER_LABELS.get(canonical_classifier(name), str(name))


def classifier_matches(written: str, key: str) -> bool:
    """Whether the classifier name written in a TSV is the spec's ``key``: the same classifier up to aliases
    (:func:`canonical_classifier`), or a registered name extending it (``vit-b16-cifar10`` for ``vit-b16``)."""
    w, k = canonical_classifier(written), canonical_classifier(key)
    return w == k or w.startswith(k + "-") or w.startswith(k + "_")


def image_ids(images) -> set[int] | None:
    """The ids of an image set: ``{start, stop, step}`` -> ``range``, ``{ids: [...]}`` or a list; None = all."""
    if images is None:
        return None
    if isinstance(images, str):
        raise ValueError(f"image set {images!r} is not resolved; load the spec with load_spec() or give "
                         "{start, stop, step}")
    if isinstance(images, dict):
        if "ids" in images:
            return {int(i) for i in images["ids"]}
        return set(range(int(images.get("start", 0)), int(images["stop"]), int(images.get("step", 1))))
    return {int(i) for i in images}


def _expected_n(images) -> float:
    if images is None:
        return math.nan
    if isinstance(images, dict) and "n" in images:
        return float(images["n"])
    return float(len(image_ids(images)))


def select_rows(results: pd.DataFrame, *, dataset: str, classifier: str, method_key: str, sigma: float,
                b: int | None = None, K: int | None = None, images=None) -> pd.DataFrame:
    """Rows of one reported setting, restricted to the image set ``images``.

    DensePure: ``method == 'densepure'``, the given b (> 1) and K. Baselines (``onestep``, ``carlini``): any run of
    that key for the dataset/classifier/sigma; if several, method ``onestep`` before ``densepure`` with b = 1, then the
    smallest K (one-shot votes are identical, so K does not change the result). Returns an empty frame when nothing
    matches; raises ValueError when several runs (e.g. two precisions) remain for one cell.
    """
    names = {c for c in results["classifier"].unique() if classifier_matches(c, classifier)}
    m = ((results["dataset"].str.lower() == dataset.lower())
         & results["classifier"].isin(names)
         & np.isclose(results["sigma"].to_numpy(float), float(sigma))
         & (results["method_key"] == method_key))
    if method_key == "densepure":
        m &= (results["method"] == "densepure") & (results["b"] == int(b)) & (results["K"] == int(K))
    rows = results[m]
    ids = image_ids(images)
    if ids is not None:
        rows = rows[rows["idx"].isin(ids)]
    if rows.empty:
        return rows
    if method_key != "densepure":
        rank = (rows["method"] != method_key).astype(int)
        rows = rows[rank == rank.min()]
        rows = rows[rows["K"] == rows["K"].min()]
    settings = rows[SETTING_KEYS].drop_duplicates()
    if len(settings) > 1:
        differ = ", ".join(c for c in SETTING_KEYS if settings[c].nunique(dropna=False) > 1)
        raise ValueError(f"{len(settings)} different runs match {dataset}/{classifier}/{method_key} sigma={sigma} "
                         f"b={b} K={K} (they differ in {differ}); pass only one")
    return rows


def setting_accuracy(results: pd.DataFrame, radii: Sequence[float], *, dataset: str, classifier: str,
                     method_key: str, sigma: float, b: int | None = None, K: int | None = None,
                     images=None) -> pd.DataFrame:
    """Certified accuracy rows (see :func:`certified_accuracy_table`) of one reported setting; empty if no data.

    Baselines are reported with b = 1, K = 1 (one-shot); ``source_method`` is the TSV's method.
    """
    rows = select_rows(results, dataset=dataset, classifier=classifier, method_key=method_key, sigma=sigma, b=b, K=K,
                       images=images)
    if rows.empty:
        return pd.DataFrame()
    acc = _accuracy_rows(rows, radii)
    if method_key != "densepure":
        b, K = 1, 1
    meta = {"dataset": dataset, "dataset_label": DATASET_LABELS.get(dataset, dataset), "classifier": classifier,
            "classifier_label": classifier_label(classifier), "method_key": method_key,
            "method_label": METHOD_LABELS.get(method_key, method_key), "source_method": rows["method"].iloc[0],
            "sigma": float(sigma), "b": int(b), "K": int(K)}
    for i, (key, value) in enumerate(meta.items()):
        acc.insert(i, key, value)
    acc.insert(acc.columns.get_loc("n") + 1, "n_expected", _expected_n(images))
    return acc


# ------------------------------------------------------------------------------------------------------------ specs
def _extract_yaml(text: str) -> str:
    """The last fenced ```yaml block of a Markdown file (config/README.md), or the text itself."""
    blocks = re.findall(r"```yaml\s*\n(.*?)```", text, flags=re.S)
    return blocks[-1] if blocks else text


def load_spec(path: str | Path, artifact: str) -> dict:
    """The spec dict of ``artifact`` from a YAML file (config/paper.yaml, or a Markdown file with a ```yaml block
    such as config/README.md), with each panel's ``images`` name resolved (see :func:`collect_image_sets`). Accepts a
    top-level ``artifacts`` mapping or a mapping of artifact names. ValueError for a missing file or an unknown
    artifact / image set."""
    import yaml

    path = resources.config_file(path, what="spec file")
    try:
        config = yaml.safe_load(_extract_yaml(path.read_text())) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read spec ({' '.join(str(err).split())})") from None
    artifacts = config.get("artifacts", config) if isinstance(config, dict) else {}
    if artifact not in artifacts or not isinstance(artifacts[artifact], dict):
        known = ", ".join(k for k, v in artifacts.items() if isinstance(v, dict) and "panels" in v)
        raise ValueError(f"unknown artifact {artifact!r} in {path} (known: {known or 'none'})")
    return resolve_spec(artifacts[artifact], collect_image_sets(config))


def collect_image_sets(config: dict) -> dict:
    """Image sets by name from a config: top-level ``image_sets`` and ``datasets.<dataset>.image_sets``; each value
    ``{start, stop, step[, n]}``, an id list or a string ``start:stop:step`` / ``0,20,40``."""
    sets = dict(config.get("image_sets") or {}) if isinstance(config, dict) else {}
    for ds in (config.get("datasets") or {}).values() if isinstance(config, dict) else []:
        if isinstance(ds, dict):
            sets.update(ds.get("image_sets") or {})
    return sets


def _image_set(name: str, value) -> dict:
    """``{name, start, stop, step, n}`` or ``{name, ids, n}`` of an image-set value (see :func:`collect_image_sets`)."""
    if isinstance(value, str):
        try:
            if ":" in value:
                start, stop, *step = [int(x) for x in value.split(":")]
                value = {"start": start, "stop": stop, "step": step[0] if step else 1}
            else:
                value = {"ids": [int(x) for x in value.split(",") if x.strip()]}
        except ValueError:
            raise ValueError(f"cannot read image set {name!r}: {value!r}") from None
    elif isinstance(value, (list, tuple)):
        value = {"ids": list(value)}
    out = {**value, "name": name}
    out.setdefault("n", len(image_ids(out)))
    return out


def resolve_spec(spec: dict, image_sets: dict) -> dict:
    """Copy of ``spec`` whose panels' ``images`` names are replaced by their resolved image sets."""
    if not spec.get("panels"):
        raise ValueError("artifact spec has no panels")
    panels = []
    for panel in spec["panels"]:
        panel = dict(panel)
        name = panel.get("images")
        if isinstance(name, str):
            if name not in image_sets:
                raise ValueError(f"unknown image set {name!r} (known: {', '.join(image_sets) or 'none'})")
            panel["images"] = _image_set(name, image_sets[name])
        panels.append(panel)
    return {**spec, "panels": panels}


def _panels(spec: dict) -> list[dict]:
    panels = spec.get("panels") if isinstance(spec, dict) else None
    if not panels:
        raise ValueError("artifact spec has no panels")
    return panels


def _radii(panel: dict) -> list[float]:
    """Table radii of a panel, or the curve grid ``0, 0.01, ..., max_radius`` when ``radii: curve``."""
    radii = panel.get("radii")
    if radii == "curve":
        steps = int(round(float(panel.get("max_radius", 4.0)) / CURVE_STEP))
        return [round(i * CURVE_STEP, 2) for i in range(steps + 1)]
    if not radii:
        raise ValueError("panel has no radii")
    return [float(r) for r in radii]


# ----------------------------------------------------------------------------------------------------------- tables
def table_cells(results: pd.DataFrame, spec: dict, artifact: str = "", radii_extra: Sequence[float] = (),
                extra_Ks: bool = True) -> pd.DataFrame:
    """Tidy cells of a table artifact: for each panel, method (baseline first, as the paper), classifier, sigma,
    (b, K) in ``bs x (Ks + extra_Ks)`` and radius, the certified accuracy with n and the 95% CI. Settings without
    results are left out; no cells at all -> ValueError."""
    parts = []
    for p, panel in enumerate(_panels(spec)):
        radii = sorted(set(_radii(panel)) | {float(r) for r in radii_extra})
        methods = _methods(panel)
        ks = list(panel.get("Ks", [40])) + (list(panel.get("extra_Ks", [])) if extra_Ks else [])
        for method in methods:
            combos = [(b, k) for b in panel.get("bs", [10]) for k in ks] if method == "densepure" else [(None, None)]
            for classifier in panel["classifiers"]:
                for sigma in panel["sigmas"]:
                    for b, k in combos:
                        acc = setting_accuracy(results, radii, dataset=panel["dataset"], classifier=classifier,
                                               method_key=method, sigma=sigma, b=b, K=k, images=panel.get("images"))
                        if not acc.empty:
                            acc.insert(0, "panel", panel.get("name", p))
                            parts.append(acc)
    if not parts:
        raise ValueError(f"no results match artifact {artifact or 'spec'}")
    cells = pd.concat(parts, ignore_index=True)
    cells.insert(0, "artifact", artifact)
    return cells


def _methods(panel: dict) -> list[str]:
    """The panel's methods in table order (baselines first); ValueError for an unknown one."""
    methods = panel.get("methods", ["densepure", "onestep"])
    unknown = [m for m in methods if m not in METHOD_ORDER]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(map(str, unknown))} (known: {', '.join(METHOD_ORDER)})")
    return [m for m in METHOD_ORDER if m in methods]


def add_diff_vs_carlini(cells: pd.DataFrame) -> pd.DataFrame:
    """``diff_vs_carlini = Ours - Carlini`` (percentage points) for DensePure cells with a baseline cell of the same
    dataset, classifier, sigma and radius (as the brackets of Tables A/B; the ``onestep`` baseline, else
    ``carlini``); NaN otherwise."""
    keys = ["dataset", "classifier", "sigma", "radius"]
    base = cells[cells["method_key"].isin(BASELINES)].copy()
    base["_rank"] = base["method_key"].map({m: i for i, m in enumerate(BASELINES)})
    base = base.sort_values("_rank", kind="stable").drop_duplicates(keys)[keys + ["certified_accuracy"]].rename(
        columns={"certified_accuracy": "_base"})
    out = cells.merge(base, on=keys, how="left")
    out["diff_vs_carlini"] = np.where(out["method_key"] == "densepure", out["certified_accuracy"] - out["_base"],
                                      np.nan)
    return out.drop(columns="_base")


def table_a(results: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Table A (CIFAR-10, all sigma): cells of :func:`table_cells` plus ``diff_vs_carlini``."""
    return add_diff_vs_carlini(table_cells(results, spec, "tableA"))


def table_b(results: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Table B (ImageNet, all sigma): cells of :func:`table_cells` plus ``diff_vs_carlini``."""
    return add_diff_vs_carlini(table_cells(results, spec, "tableB"))


def table2(results: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Table 2 (architectures, sigma = 0.25): cells of :func:`table_cells`, ``extra_Ks`` included as extra rows."""
    return table_cells(results, spec, "table2")


def table1(results: pd.DataFrame, spec: dict, paper_csv: str | Path | None = None) -> pd.DataFrame:
    """Table 1: per (dataset, classifier, method, b, K) and radius r, ``max over sigma`` of the certified accuracy;
    ``clean_accuracy`` is the r = 0 accuracy of the arg-max sigma (``sigma_matched``; ties -> higher clean accuracy,
    then smaller sigma), with its CI. The baseline rows (PixelDP ... Lee) of ``paper_csv`` (default
    results/paper/table1.csv) are quoted, not reproduced (``reproduced = False``), and come first as in the paper."""
    cells = table_cells(results, spec, "table1", radii_extra=[0.0], extra_Ks=False)
    group = ["panel", "dataset", "classifier", "method_key", "b", "K"]
    clean = cells[cells["radius"] == 0.0][group + ["sigma", "certified_accuracy", "ci_low", "ci_high", "n"]].rename(
        columns={"certified_accuracy": "clean_accuracy", "ci_low": "clean_ci_low", "ci_high": "clean_ci_high",
                 "n": "clean_n"})
    listed = {(p.get("name", i), float(r)) for i, p in enumerate(_panels(spec)) for r in _radii(p)}
    cells = cells[[(p, r) in listed for p, r in zip(cells["panel"], cells["radius"])]]
    merged = cells.merge(clean, on=group + ["sigma"], how="left")
    merged = merged.sort_values(["certified_accuracy", "clean_accuracy", "sigma"], ascending=[False, False, True],
                                kind="stable")
    best = merged.drop_duplicates(group + ["radius"], keep="first").copy()
    order = {key: i for i, key in enumerate(cells[group + ["radius"]].drop_duplicates().itertuples(index=False))}
    best["_order"] = [order[tuple(t)] for t in best[group + ["radius"]].itertuples(index=False)]
    best = best.sort_values("_order").drop(columns="_order").rename(columns={"sigma": "sigma_matched"})
    best.insert(best.columns.get_loc("b"), "sigma", np.nan)
    best["off_the_shelf"] = "yes"
    best["reproduced"] = True
    quoted = quoted_baselines(paper_csv, datasets=[DATASET_LABELS.get(p["dataset"], p["dataset"])
                                                   for p in _panels(spec)])
    return pd.concat([quoted, best], ignore_index=True)[list(best.columns)]


def read_csv(path: str | Path) -> pd.DataFrame:
    """``pd.read_csv`` with a one-line ValueError naming the file when it is not a CSV (binary, ragged)."""
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a CSV file ({' '.join(str(err).split())})") from None


def quoted_baselines(paper_csv: str | Path | None = None, datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 1's baseline rows of the paper CSV (all but Carlini/Ours) as cells with ``reproduced = False``."""
    path = Path(paper_csv) if paper_csv else resources.paper_numbers("table1")
    if not path.is_file():
        raise ValueError(f"paper table not found: {path}")
    paper = read_csv(path)
    paper = paper[~paper["method_key"].isin(["densepure", "carlini", "onestep"])]
    if datasets is not None:
        paper = paper[paper["dataset"].isin(list(datasets))]
    label = [f"{m} ({c})" if isinstance(c, str) and c else m for m, c in zip(paper["method"], paper["citation"])]
    return pd.DataFrame({"artifact": "table1", "dataset_label": paper["dataset"].to_numpy(),
                         "dataset": paper["dataset"].map({v: k for k, v in DATASET_LABELS.items()}).to_numpy(),
                         "method_key": paper["method_key"].to_numpy(), "method_label": label,
                         "radius": paper["radius"].astype(float).to_numpy(),
                         "certified_accuracy": paper["certified_accuracy"].astype(float).to_numpy(),
                         "clean_accuracy": paper["clean_accuracy"].astype(float).to_numpy(),
                         "off_the_shelf": paper["off_the_shelf"].to_numpy(), "reproduced": False})


TABLES = {"table1": table1, "table2": table2, "tableA": table_a, "tableB": table_b}


def table_artifact(results: pd.DataFrame, spec: dict, name: str, **kwargs) -> pd.DataFrame:
    """Cells of the table artifact ``name`` (one of :data:`TABLES`)."""
    if name not in TABLES:
        raise ValueError(f"unknown table artifact {name!r} (known: {', '.join(TABLES)})")
    return TABLES[name](results, spec, **kwargs)


# ---------------------------------------------------------------------------------------------------------- writers
def _num(x: float) -> str:
    """0 -> '0.0', 0.25 -> '0.25', 1 -> '1.0' (as the paper prints radii and sigmas)."""
    s = f"{float(x):g}"
    return s if "." in s or "e" in s else s + ".0"


def cell_text(row) -> str:
    """Printed cell: ``acc`` with one decimal; Table 1 prefixes ``(clean)``; Tables A/B append ``(+diff)``."""
    acc = row.get("certified_accuracy")
    if acc is None or pd.isna(acc):
        return "-"
    text = f"{acc:.1f}"
    clean = row.get("clean_accuracy")
    if clean is not None and not pd.isna(clean):
        text = f"({clean:.1f}) {text}"
    diff = row.get("diff_vs_carlini")
    if diff is not None and not pd.isna(diff):
        text = f"{text} ({diff:+.1f})"
    return text


ROW_KEY_NAMES = {"dataset_label": "Dataset", "method_label": "Method", "off_the_shelf": "Off-the-shelf",
                 "classifier_label": "Model", "sigma": "σ", "b": "b", "K": "K"}
ROW_KEY_TEX = {"sigma": r"$\sigma$", "b": "$b$", "K": "$K$"}


def table_layout(cells: pd.DataFrame) -> tuple[list[str], list[tuple], pd.DataFrame]:
    """Paper-like layout of tidy cells: rows = method x sigma (plus dataset / model / b / K where they vary),
    columns = radii in increasing order (grouped by dataset when the datasets have different radii, as Table 1).
    Rows and column groups in order of first appearance in ``cells``. Returns (row key names, column keys
    ``(group, radius)``, wide frame of cell texts)."""
    if cells.empty:
        raise ValueError("no cells to write")
    c = cells.copy()
    for col in ("dataset_label", "classifier_label"):
        if col not in c:
            c[col] = np.nan
    radii_by_ds = {ds: tuple(sorted(g["radius"].unique())) for ds, g in c.groupby("dataset_label", sort=False)}
    grouped = len(radii_by_ds) > 1 and len(set(radii_by_ds.values())) > 1
    row_keys = []
    for key in ["dataset_label", "method_label", "off_the_shelf", "classifier_label", "sigma", "b", "K"]:
        if key not in c or c[key].isna().all():
            continue
        if key == "dataset_label" and grouped:
            continue
        if key == "method_label" or (key == "off_the_shelf"):
            row_keys.append(key)
        elif key in ("b", "K"):
            if (c.groupby("method_label", sort=False)[key].nunique(dropna=True) > 1).any():
                row_keys.append(key)
        elif key == "classifier_label":  # a model column only where one dataset has several models (Table 2)
            if (c.groupby("dataset_label", sort=False)[key].nunique(dropna=True) > 1).any():
                row_keys.append(key)
        elif c[key].nunique(dropna=True) > 1:
            row_keys.append(key)
    c["_text"] = [cell_text(r) for r in c.to_dict("records")]
    c["_group"] = c["dataset_label"] if grouped else ""
    group_order = {g: i for i, g in enumerate(dict.fromkeys(c["_group"]))}
    col_keys = sorted(dict.fromkeys(zip(c["_group"], c["radius"])), key=lambda gr: (group_order[gr[0]], gr[1]))
    row_tuples = list(dict.fromkeys(tuple(_key_text(k, v) for k, v in zip(row_keys, r))
                                    for r in c[row_keys].itertuples(index=False)))
    lookup = {}
    for rec in c.to_dict("records"):
        rk = tuple(_key_text(k, rec[k]) for k in row_keys)
        lookup[(rk, (rec["_group"], rec["radius"]))] = rec["_text"]
    data = [[*rk, *(lookup.get((rk, ck), "-") for ck in col_keys)] for rk in row_tuples]
    columns = [ROW_KEY_NAMES[k] for k in row_keys] + [f"{g} ε={_num(r)}".strip() for g, r in col_keys]
    return row_keys, col_keys, pd.DataFrame(data, columns=columns)


def _key_text(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if key == "sigma":
        return _num(value)
    if key in ("b", "K"):
        return str(int(value))
    return str(value)


def _blank_repeats(rows: list[list[str]], n_keys: int) -> list[list[str]]:
    """Print a leading row key only where it changes (as the paper's multirow cells)."""
    out, prev = [], [None] * n_keys
    for row in rows:
        new = list(row)
        for j in range(n_keys):
            if row[:j + 1] == prev[:j + 1]:
                new[j] = ""
        prev = list(row[:n_keys])
        out.append(new)
    return out


def _markdown(row_keys, col_keys, wide: pd.DataFrame, note: str) -> str:
    header = "| " + " | ".join(wide.columns) + " |"
    align = "|" + "|".join(":---" if i < len(row_keys) else "---:" for i in range(len(wide.columns))) + "|"
    rows = _blank_repeats(wide.astype(str).values.tolist(), len(row_keys))
    body = ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join([header, align, *body, "", note, ""])


def _tex_escape(text: str) -> str:
    text = str(text)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("σ", r"$\sigma$"), ("ε", r"$\varepsilon$"), ("–", "--")):
        text = text.replace(a, b)
    return text


def _latex(row_keys, col_keys, wide: pd.DataFrame, note: str) -> str:
    nk, nc = len(row_keys), len(col_keys)
    lines = [f"% {note}", r"\begin{tabular}{" + "l" * nk + "r" * nc + "}", r"\toprule"]
    groups = list(dict.fromkeys(g for g, _ in col_keys))
    if groups != [""]:
        head, rules, start = ["" for _ in range(nk)], [], nk + 1
        for g in groups:
            width = sum(1 for gg, _ in col_keys if gg == g)
            head.append(rf"\multicolumn{{{width}}}{{c}}{{{_tex_escape(g)}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        lines += [" & ".join(head) + r" \\", " ".join(rules)]
    else:
        lines += [" & " * nk + rf"\multicolumn{{{nc}}}{{c}}{{Certified accuracy (\%) at $\varepsilon$}} \\",
                  rf"\cmidrule(lr){{{nk + 1}-{nk + nc}}}"]
    names = [ROW_KEY_TEX.get(k, _tex_escape(ROW_KEY_NAMES[k])) for k in row_keys] + [_num(r) for _, r in col_keys]
    lines += [" & ".join(names) + r" \\", r"\midrule"]
    for row in _blank_repeats(wide.astype(str).values.tolist(), nk):
        lines.append(" & ".join(_tex_escape(x) for x in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def _note(cells: pd.DataFrame) -> str:
    parts = ["Certified accuracy (%)."]
    if "clean_accuracy" in cells:
        parts.append("Parenthesised: clean accuracy (r = 0) of the sigma giving the cell.")
    if "diff_vs_carlini" in cells:
        parts.append("Bracketed: Ours minus Carlini.")
    if "reproduced" in cells and (~cells["reproduced"].astype(bool)).any():
        parts.append("Rows other than Carlini and Ours are quoted from the paper, not reproduced.")
    if "n" in cells and cells["n"].notna().any():
        ns = sorted({int(x) for x in cells["n"].dropna()})
        parts.append(f"n = {', '.join(map(str, ns))} images per reproduced cell; 95% Clopper-Pearson intervals in "
                     "the _cells.csv file.")
    return " ".join(parts)


def write_table(cells: pd.DataFrame, name: str, outdir: str | Path) -> list[Path]:
    """Write ``<name>.csv`` / ``.md`` / ``.tex`` (booktabs) laid out like the paper (see :func:`table_layout`), and
    ``<name>_cells.csv`` with the tidy cells (n, count, CI; the input of :func:`compare_with_paper`)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    row_keys, col_keys, wide = table_layout(cells)
    note = _note(cells)
    paths = [outdir / f"{name}.csv", outdir / f"{name}.md", outdir / f"{name}.tex", outdir / f"{name}_cells.csv"]
    wide.to_csv(paths[0], index=False)
    paths[1].write_text(_markdown(row_keys, col_keys, wide, note))
    paths[2].write_text(_latex(row_keys, col_keys, wide, note))
    cells.to_csv(paths[3], index=False)
    return paths


# ---------------------------------------------------------------------------------------------------------- figures
def panel_kind(panel: dict) -> str:
    """``k_ablation`` (table radii, several K), ``b_ablation`` (curve, several b or K) or ``curves``."""
    curve = panel.get("radii") == "curve"
    several_k = len(panel.get("Ks", [])) > 1
    if not curve:
        if several_k:
            return "k_ablation"
        raise ValueError("panel with table radii and a single K is a table, not a figure")
    return "b_ablation" if several_k or len(panel.get("bs", [])) > 1 else "curves"


def _palette(n: int):
    import seaborn as sns

    return sns.color_palette("colorblind", max(n, 10))


def _hue_colours(kind: str, values: list) -> dict:
    """Fixed colours: sigma 0.25/0.5/1.0 and b 1/2/5/10 keep theirs in every figure; others by order."""
    pal = _palette(len(values) + 4)
    fixed = {"sigma": {0.25: pal[0], 0.5: pal[1], 1.0: pal[2]},
             "b": {1: pal[7], 2: pal[1], 5: pal[2], 10: pal[0]}}.get(kind, {})
    out, spare = {}, iter(c for c in pal if c not in fixed.values())
    for v in values:
        out[v] = fixed.get(v) if v in fixed else next(spare)
    return out


@contextlib.contextmanager
def figure_style():
    """The one style of all report figures (seaborn whitegrid, notebook context, small legends)."""
    import seaborn as sns

    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        import matplotlib as mpl

        with mpl.rc_context({"legend.fontsize": 8, "legend.framealpha": 0.9, "axes.titlesize": 11,
                             "pdf.fonttype": 42, "savefig.bbox": "tight"}):
            yield


def _panel_title(panel: dict) -> str:
    parts = [DATASET_LABELS.get(panel["dataset"], panel["dataset"])]
    if len(panel.get("classifiers", [])) == 1:
        parts.append(classifier_label(panel["classifiers"][0]))
    if len(panel.get("sigmas", [])) == 1:
        parts.append(f"σ = {_num(panel['sigmas'][0])}")
    kind = panel_kind(panel)
    if kind == "k_ablation":
        parts.append(f"b = {panel.get('bs', [10])[0]}")
    return " · ".join(parts)


def _finish_axes(ax, xlabel: str, xmax: float | None = None) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(AXIS_ACCURACY)
    ax.set_ylim(0, 100)
    if xmax is not None:
        ax.set_xlim(0, xmax)


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no results", transform=ax.transAxes, ha="center", va="center", color="grey")


def _curve_data(results, panel, settings) -> pd.DataFrame:
    """Accuracy on the radius grid for each ``(classifier, method_key, sigma, b, K)`` in ``settings``."""
    radii = _radii(panel)
    parts = []
    for classifier, method, sigma, b, k in settings:
        acc = setting_accuracy(results, radii, dataset=panel["dataset"], classifier=classifier, method_key=method,
                               sigma=sigma, b=b, K=k, images=panel.get("images"))
        if not acc.empty:
            parts.append(acc)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _line_handles(entries):
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=c, ls=ls, marker=mk, lw=1.8, label=lab) for lab, c, ls, mk in entries]


def _legend_method(method: str, b=None, k=None) -> str:
    return f"Ours (b = {b}, K = {k})" if method == "densepure" else LEGEND_LABELS.get(method, method)


def draw_curves(ax, results: pd.DataFrame, panel: dict) -> pd.DataFrame:
    """Certified accuracy vs radius: DensePure solid, Carlini (onestep) dashed, Carlini's own code dotted; colour =
    sigma (or classifier when the panel has several classifiers, or both)."""
    methods = _methods(panel)
    b, k = panel.get("bs", [10])[0], panel.get("Ks", [40])[0]
    settings = [(c, m, s, b, k) for c in panel["classifiers"] for s in panel["sigmas"] for m in methods]
    data = _curve_data(results, panel, settings)
    if data.empty:
        _no_data(ax)
    hue_keys = [key for key, many in (("classifier", len(panel["classifiers"]) > 1),
                                      ("sigma", len(panel["sigmas"]) > 1)) if many] or ["sigma"]
    hue_of = {(c, s): tuple(v for key, v in (("classifier", c), ("sigma", s)) if key in hue_keys)
              for c in panel["classifiers"] for s in panel["sigmas"]}
    hues = list(dict.fromkeys(hue_of.values()))
    by_sigma = hue_keys == ["sigma"]
    colours = _hue_colours("sigma" if by_sigma else "other", [h[0] if by_sigma else h for h in hues])
    colour = {h: colours[h[0] if by_sigma else h] for h in hues}
    if not data.empty:
        for (c, m, s), g in data.groupby(["classifier", "method_key", "sigma"], sort=False):
            ax.plot(g["radius"], g["certified_accuracy"], color=colour[hue_of[(c, s)]], ls=LINESTYLES[m], lw=1.8)

    def hue_label(h):
        return ", ".join(classifier_label(v) if key == "classifier" else f"σ = {_num(v)}"
                         for key, v in zip(hue_keys, h))

    entries = [(hue_label(h), colour[h], "-", None) for h in hues]
    entries += [(_legend_method(m, b, k), "0.25", LINESTYLES[m], None) for m in METHOD_ORDER[::-1] if m in methods]
    ax.legend(handles=_line_handles(entries), loc="upper right")
    _finish_axes(ax, AXIS_RADIUS, float(panel.get("max_radius", 4.0)))
    return data


def draw_b_ablation(ax, results: pd.DataFrame, panel: dict) -> pd.DataFrame:
    """Fast-sampling ablation: certified accuracy vs radius per b (colour), with a majority vote (K = ``mv_K``,
    default max(Ks); solid) and without (K = 1; dashed); b = 1 is the one-shot baseline of each baseline method in
    ``methods`` (no vote; dashed, Carlini's own code dotted)."""
    classifier, sigma = panel["classifiers"][0], panel["sigmas"][0]
    mv_k = int(panel.get("mv_K", max(panel.get("Ks", [40]))))
    baselines = [m for m in _methods(panel) if m != "densepure"]
    settings = [(classifier, m, sigma, 1, 1) for m in baselines]
    settings += [(classifier, "densepure", sigma, b, k) for b in sorted(panel["bs"]) for k in (mv_k, 1)]
    data = _curve_data(results, panel, settings)
    if data.empty:
        _no_data(ax)
    pal = _palette(10)
    colours = {("onestep", 1): pal[7], ("carlini", 1): pal[5]}
    colours.update({("densepure", b): c for b, c in _hue_colours("b", sorted(panel["bs"])).items()})
    if not data.empty:
        for (m, b, k), g in data.groupby(["method_key", "b", "K"], sort=False):
            ls = LINESTYLES[m] if m != "densepure" else ("-" if k > 1 else "--")
            ax.plot(g["radius"], g["certified_accuracy"], color=colours[(m, b)], ls=ls, lw=1.8)
    entries = [(f"b = 1, {LEGEND_LABELS[m]}", colours[(m, 1)], LINESTYLES[m], None) for m in baselines]
    entries += [(f"b = {b}", colours[("densepure", b)], "-", None) for b in sorted(panel["bs"])]
    entries += [(f"with MV (K = {mv_k})", "0.25", "-", None), ("without MV (K = 1)", "0.25", "--", None)]
    ax.legend(handles=_line_handles(entries), loc="upper right")
    _finish_axes(ax, AXIS_RADIUS, float(panel.get("max_radius", 4.0)))
    return data


def draw_k_ablation(ax, results: pd.DataFrame, panel: dict) -> pd.DataFrame:
    """Vote-count ablation: certified accuracy vs K (log axis), one line per radius (colour); each baseline in
    ``methods`` as a horizontal line of the same colour per radius (onestep dashed, Carlini's own code dotted)."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    classifier, sigma, b = panel["classifiers"][0], panel["sigmas"][0], panel.get("bs", [10])[0]
    radii, ks = _radii(panel), sorted(panel["Ks"])
    common = {"dataset": panel["dataset"], "classifier": classifier, "sigma": sigma, "images": panel.get("images")}
    parts = [setting_accuracy(results, radii, method_key="densepure", b=b, K=k, **common) for k in ks]
    bases = {m: setting_accuracy(results, radii, method_key=m, **common) for m in _methods(panel) if m != "densepure"}
    bases = {m: base for m, base in bases.items() if not base.empty}
    parts = [p for p in parts + list(bases.values()) if not p.empty]
    data = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if data.empty:
        _no_data(ax)
    import seaborn as sns

    pal = sns.color_palette("viridis", len(radii))
    entries = []
    for i, r in enumerate(radii):
        entries.append((f"ε = {_num(r)}", pal[i], "-", "o"))
        if data.empty:
            continue
        g = data[(data["method_key"] == "densepure") & (data["radius"] == r)].sort_values("K")
        ax.plot(g["K"], g["certified_accuracy"], color=pal[i], marker="o", ms=4, lw=1.8)
        for m, base in bases.items():
            ax.axhline(float(base.loc[base["radius"] == r, "certified_accuracy"].iloc[0]), color=pal[i],
                       ls=LINESTYLES[m], lw=1.3)
    entries += [(LEGEND_LABELS[m], "0.25", LINESTYLES[m], None) for m in bases]
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(min(ks) * 0.85, max(ks) * 1.15)
    ax.legend(handles=_line_handles(entries), loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _finish_axes(ax, "number of votes K")
    return data


DRAWERS = {"curves": draw_curves, "b_ablation": draw_b_ablation, "k_ablation": draw_k_ablation}


def panels_figure(results: pd.DataFrame, panels: Sequence[dict], kind: str | None = None, title: str | None = None,
                  artifact: str = ""):
    """One axes per panel, drawn by the panel's kind (:func:`panel_kind`, or ``kind`` for all). Returns
    ``(figure, data)``; ``data`` is the tidy plotted data (with n and 95% CI). ValueError if nothing was plotted."""
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("artifact spec has no panels")
    kinds = [kind or panel_kind(p) for p in panels]
    with figure_style():
        widths = [6.0 if k == "k_ablation" else 4.8 for k in kinds]
        fig = Figure(figsize=(sum(widths), 3.9), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False, width_ratios=widths)[0]
        parts = []
        for i, (ax, panel, k) in enumerate(zip(axes, panels, kinds)):
            data = DRAWERS[k](ax, results, panel)
            ax.set_title(_panel_title(panel))
            if not data.empty:
                data.insert(0, "panel", panel.get("name", i))
                data.insert(1, "kind", k)
                parts.append(data)
        if title:
            fig.suptitle(title, fontsize=10)
    if not parts:
        raise ValueError(f"no results match artifact {artifact or 'spec'}")
    data = pd.concat(parts, ignore_index=True)
    data.insert(0, "artifact", artifact)
    return fig, data


def curves_figure(results: pd.DataFrame, panels: Sequence[dict], title: str | None = None, artifact: str = ""):
    """Certified accuracy vs radius per panel (Fig. 3, E, F); see :func:`draw_curves`."""
    return panels_figure(results, panels, "curves", title, artifact)


def k_ablation_figure(results: pd.DataFrame, panels: Sequence[dict], title: str | None = None, artifact: str = ""):
    """Certified accuracy vs K per panel (Fig. 4 left, A, B); see :func:`draw_k_ablation`."""
    return panels_figure(results, panels, "k_ablation", title, artifact)


def b_ablation_figure(results: pd.DataFrame, panels: Sequence[dict], title: str | None = None, artifact: str = ""):
    """Certified accuracy vs radius per b, with / without a majority vote (Fig. 4 right, C, D); see
    :func:`draw_b_ablation`."""
    return panels_figure(results, panels, "b_ablation", title, artifact)


def save_figure(fig, name: str, outdir: str | Path) -> list[Path]:
    """Save ``<name>.png`` (dpi 150) and ``<name>.pdf``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = [outdir / f"{name}.png", outdir / f"{name}.pdf"]
    with figure_style():
        fig.savefig(paths[0], dpi=150)
        fig.savefig(paths[1])
    return paths


def write_figure(results: pd.DataFrame, spec: dict, name: str, outdir: str | Path) -> list[Path]:
    """Draw artifact ``name`` from its spec (each panel by its kind, e.g. Fig. G = K ablation + b ablation) and save
    ``<name>.png``, ``<name>.pdf`` and the plotted data ``<name>_data.csv``."""
    fig, data = panels_figure(results, _panels(spec), title=spec.get("source"), artifact=name)
    paths = save_figure(fig, name, outdir)
    data_path = Path(outdir) / f"{name}_data.csv"
    data.to_csv(data_path, index=False)
    return paths + [data_path]


# ------------------------------------------------------------------------------------------------------- comparison
def _paper_rows(paper: pd.DataFrame, artifact: str | None) -> pd.DataFrame:
    if artifact is None:
        return paper
    label = PAPER_LABELS.get(artifact)
    if label is None:
        raise ValueError(f"artifact {artifact!r} has no published numbers (known: {', '.join(PAPER_LABELS)})")
    if "table" in paper and (paper["table"] == label).any():
        return paper[paper["table"] == label]
    if "figure" in paper and paper["figure"].astype(str).str.startswith(label).any():
        return paper[paper["figure"].astype(str).str.startswith(label)]
    raise ValueError(f"no rows for {label} in the paper CSV")


def compare_with_paper(reproduced_cells: pd.DataFrame | str | Path, paper_csv: str | Path,
                       artifact: str | None = None, tol: float = 0.05) -> pd.DataFrame:
    """Paper value next to the reproduced one for each published Carlini/Ours cell.

    Cells match on dataset, classifier (up to aliases), method (the paper's ``carlini`` = reproduced ``onestep``, and
    ``carlini`` when present: one row each), sigma (empty for Table 1 on both sides), radius, and b / K where the
    paper gives them. ``outside_ci`` is True when the paper's value lies outside the reproduced 95% CI widened
    by ``tol`` points (the paper prints one decimal); ``status`` is ``ok``, ``outside_ci`` or ``missing`` (no
    reproduced cell). For Table 1 the clean accuracies are compared too (``clean_outside_ci``).
    """
    rep = read_csv(reproduced_cells) if not isinstance(reproduced_cells, pd.DataFrame) else reproduced_cells.copy()
    paper_path = Path(paper_csv)
    if not paper_path.is_file():
        raise ValueError(f"paper CSV not found: {paper_path}")
    paper = _paper_rows(read_csv(paper_path), artifact).copy()
    if rep.empty:
        raise ValueError("no reproduced cells")
    if "method_key" not in paper:
        paper["method_key"] = "densepure"
    paper = paper[paper["method_key"].isin(["densepure", "carlini"])]
    if "reproduced" in rep:
        rep = rep[rep["reproduced"].astype(str).str.lower().isin(["true", "1"])]
    for col in ("dataset", "classifier", "method_key", "radius", "certified_accuracy", "ci_low", "ci_high", "n"):
        if col not in rep:
            raise ValueError(f"reproduced cells lack column {col!r}")
    rep["dataset"] = rep["dataset"].map(lambda d: DATASET_LABELS.get(d, d))
    rep["reproduced_method_key"] = rep["method_key"]
    rep["method_key"] = rep["method_key"].map(lambda m: PAPER_METHOD_KEY.get(m, m))
    for frame in (rep, paper):
        frame["classifier"] = frame["classifier"].map(classifier_label)
    for frame in (rep, paper):
        frame["_sigma"] = frame["sigma"].astype(float).fillna(-1.0).round(6) if "sigma" in frame else -1.0
        frame["_radius"] = frame["radius"].astype(float).round(6)
    keys = ["dataset", "classifier", "method_key", "_sigma", "_radius"]
    pcols = keys + [c for c in ("sigma", "radius", "b", "K", "certified_accuracy", "clean_accuracy", "sigma_matched")
                    if c in paper]
    p = paper[pcols].rename(columns={c: f"paper_{c}" for c in pcols if c not in keys})
    rcols = keys + [c for c in ("b", "K", "n", "count", "certified_accuracy", "ci_low", "ci_high", "clean_accuracy",
                                "clean_ci_low", "clean_ci_high", "sigma_matched", "source_method",
                                "reproduced_method_key") if c in rep]
    r = rep[rcols].rename(columns={c: f"reproduced_{c}" for c in rcols
                                   if c not in keys + ["n", "count", "reproduced_method_key"]})
    r = r.rename(columns={"reproduced_ci_low": "ci_low", "reproduced_ci_high": "ci_high",
                          "reproduced_clean_ci_low": "clean_ci_low", "reproduced_clean_ci_high": "clean_ci_high"})
    p.insert(0, "_pid", range(len(p)))
    out = p.merge(r, on=keys, how="left")
    rep_cols = [c for c in r.columns if c not in keys]
    for col in ("b", "K"):  # where the paper gives b / K, a reproduced cell must have the same
        if f"paper_{col}" in out and f"reproduced_{col}" in out:
            clash = out[f"paper_{col}"].notna() & out[f"reproduced_{col}"].notna() & (
                out[f"paper_{col}"] != out[f"reproduced_{col}"])
            out.loc[clash, rep_cols] = np.nan
    out = out.drop_duplicates()
    matched = set(out.loc[out["reproduced_certified_accuracy"].notna(), "_pid"])
    out = out[out["reproduced_certified_accuracy"].notna() | ~out["_pid"].isin(matched)]
    paper_val, low, high = out["paper_certified_accuracy"], out["ci_low"], out["ci_high"]
    out["difference"] = out["reproduced_certified_accuracy"] - paper_val
    out["outside_ci"] = ((paper_val < low - tol) | (paper_val > high + tol)).fillna(False).astype(bool)
    if "paper_clean_accuracy" in out and "clean_ci_low" in out:
        pc = out["paper_clean_accuracy"]
        out["clean_outside_ci"] = ((pc < out["clean_ci_low"] - tol) | (pc > out["clean_ci_high"] + tol)).fillna(
            False).astype(bool)
    out["status"] = np.where(out["reproduced_certified_accuracy"].isna(), "missing",
                             np.where(out["outside_ci"], "outside_ci", "ok"))
    for col in ("n", "count"):
        if col in out:
            out[col] = out[col].astype("Int64")
    out = out.drop(columns=["_pid", "_sigma", "_radius"])
    out.insert(0, "artifact", artifact or "")
    return out.reset_index(drop=True)


# -------------------------------------------------------------------------------------------------------------- CLI
def add_report_commands(subparsers) -> None:
    """Add ``table``, ``figure`` and ``compare`` to an argparse subparsers object (each sets ``report_command``)."""
    for cmd, what in (("table", "write a table artifact as CSV, Markdown and LaTeX"),
                      ("figure", "draw a figure artifact as PNG and PDF")):
        p = subparsers.add_parser(cmd, help=what, description=what + " from certification TSVs.")
        p.add_argument("--artifact", required=True, help="artifact name in the spec, e.g. tableA, fig3")
        p.add_argument("--spec", required=True,
                       help="YAML with the artifact specs (a workflow config or config/README.md); config/paper.yaml "
                            "and config/config.yaml (or: paper, default) are found in the installed package when not "
                            "in the current folder")
        p.add_argument("--results", required=True, nargs="+", type=Path,
                       help="certification TSV files (a directory = its *.tsv)")
        p.add_argument("--outdir", required=True, type=Path, help="output directory")
        if cmd == "table":
            p.add_argument("--paper", type=Path, help="published Table 1 CSV for the quoted baselines "
                                                      "[results/paper/table1.csv]")
        p.set_defaults(report_command=cmd)
    p = subparsers.add_parser("compare", help="compare reproduced cells with the paper's numbers",
                              description="Side by side: paper value, reproduced value, n, 95% CI, outside_ci flag.")
    p.add_argument("--artifact", required=True, help="artifact name, e.g. tableA")
    p.add_argument("--reproduced", required=True, type=Path, help="<artifact>_cells.csv written by `table` "
                                                                  "(or <artifact>_data.csv written by `figure`)")
    p.add_argument("--paper", type=Path, help="published numbers [the packaged results/paper/<artifact>.csv]")
    p.add_argument("--out", required=True, type=Path, help="output CSV")
    p.set_defaults(report_command="compare")


def run_report(args: argparse.Namespace) -> int:
    """Run a ``table`` / ``figure`` / ``compare`` command; prints the written paths. Errors are ValueError."""
    cmd = getattr(args, "report_command", None) or getattr(args, "command", None)
    if cmd == "compare":
        if not Path(args.reproduced).is_file():
            raise ValueError(f"reproduced cells not found: {args.reproduced}")
        out = compare_with_paper(args.reproduced, args.paper or resources.paper_numbers(args.artifact),
                                 artifact=args.artifact)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(args.out, index=False)
        counts = out["status"].value_counts()
        print(f"{args.out}: {len(out)} cells, {counts.get('ok', 0)} within the 95% CI, "
              f"{counts.get('outside_ci', 0)} outside, {counts.get('missing', 0)} missing")
        return 0
    if cmd not in ("table", "figure"):
        raise ValueError(f"unknown report command {cmd!r}")
    if cmd == "table" and args.artifact not in TABLES:
        raise ValueError(f"unknown table artifact {args.artifact!r} (known: {', '.join(TABLES)})")
    spec = load_spec(args.spec, args.artifact)
    results = load_results(args.results)
    if cmd == "table":
        kwargs = {"paper_csv": args.paper} if args.artifact == "table1" and args.paper else {}
        paths = write_table(table_artifact(results, spec, args.artifact, **kwargs), args.artifact, args.outdir)
    else:
        paths = write_figure(results, spec, args.artifact, args.outdir)
    for path in paths:
        print(path)
    _warn_incomplete(pd.read_csv(paths[-1]))
    return 0


def _warn_incomplete(cells: pd.DataFrame) -> None:
    """Print to stderr the settings whose image count is below their image set's ``n`` (runs not finished)."""
    import sys

    if not {"n", "n_expected"} <= set(cells.columns):
        return
    short = cells[cells["n"] < cells["n_expected"]]
    cols = [c for c in ("dataset", "classifier", "method_key", "sigma", "b", "K", "n", "n_expected") if c in cells]
    for row in short[cols].drop_duplicates().to_dict("records"):
        print("warning: only {n}/{n_expected} images for ".format(n=int(row["n"]), n_expected=int(row["n_expected"]))
              + " ".join(f"{k}={row[k]}" for k in cols[:-2]), file=sys.stderr)
