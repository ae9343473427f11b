"""Small hand-made result files for the report tests (offline, fast)."""

from pathlib import Path

import numpy as np

HEADER = "idx label predict radius correct time dataset classifier method sigma b K N0 N alpha precision".split()


def write_tsv(path: Path, rows, dataset="cifar10", classifier="vit-b16-cifar10", method="densepure", sigma=0.25,
              b=10, K=40, N=100000, precision="fp32", N0=100, votes=None, extra=None) -> Path:
    """rows: (idx, label, predict, radius text, correct). ``votes``: one (nA, n, stop) per row, written as the
    columns nA n stop; ``extra``: {column: value} appended to every row."""
    header = HEADER + (["nA", "n", "stop"] if votes is not None else []) + list(extra or {})
    lines = ["\t".join(header)]
    for i, (idx, label, pred, radius, correct) in enumerate(rows):
        values = [idx, label, pred, radius, correct, "0:00:01", dataset, classifier, method, sigma, b, K, N0, N,
                  0.001, precision]
        if votes is not None:
            values += list(votes[i])
        values += list((extra or {}).values())
        lines.append("\t".join(map(str, values)))
    path.write_text("\n".join(lines) + "\n")
    return path


def ok(idx, radius, label=3):
    return (idx, label, label, radius, 1)


def wrong(idx, radius, label=3):
    return (idx, label, (label + 1) % 10, radius, 0)


def abstain(idx, label=3):
    return (idx, label, -1, "0.0", 0)


def hopeless(idx, label=3):
    return (idx, label, "", "", 0)


def panel(**kw):
    base = {"dataset": "cifar10", "classifiers": ["vit-b16"], "sigmas": [0.25, 0.5], "bs": [10], "Ks": [40],
            "methods": ["densepure", "onestep"], "images": {"start": 0, "stop": 100, "step": 20, "n": 5},
            "radii": [0.0, 0.25, 0.5, 0.75, 1.0]}
    base.update(kw)
    return base


def cell(cells, **keys):
    m = np.ones(len(cells), dtype=bool)
    for k, v in keys.items():
        m &= np.isclose(cells[k].astype(float), v) if isinstance(v, float) else (cells[k] == v).to_numpy()
    assert m.sum() == 1, f"{m.sum()} cells match {keys}"
    return cells[m].iloc[0]
