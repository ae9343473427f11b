"""Network throughputs (images per second) that turn call counts into GPU-hours: built-in numbers and a
``--rates`` file replacing them."""

from __future__ import annotations

import copy
import math
from pathlib import Path

from densepure.files.yamlfile import read_yaml

# Images per second of one forward pass, on one NVIDIA H200 unless noted. "measured" numbers are ours; the others
# are assumptions, to be replaced with measured ones through --rates (benchmarks/throughput.py writes such a file:
# fp16/fp32 from the reference mode, bf16 from the fast mode).
RATES: dict[str, dict] = {
    "diffusion": {  # per (architecture, UNet precision)
        # measured: 87.7 img/s in fp16 at batch 16 (the reference's batch, einsum attention); bf16: 182.5 compiled
        # with SDPA and channels_last (the fast mode). fp32: assumed 3x slower than fp16 (TF32 convs).
        "guided-imagenet256": {"fp16": 87.7, "bf16": 182.5, "fp32": 29.2},
        # measured: 2,600 img/s in fp32 at batch 100 (the reference's); bf16: 5,900 is fp32 at batch 1000 (the
        # fast mode's batch), bf16 assumed no slower; fp16: assumed as fp32 at batch 100.
        "improved-cifar10": {"fp32": 2600.0, "fp16": 2600.0, "bf16": 5900.0},
        # the embedded default's 8x8 UNet, measured on ONE CPU THREAD at batch 200 (the default runs on the CPU)
        "bundle": {"fp32": 1290.0, "fp16": 1290.0, "bf16": 1290.0},
    },
    "classifiers": {  # per registered classifier name: images/s in any precision, or per precision
        "beit-large-512": {"fp32": 127.0, "bf16": 376.0},  # measured (BEiT-L/16 at 512 x 512; bf16 at batch 64)
        "vit-b16-cifar10": {"fp32": 4500.0, "bf16": 10800.0},  # measured (ViT-B/16 at 224 x 224)
        "wrn-28-10": 5000.0,  # assumed: 10.5 GFLOP per 32 x 32 image, ~0.6x ViT-B/16's (17.6 GFLOP) efficiency
        "wrn-50-2": 2000.0,  # assumed: ~23 GFLOP at 224 x 224
        "resnet-152": 2000.0,  # assumed: ~23 GFLOP at 224 x 224
        "mixer-b16-miil": 2000.0,  # assumed: ~25 GFLOP at 224 x 224
        "digits-cnn": 8000.0,  # measured on ONE CPU THREAD at batch 200
    },
}


class RatesError(ValueError):
    """A throughput that is missing or malformed (in the table or a --rates file); the message names it."""


def load_rates(path: str | Path | None = None) -> dict[str, dict]:
    """The throughput table, with the entries of a YAML/JSON file ``path`` replacing the built-in ones::

        diffusion: {guided-imagenet256: {fp16: 120.0}}   # images/s per architecture and precision
        classifiers: {beit-large-512: 150.0}             # images/s per classifier, any precision
        classifiers: {beit-large-512: {bf16: 376.0}}     # ... or per precision
        benchmark: {...}                                 # ignored (what benchmarks/throughput.py measured)

    The JSON written by ``benchmarks/throughput.py`` is such a file.
    """
    rates = copy.deepcopy(RATES)
    if path is None:
        return rates
    try:
        extra = read_yaml(path, "rates file") or {}
    except ValueError as err:
        raise RatesError(str(err)) from None
    if not isinstance(extra, dict) or set(extra) - {"diffusion", "classifiers", "benchmark"}:
        raise RatesError(f"{path}: expected a mapping with keys `diffusion` and/or `classifiers` (and `benchmark`)")
    wanted = {"diffusion": "architectures to {precision: images/s}", "classifiers": "classifier names to images/s"}
    for key, what in wanted.items():
        if not isinstance(extra.get(key) or {}, dict):
            raise RatesError(f"{path}: {key} must map {what}, got {extra[key]!r}")
    for arch, per_precision in (extra.get("diffusion") or {}).items():
        if not isinstance(per_precision, dict):
            raise RatesError(f"{path}: diffusion.{arch} must map precisions (fp32, fp16, bf16) to images/s")
        for precision, value in per_precision.items():
            rates["diffusion"].setdefault(arch, {})[precision] = _rate(value, f"{path}: diffusion.{arch}.{precision}")
    for name, value in (extra.get("classifiers") or {}).items():
        if isinstance(value, dict):
            entry = rates["classifiers"].get(name)
            entry = dict.fromkeys(("fp32", "fp16", "bf16"), entry) if isinstance(entry, float) else dict(entry or {})
            entry.update({p: _rate(v, f"{path}: classifiers.{name}.{p}") for p, v in value.items()})
            rates["classifiers"][name] = entry
        else:
            rates["classifiers"][name] = _rate(value, f"{path}: classifiers.{name}")
    return rates


def _rate(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise RatesError(f"{where} must be a positive number of images/s, got {value!r}")
    return float(value)


def _unet_rate(rates: dict, arch: str, precision: str) -> float:
    try:
        return rates["diffusion"][arch][precision]
    except KeyError:
        raise RatesError(f"no UNet throughput for diffusion architecture {arch!r} in {precision}; give one in a "
                         f"--rates file (diffusion: {{{arch}: {{{precision}: IMAGES_PER_SECOND}}}})") from None


def _classifier_rate(rates: dict, name: str, precision: str = "fp32") -> float:
    entry = rates["classifiers"].get(name)
    if isinstance(entry, dict):
        entry = entry.get(precision)
    if entry is None:
        raise RatesError(f"no throughput for classifier {name!r} in {precision}; give one in a --rates file "
                         f"(classifiers: {{{name}: {{{precision}: IMAGES_PER_SECOND}}}})")
    return entry
