"""Certification results without the models: the votes-defining setting and the per-image result rows.

Kept free of PyTorch so that aggregation, tables and figures start fast.
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from .smoothing import certify_votes, format_radius

TSV_COLUMNS = ["idx", "label", "predict", "radius", "correct", "time"]
SETTING_COLUMNS = ["dataset", "classifier", "method", "sigma", "b", "K", "N0", "N", "alpha", "precision"]


@dataclass(frozen=True)
class Setting:
    """What defines a votes store: two runs with equal settings produce identical votes.

    ``checkpoints`` holds the sha256 of each weights file (``diffusion``, ``classifier``; see
    :func:`densepure.commands.checkpoint_digests`), so a store refuses votes computed with other weights under the same model names."""

    dataset: str
    diffusion: str
    classifier: str
    sigma: float
    b: int
    K: int
    N0: int = 100
    N: int = 100_000
    seed: int = 0
    method: str = "densepure"
    timestep_rule: str = "reference"
    preprocessing: str = "reference"
    precision: str = "fp32"
    attention: str = "sdpa"
    checkpoints: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        for name in ("b", "K", "N0", "N"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be fp32, fp16 or bf16, got {self.precision!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def result_row(image_id: int, record, setting: Setting, K: int, alpha: float, num_classes: int) -> list:
    """Result row ``idx label predict radius correct time`` (+ setting columns) of a stored image, certifying with
    the majority of its first ``K`` votes."""
    cert = certify_votes(record.labels, K, setting.N0, setting.sigma, alpha, num_classes)
    seconds = record.extra.get("seconds", 0.0)
    return [
        image_id, record.label, cert.prediction, format_radius(cert.radius), int(cert.prediction == record.label),
        str(datetime.timedelta(seconds=round(seconds, 6))),
        setting.dataset, setting.classifier, setting.method, setting.sigma, setting.b, K, setting.N0, setting.N,
        alpha, setting.precision,
    ]


def write_tsv(path: Path, rows: Iterable[list]) -> None:
    """Write the result table atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write("\t".join(TSV_COLUMNS + SETTING_COLUMNS) + "\n")
        for row in rows:
            handle.write("\t".join(str(value) for value in row) + "\n")
    tmp.replace(path)
