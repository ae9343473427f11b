"""The embedded default's stored numbers (tests/expected/default/) and how a run is compared with them.

Two kinds of numbers, two kinds of comparison:

* **From the same votes, exact.** Aggregation, tables and figure data are integer counts and closed-form bounds of
  the votes, and the theory outputs are float64 arithmetic and seeded sampling that came out bit-identical under
  every kernel choice tried (ATen default/AVX2/AVX-512, oneDNN and MKL ISA limits; Intel and AMD). Rebuilt from the
  stored votes (``votes/``, ``shards/``), every stored CSV must come out byte for byte.
* **Recomputed votes, bounded.** Training and certification run float kernels that the math libraries choose by
  CPU: on another CPU the trained weights differ in the last bits and a few draws near a decision boundary change
  their label. Measured across kernel choices on one machine (3 runs, pairwise): 99.83-99.89% of the labels equal
  (worst store 99.6%), every certified count within one image, most equal. So a fresh run must have, per store, at
  least :data:`LABELS_EQUAL` of the labels computed in both runs equal, and every certified count (the ``count``
  columns) within :data:`COUNT_SLACK` image of the stored one; everything else those counts derive is checked
  exactly by the first comparison. A real change moves far more (a different sigma mapping: see docs/numerics.md).

``python tests/stored_numbers.py RUN_DIR`` compares the run in RUN_DIR (a clone that ran the default) and prints
what differs; exit status 1 when it is outside the bounds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

EXPECTED = Path(__file__).parent / "expected/default"
LABELS_EQUAL = 0.99
COUNT_SLACK = 1
COUNT_COLUMNS = ("count", "both", "first_only", "second_only", "neither")  # images, in cells and paired tables
# columns computed from the counts (their exactness is the first comparison's): everything else is the row's key
DERIVED = ("certified_accuracy", "ci_low", "ci_high", "diff_vs_carlini", "diff_low", "diff_high", "mcnemar_p",
           "first_accuracy", "second_accuracy", "difference")
THEORY = ("theory_", "fig2_")  # outputs of the theory rules: not from the votes, compared exactly in both tiers
# stored folder -> where a run writes it
OUTPUTS = {"tables": Path("results/default/tables"), "figures": Path("paper_figures/default")}
VOTES, SHARDS = Path("work/default/votes"), Path("work/default/shards")


def stored_files() -> dict[Path, Path]:
    """Stored CSV -> the path a run writes it to (relative to the run's folder)."""
    return {p: OUTPUTS[sub] / p.name for sub in OUTPUTS for p in sorted((EXPECTED / sub).glob("*.csv"))}


def count_differences(fresh: pd.DataFrame, stored: pd.DataFrame) -> tuple[int, str]:
    """The largest difference of a certified count between two tables of the same rows, and where it is. Rows are
    matched by their non-numeric columns and position; a different shape or different keys is a difference of
    infinity (a changed artifact, never within the bound)."""
    counts = [c for c in COUNT_COLUMNS if c in stored.columns]
    if list(fresh.columns) != list(stored.columns) or len(fresh) != len(stored) or not counts:
        return 10**9, f"columns or rows differ ({fresh.shape} vs {stored.shape})"
    keys = [c for c in stored.columns if c not in counts and c not in DERIVED]
    if keys and not fresh[keys].astype(str).equals(stored[keys].astype(str)):
        return 10**9, "the rows' keys differ"
    diff = (fresh[counts].to_numpy(float) - stored[counts].to_numpy(float))
    worst = np.nanmax(np.abs(diff)) if diff.size else 0
    where = np.unravel_index(np.nanargmax(np.abs(diff)), diff.shape) if diff.size else (0, 0)
    shown = [c for c in ("method_key", "sigma", "b", "K", "radius") if c in keys]
    return int(worst), f"row {where[0]} ({stored.iloc[where[0]][shown].to_dict()})"


def label_agreement(fresh_votes: Path, stored_votes: Path) -> dict[str, tuple[float, int]]:
    """Per store (relative folder): the fraction of labels equal among the votes both computed, and how many."""
    out = {}
    for store in sorted(p.parent for p in stored_votes.rglob("setting.json")):
        name = store.relative_to(stored_votes)
        agree = total = 0
        for stored in sorted(store.glob("*.npz")):
            fresh = fresh_votes / name / stored.name
            if not fresh.exists():
                continue
            a, b = _labels(stored), _labels(fresh)
            rows = min(len(a), len(b))
            cols = min(a.shape[1], b.shape[1])
            both = (a[:rows, :cols] >= 0) & (b[:rows, :cols] >= 0)
            agree += int((a[:rows, :cols][both] == b[:rows, :cols][both]).sum())
            total += int(both.sum())
        out[str(name)] = (agree / total if total else 0.0, total)
    return out


def _labels(path: Path) -> np.ndarray:
    with np.load(path) as data:
        labels = data["labels"]
    out = labels.astype(np.int64)
    out[labels == np.iinfo(labels.dtype).max] = -1
    return out


def compare_run(run: Path) -> list[str]:
    """What is outside the bounds in a fresh run of the default (empty list: within them)."""
    problems = []
    for stored, written in stored_files().items():
        fresh_path = run / written
        if not fresh_path.exists():
            problems.append(f"{written}: not written")
            continue
        fresh, old = pd.read_csv(fresh_path), pd.read_csv(stored)
        if stored.name.startswith(THEORY):
            if not fresh.equals(old):
                problems.append(f"{written}: differs from the stored copy (compared exactly: not from votes)")
            continue
        if not any(c in old.columns for c in COUNT_COLUMNS):
            continue  # a table's layout of the cells, whose counts are bounded and whose layout is checked exactly
        worst, where = count_differences(fresh, old)
        if worst > COUNT_SLACK:
            problems.append(f"{written}: a certified count differs by {worst} images at {where} "
                            f"(at most {COUNT_SLACK} allowed)")
    for store, (share, n) in label_agreement(run / VOTES, EXPECTED / "votes").items():
        if n == 0 or share < LABELS_EQUAL:
            problems.append(f"{VOTES / store}: {share:.2%} of {n} labels equal the stored votes' (at least "
                            f"{LABELS_EQUAL:.0%} required)")
    return problems


def main(argv: list[str]) -> int:
    run = Path(argv[0])
    for store, (share, n) in label_agreement(run / VOTES, EXPECTED / "votes").items():
        print(f"{store}: {share:.4%} of {n} labels equal")
    for stored, written in stored_files().items():
        if (run / written).exists() and "count" in pd.read_csv(stored).columns:
            worst, where = count_differences(pd.read_csv(run / written), pd.read_csv(stored))
            print(f"{written}: largest count difference {worst}")
    problems = compare_run(run)
    print("\n".join(problems) or "within the bounds")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
