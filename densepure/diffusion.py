"""Diffusion models by name: the paper's two official checkpoints, and self-describing bundles.

* ``guided-imagenet256``: OpenAI guided-diffusion ``256x256_diffusion_uncond.pt``, linear schedule, T = 1000.
* ``improved-cifar10``: OpenAI improved-diffusion ``cifar10_uncond_50M_500K.pt``, cosine schedule, T = 4000.
* ``bundle``: a ``.pt`` file written by :func:`save_bundle` holding ``{"unet_config", "schedule", "state_dict"}``
  (the embedded default's model, or any ADM UNet a user trains).

Both return ``(net, schedule)`` where ``net(x, t)`` is a :class:`densepure.denoise.Denoiser`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .schedule import Schedule, make_schedule
from .unet import (CheckpointMismatchError, UNetConfig, UNetModel, cifar10_config, imagenet256_config, load_unet,
                   read_checkpoint)

OFFICIAL = {
    "guided-imagenet256": (imagenet256_config, "linear", 1000),
    "improved-cifar10": (cifar10_config, "cosine", 4000),
}
NAMES = [*OFFICIAL, "bundle"]


def save_bundle(path: str | Path, net: UNetModel, schedule: Schedule) -> None:
    """Write a self-describing checkpoint: the UNet config, the schedule (kind, T) and the fp32 state dict."""
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(net.config).items()}
    state = {k: v.detach().float().cpu() for k, v in net.state_dict().items()}
    torch.save({"unet_config": config, "schedule": {"kind": schedule.kind, "T": schedule.T}, "state_dict": state},
               path)


def _read_bundle(path: Path) -> tuple[UNetConfig, Schedule, dict]:
    bundle = read_checkpoint(path)
    try:
        config = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in bundle["unet_config"].items()})
        schedule = make_schedule(bundle["schedule"]["kind"], int(bundle["schedule"]["T"]))
        return config, schedule, bundle["state_dict"]
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointMismatchError(f"{path} is not a densepure diffusion bundle ({err})") from None


def load_diffusion(
    name: str,
    checkpoint: str | Path,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    attention: str = "sdpa",
) -> tuple[UNetModel, Schedule]:
    """Load diffusion model ``name`` from a local ``checkpoint`` file (nothing is downloaded)."""
    path = Path(checkpoint)
    if name not in NAMES:
        raise ValueError(f"unknown diffusion model {name!r} (known: {', '.join(NAMES)})")
    if not path.is_file():
        raise CheckpointMismatchError(f"diffusion checkpoint not found: {path}")
    if name == "bundle":
        config, schedule, state = _read_bundle(path)
    else:
        make_config, kind, T = OFFICIAL[name]
        config, schedule, state = make_config(), make_schedule(kind, T), path
    net = load_unet(state, config, device=device, precision=precision, attention=attention)
    return net, schedule
