"""Deciding sequential claims (:mod:`densepure.plan.claims`) from the images certified so far, and their report.

For a claim on N images in its pre-registered order, the outcome of image i is ``x_i = c_i`` for a cell (certified
at the radius or not: :func:`densepure.report.accuracy.certified_at`) and ``x_i = (d_i + 1) / 2`` for a paired
difference ``d_i = c_i(first) - c_i(second)`` in {-1, 0, 1}. The confidence sequence of the mean m of the N values
(:func:`densepure.core.sequential.confidence_sequence`, at the claim's share of alpha) gives the quantity
``q = m`` (cell) or ``q = 2 m - 1`` (difference) an interval ``[low, high]`` that holds the full artifact's value at
every wave simultaneously with probability at least 1 - alpha_claim over the order. After each wave a claim is
decided (:func:`densepure.core.sequential.decide`) or goes on; it stops undecided when its budget (images, or
GPU-hours measured after each wave) or the set is used up. With the claims' alphas adding up to the family alpha
(Bonferroni), every decided claim says what the full artifact would say with probability at least 1 - alpha.

Costs are measured: the seconds each image took, as its votes store records them (``seconds``, the ``time`` column
of result TSVs), summed over the images a claim used and its settings' stores, a job that wrote both stores of an
image (a DensePure job and the one-shot votes it provides) counted once; the full artifact's cost of the claim's
settings is that mean per image times N.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from densepure.core.sequential import confidence_sequence, decide, lean
from densepure.job.aggregate import open_stores
from densepure.job.results import record_outcome
from densepure.models.datasets import NUM_CLASSES
from densepure.plan import claims as plan
from densepure.plan.grid import settings
from densepure.report.accuracy import certified_at

GUARANTEE = ("With probability at least 1 - alpha over the image order, every decided claim says what the full "
             "artifact would say.")
CITATION = ('Waudby-Smith and Ramdas, "Confidence sequences for sampling without replacement", NeurIPS 2020')
COLUMNS = ["claim", "artifact", "dataset", "classifier", "sigma", "radius", "first", "second", "kind", "delta",
           "value", "alpha", "decision", "estimate", "low", "high", "images", "N", "waves", "gpu_hours",
           "full_gpu_hours"]


@dataclass
class Status:
    """Where a claim stands after its last wave: decision ("true", "false" or "" while undecided), the estimate
    (mean of the quantity over the images so far), the sequence's ``[low, high]``, images used of N, and the
    measured seconds of those images (all its settings)."""

    decision: str
    estimate: float
    low: float
    high: float
    images: int
    N: int
    waves: int
    closed: bool
    seconds: float


def side_results(votes_dirs: list[Path], ids: list[int], K: int, alpha: float) -> pd.DataFrame:
    """Per-image ``idx, predict, radius, correct, seconds, shared`` of one setting at K votes from its votes stores
    (the aggregation's CERTIFY, :func:`densepure.job.results.record_outcome`), in the order of ``ids``; ``shared``:
    the image's votes were computed by a job that also wrote the other store of its draws (a DensePure job and the
    one-shot votes it provides), whose time both records hold."""
    setting, by_id = open_stores(votes_dirs)
    num_classes = setting.extra.get("num_classes") or NUM_CLASSES[setting.dataset]
    rows = []
    for i in ids:
        if i not in by_id:
            raise ValueError(f"image {i} has no complete votes in {', '.join(map(str, votes_dirs))}")
        record = by_id[i].read(i)
        out = record_outcome(record, K, setting.N0, setting.N, setting.sigma, alpha, num_classes)
        radius = np.nan if out.radius is None else float(_written(out.radius))
        rows.append({"idx": i, "predict": out.predict, "radius": radius, "correct": out.correct,
                     "seconds": float(record.extra.get("seconds", 0.0)),
                     "shared": bool(record.extra.get("shared", False))})
    return pd.DataFrame(rows, columns=["idx", "predict", "radius", "correct", "seconds", "shared"])


def _written(radius: float) -> str:
    from densepure.core.smoothing import format_radius

    return format_radius(radius)


def outcomes(first: pd.DataFrame, second: pd.DataFrame | None, radius: float) -> np.ndarray:
    """``x_i`` in [0, 1] per image: certified at ``radius`` (a cell), or ``(d + 1) / 2`` of the paired difference
    ``d = first - second`` (rows in the same image order)."""
    c1 = certified_at(first, [radius])[:, 0].astype(float)
    if second is None:
        return c1
    if list(first["idx"]) != list(second["idx"]):
        raise ValueError("the two sides of a paired claim must hold the same images in the same order")
    return (c1 - certified_at(second, [radius])[:, 0] + 1) / 2


def to_quantity(m: np.ndarray, paired: bool, N: int) -> np.ndarray:
    """The claim's quantity from the mean m of x: ``m`` (cell) or ``2 m - 1`` (paired difference), as the nearest
    float to its multiple of 1/(2N) (the quantity's grid), so that it compares with delta and value as the full
    artifact's ``count / N`` does."""
    q = 2 * np.asarray(m, dtype=float) - 1 if paired else np.asarray(m, dtype=float)
    return np.round(q * 2 * N) / (2 * N)


def _estimate(x: np.ndarray, paired: bool) -> float:
    """The quantity's mean over the images so far."""
    return float(2 * x.mean() - 1 if paired else x.mean())


def status(claim: plan.Claim, x: np.ndarray, N: int, wave: int, limit: int) -> Status:
    """Walk the waves over the outcomes ``x`` (in order) and stop at the first wave whose interval decides the
    claim, or when ``limit`` images are used; ``closed`` is False while more images are needed and available."""
    low, high = confidence_sequence(x, N, claim.alpha, claim.budget_images, lean(claim.kind))
    low, high = to_quantity(low[0], claim.paired, N), to_quantity(high[0], claim.paired, N)
    ends = list(range(wave, len(x), wave)) + [len(x)]
    for w, n in enumerate(ends, start=1):
        verdict = decide(low[n - 1], high[n - 1], claim.kind, claim.delta, claim.value or 0.0)
        if verdict or n >= limit:
            return Status(verdict or "", _estimate(x[:n], claim.paired), float(low[n - 1]),
                          float(high[n - 1]), n, N, w, True, 0.0)
    n = len(x)
    return Status("", _estimate(x, claim.paired), float(low[-1]), float(high[-1]), n, N,
                  len(ends), False, 0.0)


def claim_status(config: dict, claim: plan.Claim, upto_wave: int) -> Status:
    """A claim's status after waves 0..``upto_wave`` from the run's votes stores, read wave by wave: a claim
    closed at an earlier wave reads no later one (its images were not certified). Closed: decided, or its image
    budget or the set used up, or (undecided) its measured seconds reached its ``budget.gpu_hours``."""
    order, step, limit = plan.order(config, claim), plan.load_wave_size(config), plan.limit(config, claim)
    sides: list[pd.DataFrame] = [pd.DataFrame() for _ in claim.sides]
    for wave in range(upto_wave + 1):
        ids = order[wave * step:min((wave + 1) * step, limit)]
        sides = [pd.concat([side, side_results(_store_dirs(config, key), ids, K, config["alpha"])],
                           ignore_index=True) for side, (key, K) in zip(sides, plan.keys(config, claim))]
        x = outcomes(sides[0], sides[1] if claim.paired else None, claim.radius)
        found = status(claim, x, plan.size(config, claim), step, limit)
        found.seconds = images_seconds([side.iloc[:found.images] for side in sides])
        if not found.closed and claim.budget_gpu_hours is not None and found.seconds >= claim.budget_gpu_hours * 3600:
            found.closed = True  # its GPU-hours are spent: undecided
        if found.closed:
            break
    return found


def images_seconds(sides: list[pd.DataFrame]) -> float:
    """Seconds the images of a claim took over its sides (rows in the same image order): summed, but an image whose
    two sides were computed by one job (both ``shared``) counts that job's time once (the larger record)."""
    if len(sides) == 1:
        return float(sides[0]["seconds"].sum())
    first, second = sides
    one_job = first["shared"].to_numpy() & second["shared"].to_numpy()
    s1, s2 = first["seconds"].to_numpy(), second["seconds"].to_numpy()
    return float(np.where(one_job, np.maximum(s1, s2), s1 + s2).sum())


def _store_dirs(config: dict, key) -> list[Path]:
    root = Path(config["work_dir"]) / config["run"] / "votes"
    return [root / s.name for s in settings(config) if s.key == key and (root / s.name).is_dir()]


def decide_wave(config: dict, wave: int) -> dict:
    """After wave ``wave``: every claim's status, and ``open``: the claims that need the next wave."""
    out = {"wave": wave, "claims": {}, "open": []}
    for claim in plan.load_claims(config).claims:
        found = claim_status(config, claim, wave)
        out["claims"][claim.name] = asdict(found)
        if not found.closed:
            out["open"].append(claim.name)
    return out


def write_wave(config: dict, wave: int, path: Path) -> dict:
    """:func:`decide_wave` as JSON at ``path``."""
    found = decide_wave(config, wave)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    return found


def _side_text(side: plan.Side | None) -> str:
    if side is None:
        return ""
    return side.method if side.method != "densepure" else f"densepure b={side.b} K={side.K}"


def claims_table(config: dict, statuses: dict[str, Status]) -> pd.DataFrame:
    """One row per claim (:data:`COLUMNS`): quantities as fractions, GPU-hours measured (the images used) and the
    full artifact's for the claim's settings (measured seconds per image x N)."""
    rows = []
    for claim in plan.load_claims(config).claims:
        s = statuses[claim.name]
        per_image = s.seconds / s.images if s.images else 0.0
        rows.append([claim.name, claim.artifact, claim.dataset, claim.classifier, claim.sigma, claim.radius,
                     _side_text(claim.first), _side_text(claim.second), claim.kind, claim.delta,
                     "" if claim.value is None else claim.value, claim.alpha, s.decision or "undecided",
                     s.estimate, s.low, s.high, s.images, s.N, s.waves, s.seconds / 3600, per_image * s.N / 3600])
    return pd.DataFrame(rows, columns=COLUMNS)


def claims_markdown(config: dict, table: pd.DataFrame) -> str:
    """The report: the guarantee, then one line per claim."""
    section = plan.load_claims(config)
    lines = ["# Sequential claims", "", f"{GUARANTEE} Here alpha = {section.alpha:g}, split equally over "
             f"{len(section.claims)} claim(s); images in the order of seed {section.seed}, {section.wave} per wave "
             f"(anytime-valid confidence sequences for sampling without replacement: {CITATION}).", "",
             "| claim | quantity | claim | decision | estimate | sequence | images | GPU-hours (measured) | "
             "full GPU-hours (extrapolated) |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        pair = f"{r['first']}{' - ' + r['second'] if r['second'] else ''}"
        quantity = f"{pair} at sigma {r['sigma']:g}, r {r['radius']:g}"
        said = {"greater": f"> {r['delta']:g}", "at_least": f">= {r['delta']:g}",
                "within": f"within {r['delta']:g} of {r['value']}"}[r["kind"]]
        lines.append(f"| {r['claim']} | {quantity} | {said} | {r['decision']} | {r['estimate']:.3f} | "
                     f"[{r['low']:.3f}, {r['high']:.3f}] | {r['images']} of {r['N']} | {r['gpu_hours']:.4f} | "
                     f"{r['full_gpu_hours']:.4f} |")
    lines += ["", "Quantities are fractions (0.07 = 7 points). GPU-hours: the seconds each image took, as its votes "
              "store records them, over the images used; full: that mean per image times N."]
    return "\n".join(lines) + "\n"


def write_report(config: dict, wave_file: Path, out_dir: Path) -> pd.DataFrame:
    """``claims.tsv``, ``claims.md`` and the order of each image set (``order-<dataset>-<images>.txt``) under
    ``out_dir``, from the last wave's decisions (``wave_file``, :func:`write_wave`)."""
    found = json.loads(Path(wave_file).read_text())
    statuses = {name: Status(**s) for name, s in found["claims"].items()}
    table = claims_table(config, statuses)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "claims.tsv", sep="\t", index=False)
    (out_dir / "claims.md").write_text(claims_markdown(config, table))
    for claim in plan.load_claims(config).claims:
        ids = plan.order(config, claim)
        (out_dir / f"order-{claim.dataset}-{claim.images}.txt").write_text("\n".join(map(str, ids)) + "\n")
    return table


def complete_shards(config: dict) -> list[tuple[str, int, list[int]]]:
    """(store, shard, ids) of the full grid's certification jobs (:func:`densepure.plan.grid.job_shards`) that
    have nothing left to do: every id of the shard, and every one-shot id the job provides, is stored."""
    from densepure.job.votes import VotesStore
    from densepure.plan.grid import job_shards, provided_one_shot

    root = Path(config["work_dir"]) / config["run"] / "votes"

    def stored(name: str) -> set[int]:
        return set(VotesStore.open(root / name).stored_ids()) if (root / name).is_dir() else set()

    out = []
    for store in settings(config):
        have = stored(store.name)
        provided = provided_one_shot(config, store)
        one_shot = stored(provided[0].name) if provided else set()
        for shard, ids in enumerate(job_shards(config, store)):
            extra = set(ids) & set(provided[1]) if provided else set()
            if ids and set(ids) <= have and extra <= one_shot:
                out.append((store.name, shard, ids))
    return out


def mark_complete_shards(config: dict) -> list[Path]:
    """Write the result TSV of each full-grid job with nothing left to do that has none yet (the images' rows
    at the store's K, as the job would have written them), so that a later run of the full artifacts lists no job
    for images the claims certified. Returns the files written."""
    from densepure.job.aggregate import aggregate_stores

    work = Path(config["work_dir"]) / config["run"]
    written = []
    for name, shard, ids in complete_shards(config):
        path = work / "shards" / name / f"shard{shard}.tsv"
        if path.exists():
            continue
        K = int(name.rsplit("-K", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        aggregate_stores([work / "votes" / name], {K: path}, config["alpha"], ids,
                         lambda setting: NUM_CLASSES[setting.dataset])
        written.append(path)
    return written
