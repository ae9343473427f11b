"""How a certification job runs: the ``custom``, ``reference`` and ``fast`` presets (PyTorch-free, so that
``densepure estimate`` and the workflow can read them without importing torch).

A preset fixes every execution option; an option given explicitly (command line or config) overrides it. What an
option changes:

* ``precision`` (UNet torso), ``attention`` and ``classifier_precision`` change the floating-point arithmetic, so
  they are part of the votes' setting: a store computed in bf16 is a different store from one in fp32;
* ``batch`` (network rows per call), ``shared_first_step``, ``channels_last`` and ``compile`` change only the cost.
  The votes are the same up to batch-size-dependent float rounding (``tests/test_throughput.py`` checks equal labels
  in fp32).
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path

MODES = ("custom", "reference", "fast")
# Devices a certification job accepts (`densepure certify --device`, config key `device`).
DEVICE_PATTERN = r"auto|cpu|cuda(:[0-9]+)?"
PRECISIONS = ("fp32", "fp16", "bf16")

# DP's run_scripts: ImageNet 16 draws per batch, CIFAR-10 100 (docs/reference-behaviour.md#ref-7); convert_to_fp16() on
# the ImageNet UNet only.
REFERENCE_BATCH = {"imagenet": 16, "cifar10": 100}
REFERENCE_PRECISION = {"imagenet": "fp16"}
# Rows (draws x votes) per call that keep one H100/H200 busy in bf16: 2 draws x 40 votes of the 256 x 256 ADM UNet
# (about 40 GB of activations), 25 x 40 of the 32 x 32 CIFAR-10 UNet; other datasets (the CPU default) 1000.
FAST_BATCH = {"imagenet": 80, "cifar10": 1000}


@dataclass(frozen=True)
class Execution:
    """The execution options of one certification job (see the module docstring for what each one changes)."""

    mode: str = "custom"
    precision: str = "fp32"
    attention: str = "sdpa"
    batch: int = 100
    shared_first_step: bool = True
    channels_last: bool = False
    compile: bool = False
    classifier_precision: str = "fp32"
    compile_cache: str | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("precision", "classifier_precision"):
            if getattr(self, name) not in PRECISIONS:
                raise ValueError(f"{name} must be one of {', '.join(PRECISIONS)}, got {getattr(self, name)!r}")
        if self.attention not in ("sdpa", "einsum"):
            raise ValueError(f"attention must be sdpa or einsum, got {self.attention!r}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")


def mode_preset(mode: str, dataset: str, device_type: str = "cpu") -> dict:
    """The options of ``mode`` for ``dataset``:

    * ``custom``: each option's own default (fp32, SDPA, 100 rows, shared first step, eager, fp32 classifier);
    * ``reference``: what the reference code runs: ImageNet UNet in fp16 (CIFAR-10 fp32), einsum attention, its
      batch of 16 (ImageNet) or 100 draws of one vote, every vote from scratch (b K UNet calls per draw), fp32
      classifier, eager;
    * ``fast``: bf16 UNet torso and classifier network, SDPA, channels_last, draws x votes packed into batches of
      :data:`FAST_BATCH` rows, the first step shared (1 + (b-1) K calls), torch.compile when ``device_type`` is cuda.
    """
    if mode == "custom":
        return dict(precision="fp32", attention="sdpa", batch=100, shared_first_step=True, channels_last=False,
                    compile=False, classifier_precision="fp32")
    if mode == "reference":
        return dict(precision=REFERENCE_PRECISION.get(dataset, "fp32"), attention="einsum",
                    batch=REFERENCE_BATCH.get(dataset, 100), shared_first_step=False, channels_last=False,
                    compile=False, classifier_precision="fp32")
    if mode == "fast":
        return dict(precision="bf16", attention="sdpa", batch=FAST_BATCH.get(dataset, 1000), shared_first_step=True,
                    channels_last=True, compile=device_type == "cuda", classifier_precision="bf16")
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def resolve_execution(mode: str, dataset: str, device_type: str = "cpu", **overrides) -> Execution:
    """The preset of ``mode`` for ``dataset`` on a ``device_type`` device, with every override that is not None."""
    values = mode_preset(mode, dataset, device_type)
    values.update({key: value for key, value in overrides.items() if value is not None})
    return Execution(mode=mode, **values)


# Math libraries pick their kernels by the CPU they find (MKL, oneDNN and ATen by vector width, OpenBLAS by core
# type), and their float rounding differs between kernels: a CPU run trained and certified on one x86 machine
# measurably gives other models, votes and a few other radii on another (seen: an AVX-512/AMX Xeon vs the machine
# the stored numbers came from). These settings select the same AVX2 kernels on every x86-64 CPU with AVX2 and FMA,
# Intel or AMD; MKL's COMPATIBLE path is its vendor-independent one. They must be in the environment before the
# process loads the libraries, so the workflow sets them for its jobs (config key `portable_cpu_numerics`).
PORTABLE_CPU_ENV = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
}


def portable_cpu_env() -> dict[str, str]:
    """Environment variables under which a CPU computation gives bit-identical results on any x86-64 CPU with AVX2
    (same library versions and thread count); empty on other CPUs, where no such promise is made."""
    cpuinfo = Path("/proc/cpuinfo")
    avx2 = cpuinfo.is_file() and "avx2" in cpuinfo.read_text()
    return dict(PORTABLE_CPU_ENV) if platform.machine().lower() in ("x86_64", "amd64") and avx2 else {}


def resolve_device(name: str):
    """``auto`` is the first CUDA device when there is one, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` must exist
    (:data:`DEVICE_PATTERN`)."""
    import torch

    if not re.fullmatch(DEVICE_PATTERN, name):
        raise ValueError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"device {name!r} requested but there are {count} CUDA devices (cuda:0..cuda:{count - 1})")
    return torch.device(name)
