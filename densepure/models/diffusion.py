"""Diffusion models by name: the paper's two official checkpoints, self-describing bundles, and your own networks.

* ``guided-imagenet256``: OpenAI guided-diffusion ``256x256_diffusion_uncond.pt``, linear schedule, T = 1000.
* ``improved-cifar10``: OpenAI improved-diffusion ``cifar10_uncond_50M_500K.pt``, cosine schedule, T = 4000.
* ``bundle``: a ``.pt`` file written by :func:`save_bundle` holding ``{"unet_config", "schedule", "state_dict"}``
  (the embedded default's model, or any ADM UNet a user trains).
* ``module:function``: any eps-predicting network of yours. ``function()`` returns the network, a
  :class:`densepure.core.denoise.Denoiser` ``net(x, t) -> eps`` (or ``[eps, v]``) with ``x`` in [-1, 1] and
  ``t = 1000 i / T`` for timestep index ``i`` of its schedule (kind and T, given with it; improved-diffusion's
  ``rescale_timesteps``, so ``t = i`` when T = 1000). A checkpoint, when given, is a state dict loaded into it
  strictly. ``kwargs`` (a config's ``kwargs:``) are passed to ``function(**kwargs)``.
* a name an installed package registers in the entry-point group ``densepure.diffusion_models``: its
  ``module:function``, used as above (a built-in name registered again is refused).

All return ``(net, schedule)`` where ``net(x, t)`` is a :class:`densepure.core.denoise.Denoiser`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch

from densepure.core.schedule import Schedule, make_schedule
from densepure.models.unet import (
    CheckpointMismatchError,
    UNetConfig,
    UNetModel,
    cifar10_config,
    imagenet256_config,
    load_unet,
    read_checkpoint,
)

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
        state = bundle["state_dict"]
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as err:
        raise CheckpointMismatchError(f"{path} is not a densepure diffusion bundle ({type(err).__name__}: {err})"
                                      ) from None
    if not isinstance(state, Mapping):
        raise CheckpointMismatchError(f"{path}: its state_dict is a {type(state).__name__}, not a mapping of tensors")
    return config, schedule, state


def parse_schedule(text: str) -> Schedule:
    """A schedule written ``kind:T``, e.g. ``linear:1000`` or ``cosine:4000``."""
    kind, _, steps = text.partition(":")
    if not steps.isdigit() or int(steps) < 2:
        raise ValueError(f"schedule {text!r}: expected kind:T, e.g. linear:1000 or cosine:4000")
    try:
        return make_schedule(kind, int(steps))
    except ValueError as err:
        raise ValueError(f"schedule {text!r}: {err}") from None


def _load_plugin(target: str, factory, checkpoint: Path | None, schedule_spec: str | None, precision: str,
                 device: str | torch.device, kwargs: dict) -> tuple[torch.nn.Module, Schedule]:
    from densepure.models.checkpoints import load_checkpoint_file, load_state_dict_into

    if schedule_spec is None:
        raise ValueError(f"diffusion model {target}: give its noise schedule (kind:T, e.g. linear:1000)")
    if precision != "fp32":
        raise ValueError(f"diffusion model {target}: your own networks run in fp32, not {precision}")
    try:
        net = factory(**kwargs)
    except Exception as err:  # whatever the user's function raises
        arguments = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
        raise ValueError(f"diffusion model {target}({arguments}) failed: {type(err).__name__}: {err}") from None
    if checkpoint is not None:
        if not isinstance(net, torch.nn.Module):
            raise ValueError(f"diffusion model {target} is not a torch.nn.Module: it cannot load {checkpoint}")
        load_state_dict_into(net, load_checkpoint_file(checkpoint), source=checkpoint)
    if isinstance(net, torch.nn.Module):
        net = net.to(device).eval()
    return net, parse_schedule(schedule_spec)


def load_diffusion(
    name: str,
    checkpoint: str | Path | None,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    attention: str = "sdpa",
    schedule_spec: str | None = None,
    kwargs: Mapping | None = None,
) -> tuple[UNetModel, Schedule]:
    """Load diffusion model ``name`` from a local ``checkpoint`` file (nothing is downloaded). A ``module:function``
    or a name an installed package registers (your own network; the checkpoint is optional) needs its
    ``schedule_spec`` (``kind:T``) and is built by ``function(**kwargs)``."""
    from densepure.models.plugins import import_object, is_target, load_registered, refuse_builtin_name

    kwargs = dict(kwargs or {})
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and path.is_dir():
        raise CheckpointMismatchError(f"diffusion checkpoint {path} is a directory, not a checkpoint file")
    if path is not None and not path.is_file():
        raise CheckpointMismatchError(f"diffusion checkpoint not found: {path}")
    if is_target(name):
        factory = import_object(name, "diffusion model")
        return _load_plugin(name, factory, path, schedule_spec, precision, device, kwargs)
    if name not in NAMES:
        factory = load_registered("diffusion model", name)
        if factory is None:
            raise ValueError(f"unknown diffusion model {name!r} (known: {', '.join(NAMES)}, an importable "
                             "module:function or a name an installed package registers)")
        return _load_plugin(name, factory, path, schedule_spec, precision, device, kwargs)
    refuse_builtin_name("diffusion model", name)
    if kwargs:
        raise ValueError(f"diffusion model {name}: kwargs are for your own networks, not the built-in {name}")
    if path is None:
        raise CheckpointMismatchError(f"diffusion model {name} needs its checkpoint file")
    if name == "bundle":
        config, schedule, state = _read_bundle(path)
    else:
        make_config, kind, T = OFFICIAL[name]
        config, schedule, state = make_config(), make_schedule(kind, T), path
    net = load_unet(state, config, device=device, precision=precision, attention=attention)
    return net, schedule
