"""The ledger: one table of every certified result a run knows, reproduced here or imported, with intervals, cost and
provenance, and the differences between results of one dataset and noise level.

One row per setting (dataset, classifier, method, sigma, b, K, N0, N, alpha): where it comes from (reproduced here,
or imported from its declared source), the number of images, clean accuracy and certified accuracy at the standard
radii (:data:`STANDARD_RADII`, configurable), each with its 95% Clopper-Pearson interval, network forward passes per
certified image, and the sha256 of every input file. A radius beyond the largest one (N, alpha) can certify,
``sigma Phi^-1(alpha^(1/N))``, is *not certifiable*: no value and no interval, with that reason (never 0.0).

Forward passes per image: for our results measured from the votes store when it is given (the votes it holds:
``draws + (b - 1) votes`` UNet calls with the first reverse step shared by a draw's votes, ``votes`` classifier
calls), else computed from the rows' draw counts as :mod:`densepure.report.export` does; for imported results
unknown unless declared.

Pairs (``ledger_pairs``): results of one dataset and sigma at a radius. Two of our results on the same image ids
share their smoothing-noise draws (one seed, addressed noise): their difference gets Newcombe's paired interval
and the exact McNemar test, image by image. Any other pair gets Newcombe's interval for independent proportions,
labelled ``unpaired``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from densepure.files.atomic import atomic_write_text
from densepure.models.download import sha256
from densepure.report.accuracy import accuracy_rows, certified_at, largest_radius
from densepure.report.export import NOT_CERTIFIABLE
from densepure.report.intervals import mcnemar_exact, newcombe_independent, newcombe_paired
from densepure.report.labels import METHOD_LABELS, classifier_label, dataset_label
from densepure.report.load import SETTING_KEYS
from densepure.report.tables import provenance

FORMAT = "densepure-ledger/1"
STANDARD_RADII = {"cifar10": [0.25, 0.5, 0.75, 1.0], "imagenet": [0.5, 1.0, 1.5, 2.0, 3.0]}
OTHER_RADII = [0.25, 0.5, 0.75, 1.0]
SCHEMA_FILE = "ledger.schema.json"


def radii_for(dataset: str, radii: Mapping[str, Sequence[float]] | None = None) -> list[float]:
    """The standard radii of ``dataset`` (``radii`` over :data:`STANDARD_RADII`; other datasets: CIFAR-10's)."""
    table = {**STANDARD_RADII, **(radii or {})}
    return [float(r) for r in table.get(str(dataset).lower(), OTHER_RADII)]


def measured_calls(store_dir: Path, ids: Sequence[int], b: int, one_shot: bool) -> dict | None:
    """Mean UNet and classifier calls per image of ``ids`` from the votes a store holds (None when it holds none of
    them)."""
    from densepure.core.smoothing import NOT_COMPUTED
    from densepure.job.votes import VotesStore

    store = VotesStore.open(store_dir)
    stored = set(store.stored_ids())
    unet, classifier = [], []
    for i in ids:
        if i not in stored:
            continue
        labels = store.read(int(i)).labels
        computed = labels != NOT_COMPUTED
        draws, votes = int(computed.any(axis=1).sum()), int(computed.sum())
        unet.append(draws if one_shot else draws + (b - 1) * votes)
        classifier.append(draws if one_shot else votes)
    if not unet:
        return None
    return {"unet": float(np.mean(unet)), "classifier": float(np.mean(classifier)),
            "how": f"measured: the votes stored in {store_dir} ({len(unet)} images)"}


def _store_for(stores: Sequence[Path], key: dict) -> Path | None:
    from densepure.job.votes import VotesStore

    for directory in stores:
        s = VotesStore.open(directory).setting
        if (s.get("dataset"), s.get("classifier"), s.get("method")) == (key["dataset"], key["classifier"],
                                                                         key["method"]) \
                and math.isclose(float(s.get("sigma", -1)), key["sigma"]) and int(s.get("b", -1)) == key["b"] \
                and int(s.get("K", 0)) >= key["K"] and s.get("N0") == key["N0"] and s.get("N") == key["N"]:
            return Path(directory)
    return None


def _calls(rows: pd.DataFrame, key: dict, ours: bool, stores: Sequence[Path]) -> dict:
    one_shot = key["method"] != "densepure" or key["b"] == 1
    if not ours:
        return {"unet": None, "classifier": None, "how": "unknown (not declared by the source)"}
    store = _store_for(stores, key)
    measured = measured_calls(store, rows["idx"].tolist(), key["b"], one_shot) if store else None
    if measured:
        return measured
    from densepure.report.export import _cost

    cost = _cost(rows, key, None)
    return {"unet": cost["unet_calls"], "classifier": cost["classifier_calls"],
            "how": "computed from the rows' draw counts (no votes store given)"}


def ledger(results: pd.DataFrame, radii: Mapping[str, Sequence[float]] | None = None,
           votes_dirs: Sequence[Path] = ()) -> list[dict]:
    """One entry per setting of ``results`` (see the module docstring), JSON-ready."""
    entries = []
    for values, rows in results.groupby(SETTING_KEYS, dropna=False, sort=True):
        key = dict(zip(SETTING_KEYS, values))
        key.update({"sigma": float(key["sigma"]), "b": int(key["b"]), "K": int(key["K"]),
                    "N0": float(key["N0"]), "N": float(key["N"]), "alpha": float(key["alpha"])})
        ours = set(rows["source"]) == {"densepure"}
        grid = radii_for(key["dataset"], radii)
        acc = accuracy_rows(rows, [0.0, *grid])
        bound = largest_radius(key["sigma"], key["N"], key["alpha"])
        cells = []
        for r, value, low, high, count in acc.iloc[1:][["radius", "certified_accuracy", "ci_low", "ci_high",
                                                       "count"]].itertuples(index=False):
            if np.isfinite(bound) and r > bound + 1e-12:
                cells.append({"radius": r, "value": None, "ci95": None, "count": None, "reason": NOT_CERTIFIABLE})
            else:
                cells.append({"radius": r, "value": value, "ci95": [low, high], "count": int(count), "reason": None})
        digests = sorted(set(d for d in rows.get("source_sha256", pd.Series(dtype=str)) if isinstance(d, str) and d))
        if not digests:
            digests = sorted({sha256(f) for f in rows["source_file"].unique()})
        label = rows["method_label"].iloc[0] or METHOD_LABELS.get(rows["method_key"].iloc[0], key["method"])
        notes = sorted({n for n in rows.get("setting_note", pd.Series(dtype=str)) if isinstance(n, str) and n})
        entries.append({
            "method": key["method"], "method_label": label, "provenance": provenance(rows),
            "sources": sorted(set(rows["source"])), "dataset": key["dataset"], "classifier": key["classifier"],
            "sigma": key["sigma"], "b": key["b"], "K": key["K"], "N0": _num(key["N0"]), "N": _num(key["N"]),
            "alpha": _num(key["alpha"]), "precision": key["precision"] or None, "setting_notes": notes,
            "n_images": int(len(rows)), "image_ids": sorted(int(i) for i in rows["idx"]),
            "max_certifiable_radius": _num(bound),
            "clean_accuracy": {"value": float(acc["certified_accuracy"].iloc[0]),
                               "ci95": [float(acc["ci_low"].iloc[0]), float(acc["ci_high"].iloc[0])]},
            "certified_accuracy": cells,
            "forward_passes_per_image": _calls(rows, key, ours, votes_dirs),
            "inputs_sha256": digests})
    return entries


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(float(x)) else float(x)


def ledger_pairs(results: pd.DataFrame, radii: Mapping[str, Sequence[float]] | None = None) -> pd.DataFrame:
    """Every pair of settings of one dataset and sigma at each standard radius: the difference of certified
    accuracies (first - second, percent) with its 95% interval, paired where both are ours on the same images."""
    out = []
    for (dataset, sigma), group in results.groupby(["dataset", "sigma"], sort=True):
        settings = [(dict(zip(SETTING_KEYS, v)), rows) for v, rows in group.groupby(SETTING_KEYS, dropna=False,
                                                                                      sort=True)]
        grid = radii_for(dataset, radii)
        for i in range(len(settings)):
            for j in range(i + 1, len(settings)):
                (a, ra), (b, rb) = settings[i], settings[j]
                out += _pair_rows(dataset, sigma, a, ra, b, rb, grid)
    return pd.DataFrame(out)


def _name(key: dict, rows: pd.DataFrame) -> str:
    label = rows["method_label"].iloc[0] or METHOD_LABELS.get(rows["method_key"].iloc[0], key["method"])
    extra = f" b={int(key['b'])} K={int(key['K'])}" if key["method"] == "densepure" else ""
    return f"{label} ({key['classifier']}{extra})"


def _certifiable(key: dict, radii: Sequence[float]) -> list[float]:
    bound = largest_radius(float(key["sigma"]), float(key["N"]), float(key["alpha"]))
    return [r for r in radii if not (np.isfinite(bound) and r > bound + 1e-12)]


def _pair_rows(dataset, sigma, a, ra, b, rb, grid) -> list[dict]:
    """The pair's rows at the radii both settings can certify."""
    grid = [r for r in _certifiable(a, grid) if r in _certifiable(b, grid)]
    if not grid:
        return []
    ours = set(ra["source"]) == {"densepure"} and set(rb["source"]) == {"densepure"}
    same = ours and set(ra["idx"]) == set(rb["idx"])
    base = {"dataset": dataset, "sigma": float(sigma), "first": _name(a, ra), "second": _name(b, rb)}
    rows = []
    if same:
        fa = certified_at(ra.sort_values("idx"), grid)
        fb = certified_at(rb.sort_values("idx"), grid)
        for j, r in enumerate(grid):
            both, first, second = int((fa[:, j] & fb[:, j]).sum()), int((fa[:, j] & ~fb[:, j]).sum()), \
                int((~fa[:, j] & fb[:, j]).sum())
            neither = len(fa) - both - first - second
            d, lo, hi = newcombe_paired(both, first, second, neither)
            rows.append({**base, "radius": r, "kind": "paired (same images, shared noise draws)", "n_first": len(fa),
                         "n_second": len(fb), "difference": 100 * float(d), "diff_low": 100 * float(lo),
                         "diff_high": 100 * float(hi), "mcnemar_p": float(mcnemar_exact(first, second))})
        return rows
    ca, cb = certified_at(ra, grid).sum(axis=0), certified_at(rb, grid).sum(axis=0)
    for j, r in enumerate(grid):
        d, lo, hi = newcombe_independent(ca[j], len(ra), cb[j], len(rb))
        rows.append({**base, "radius": r, "kind": "unpaired (independent proportions)", "n_first": len(ra),
                     "n_second": len(rb), "difference": 100 * float(d), "diff_low": 100 * float(lo),
                     "diff_high": 100 * float(hi), "mcnemar_p": None})
    return rows


def ledger_table(entries: list[dict]) -> pd.DataFrame:
    """The ledger as a flat table: one row per setting, a value and interval column per radius."""
    rows = []
    for e in entries:
        row = {"method": e["method_label"], "provenance": e["provenance"], "dataset": dataset_label(e["dataset"]),
               "classifier": classifier_label(e["classifier"]), "sigma": e["sigma"],
               "b": e["b"] if e["method"] == "densepure" else None, "K": e["K"] if e["method"] == "densepure" else None,
               "N0": e["N0"], "N": e["N"], "alpha": e["alpha"], "images": e["n_images"],
               "clean": _cell(e["clean_accuracy"]["value"], e["clean_accuracy"]["ci95"])}
        for c in e["certified_accuracy"]:
            row[f"r={c['radius']:g}"] = _cell(c["value"], c["ci95"]) if c["value"] is not None else "not certifiable"
        calls = e["forward_passes_per_image"]
        row["UNet calls / image"] = "unknown" if calls["unet"] is None else f"{calls['unet']:.4g}"
        row["classifier calls / image"] = "unknown" if calls["classifier"] is None else f"{calls['classifier']:.4g}"
        row["inputs sha256"] = " ".join(d[:12] for d in e["inputs_sha256"])
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(value: float, ci: Sequence[float]) -> str:
    return f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def check_document(document: dict) -> None:
    """Validate a ledger document against the committed JSON Schema (workflow/schemas/ledger.schema.json)."""
    import jsonschema

    from densepure.files import resources

    schema = json.loads(resources.resource(f"workflow/schemas/{SCHEMA_FILE}").read_text())
    jsonschema.validate(document, schema)


def ledger_document(entries: list[dict], pairs: pd.DataFrame, run: str) -> dict:
    from densepure import __version__

    return {"format": FORMAT, "run": run, "package_version": __version__, "entries": entries,
            "pairs": json.loads(pairs.to_json(orient="records")) if not pairs.empty else []}


def write_ledger(document: dict, table: pd.DataFrame, pairs: pd.DataFrame, outdir: Path, name: str = "ledger"
                 ) -> list[Path]:
    """``<name>.csv``, ``.md``, ``.html``, ``.json`` and ``<name>_pairs.csv`` in ``outdir``."""
    from densepure.report.layout import html_page

    outdir = Path(outdir)
    note = ("Certified accuracy (%) [95% Clopper-Pearson interval] at each radius; 'not certifiable': beyond the "
            "largest radius N draws can certify at alpha. Pairs of results in the _pairs.csv file.")
    shown = table.astype(object).where(table.notna(), "")
    md = [f"**{document['run']}: every certified result**\n", "| " + " | ".join(shown.columns) + " |",
          "|" + "---|" * len(shown.columns)]
    md += ["| " + " | ".join(str(v) for v in r) + " |" for r in shown.itertuples(index=False)]
    paths = [atomic_write_text(outdir / f"{name}.csv", table.to_csv(index=False)),
             atomic_write_text(outdir / f"{name}.md", "\n".join(md) + f"\n\n{note}\n"),
             atomic_write_text(outdir / f"{name}.html", html_page(f"{document['run']}: every certified result",
                                                                  shown, note)),
             atomic_write_text(outdir / f"{name}.json", json.dumps(document, indent=1, allow_nan=False) + "\n"),
             atomic_write_text(outdir / f"{name}_pairs.csv", pairs.to_csv(index=False))]
    return paths
