"""Table artifacts (Tables 1, 2, A, B and any spec laid out like them) as tidy cells.

A :class:`Table` holds the cells (one row per reported setting and radius, with n, count, the 95% Clopper-Pearson
interval and the written largest certifiable radius), the per-image rows of each reported setting (the ``setting``
column indexes :attr:`Table.settings`) and the paired differences of :mod:`densepure.report.paired`.

Reported settings: for each panel, method (baselines first), classifier, sigma, and for DensePure each (b, K) in
``bs x (Ks + extra_Ks)``. One-shot baselines (``onestep``, ``carlini``) are reported with b = 1, K = 1 (their K
votes are identical); the file's method is kept in ``source_method``. A setting of the spec without results is an
error naming it (``allow_missing`` turns it into a warning on stderr and a ``-`` cell).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from densepure.core.methods import ONE_SHOT_METHODS
from densepure.files import resources
from densepure.report import spec as specs
from densepure.report.accuracy import accuracy_rows, max_certifiable_radius, select_rows
from densepure.report.labels import (
    BASELINES,
    METHOD_LABELS,
    classifier_label,
    dataset_label,
    method_label,
    method_order,
)
from densepure.report.load import result_labels, versions_note

logger = logging.getLogger(__name__)
PAPER_DIR = resources.resource(resources.PAPER_NUMBERS)  # the paper's transcribed numbers (package data)


def read_csv(path: str | Path) -> pd.DataFrame:
    """``pd.read_csv`` with a one-line ValueError naming the file when it is not a CSV (binary, ragged)."""
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a CSV file ({' '.join(str(err).split())})") from None


@dataclass
class Reported:
    """One reported setting: what it is (``meta``: panel, dataset, classifier, method, sigma, b, K, ...) and its
    per-image result rows on the panel's image set."""

    meta: dict
    rows: pd.DataFrame


@dataclass
class Table:
    """Cells of a table artifact, the reported settings they come from, and the paired differences."""

    name: str
    cells: pd.DataFrame
    settings: list[Reported]
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)
    spec: dict = field(default_factory=dict)
    provenance: str = ""  # which package versions computed the images, when several did


def labels_for(results: pd.DataFrame, spec: dict) -> dict[str, str]:
    """Method display labels: the built-in ones, those imported results carry, then the spec's ``method_labels``."""
    return {**METHOD_LABELS, **result_labels(results), **(spec.get("method_labels") or {})}


def panel_methods(panel: dict, labels: dict) -> list[str]:
    """The panel's methods in table order (baselines first); ValueError for one without a display label."""
    return method_order(panel.get("methods", ["densepure", "onestep"]), labels)


def _combos(panel: dict, method: str, extra_Ks: bool) -> list[tuple]:
    """(b, K, main) of a method in a panel: DensePure's bs x Ks (main) and bs x extra_Ks; one (None, None) else."""
    if method != "densepure":
        return [(None, None, True)]
    ks = [(k, True) for k in panel.get("Ks", [40])] + ([(k, False) for k in panel.get("extra_Ks", [])]
                                                         if extra_Ks else [])
    return [(b, k, main) for b in panel.get("bs", [10]) for k, main in ks]


def reported(results: pd.DataFrame, panel: dict, index: int, method: str, classifier: str, sigma: float,
             b: int | None, k: int | None, labels: dict, main: bool = True,
             allow_missing: bool = False) -> Reported | None:
    """The reported setting ``method`` (b, K for DensePure) / classifier / sigma of a panel, with its rows on the
    panel's image set. No rows: ValueError naming the setting (``allow_missing``: a logged warning, None)."""
    images = panel.get("images")
    rows = select_rows(results, dataset=panel["dataset"], classifier=classifier, method_key=method, sigma=sigma,
                       b=b, K=k, images=images)
    if rows.empty:
        what = (f"{panel['dataset']}/{classifier}/{method} sigma={sigma}" + (f" b={b} K={k}" if b is not None else "")
                + f" on {specs.images_text(images)}")
        message = f"no results for {what} among the {len(results)} rows read; certify it, import it, or leave it out"
        if not allow_missing:
            raise ValueError(message)
        logger.warning(message)
        return None
    first = rows.iloc[0]
    if method in ONE_SHOT_METHODS:
        b, k = 1, 1
    elif method != "densepure":
        b, k = int(first["b"]), int(first["K"])
    meta = {"panel": specs.panel_name(panel, index), "dataset": panel["dataset"],
            "dataset_label": dataset_label(panel["dataset"]), "classifier": classifier,
            "classifier_label": classifier_label(classifier), "method_key": method,
            "method_label": method_label(method, labels), "source_method": first["method"], "sigma": float(sigma),
            "b": int(b), "K": int(k), "main": main, "N0": first["N0"], "N": first["N"], "alpha": first["alpha"],
            "images": images.get("name", "") if isinstance(images, dict) else "",
            "n_expected": specs.expected_n(images)}
    return Reported(meta, rows)


def reported_settings(results: pd.DataFrame, spec: dict, *, extra_Ks: bool = True, allow_missing: bool = False,
                      panels: Sequence[int] | None = None) -> list[Reported]:
    """Every setting the spec's panels (all, or those indexed by ``panels``) report, with its rows (see
    :func:`reported`)."""
    labels = labels_for(results, spec)
    out = []
    for p, panel in enumerate(specs.panels(spec)):
        if panels is not None and p not in panels:
            continue
        for method in panel_methods(panel, labels):
            for classifier in panel["classifiers"]:
                for sigma in panel["sigmas"]:
                    for b, k, main in _combos(panel, method, extra_Ks):
                        rep = reported(results, panel, p, method, classifier, sigma, b, k, labels, main,
                                       allow_missing)
                        if rep is not None:
                            out.append(rep)
    return out


def setting_accuracy(rep: Reported, radii: Sequence[float]) -> pd.DataFrame:
    """Certified accuracy of a reported setting at ``radii``: its meta, n (and the image set's n), count, accuracy
    with the 95% interval, the written largest certifiable radius and whether each radius lies beyond it."""
    acc = accuracy_rows(rep.rows, radii)
    meta = {k: v for k, v in rep.meta.items() if k != "n_expected"}
    for j, (key, value) in enumerate(meta.items()):
        acc.insert(j, key, value)
    acc.insert(acc.columns.get_loc("n") + 1, "n_expected", rep.meta["n_expected"])
    acc["max_radius"] = max_certifiable_radius(rep.meta["sigma"], rep.meta["N"], rep.meta["alpha"])
    acc["beyond_max_radius"] = acc["radius"] > acc["max_radius"]
    acc["provenance"] = provenance(rep.rows)
    return acc


REPRODUCED, QUOTED = "reproduced here", "quoted from the paper"


def provenance(rows: pd.DataFrame) -> str:
    """Where a setting's rows come from: ``reproduced here`` (computed by this package: ``source`` is
    ``densepure``), else ``imported from`` each declared source (``densepure import --source``), or from the logs'
    format when none was declared (``import:cohen:<log>`` -> ``Cohen-format logs``)."""
    sources = sorted(set(rows["source"]) - {"densepure"}) if "source" in rows else []
    if not sources:
        return REPRODUCED
    formats = {"cohen": "Cohen-format logs", "densepure-votes": "the official DensePure code's label files"}
    named = dict.fromkeys(formats.get(s.split(":")[1], s) if s.startswith("import:") and s.count(":") >= 1 else s
                          for s in sources)
    return "imported from " + "; ".join(named)


def cells_of(settings: list[Reported], radii_of, artifact: str) -> pd.DataFrame:
    """Tidy cells: each reported setting's :func:`setting_accuracy` at ``radii_of(meta)``; ``setting`` indexes
    ``settings``."""
    parts = [setting_accuracy(rep, radii_of(rep.meta)).assign(setting=i) for i, rep in enumerate(settings)]
    if not parts:
        raise ValueError(f"no results match artifact {artifact or 'spec'}")
    cells = pd.concat(parts, ignore_index=True)
    cells.insert(0, "artifact", artifact)
    return cells


def table_cells(results: pd.DataFrame, spec: dict, artifact: str = "", radii_extra: Sequence[float] = (),
                extra_Ks: bool = True, allow_missing: bool = False) -> Table:
    """Cells of a table artifact laid out like the paper's (see the module docstring); non-curve panels only."""
    panels = specs.panels(spec)
    keep = [p for p, panel in enumerate(panels) if not specs.is_curve(panel)]
    settings = reported_settings(results, spec, extra_Ks=extra_Ks, allow_missing=allow_missing, panels=keep)
    by_panel = {specs.panel_name(panel, p): panel for p, panel in enumerate(panels)}

    def radii_of(meta):
        return sorted(set(specs.radii(by_panel[meta["panel"]])) | {float(r) for r in radii_extra})

    return Table(artifact, cells_of(settings, radii_of, artifact), settings, spec=spec,
                 provenance=versions_note(results))


def table2(results: pd.DataFrame, spec: dict, **kw) -> Table:
    """Table 2 (architectures, sigma = 0.25): cells, ``extra_Ks`` included as extra rows."""
    return table_cells(results, spec, "table2", **kw)


def table_a(results: pd.DataFrame, spec: dict, **kw) -> Table:
    """Table A (CIFAR-10, all sigma)."""
    return table_cells(results, spec, "tableA", **kw)


def table_b(results: pd.DataFrame, spec: dict, **kw) -> Table:
    """Table B (ImageNet, all sigma)."""
    return table_cells(results, spec, "tableB", **kw)


def table1(results: pd.DataFrame, spec: dict, paper_csv: str | Path | None = None, **kw) -> Table:
    """Table 1: per (dataset, classifier, method, b, K) and radius r, ``max over sigma`` of the certified accuracy;
    ``clean_accuracy`` is the r = 0 accuracy of the arg-max sigma (``sigma_matched``; ties -> higher clean accuracy,
    then smaller sigma), with its CI; ``setting`` is the matched sigma's. The baseline rows (PixelDP ... Lee) of
    ``paper_csv`` (default results/paper/table1.csv) are quoted, not reproduced (``reproduced = False``), and come
    first as in the paper."""
    table = table_cells(results, spec, "table1", radii_extra=[0.0], extra_Ks=False, **kw)
    cells = table.cells
    group = ["panel", "dataset", "classifier", "method_key", "b", "K"]
    clean = cells[cells["radius"] == 0.0][group + ["sigma", "certified_accuracy", "ci_low", "ci_high", "n"]].rename(
        columns={"certified_accuracy": "clean_accuracy", "ci_low": "clean_ci_low", "ci_high": "clean_ci_high",
                 "n": "clean_n"})
    listed = {(specs.panel_name(p, i), float(r)) for i, p in enumerate(specs.panels(spec)) for r in specs.radii(p)}
    cells = cells[[(p, r) in listed for p, r in zip(cells["panel"], cells["radius"])]]
    merged = cells.merge(clean, on=group + ["sigma"], how="left")
    merged = merged.sort_values(["certified_accuracy", "clean_accuracy", "sigma"], ascending=[False, False, True],
                                kind="stable")
    best = merged.drop_duplicates(group + ["radius"], keep="first").copy()
    order = {key: i for i, key in enumerate(cells[group + ["radius"]].drop_duplicates().itertuples(index=False))}
    best["_order"] = [order[tuple(t)] for t in best[group + ["radius"]].itertuples(index=False)]
    best = best.sort_values("_order").drop(columns="_order").rename(columns={"sigma": "sigma_matched"})
    best.insert(best.columns.get_loc("b"), "sigma", np.nan)
    best["off_the_shelf"] = np.where(best["source_method"].isin(list(METHOD_LABELS)), "yes", "not stated")
    best["reproduced"] = True
    quoted = quoted_baselines(paper_csv, datasets=[dataset_label(p["dataset"]) for p in specs.panels(spec)])
    table.cells = pd.concat([quoted, best], ignore_index=True)[list(best.columns)]
    return table


def quoted_baselines(paper_csv: str | Path | None = None, datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 1's baseline rows of the paper CSV (all but Carlini/Ours) as cells with ``reproduced = False``."""
    path = Path(paper_csv) if paper_csv else PAPER_DIR / "table1.csv"
    if not path.is_file():
        raise ValueError(f"paper table not found: {path}")
    paper = read_csv(path)
    paper = paper[~paper["method_key"].isin(["densepure", "onestep", *BASELINES])]
    if datasets is not None:
        paper = paper[paper["dataset"].isin(list(datasets))]
    label = [f"{m} ({c})" if isinstance(c, str) and c else m for m, c in zip(paper["method"], paper["citation"])]
    names = {"CIFAR-10": "cifar10", "ImageNet": "imagenet"}
    return pd.DataFrame({"artifact": "table1", "dataset_label": paper["dataset"].to_numpy(),
                         "dataset": paper["dataset"].map(lambda d: names.get(d, d)).to_numpy(),
                         "method_key": paper["method_key"].to_numpy(), "method_label": label,
                         "radius": paper["radius"].astype(float).to_numpy(),
                         "certified_accuracy": paper["certified_accuracy"].astype(float).to_numpy(),
                         "clean_accuracy": paper["clean_accuracy"].astype(float).to_numpy(),
                         "off_the_shelf": paper["off_the_shelf"].to_numpy(), "reproduced": False,
                         "provenance": QUOTED})


TABLES = {"table1": table1, "table2": table2, "tableA": table_a, "tableB": table_b}


def table_artifact(results: pd.DataFrame, spec: dict, name: str, **kwargs) -> Table:
    """The table artifact ``name``: one of :data:`TABLES`, or any other name laid out like Tables A/B (a spec of
    one's own), with the paired differences of :func:`densepure.report.paired.paired_table` and, in the DensePure
    cells, the difference to the one-shot baseline with its interval (``diff_vs_carlini``, ``diff_low``,
    ``diff_high``, ``mcnemar_p``)."""
    from densepure.report.paired import add_baseline_difference, paired_table

    build = TABLES.get(name)
    table = build(results, spec, **kwargs) if build else table_cells(results, spec, name, **kwargs)
    table.paired = paired_table(table)
    table.cells = add_envelopes(add_baseline_difference(table.cells, table.paired), spec)
    return table


def add_envelopes(cells: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Envelope rows of a spec's ``envelopes: [{label, methods, classifiers, sigmas}]`` (each filter optional): per
    dataset and radius, the cell of the best certified accuracy among the matching cells (the first in the table's
    order on a tie), as the papers' "best over noise levels and models" rows. ``envelope_of`` names the setting
    behind each envelope cell."""
    envelopes = (spec or {}).get("envelopes") or []
    if not envelopes:
        return cells
    out = [cells]
    for envelope in envelopes:
        if not isinstance(envelope, dict) or not envelope.get("label"):
            raise ValueError(f"an envelope needs a label (and optionally methods, classifiers, sigmas), got "
                             f"{envelope!r}")
        m = pd.Series(True, index=cells.index)
        for key, column in (("methods", "method_key"), ("classifiers", "classifier")):
            if envelope.get(key):
                m &= cells[column].isin([str(v) for v in envelope[key]])
        if envelope.get("sigmas"):
            m &= np.isin(cells["sigma"].astype(float), [float(s) for s in envelope["sigmas"]])
        chosen = cells[m]
        if chosen.empty:
            raise ValueError(f"envelope {envelope['label']!r} matches no cell of the table")
        best = chosen.loc[chosen.groupby(["dataset", "radius"], sort=False)["certified_accuracy"].idxmax()].copy()
        best["envelope_of"] = [f"{r.method_label}, {r.classifier}, σ={r.sigma:g}" for r in best.itertuples()]
        best["method_key"], best["method_label"] = "envelope", envelope["label"]
        best[["sigma", "b", "K", "classifier_label"]] = np.nan
        for column in ("diff_vs_carlini", "diff_low", "diff_high", "mcnemar_p"):
            if column in best:
                best[column] = np.nan
        out.append(best)
    return pd.concat(out, ignore_index=True)


def incomplete_settings(cells: pd.DataFrame) -> list[str]:
    """One line per setting whose image count is below its image set's ``n`` (runs not finished)."""
    if not {"n", "n_expected"} <= set(cells.columns):
        return []
    short = cells[cells["n"] < cells["n_expected"]]
    cols = [c for c in ("dataset", "classifier", "method_key", "sigma", "b", "K", "n", "n_expected") if c in cells]
    return [f"only {int(row['n'])}/{int(row['n_expected'])} images for " + " ".join(f"{k}={row[k]}" for k in cols[:-2])
            for row in short[cols].drop_duplicates().to_dict("records")]
