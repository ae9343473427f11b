"""Results produced elsewhere, turned into ours at the edge: nothing downstream knows where they came from, except
the ``source`` column.

* **Cohen et al.'s per-image logs** (locuslab/smoothing ``certify.py``, Carlini et al.'s ``certify.py``, the
  official DensePure code's certify output and its merged results): tab-separated ``idx label predict radius correct
  [time]``. The setting (dataset, classifier, method, sigma, ...) comes from the command line or a small YAML
  sidecar file; the result is one of our TSVs with a ``method_label`` (the row's display name, e.g. "RS (Cohen et
  al.)") and a ``source`` column. Carlini et al.'s script writes a running total in ``correct``: detected (its
  increments, not its values, equal ``predict == label``) and converted, with a warning.
* **The official DensePure code's per-reverse-seed label files** ``{prefix}{i}-{seed}-n0_predictions.npy`` and
  ``...-n_predictions.npy`` (SPEC section 8.1): stacked over seeds 0..K-1 into a votes store, so ``densepure
  aggregate`` (K-merging) and everything after it runs on them.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from densepure.files.atomic import atomic_write_text
from densepure.job.results import SETTING_COLUMNS, TSV_COLUMNS
from densepure.report.labels import METHOD_LABELS

COHEN_COLUMNS = ["idx", "label", "predict", "radius", "correct"]
# locuslab/smoothing certify.py defaults, used where neither the command line nor a sidecar gives a value
COHEN_DEFAULTS = {"N0": 100, "N": 100_000, "alpha": 0.001, "b": 1, "K": 1, "precision": "fp32"}
SETTING_FIELDS = ["dataset", "classifier", "method", "label", "sigma", "b", "K", "N0", "N", "alpha", "precision"]


def read_sidecar(path: str | Path) -> dict:
    """The setting of a foreign log from a YAML file (keys: dataset, classifier, method, label, sigma, b, K, N0, N,
    alpha, precision, diffusion); ValueError naming an unknown key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sidecar file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a sidecar is a mapping of setting keys")
    unknown = sorted(set(data) - set(SETTING_FIELDS) - {"diffusion", "seed"})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(SETTING_FIELDS)})")
    return data


def log_setting(log: Path, given: dict, sidecar: str | Path | None = None) -> tuple[dict, list[str]]:
    """The setting of one log: ``given`` (command line) over the sidecar (``sidecar``, else ``<log>.yaml`` when it
    exists) over Cohen et al.'s defaults. Returns it and the names of the defaults used. ValueError for a missing
    required key or a method without a display label."""
    if sidecar is None and log.with_name(log.name + ".yaml").is_file():
        sidecar = log.with_name(log.name + ".yaml")
    setting = {**(read_sidecar(sidecar) if sidecar else {}), **{k: v for k, v in given.items() if v is not None}}
    missing = [k for k in ("dataset", "classifier", "method", "sigma") if k not in setting]
    if missing:
        raise ValueError(f"{log}: the setting lacks {', '.join(missing)}; give --{' --'.join(missing)} or a sidecar "
                         f"{log.name}.yaml")
    used = [k for k in COHEN_DEFAULTS if k not in setting]
    setting = {**COHEN_DEFAULTS, **setting}
    if not setting.get("label") and setting["method"] not in METHOD_LABELS:
        raise ValueError(f"{log}: method {setting['method']!r} needs a display label (--label, e.g. "
                         "'RS (Cohen et al.)')")
    return setting, used


def read_cohen_log(path: str | Path, warn=None) -> pd.DataFrame:
    """A log in Cohen et al.'s format as a frame (text columns kept as written). A cumulative ``correct`` column
    (Carlini et al.'s ``certify.py``) is converted to per-image values with a warning on ``warn``. ValueError for a
    missing column or a ``correct`` column that is neither per image nor cumulative."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"log not found: {path}")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"empty log: {path}") from None
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in COHEN_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a log in Cohen et al.'s format (idx label predict radius correct [time]); "
                         f"missing {', '.join(missing)}")
    if df.empty:
        raise ValueError(f"{path}: the log has no rows")
    try:
        values = {c: pd.to_numeric(df[c].str.strip()) for c in ("idx", "label", "predict", "correct")}
        pd.to_numeric(df["radius"].str.strip())
    except ValueError as err:
        raise ValueError(f"{path}: non-numeric value in the log ({err})") from None
    expected = (values["predict"] == values["label"]).astype(int).to_numpy()
    correct = values["correct"].astype(int).to_numpy()
    if not np.array_equal(correct, expected):
        steps = np.diff(correct, prepend=0)
        if not np.array_equal(steps, expected):
            row = int(np.flatnonzero(correct != expected)[0])
            raise ValueError(f"{path}: row {row + 1} (idx {df['idx'].iloc[row]}) has correct = {correct[row]} but "
                             "predict == label is {}, and the column is not a running total either".format(
                                 bool(expected[row])))
        print(f"warning: {path}: the correct column is a running total (as Carlini et al.'s certify.py writes it); "
              "converted to one value per image", file=warn or sys.stderr)
        df["correct"] = steps.astype(str)
    if "time" not in df.columns:
        df["time"] = str(datetime.timedelta(0))
    return df


def check_radii(df: pd.DataFrame, setting: dict, path: Path) -> None:
    """ValueError when a radius exceeds the largest one N estimation draws can certify at sigma: the setting given
    for the log (N, sigma or alpha) is not the one that produced it."""
    from densepure.report.accuracy import max_certifiable_radius

    r_max = max_certifiable_radius(float(setting["sigma"]), float(setting["N"]), float(setting["alpha"]))
    radius = pd.to_numeric(df["radius"]).to_numpy(float)
    beyond = np.flatnonzero(radius > r_max)
    if beyond.size:
        i = int(beyond[0])
        raise ValueError(f"{path}: idx {df['idx'].iloc[i]} has radius {df['radius'].iloc[i]}, beyond the largest "
                         f"radius N = {setting['N']} draws certify at sigma = {setting['sigma']} ({r_max}); give the "
                         "log's own --sigma, --N and --alpha")


def cohen_rows(df: pd.DataFrame, setting: dict, source: str) -> pd.DataFrame:
    """Our result rows (TSV columns, the setting, ``method_label`` and ``source``) from a Cohen-format log."""
    out = df[TSV_COLUMNS].copy()
    for col in SETTING_COLUMNS:
        out[col] = setting[col]
    out["method_label"] = setting.get("label") or METHOD_LABELS.get(setting["method"], "")
    out["source"] = source
    return out


def write_rows(rows: pd.DataFrame, path: Path) -> Path:
    """Write result rows as a TSV atomically (temp file + rename)."""
    return atomic_write_text(path, rows.to_csv(sep="\t", index=False))


def imported_name(log: Path) -> str:
    """``<log name>.tsv``, without a .tsv / .txt / .log suffix of its own (Cohen et al.'s logs are named like
    ``sigma_0.25``, whose '.25' is no suffix)."""
    name = log.name
    for suffix in (".tsv", ".txt", ".log"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name + ".tsv"


def import_cohen(logs: list[Path], outdir: Path, given: dict, sigmas: list[float] | None = None,
                 sidecar: str | Path | None = None, log=None) -> list[Path]:
    """Import each log (one ``--sigma`` for all, or one per log) into ``outdir`` (:func:`imported_name`)."""
    if sigmas and len(sigmas) not in (1, len(logs)):
        raise ValueError(f"give one --sigma for all logs or one per log ({len(logs)}), got {len(sigmas)}")
    log = log or sys.stderr
    written = []
    for i, path in enumerate(map(Path, logs)):
        if not path.is_file():
            raise ValueError(f"log not found: {path}")
        sigma = sigmas[0] if sigmas and len(sigmas) == 1 else (sigmas[i] if sigmas else None)
        setting, used = log_setting(path, {**given, **({"sigma": sigma} if sigma is not None else {})}, sidecar)
        df = read_cohen_log(path, warn=log)
        check_radii(df, setting, path)
        out = write_rows(cohen_rows(df, setting, f"import:cohen:{path.name}"), outdir / imported_name(path))
        note = f" (defaults: {', '.join(f'{k}={setting[k]}' for k in used)})" if used else ""
        print(f"{path} -> {out}: {len(df)} images, {setting['dataset']}/{setting['classifier']}/{setting['method']} "
              f"sigma={setting['sigma']}{note}", file=log)
        written.append(out)
    return written


def prediction_files(prefix: str, image_id: int, seed: int) -> tuple[Path, Path]:
    """The reference's per-seed label files of one image: ``{prefix}{i}-{seed}-n0_predictions.npy`` / ``-n_...``."""
    return (Path(f"{prefix}{image_id}-{seed}-n0_predictions.npy"), Path(f"{prefix}{image_id}-{seed}-n_predictions.npy"))


def seeds_present(prefix: str, image_id: int) -> int:
    """How many consecutive seeds 0, 1, ... have both label files for an image."""
    k = 0
    while all(p.is_file() for p in prediction_files(prefix, image_id, k)):
        k += 1
    return k


def stacked_votes(prefix: str, image_id: int, K: int) -> np.ndarray:
    """[N0 + N, K] labels of one image: the N0 selection then the N estimation predictions of seeds 0..K-1 as
    columns (rows are the shared noisy draws, SPEC section 8.2)."""
    columns = []
    for seed in range(K):
        n0, n = prediction_files(prefix, image_id, seed)
        for p in (n0, n):
            if not p.is_file():
                raise ValueError(f"missing label file {p} (seeds must be 0..{K - 1})")
        columns.append(np.concatenate([np.load(n0).ravel(), np.load(n).ravel()]))
    lengths = {len(c) for c in columns}
    if len(lengths) != 1:
        raise ValueError(f"image {image_id}: the seeds' label files have different lengths {sorted(lengths)}")
    return np.stack(columns, axis=1).astype(np.int64)


def import_densepure_votes(prefix: str, labels_log: Path, votes_dir: Path, setting: dict, K: int | None = None,
                           log=None) -> Path:
    """Stack the official code's per-seed label files of every image of ``labels_log`` (a certify output of any
    seed: its idx and label columns) into a votes store in ``votes_dir``, with the setting ``setting`` (dataset,
    classifier, sigma, b, N0, N, ...; K = the seeds found, or ``K``)."""
    from densepure.job.results import Setting
    from densepure.job.votes import VotesStore
    from densepure.models.datasets import NUM_CLASSES

    log = log or sys.stderr
    df = read_cohen_log(labels_log, warn=log)
    ids, labels = df["idx"].astype(int).tolist(), df["label"].astype(int).tolist()
    K = K or seeds_present(prefix, ids[0])
    if K < 1:
        raise ValueError(f"no label files {prediction_files(prefix, ids[0], 0)[0]} (check --predictions)")
    if setting["dataset"] not in NUM_CLASSES:
        raise ValueError(f"dataset {setting['dataset']!r} is not one of {', '.join(NUM_CLASSES)}")
    first = stacked_votes(prefix, ids[0], K)
    N0 = int(setting.get("N0", 100))
    votes_setting = Setting(dataset=setting["dataset"], diffusion=setting.get("diffusion", "imported"),
                            classifier=setting["classifier"], sigma=float(setting["sigma"]), b=int(setting["b"]),
                            K=K, N0=N0, N=first.shape[0] - N0, seed=int(setting.get("seed", 0)),
                            extra={"source": "densepure-official"})
    votes_setting.validate()
    store = VotesStore(votes_dir, votes_setting.as_dict(), num_classes=NUM_CLASSES[setting["dataset"]],
                       rows=first.shape[0])
    for image_id, label in zip(ids, labels):
        store.write(image_id, stacked_votes(prefix, image_id, K), label, extra={"source": str(labels_log)})
    print(f"{votes_dir}: votes of {len(ids)} images, K = {K} seeds, N0 = {N0}, N = {first.shape[0] - N0}", file=log)
    return votes_dir
