"""Certified accuracy at radii, from the per-image rows of one setting.

**Certified accuracy** at radius r of a setting with n images = ``count / n``, ``count = #{rows : correct == 1 and
predict != -1 and radius >= r}``, on the radius as its file writes it: a certificate is what its log says. Our own
results write the radius with 3 significant digits as the reference does (:func:`densepure.core.smoothing.
format_radius`, so a computed 0.7996 counts at r = 0.8, docs/reference-behaviour.md#ref-7); an imported log keeps its
own digits (0.4999
does not count at r = 0.5). A ``hopeless`` row (empty radius) counts at no radius. Reported in percent with the 95%
Clopper-Pearson interval of ``count / n``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm

from densepure.core.smoothing import format_radius
from densepure.report.intervals import clopper_pearson
from densepure.report.labels import classifier_matches
from densepure.report.load import SETTING_KEYS
from densepure.report.spec import image_ids


def written_radii(rows: pd.DataFrame) -> np.ndarray:
    """The radius of each row as its file writes it, NaN where there is none."""
    return rows["radius"].to_numpy(float)


def is_certified(rows: pd.DataFrame) -> np.ndarray:
    """Rows certified at some radius: correct, not abstaining, with a radius."""
    predict = rows["predict"].astype("Int64")
    return ((rows["correct"] == 1) & predict.notna() & (predict != -1)).to_numpy(bool) & np.isfinite(
        rows["radius"].to_numpy(float))


def certified_at(rows: pd.DataFrame, radii: Sequence[float]) -> np.ndarray:
    """[images, radii] booleans: image certified at radius r (correct and written radius >= r)."""
    written = np.where(is_certified(rows), written_radii(rows), -np.inf)
    return written[:, None] >= np.asarray(radii, dtype=float)[None, :]


def accuracy_rows(rows: pd.DataFrame, radii: Sequence[float]) -> pd.DataFrame:
    """Per radius: n, count, certified_accuracy (%), ci_low/ci_high (%) of the rows of one setting."""
    n = len(rows)
    counts = certified_at(rows, radii).sum(axis=0).astype(int)
    low, high = clopper_pearson(counts, n)
    return pd.DataFrame({"radius": [float(r) for r in radii], "n": n, "count": counts,
                         "certified_accuracy": 100.0 * counts / n, "ci_low": 100.0 * low, "ci_high": 100.0 * high})


def largest_radius(sigma: float, N: float, alpha: float) -> float:
    """The largest radius N estimation draws can certify at ``alpha``, unrounded: ``sigma Phi^-1(alpha^(1/N))``
    (every draw votes for the class; Cohen et al.'s lower confidence bound is then ``alpha^(1/N)``). NaN when N or
    alpha is unknown."""
    if not (np.isfinite(N) and np.isfinite(alpha)):
        return float("nan")
    return float(sigma * norm.ppf(alpha ** (1.0 / N)))


def max_certifiable_radius(sigma: float, N: float, alpha: float) -> float:
    """:func:`largest_radius` as written (3 significant digits); NaN when N or alpha is unknown."""
    bound = largest_radius(sigma, N, alpha)
    return bound if np.isnan(bound) else float(format_radius(bound))


def certified_accuracy_table(df: pd.DataFrame, radii: Sequence[float]) -> pd.DataFrame:
    """Tidy certified accuracy of every setting in ``df`` at every radius in ``radii``: one row per setting
    (:data:`~densepure.report.load.SETTING_KEYS` and ``method_key``) and radius, with ``n``, ``count``,
    ``certified_accuracy = 100 * count / n`` and the 95% Clopper-Pearson interval (percent)."""
    if df.empty:
        raise ValueError("no result rows")
    if len(radii) == 0:
        raise ValueError("no radii given")
    parts = []
    for keys, g in df.groupby(SETTING_KEYS + ["method_key"], dropna=False, sort=True):
        acc = accuracy_rows(g, radii)
        for i, (key, value) in enumerate(zip(SETTING_KEYS + ["method_key"], keys)):
            acc.insert(i, key, value)
        parts.append(acc)
    return pd.concat(parts, ignore_index=True)


def select_rows(results: pd.DataFrame, *, dataset: str, classifier: str, method_key: str, sigma: float,
                b: int | None = None, K: int | None = None, images=None) -> pd.DataFrame:
    """Rows of one reported setting, restricted to the image set ``images``.

    DensePure: ``method == 'densepure'``, the given b (> 1) and K. Other methods: any run of that key for the
    dataset/classifier/sigma (and the given b / K where the key is not a one-shot baseline); for ``onestep``, method
    ``onestep`` before ``densepure`` with b = 1, then the smallest K (one-shot votes are identical, so K does not
    change the result). Returns an empty frame when nothing matches; raises ValueError when several runs (e.g. two
    precisions) remain for one cell.
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
