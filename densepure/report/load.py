"""Loading per-image certification results: ours (``densepure certify`` / ``aggregate``) and imported ones.

A result file is a tab-separated table, one row per image of one setting:
``idx label predict radius correct time`` (Cohen et al.'s columns), then the setting
``dataset classifier method sigma b K N0 N alpha precision``, optionally the vote counts ``nA n stop`` (estimation
draws voting for the selected class, estimation draws computed, why the image stopped: ``complete``, ``hopeless``,
``abstain``) and, for imported results (``densepure import``), ``method_label`` and ``source``. A ``hopeless`` row
(the selected class is not the label, estimation skipped) has an empty ``predict`` and ``radius``: it is certified at
no radius.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ["idx", "label", "predict", "radius", "correct", "dataset", "classifier", "method", "sigma", "b",
                    "K"]
OPTIONAL_COLUMNS = ["N0", "N", "alpha", "precision"]
VOTE_COLUMNS = ["nA", "n", "stop"]
SETTING_KEYS = ["dataset", "classifier", "method", "sigma", "b", "K", "N0", "N", "alpha", "precision"]
TEXT_COLUMNS = ["predict", "radius", "time", "dataset", "classifier", "method", "precision", "stop", "method_label",
                "source", "version"]

logger = logging.getLogger(__name__)


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; a directory stands for every ``*.tsv`` below it (recursively, sorted). ValueError for no
    paths, or a directory without result files (naming what it searched). Logs one line per directory saying how
    many files it held."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no result files given")
    out: list[Path] = []
    for p in paths:
        if not p.is_dir():
            out.append(p)
            continue
        found = sorted(f for f in p.rglob("*.tsv") if f.is_file())
        if not found:
            others = sorted(f.relative_to(p).as_posix() for f in p.rglob("*") if f.is_file())
            folders = 1 + sum(1 for f in p.rglob("*") if f.is_dir())
            listed = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise ValueError(f"no *.tsv result files under {p} (searched {folders} folder(s)"
                             + (f"; other files: {listed}" if others else "; it is empty")
                             + "); other formats come in with `densepure import`")
        logger.info("%s: %d result file(s)", p, len(found))
        out.extend(found)
    return out


def _read_one(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"result file not found: {path}")
    try:
        df = pd.read_csv(path, sep="\t", dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"empty result file: {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a result TSV ({' '.join(str(err).split())})") from None
    if df.empty:
        raise ValueError(f"result file has no rows: {path}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        hint = (" (a log in Cohen et al.'s format: bring it in with `densepure import cohen`)"
                if {"idx", "label", "predict", "radius", "correct"} <= set(df.columns) else "")
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}{hint}")
    for col in OPTIONAL_COLUMNS + VOTE_COLUMNS + ["method_label", "source"]:
        if col not in df.columns:
            df[col] = "" if col in TEXT_COLUMNS else np.nan
    df["radius_text"] = df["radius"].astype(str).str.strip()
    radius = pd.to_numeric(df["radius_text"].replace("", np.nan), errors="coerce")
    bad = radius.isna() & (df["radius_text"] != "")
    if bad.any():
        raise ValueError(f"{path}: non-numeric radius {df['radius_text'][bad].iloc[0]!r}")
    df["radius"] = radius.astype(float)
    predict = df["predict"].astype(str).str.strip()
    df["predict"] = pd.to_numeric(predict.replace("", np.nan), errors="raise").astype("Int64")
    for col in ("N0", "N", "alpha", "nA", "n"):
        df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="raise")
    uncertified = df["radius"].isna() & (pd.to_numeric(df["correct"]) == 1)
    if uncertified.any():
        raise ValueError(f"{path}: image {df['idx'][uncertified].iloc[0]} has correct = 1 but no radius")
    df["source_file"] = str(path)
    return df


def load_results(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate result files (see the module docstring) into one frame, one row per image and setting.

    ``radius`` is ``float(text as written)`` (NaN where empty) and ``radius_text`` keeps the text; ``predict`` is a
    nullable int (NA where empty). Adds ``method_key`` (see :func:`method_keys`) and ``source_file``; ``source`` is
    ``densepure`` for our own rows. Identical rows given twice (e.g. the TSVs of two nested image sets of one run)
    are kept once. ValueError for no paths, a missing/empty file, missing columns, a non-numeric radius or an image
    whose rows differ between files of one setting.
    """
    files = result_files(paths)
    out = pd.concat([_read_one(p) for p in files], ignore_index=True)
    for col in ("idx", "label", "correct", "b", "K"):
        out[col] = pd.to_numeric(out[col], errors="raise").astype(int)
    out["sigma"] = out["sigma"].astype(float)
    for col in ("dataset", "classifier", "method", "precision", "stop", "method_label", "source"):
        out[col] = out[col].astype(str).str.strip()
    out.loc[out["source"] == "", "source"] = "densepure"
    out["method_key"] = method_keys(out)
    out = out.drop_duplicates(SETTING_KEYS + ["idx", "label", "predict", "radius_text", "correct"]).reset_index(
        drop=True)
    dup = out.duplicated(SETTING_KEYS + ["idx"], keep=False)
    if dup.any():
        row = out[dup].iloc[0]
        same = (out[SETTING_KEYS + ["idx"]] == row[SETTING_KEYS + ["idx"]]).all(axis=1)
        raise ValueError(f"image {row['idx']} has different results in files of setting {setting_text(row)} "
                         f"({', '.join(sorted(set(out.loc[same, 'source_file'])))})")
    return out


def is_baseline(df: pd.DataFrame) -> pd.Series:
    """True for rows that are not b-step DensePure: ``method != 'densepure' or b == 1``."""
    return (df["method"] != "densepure") | (df["b"] == 1)


def method_keys(df: pd.DataFrame) -> np.ndarray:
    """``densepure`` (method densepure, b > 1), ``onestep`` (method onestep, or densepure with b = 1) or the file's
    method otherwise (``carlini``: Carlini et al.'s own code path; any imported method)."""
    return np.where(~is_baseline(df), "densepure",
                    np.where((df["method"] == "densepure") | (df["method"] == "onestep"), "onestep", df["method"]))


def result_labels(results: pd.DataFrame) -> dict[str, str]:
    """Display labels that imported results carry (``method_label`` column), by method key."""
    rows = results[results["method_label"] != ""] if "method_label" in results else results.iloc[:0]
    return dict(zip(rows["method_key"], rows["method_label"]))


def setting_text(row) -> str:
    return f"{row['dataset']}/{row['classifier']}/{row['method']} sigma={row['sigma']} b={row['b']} K={row['K']}"


def log_summary(results: pd.DataFrame) -> None:
    """One log line: rows, settings and files read."""
    settings = results[SETTING_KEYS].drop_duplicates()
    logger.info("read %d image rows of %d setting(s) from %d file(s)", len(results), len(settings),
                results["source_file"].nunique())


def versions_note(results: pd.DataFrame) -> str:
    """A sentence naming the package versions that computed the results' images when there are several (a store
    extended after an upgrade mixes them), '' otherwise."""
    if "version" not in results:
        return ""
    counts = results.loc[results["version"].astype(str) != "", "version"].value_counts()
    if len(counts) < 2:
        return ""
    listed = ", ".join(f"{version} ({n} image rows)" for version, n in counts.sort_index().items())
    return f"Computed by different densepure versions: {listed}."
