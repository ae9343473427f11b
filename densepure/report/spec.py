"""Artifact specs: what a table or figure shows.

An artifact spec is a dict ``artifacts.<name>`` of a workflow config such as config/paper.yaml (or of the last YAML
block of a Markdown file): a
list of ``panels`` with ``dataset, classifiers, sigmas, bs, Ks, methods, images, radii`` (a list of radii, or
``curve`` with ``max_radius``) and optionally

* ``extra_Ks``: more vote counts reported as extra rows / curves (not the main setting the paper's numbers are for);
* ``mv_K``: the "with majority vote" K of a b ablation, one K or ``{b: K}`` (default ``max(Ks)``);
* ``name``: the panel's name in the output files.

Artifact-level keys: ``source`` (a title), ``method_labels`` (``{method: display label}`` for methods other than
the built-in ones) and ``pairs`` (more paired differences to report, each ``[first, second]`` with the keys
``method``, ``b``, ``K``; see :mod:`densepure.report.paired`). ``images`` is an image-set name resolved by
:func:`load_spec` to ``{name, start, stop, step, n}`` (or ``{name, ids, n}``); only the rows of those ids count, so
runs on a superset (``*_main``) serve the ablation subsets.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

CURVE_STEP = 0.01


def _extract_yaml(text: str) -> str:
    """The last fenced ```yaml block of a Markdown file, or the text itself."""
    blocks = re.findall(r"```yaml\s*\n(.*?)```", text, flags=re.S)
    return blocks[-1] if blocks else text


def load_spec(path: str | Path, artifact: str) -> dict:
    """The spec dict of ``artifact`` from a YAML file (config/paper.yaml, or a Markdown file with a fenced ```yaml
    block), with each panel's ``images`` name resolved (see :func:`collect_image_sets`). Accepts a
    top-level ``artifacts`` mapping or a mapping of artifact names. ValueError for a missing file or an unknown
    artifact / image set."""
    import yaml

    from densepure.files import resources
    from densepure.files.yamlfile import load_yaml_text

    path = resources.config_file(path, what="spec file")
    try:
        config = load_yaml_text(_extract_yaml(path.read_text())) or {}
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


def image_set(name: str, value) -> dict:
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
            panel["images"] = image_set(name, image_sets[name])
        panels.append(panel)
    return {**spec, "panels": panels}


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


def expected_n(images) -> float:
    """Number of images of an image set (NaN when the panel gives none)."""
    if images is None:
        return math.nan
    if isinstance(images, dict) and "n" in images:
        return float(images["n"])
    return float(len(image_ids(images)))


def images_text(images) -> str:
    """``cifar10_main (500 images)``, or the id count of an unnamed set."""
    if images is None:
        return "all images"
    n = int(expected_n(images))
    name = images.get("name") if isinstance(images, dict) else None
    return f"{name} ({n} images)" if name else f"{n} images"


def panels(spec: dict) -> list[dict]:
    out = spec.get("panels") if isinstance(spec, dict) else None
    if not out:
        raise ValueError("artifact spec has no panels")
    return out


def panel_name(panel: dict, index: int):
    return panel.get("name", index)


def radii(panel: dict) -> list[float]:
    """Table radii of a panel, or the curve grid ``0, 0.01, ..., max_radius`` when ``radii: curve``."""
    r = panel.get("radii")
    if r == "curve":
        steps = int(round(float(panel.get("max_radius", 4.0)) / CURVE_STEP))
        return [round(i * CURVE_STEP, 2) for i in range(steps + 1)]
    if not r:
        raise ValueError("panel has no radii")
    return [float(x) for x in r]


def is_curve(panel: dict) -> bool:
    return panel.get("radii") == "curve"


def panel_kind(panel: dict) -> str:
    """``k_ablation`` (table radii, several K), ``b_ablation`` (curve, several b or K) or ``curves``."""
    several_k = len(panel.get("Ks", [])) > 1
    if not is_curve(panel):
        if several_k:
            return "k_ablation"
        raise ValueError("panel with table radii and a single K is a table, not a figure")
    return "b_ablation" if several_k or len(panel.get("bs", [])) > 1 else "curves"


def mv_K(panel: dict, b: int) -> int:
    """The "with majority vote" K of reverse-step count ``b`` in a b ablation: ``mv_K`` (one K, or ``{b: K}``; a b
    it does not list gets ``max(Ks)``)."""
    value = panel.get("mv_K")
    if isinstance(value, dict):
        value = {int(k): v for k, v in value.items()}.get(int(b))
    return int(value) if value is not None else int(max(panel.get("Ks", [40])))


def default_spec(results: pd.DataFrame, radii) -> dict:
    """A spec showing every setting of ``results`` at ``radii``: one panel per dataset, classifier and sigma with
    the methods (and DensePure's b, K) found there, all images."""
    panels = []
    for (dataset, classifier, sigma), g in results.groupby(["dataset", "classifier", "sigma"], sort=False):
        dp = g[g["method_key"] == "densepure"]
        panels.append({"name": f"{dataset}/{classifier}/{sigma:g}", "dataset": dataset, "classifiers": [classifier],
                       "sigmas": [float(sigma)], "bs": sorted(set(dp["b"])) or [10],
                       "Ks": sorted(set(dp["K"])) or [40], "methods": list(dict.fromkeys(g["method_key"])),
                       "radii": [float(r) for r in radii]})
    return {"source": "every setting of the results", "panels": panels}


def curves_spec(results: pd.DataFrame) -> dict:
    """A figure spec showing every setting of ``results`` as certified-accuracy curves: :func:`default_spec`'s
    panels, each up to the largest radius certified in it (5% beyond) but at least to its sigma, the smoothing's own
    radius scale, so that a setting certifying only tiny radii still gets a readable axis (the figure trims the axis
    to the data, :func:`densepure.report.figure_layout.x_limit`); to 1.0 when nothing is certified."""
    spec = default_spec(results, [0.0])
    panels = []
    for panel in spec["panels"]:
        rows = results[(results["dataset"] == panel["dataset"]) & (results["classifier"] == panel["classifiers"][0])
                       & (results["sigma"] == panel["sigmas"][0])]
        top = rows.loc[rows["correct"] == 1, "radius"].max()
        for b in panel["bs"]:  # one b per panel: curves, not a b ablation
            name = panel["name"] + (f" b={b}" if len(panel["bs"]) > 1 else "")
            panels.append({**panel, "name": name, "bs": [b], "Ks": [max(panel["Ks"])], "radii": "curve",
                           "max_radius": max(float(top) * 1.05, panel["sigmas"][0]) if top == top and top > 0
                           else 1.0})
    return {**spec, "panels": panels}
