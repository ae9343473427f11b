"""Paired differences between two reported settings of a table, image by image.

Settings certified on the same image ids are paired: each image is certified (or not) under both, and settings run
with the same seed also share their smoothing-noise draws. For a radius r, the images fall into ``both``,
``first_only``, ``second_only`` and ``neither``; the difference of certified accuracies ``first - second`` gets
Newcombe's interval for paired proportions and the exact McNemar p-value
(:func:`~densepure.report.intervals.newcombe_paired`, :func:`~densepure.report.intervals.mcnemar_exact`). Only images
present in both settings count (``n``; ``unpaired`` counts the others).

Pairs: every DensePure cell against the one-shot baseline of the same panel, classifier, sigma and radius (``onestep``,
else ``carlini``), and those a spec names: ``pairs: [[first, second], ...]`` where each side is a mapping with
``method`` and optionally ``b`` and ``K``, e.g. ``[{method: densepure, K: 40}, {method: densepure, K: 10}]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from densepure.report.accuracy import certified_at
from densepure.report.intervals import mcnemar_exact, newcombe_paired
from densepure.report.labels import BASELINES

KEYS = ["panel", "dataset", "classifier", "sigma", "radius"]
SIDE_COLUMNS = ["setting", "method_key", "method_label", "b", "K"]
COLUMNS = (["artifact", "pair", *KEYS] + [f"{k}_{s}" for s in ("first", "second") for k in SIDE_COLUMNS]
           + ["n", "unpaired", "both", "first_only", "second_only", "neither", "first_accuracy", "second_accuracy",
              "difference", "diff_low", "diff_high", "mcnemar_p"])


def _side(cells: pd.DataFrame, side: dict) -> pd.DataFrame:
    if not isinstance(side, dict) or "method" not in side:
        raise ValueError(f"each side of a pair needs a `method` (and optionally b, K), got {side!r}")
    m = cells["method_key"] == side["method"]
    for key in ("b", "K"):
        if key in side:
            m &= cells[key] == int(side[key])
    return cells[m]


def _join(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """Cells of both sides with the same panel, dataset, classifier, sigma (NaN = NaN) and radius."""
    a = first[KEYS + SIDE_COLUMNS].assign(_sigma=first["sigma"].fillna(-1.0))
    b = second[KEYS + SIDE_COLUMNS].assign(_sigma=second["sigma"].fillna(-1.0))
    on = ["panel", "dataset", "classifier", "_sigma", "radius"]
    out = a.merge(b.drop(columns="sigma"), on=on, suffixes=("_first", "_second"))
    return out[out["setting_first"] != out["setting_second"]].drop(columns="_sigma")


def pairs_of(cells: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """The cell pairs of a table: DensePure vs its baseline (``default``), then the spec's ``pairs``."""
    reproduced = cells[cells["setting"].notna()] if "setting" in cells else cells.iloc[:0]
    parts = []
    base = reproduced[reproduced["method_key"].isin(BASELINES)].copy()
    base["_rank"] = base["method_key"].map({m: i for i, m in enumerate(BASELINES)})
    base = base.sort_values("_rank", kind="stable").drop_duplicates(["panel", "dataset", "classifier", "sigma",
                                                                     "radius"]).drop(columns="_rank")
    default = _join(reproduced[reproduced["method_key"] == "densepure"], base)
    parts.append(default.assign(pair="default"))
    for i, (first, second) in enumerate(spec.get("pairs") or []):
        parts.append(_join(_side(reproduced, first), _side(reproduced, second)).assign(pair=f"spec{i}"))
    return pd.concat(parts, ignore_index=True)


def paired_table(table) -> pd.DataFrame:
    """Every paired difference of a :class:`~densepure.report.tables.Table` (one row per pair and radius), with
    the counts, both accuracies, ``difference = first - second`` and its 95% interval (percentage points) and the
    exact McNemar p-value."""
    pairs = pairs_of(table.cells, table.spec)
    rows = []
    for rec in pairs.to_dict("records"):
        a = table.settings[int(rec["setting_first"])].rows
        b = table.settings[int(rec["setting_second"])].rows
        common = np.intersect1d(a["idx"].to_numpy(), b["idx"].to_numpy())
        r = [rec["radius"]]
        x = certified_at(a.set_index("idx").loc[common].reset_index(), r)[:, 0]
        y = certified_at(b.set_index("idx").loc[common].reset_index(), r)[:, 0]
        counts = {"both": int(np.sum(x & y)), "first_only": int(np.sum(x & ~y)), "second_only": int(np.sum(~x & y)),
                  "neither": int(np.sum(~x & ~y))}
        n = len(common)
        if n == 0:
            raise ValueError(f"{table.name}: {rec['method_label_first']} and {rec['method_label_second']} share no "
                             f"image ids ({rec['dataset']}/{rec['classifier']} sigma={rec['sigma']}): no pairs")
        diff, low, high = newcombe_paired(counts["both"], counts["first_only"], counts["second_only"],
                                          counts["neither"])
        rows.append({"artifact": table.name, "pair": rec["pair"], **{k: rec[k] for k in KEYS},
                     **{f"{k}_{s}": rec[f"{k}_{s}"] for s in ("first", "second") for k in SIDE_COLUMNS},
                     "n": n, "unpaired": len(a) + len(b) - 2 * n, **counts,
                     "first_accuracy": 100.0 * (counts["both"] + counts["first_only"]) / n,
                     "second_accuracy": 100.0 * (counts["both"] + counts["second_only"]) / n,
                     "difference": 100.0 * float(diff), "diff_low": 100.0 * float(low),
                     "diff_high": 100.0 * float(high),
                     "mcnemar_p": float(mcnemar_exact(counts["first_only"], counts["second_only"]))})
    return pd.DataFrame(rows, columns=COLUMNS)


def add_baseline_difference(cells: pd.DataFrame, paired: pd.DataFrame) -> pd.DataFrame:
    """``diff_vs_carlini`` (Ours - baseline on the paired images, points), ``diff_low``, ``diff_high`` and
    ``mcnemar_p`` in each DensePure cell with a baseline; NaN elsewhere."""
    cols = ["diff_vs_carlini", "diff_low", "diff_high", "mcnemar_p"]
    out = cells.drop(columns=[c for c in cols if c in cells])
    if paired.empty or "setting" not in out:
        return out.assign(**{c: np.nan for c in cols})
    default = paired[paired["pair"] == "default"][["setting_first", "radius", "difference", "diff_low", "diff_high",
                                                   "mcnemar_p"]]
    default = default.rename(columns={"setting_first": "setting", "difference": "diff_vs_carlini"})
    out["_order"] = np.arange(len(out))
    merged = out.merge(default, on=["setting", "radius"], how="left").sort_values("_order")
    return merged.drop(columns="_order").reset_index(drop=True)
