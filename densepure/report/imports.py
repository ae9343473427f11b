"""Results produced elsewhere, turned into ours at the edge: nothing downstream knows where they came from, except
the ``source`` column.

* **Cohen et al.'s per-image logs** (locuslab/smoothing ``certify.py``, Carlini et al.'s ``certify.py``, the
  official DensePure code's certify output and its merged results): tab-separated ``idx label predict radius correct
  [time]``. The setting (dataset, classifier, method, sigma, ...) comes from the command line or a small YAML
  sidecar file; the result is one of our TSVs with a ``method_label`` (the row's display name, e.g. "RS (Cohen et
  al.)") and a ``source`` column. Carlini et al.'s script writes a running total in ``correct``: detected (its
  increments, not its values, equal ``predict == label``) and converted, with a warning.
* **The official DensePure code's per-reverse-seed label files** ``{prefix}{i}-{seed}-n0_predictions.npy`` and
  ``...-n_predictions.npy`` (docs/reference-behaviour.md#ref-8-1): stacked over seeds 0..K-1 into a votes store, so
  ``densepure
  aggregate`` (K-merging) and everything after it runs on them.
"""

from __future__ import annotations

import datetime
import glob
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from densepure.files.atomic import atomic_write_text
from densepure.job.results import SETTING_COLUMNS, TSV_COLUMNS
from densepure.models.download import sha256
from densepure.report.accuracy import largest_radius
from densepure.report.labels import METHOD_LABELS

logger = logging.getLogger(__name__)

COHEN_COLUMNS = ["idx", "label", "predict", "radius", "correct"]
# locuslab/smoothing certify.py defaults, used where neither the command line nor a sidecar gives a value
COHEN_DEFAULTS = {"N0": 100, "N": 100_000, "alpha": 0.001, "b": 1, "K": 1, "precision": "fp32"}
SETTING_FIELDS = ["dataset", "classifier", "method", "label", "sigma", "b", "K", "N0", "N", "alpha", "precision"]


def read_sidecar(path: str | Path) -> dict:
    """The setting of a foreign log from a YAML file (keys: dataset, classifier, method, label, sigma, b, K, N0, N,
    alpha, precision, diffusion); ValueError naming an unknown key."""
    from densepure.files.yamlfile import read_yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sidecar file not found: {path}")
    data = read_yaml(path, "sidecar") or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a sidecar is a mapping of setting keys")
    unknown = sorted(set(data) - set(SETTING_FIELDS) - {"diffusion", "seed", "source"})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(SETTING_FIELDS)})")
    return data


REQUIRED_FIELDS = ("dataset", "classifier", "method", "sigma")  # no default: given, or in a sidecar


def missing_fields(setting: dict) -> list[str]:
    """The :data:`REQUIRED_FIELDS` that ``setting`` lacks, in that order."""
    return [k for k in REQUIRED_FIELDS if k not in setting]


def missing_text(log: Path, missing: list[str]) -> str:
    """``<log>: the setting lacks dataset, sigma; give --dataset --sigma or a sidecar <log>.yaml``."""
    return (f"{log}: the setting lacks {', '.join(missing)}; give --{' --'.join(missing)} or a sidecar "
            f"{log.name}.yaml")


def given_setting(log: Path, given: dict, sidecar: str | Path | None = None) -> dict:
    """``given`` (command line, None meaning not given) over the sidecar (``sidecar``, else ``<log>.yaml`` when it
    exists)."""
    if sidecar is None and log.with_name(log.name + ".yaml").is_file():
        sidecar = log.with_name(log.name + ".yaml")
    return {**(read_sidecar(sidecar) if sidecar else {}), **{k: v for k, v in given.items() if v is not None}}


def log_setting(log: Path, given: dict, sidecar: str | Path | None = None) -> tuple[dict, list[str]]:
    """The setting of one log: ``given`` (command line) over the sidecar (``sidecar``, else ``<log>.yaml`` when it
    exists) over Cohen et al.'s defaults. Returns it and the names of the defaults used. ValueError naming every
    missing required key (:func:`missing_fields`)."""
    setting = given_setting(log, given, sidecar)
    missing = missing_fields(setting)
    if missing:
        raise ValueError(missing_text(log, missing))
    used = [k for k in COHEN_DEFAULTS if k not in setting]
    setting = {**COHEN_DEFAULTS, **setting}
    if not setting.get("label") and setting["method"] not in METHOD_LABELS:
        setting["label"] = setting["method"]
    return setting, used


def read_cohen_log(path: str | Path) -> pd.DataFrame:
    """A log in Cohen et al.'s format as a frame (text columns kept as written). A cumulative ``correct`` column
    (Carlini et al.'s ``certify.py``) is converted to per-image values with a logged warning. ValueError for a
    missing column or a ``correct`` column that is neither per image nor cumulative."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"log not found: {path}")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"empty log: {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a text log in Cohen et al.'s format ({' '.join(str(err).split())})") from None
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
        logger.warning(f"{path}: the correct column is a running total (as Carlini et al.'s certify.py writes it); "
                       "converted to one value per image")
        df["correct"] = steps.astype(str)
    if "time" not in df.columns:
        df["time"] = str(datetime.timedelta(0))
    return df


ALPHAS = (0.001, 0.005, 0.01, 0.05, 0.1)  # the failure probabilities `--alpha infer` chooses from
UNKNOWN, INFER = "unknown", "infer"


def radius_tolerance(text: str) -> float:
    """Half a unit in the last digit of a radius as written: the most its rounding can have added (``'3.81'`` ->
    0.005, ``'3.8115'`` -> 0.00005, ``'4'`` -> 0.5, ``'1.5e-05'`` -> 5e-08)."""
    mantissa, _, exponent = text.strip().lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def alpha_needed(radius: float, sigma: float, N: float) -> float:
    """The smallest alpha at which N draws certify ``radius``: ``Phi(radius / sigma)^N``."""
    return float(norm.cdf(radius / sigma) ** N)


def draws_needed(radius: float, sigma: float, alpha: float) -> int:
    """The fewest estimation draws that certify ``radius`` at ``alpha``:
    ``ceil(log alpha / log Phi(radius / sigma))``."""
    return int(math.ceil(math.log(alpha) / math.log(norm.cdf(radius / sigma))))


def beyond_bound(df: pd.DataFrame, sigma: float, N: float, alpha: float) -> np.ndarray:
    """Rows whose written radius exceeds what (N, alpha) can certify at ``sigma``, compared at the log's printed
    precision: a radius is refused only when even its unrounded value must exceed the bound."""
    bound = largest_radius(sigma, N, alpha)
    texts = df["radius"].astype(str)
    radius = pd.to_numeric(texts).to_numpy(float)
    tolerance = np.array([radius_tolerance(t) for t in texts])
    return radius - tolerance > bound * (1 + 1e-12)


def _fitting_alpha(df: pd.DataFrame, setting: dict) -> float:
    """The alpha at which the log's largest radius just fits (its rounding taken off), with N as declared."""
    texts = df["radius"].astype(str)
    lowest = max(float(t) - radius_tolerance(t) for t in texts)
    return alpha_needed(lowest, float(setting["sigma"]), float(setting["N"]))


def check_radii(df: pd.DataFrame, setting: dict, path: Path) -> list[str]:
    """Check the radii against the declared (sigma, N, alpha) and settle ``alpha: infer``; returns notes about the
    setting to keep with the rows. ValueError naming the first radius that the declared setting cannot produce,
    with the (N, alpha) that can."""
    sigma, N, alpha = float(setting["sigma"]), setting["N"], setting["alpha"]
    if N == UNKNOWN and alpha == INFER:
        raise ValueError(f"{path}: alpha cannot be inferred from the radii without N; give --N, or --alpha unknown")
    if N == UNKNOWN or alpha == UNKNOWN:
        unknown = [k for k in ("N", "alpha") if setting[k] == UNKNOWN]
        for key in unknown:
            setting[key] = float("nan")
        return [f"{' and '.join(unknown)} unknown: radii not checked against them"]
    if alpha == INFER:
        needed = _fitting_alpha(df, setting)
        fits = [a for a in ALPHAS if a >= needed]
        if not fits:
            raise ValueError(f"{path}: no alpha in {', '.join(map(str, ALPHAS))} lets N = {N} draws certify the "
                             f"log's radii (alpha >= {needed:.3g} needed); give the log's own --N, or --alpha unknown")
        setting["alpha"] = fits[0]
        return [f"alpha inferred from the radii: {fits[0]} (the smallest of {', '.join(map(str, ALPHAS))} with "
                f"which N = {N} draws certify them; alpha >= {needed:.3g} needed)"]
    beyond = np.flatnonzero(beyond_bound(df, sigma, float(N), float(alpha)))
    if beyond.size:
        i = int(beyond[0])
        text = str(df["radius"].iloc[i])
        lowest = float(text) - radius_tolerance(text)
        raise ValueError(
            f"{path}: idx {df['idx'].iloc[i]} has radius {text}, beyond the largest radius N = {N} draws certify at "
            f"sigma = {sigma:g} and alpha = {alpha} ({largest_radius(sigma, float(N), float(alpha)):.6g}); it needs "
            f"alpha >= {alpha_needed(lowest, sigma, float(N)):.3g} with N = {N}, or N >= "
            f"{draws_needed(lowest, sigma, float(alpha))} with alpha = {alpha}. Give the log's own --sigma, --N and "
            f"--alpha, or --alpha infer (recorded as inferred) or --alpha unknown")
    return []


def check_log_values(df: pd.DataFrame, path: Path) -> None:
    """ValueError naming the first row whose idx is not a non-negative integer or repeats, or whose radius is
    negative (a certified radius is >= 0)."""
    idx = pd.to_numeric(df["idx"].str.strip()).to_numpy(float)
    bad = np.flatnonzero((idx < 0) | (idx != np.round(idx)))
    if bad.size:
        raise ValueError(f"{path}: row {bad[0] + 1} has idx {df['idx'].iloc[bad[0]]}; an image id is an integer >= 0")
    repeated = pd.Series(idx).duplicated().to_numpy()
    if repeated.any():
        raise ValueError(f"{path}: idx {df['idx'].iloc[int(np.flatnonzero(repeated)[0])]} appears twice")
    radius = pd.to_numeric(df["radius"].str.strip()).to_numpy(float)
    negative = np.flatnonzero(radius < 0)
    if negative.size:
        raise ValueError(f"{path}: idx {df['idx'].iloc[negative[0]]} has radius {df['radius'].iloc[negative[0]]}; "
                         "a certified radius is >= 0")


RULES = {"sigma": "must be a noise level > 0", "N0": "must be a whole number of draws >= 1 (or unknown)",
         "N": "must be a whole number of draws >= 1 (or unknown)", "alpha": "must lie in (0, 1) (or infer, or unknown)"}


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def setting_problems(setting: dict) -> list[str]:
    """Every setting value no certification can have: sigma not a noise level > 0, N0 or N not a whole number of
    draws >= 1 (N may be unknown), alpha outside (0, 1) (or infer, or unknown); a value that is no number says so."""
    problems = []

    def bad(key, rule, allowed=()):
        value = setting[key]
        if value in allowed:
            return
        number = _number(value)
        if number is None:
            problems.append(f"{key} = {value!r} is not a number")
        elif not rule(number):
            problems.append(f"{key} = {value} {RULES[key]}")

    bad("sigma", lambda v: math.isfinite(v) and v > 0)
    for key in ("N0", "N"):
        bad(key, lambda v: v >= 1 and v == int(v), (UNKNOWN,))
    bad("alpha", lambda v: 0 < v < 1, (UNKNOWN, INFER))
    return problems


def check_setting_values(setting: dict, path: Path) -> None:
    """ValueError naming, in one line, every setting value no certification can have (:func:`setting_problems`)."""
    problems = setting_problems(setting)
    if problems:
        raise ValueError(f"{path}: {'; '.join(problems)}")


def cohen_rows(df: pd.DataFrame, setting: dict, source: str, digest: str = "", notes: list[str] = ()) -> pd.DataFrame:
    """Our result rows (TSV columns, the setting, ``method_label``, ``source``, the log's sha256 and notes about the
    setting) from a Cohen-format log; every value as the log writes it."""
    out = df[TSV_COLUMNS].copy()
    for col in SETTING_COLUMNS:
        out[col] = setting[col]
    out["method_label"] = setting.get("label") or METHOD_LABELS.get(setting["method"], "")
    out["source"] = source
    out["source_sha256"] = digest
    out["setting_note"] = "; ".join(notes)
    return out


def imported_name(log: Path) -> str:
    """``<log name>.tsv``, without a .tsv / .txt / .log suffix of its own (Cohen et al.'s logs are named like
    ``sigma_0.25``, whose '.25' is no suffix)."""
    name = log.name
    for suffix in (".tsv", ".txt", ".log"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name + ".tsv"


def output_names(logs: list[Path]) -> list[Path]:
    """Where each log goes below ``--out``: its path relative to the folder that holds all the logs, with
    :func:`imported_name` (logs of one folder keep their name; the same name in two folders cannot collide)."""
    parents = [p.resolve().parent for p in logs]
    root = Path(os.path.commonpath(parents)) if parents else Path(".")
    return [parent.relative_to(root) / imported_name(p) for p, parent in zip(logs, parents)]


@dataclass
class ImportedLog:
    """One log ready to be written: its rows and where they go (relative to ``--out``)."""

    path: Path
    name: Path
    rows: pd.DataFrame
    setting: dict
    defaults: list[str]
    notes: list[str]


def read_import(path: Path, name: Path, given: dict, sidecar) -> ImportedLog:
    """Read and check one log with its setting (:func:`log_setting`); nothing is written."""
    setting, used = log_setting(path, given, sidecar)
    check_setting_values(setting, path)
    df = read_cohen_log(path)
    check_log_values(df, path)
    notes = check_radii(df, setting, path)
    source = setting.pop("source", None) or f"import:cohen:{name.with_name(path.name).as_posix()}"
    rows = cohen_rows(df, setting, source, sha256(path), notes)
    return ImportedLog(path, name, rows, setting, used, notes)


def write_imports(items: list[ImportedLog], outdir: Path) -> list[tuple[Path, str]]:
    """Write every log's rows below ``outdir``, all or nothing: an existing file with the same rows is left as it is
    (``unchanged``), one with other rows is never overwritten (ValueError naming it, before anything is written).
    Returns (path, ``written`` or ``unchanged``) per log."""
    from densepure.files.paths import inside

    plan = []
    for item in items:
        target = inside(outdir, item.name, "an imported log's name")
        if target.resolve() == item.path.resolve():
            raise ValueError(f"--out {outdir} would write over the log {item.path} itself; import into another folder")
        text = item.rows.to_csv(sep="\t", index=False)
        if target.is_file():
            if target.read_text() != text:
                raise ValueError(f"{target} already holds a different result (imported from "
                                 f"{_source_of(target)}); a different result is never overwritten: remove it or "
                                 f"import into another --out")
            plan.append((target, None))
        elif target.exists():
            raise ValueError(f"{target} is in the way (not a file)")
        else:
            plan.append((target, text))
    written: list[Path] = []
    try:
        for target, text in plan:
            if text is not None:
                written.append(atomic_write_text(target, text))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return [(target, "unchanged" if text is None else "written") for target, text in plan]


def _source_of(path: Path) -> str:
    try:
        return str(pd.read_csv(path, sep="\t", dtype=str, usecols=["source"])["source"].iloc[0])
    except (ValueError, KeyError, IndexError, OSError):
        return "an earlier import"


NUMERIC_FIELDS = {"sigma": float, "b": int, "K": int, "N0": int, "N": int, "alpha": float}


def pattern_logs(pattern: str) -> list[tuple[Path, dict[str, str]]]:
    """The files matching ``pattern``, a path with ``{name}`` placeholders each standing for one path part or a piece
    of one (``runs/{classifier}/noise_{train_sigma}/test/sigma_{sigma}``), with the text each placeholder matched.
    ValueError when nothing matches."""
    parts = re.split(r"\{(\w+)\}", pattern)
    regex, seen = "", set()
    for i, part in enumerate(parts):
        if i % 2 == 0:
            regex += re.escape(part)
        else:
            regex += f"(?P={part})" if part in seen else f"(?P<{part}>[^/]+?)"
            seen.add(part)
    matcher = re.compile(regex + "$")
    found = []
    for name in sorted(glob.glob(re.sub(r"\{\w+\}", "*", pattern))):
        match = matcher.match(name)
        if match and Path(name).is_file():
            found.append((Path(name), match.groupdict()))
    if not found:
        raise ValueError(f"no log matches --pattern {pattern}")
    return found


def pattern_setting(given: dict, fields: dict[str, str], path: Path) -> dict:
    """``given`` with the pattern's ``fields`` filled in: a field named like a setting key sets it; every given text
    may use any field as ``{name}`` (``--classifier 'resnet110-noise{train_sigma}'``)."""
    out = {}
    for key, value in given.items():
        if isinstance(value, str) and "{" in value:
            try:
                value = value.format(**fields)
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(f"--{key} {value!r}: no pattern field {err}") from None
        out[key] = value
    for key, text in fields.items():
        if key in SETTING_FIELDS:
            if given.get(key) is not None:
                raise ValueError(f"--{key} and the pattern's {{{key}}} both set {key}; give one")
            try:
                out[key] = NUMERIC_FIELDS.get(key, str)(text) if text not in (UNKNOWN, INFER) else text
            except ValueError:
                raise ValueError(f"{path}: the pattern's {{{key}}} is {text!r}, not a number") from None
    return out


def check_settings_complete(per_log: list[tuple[Path, dict]], sidecar: str | Path | None = None) -> None:
    """Before any log is read: ValueError naming, in one line, every log whose setting lacks required keys and all
    the keys each lacks (logs lacking the same keys are named together)."""
    lacking: dict[tuple[str, ...], list[Path]] = {}
    for path, given in per_log:
        missing = missing_fields(given_setting(path, given, sidecar))
        if missing:
            lacking.setdefault(tuple(missing), []).append(path)
    if not lacking:
        return
    if len(lacking) == 1 and len(next(iter(lacking.values()))) == 1:
        (missing, (path,)), = lacking.items()
        raise ValueError(missing_text(path, list(missing)))
    parts = [f"{', '.join(map(str, paths))} lack{'s' if len(paths) == 1 else ''} {', '.join(missing)}"
             for missing, paths in lacking.items()]
    options = " --".join(dict.fromkeys(k for missing in lacking for k in missing))
    raise ValueError(f"{len(sum(lacking.values(), []))} logs lack setting keys: {'; '.join(parts)}; give --{options} "
                     f"or a sidecar <log>.yaml next to each")


def import_cohen(logs: list[Path], outdir: Path, given: dict, sigmas: list[float] | None = None,
                 sidecar: str | Path | None = None, pattern: str | None = None) -> list[Path]:
    """Import each log (one ``--sigma`` for all, or one per log), or every file matching ``pattern``
    (:func:`pattern_logs`, its fields filling the setting), into ``outdir`` (:func:`output_names`), all or nothing;
    re-importing the same logs changes nothing. Logs whose setting lacks required keys are named all at once
    (:func:`check_settings_complete`) before any is read; one line per imported log is logged."""
    logs = list(dict.fromkeys(Path(p) for p in logs))
    found = pattern_logs(pattern) if pattern else []
    if sigmas and len(sigmas) not in (1, len(logs)):
        raise ValueError(f"give one --sigma for all logs or one per log ({len(logs)}), got {len(sigmas)}")
    missing = [str(p) for p in logs if not p.is_file()]
    if missing:
        raise ValueError(f"log not found: {', '.join(missing)}")
    per_log = []
    for i, path in enumerate(logs):
        sigma = sigmas[0] if sigmas and len(sigmas) == 1 else (sigmas[i] if sigmas else None)
        per_log.append((path, {**given, **({"sigma": sigma} if sigma is not None else {})}))
    per_log += [(path, pattern_setting(given, fields, path)) for path, fields in found if path not in logs]
    paths = [path for path, _ in per_log]
    check_settings_complete(per_log, sidecar)
    items = [read_import(path, name, setting, sidecar)
             for (path, setting), name in zip(per_log, output_names(paths))]
    return report_imports(items, write_imports(items, outdir))


def report_imports(items: list[ImportedLog], done: list[tuple[Path, str]]) -> list[Path]:
    """Log one line per log: where it went (or that it was unchanged), its images, setting and notes; returns the
    written paths."""
    for item, (out, status) in zip(items, done):
        s = item.setting
        note = f" (defaults: {', '.join(f'{k}={s[k]}' for k in item.defaults)})" if item.defaults else ""
        extra = "".join(f"; {n}" for n in item.notes)
        logger.info(f"{item.path} -> {out}{'' if status == 'written' else ' (unchanged)'}: {len(item.rows)} images, "
                    f"{s['dataset']}/{s['classifier']}/{s['method']} sigma={s['sigma']}{note}{extra}")
    return [out for out, _ in done]


def prediction_files(prefix: str, image_id: int, seed: int) -> tuple[Path, Path]:
    """The reference's per-seed label files of one image: ``{prefix}{i}-{seed}-n0_predictions.npy`` / ``-n_...``."""
    return (Path(f"{prefix}{image_id}-{seed}-n0_predictions.npy"), Path(f"{prefix}{image_id}-{seed}-n_predictions.npy"))


def seeds_present(prefix: str, image_id: int) -> int:
    """How many consecutive seeds 0, 1, ... have both label files for an image."""
    k = 0
    while all(p.is_file() for p in prediction_files(prefix, image_id, k)):
        k += 1
    return k


def label_array(path: Path) -> np.ndarray:
    """The 1-D integer labels of one of the reference's ``.npy`` files; ValueError naming the file for anything
    else (another shape, float or negative values, not an array file)."""
    try:
        labels = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a NumPy label file ({' '.join(str(err).split())})") from None
    if labels.ndim != 1:
        raise ValueError(f"{path}: labels of shape {labels.shape}; expected one label per draw (1-D)")
    if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        raise ValueError(f"{path}: labels of type {labels.dtype} with non-integer values; expected class indices")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: negative label {labels.min()}; expected class indices >= 0")
    return labels.astype(np.int64)


def stacked_votes(prefix: str, image_id: int, K: int) -> np.ndarray:
    """[N0 + N, K] labels of one image: the N0 selection then the N estimation predictions of seeds 0..K-1 as
    columns (rows are the shared noisy draws, docs/reference-behaviour.md#ref-8-2)."""
    columns = []
    for seed in range(K):
        n0, n = prediction_files(prefix, image_id, seed)
        for p in (n0, n):
            if not p.is_file():
                raise ValueError(f"missing label file {p} (seeds must be 0..{K - 1})")
        columns.append(np.concatenate([label_array(n0), label_array(n)]))
    lengths = {len(c) for c in columns}
    if len(lengths) != 1:
        raise ValueError(f"image {image_id}: the seeds' label files have different lengths {sorted(lengths)}")
    return np.stack(columns, axis=1).astype(np.int64)


def check_selection_draws(N0: int, rows: int, image_id: int) -> None:
    """ValueError when ``N0`` selection draws leave no estimation draw among the ``rows`` draws (N0 + N) of an
    image's label files: N = rows - N0 must be >= 1."""
    if N0 >= rows:
        raise ValueError(f"--N0 {N0} leaves no estimation draws: the label files of image {image_id} hold {rows} "
                         f"draws per seed in all (N0 + N); give an --N0 below {rows}")


def import_densepure_votes(prefix: str, labels_log: Path, votes_dir: Path, setting: dict,
                           K: int | None = None) -> Path:
    """Stack the official code's per-seed label files of every image of ``labels_log`` (a certify output of any
    seed: its idx and label columns) into a votes store in ``votes_dir``, with the setting ``setting`` (dataset,
    classifier, sigma, b, N0, N, ...; K = the seeds found, or ``K``; N = the draws of the files less N0)."""
    from densepure.job.results import Setting
    from densepure.job.votes import VotesStore
    from densepure.models.datasets import NUM_CLASSES

    df = read_cohen_log(labels_log)
    check_log_values(df, labels_log)
    ids, labels = df["idx"].astype(int).tolist(), df["label"].astype(int).tolist()
    K = K or seeds_present(prefix, ids[0])
    if K < 1:
        raise ValueError(f"no label files {prediction_files(prefix, ids[0], 0)[0]} (check --predictions)")
    if setting["dataset"] not in NUM_CLASSES:
        raise ValueError(f"dataset {setting['dataset']!r} is not one of {', '.join(NUM_CLASSES)}")
    first = stacked_votes(prefix, ids[0], K)
    N0 = int(setting.get("N0", 100))
    check_selection_draws(N0, first.shape[0], ids[0])
    votes_setting = Setting(dataset=setting["dataset"], diffusion=setting.get("diffusion", "imported"),
                            classifier=setting["classifier"], sigma=float(setting["sigma"]), b=int(setting["b"]),
                            K=K, N0=N0, N=first.shape[0] - N0, seed=int(setting.get("seed", 0)),
                            extra={"source": "densepure-official"})
    votes_setting.validate()
    store = VotesStore(votes_dir, votes_setting.as_dict(), num_classes=NUM_CLASSES[setting["dataset"]],
                       rows=first.shape[0])
    for image_id, label in zip(ids, labels):
        store.write(image_id, stacked_votes(prefix, image_id, K), label, extra={"source": str(labels_log)})
    logger.info(f"{votes_dir}: votes of {len(ids)} images, K = {K} seeds, N0 = {N0}, N = {first.shape[0] - N0}")
    return votes_dir
