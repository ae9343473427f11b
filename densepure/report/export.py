"""One JSON per run that a leaderboard can read: per setting, certified accuracy at the grid radii with 95%
intervals, clean accuracy, the smoothing parameters, the image ids, both checkpoints' sha256 and the cost per image
(network calls: estimated from the setting; seconds: measured, from the result rows; GPU-seconds where the votes
store says the job ran on a GPU)."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from densepure import __version__
from densepure.report.accuracy import accuracy_rows, largest_radius, max_certifiable_radius
from densepure.report.labels import METHOD_LABELS
from densepure.report.load import SETTING_KEYS

FORMAT = "densepure-export/1"
SCHEMA_FILE = "export.schema.json"  # in workflow/schemas/
NOT_CERTIFIABLE = "not certifiable: beyond the largest radius N draws certify at alpha, sigma Phi^-1(alpha^(1/N))"
DEFAULT_RADII = [round(0.25 * i, 2) for i in range(17)]  # 0, 0.25, ..., 4.0
CALLS_HOW = ("estimated from the setting: per draw 1 + K (b - 1) UNet calls (the first reverse step shared by the "
             "K votes; b K without sharing) and K classifier calls, one of each for a one-shot method; draws = N0 + "
             "the estimation draws computed (n where the rows record it, else N; N0 alone for a hopeless image)")


def _seconds(text: str) -> float:
    """Seconds of a ``time`` cell (``H:MM:SS[.ffffff]`` as Python's timedelta prints, optionally ``D day(s), ``)."""
    text = str(text).strip()
    if not text:
        return math.nan
    days = 0
    if "day" in text:
        head, text = text.split(",")
        days = int(head.split()[0])
    h, m, s = text.split(":")
    return days * 86400 + int(h) * 3600 + int(m) * 60 + float(s)


def find_stores(paths: Sequence[str | Path]) -> list[Path]:
    """Votes stores: each path that is one (it holds ``setting.json``), and every store below the others (searched
    recursively, as ``--results`` searches for TSVs). ValueError naming a path that is neither."""
    from densepure.job.votes import SETTING_FILE

    out: list[Path] = []
    for path in map(Path, paths):
        if (path / SETTING_FILE).is_file():
            out.append(path)
            continue
        found = sorted(p.parent for p in path.rglob(SETTING_FILE)) if path.is_dir() else []
        if not found:
            raise ValueError(f"--votes-dir {path}: no votes store there (no {SETTING_FILE} in it or below it)")
        out.extend(found)
    return list(dict.fromkeys(out))


def _store_info(votes_dirs: Sequence[Path]) -> list[dict]:
    """Setting, checkpoints and device of each votes store."""
    from densepure.job.votes import VotesStore

    out = []
    for d in votes_dirs:
        store = VotesStore.open(d)
        ids = store.stored_ids()
        device = store.read(ids[0]).extra.get("device") if ids else None
        out.append({"dir": str(d), "setting": store.setting, "device": device})
    return out


def _matching_store(stores: list[dict], key: dict) -> dict | None:
    for info in stores:
        s = info["setting"]
        method = "densepure" if key["method"] == "densepure" else key["method"]
        same = (s.get("dataset") == key["dataset"] and s.get("classifier") == key["classifier"]
                and s.get("method") == method and math.isclose(float(s.get("sigma", -1)), key["sigma"])
                and int(s.get("b", -1)) == key["b"] and int(s.get("K", 0)) >= key["K"]
                and s.get("N0") == key["N0"] and s.get("N") == key["N"])
        if same:
            return info
    return None


def _cost(rows: pd.DataFrame, key: dict, device: str | None) -> dict:
    one_shot = key["method"] != "densepure" or key["b"] == 1
    N0 = key["N0"] if np.isfinite(key["N0"]) else 0
    n = pd.to_numeric(rows["n"]).to_numpy(float) if "n" in rows else np.full(len(rows), np.nan)
    draws = N0 + np.where(np.isfinite(n), n, key["N"])
    if "stop" in rows:
        draws = np.where(rows["stop"].astype(str).to_numpy() == "hopeless", N0, draws)
    unet = 1 if one_shot else 1 + key["K"] * (key["b"] - 1)
    classifier = 1 if one_shot else key["K"]
    seconds = float(np.nanmean([_seconds(t) for t in rows["time"]])) if "time" in rows else math.nan
    on_gpu = bool(device) and str(device).startswith("cuda")
    return {"unet_calls": float(np.mean(draws) * unet), "classifier_calls": float(np.mean(draws) * classifier),
            "calls": CALLS_HOW, "seconds": seconds if np.isfinite(seconds) else None,
            "seconds_how": "measured: mean of the result rows' time column (wall clock of the job per image)",
            "device": device or "not recorded (pass the votes store with --votes-dir)",
            "gpu_seconds": seconds if on_gpu and np.isfinite(seconds) else None}


def _cells(acc: pd.DataFrame, bound: float) -> list[dict]:
    """Certified accuracy per radius; a radius beyond ``bound`` (what N and alpha can certify) is not certifiable:
    no value, no interval, and the reason."""
    out = []
    for r, v, lo, hi, c in acc[["radius", "certified_accuracy", "ci_low", "ci_high", "count"]].itertuples(index=False):
        if np.isfinite(bound) and r > bound + 1e-12:
            out.append({"radius": r, "value": None, "ci95": None, "count": None, "reason": NOT_CERTIFIABLE})
        else:
            out.append({"radius": r, "value": v, "ci95": [lo, hi], "count": int(c), "reason": None})
    return out


def _number(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def export_run(results: pd.DataFrame, run: str, radii: Sequence[float] = DEFAULT_RADII,
               votes_dirs: Sequence[Path] = ()) -> dict:
    """The export of a run (see the module docstring) as a JSON-ready dict."""
    stores = _store_info(votes_dirs)
    settings = []
    for values, rows in results.groupby(SETTING_KEYS, dropna=False, sort=True):
        key = dict(zip(SETTING_KEYS, values))
        key.update({"sigma": float(key["sigma"]), "b": int(key["b"]), "K": int(key["K"])})
        acc = accuracy_rows(rows, [0.0, *radii])
        store = _matching_store(stores, key)
        label = rows["method_label"].iloc[0] if rows["method_label"].iloc[0] else METHOD_LABELS.get(
            rows["method_key"].iloc[0], key["method"])
        checkpoints = store["setting"].get("checkpoints") if store else None
        settings.append({
            **{k: _number(v.item() if hasattr(v, "item") else v) for k, v in key.items()},
            "method_key": rows["method_key"].iloc[0], "method_label": label,
            "source": sorted(set(rows["source"])), "n_images": len(rows),
            "image_ids": sorted(int(i) for i in rows["idx"]),
            "clean_accuracy": {"value": acc["certified_accuracy"].iloc[0],
                               "ci95": [acc["ci_low"].iloc[0], acc["ci_high"].iloc[0]]},
            "max_certifiable_radius": _number(max_certifiable_radius(key["sigma"], key["N"], key["alpha"])),
            "certified_accuracy": _cells(acc.iloc[1:], largest_radius(key["sigma"], key["N"], key["alpha"])),
            "checkpoints_sha256": checkpoints or "not recorded (pass the votes store with --votes-dir)",
            "votes_store": store["dir"] if store else None,
            "cost_per_image": _cost(rows, key, store["device"] if store else None)})
    return {"format": FORMAT, "run": run, "package_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "radii": [float(r) for r in radii], "settings": settings}


def check_export(export: dict) -> None:
    """Validate an export against the committed JSON Schema (workflow/schemas/export.schema.json)."""
    import jsonschema

    from densepure.files import resources

    jsonschema.validate(export, json.loads(resources.resource(f"workflow/schemas/{SCHEMA_FILE}").read_text()))


def write_export(export: dict, path: str | Path) -> Path:
    """Write the export as JSON (atomically), after validating it against its schema."""
    from densepure.files.atomic import atomic_write_text

    check_export(export)
    return atomic_write_text(path, json.dumps(export, indent=1, allow_nan=False) + "\n")
