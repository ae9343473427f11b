"""A certification job assembled from a setting and the networks: the library's one call that certifies images.

Example (the embedded default's models, after ``make default``)::

    from densepure.job.assemble import certify_images
    from densepure.job.results import Setting
    from densepure.models.classifiers import build_classifier
    from densepure.models.datasets import load_dataset
    from densepure.models.diffusion import load_diffusion

    net, schedule = load_diffusion("bundle", "work/default/models/digits_diffusion.pt")
    classifier = build_classifier("digits-cnn", checkpoint="work/default/models/digits_cnn.pt", num_classes=10)
    setting = Setting(dataset="digits", diffusion="bundle", classifier="digits-cnn", sigma=0.25, b=2, K=3, N0=10,
                      N=100)
    certify_images(setting, net, schedule, classifier, load_dataset("digits"), [0, 1], "votes/demo", "demo.tsv")
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from densepure.core.lazy import Savings
from densepure.core.methods import is_one_shot
from densepure.core.schedule import Schedule, make_plan, one_shot_plan
from densepure.job.execution import Execution, resolve_execution
from densepure.job.networks import ClassifierFn, prepare_models
from densepure.job.purifier import Purifier
from densepure.job.results import Setting
from densepure.job.runner import StoreTarget, run_certification
from densepure.job.votes import VotesStore


def one_shot_setting(setting: Setting) -> Setting:
    """The setting of the one-shot baseline (DensePure's own one-shot, the paper's "Carlini" rows) on the same
    draws and models: what a separate ``--method onestep --b 1 --K 1`` job records."""
    return replace(setting, method="onestep", b=1, K=1)


def certify_images(setting: Setting, net: torch.nn.Module, schedule: Schedule, classifier: ClassifierFn, dataset,
                   ids: list[int], votes_dir: str | Path, out: str | Path | None = None, *,
                   Ks: list[int] | None = None, alpha: float = 0.001, execution: Execution | None = None,
                   device: torch.device | str = "cpu", savings: Savings = Savings(),
                   one_shot_votes_dir: str | Path | None = None, one_shot_ids: list[int] | None = None,
                   one_shot_out: str | Path | None = None, checkpoint_seconds: float = 300.0,
                   progress=None) -> dict:
    """Certify the images ``ids`` of ``dataset`` (``dataset[i] = (image in [0, 1], label)``, ``num_classes``) in
    ``setting``: the votes go to the store ``votes_dir`` (resumed and grown, never recomputed), the per-image results
    at the largest of ``Ks`` (default: ``setting.K``) to the TSV ``out``. With ``one_shot_votes_dir`` the one-shot
    baseline of the same draws is stored too (its network call is DensePure's first step). Every certified output
    equals that of computing all votes (the savings are exact). Returns counts: images computed, skipped as done,
    waited for."""
    device = torch.device(device)
    execution = execution or resolve_execution("custom", setting.dataset, device.type)
    one_shot_job = is_one_shot(setting.method, setting.b)
    if one_shot_votes_dir is not None and one_shot_job:
        raise ValueError("the one-shot store needs a DensePure job (method densepure, b >= 2)")
    Ks = sorted(set(Ks or [setting.K]))
    if Ks[-1] > setting.K:
        raise ValueError(f"Ks {Ks[-1]} exceeds K {setting.K} (the votes computed per draw)")
    plan = make_plan(setting.sigma, setting.b, schedule, method=setting.method, rule=setting.timestep_rule)
    denoiser, classify = prepare_models(net, classifier, execution)
    rows = setting.N0 + setting.N
    store = VotesStore(votes_dir, setting.as_dict(), num_classes=dataset.num_classes, rows=rows)
    targets = [StoreTarget(store, setting, [1] if one_shot_job else Ks, _path(out), savings)]
    one_shot = plan if one_shot_job else None
    if one_shot_votes_dir is not None:
        os_setting = one_shot_setting(setting)
        one_shot = one_shot_plan(setting.sigma, schedule, rule=setting.timestep_rule)
        os_store = VotesStore(one_shot_votes_dir, os_setting.as_dict(), num_classes=dataset.num_classes, rows=rows)
        os_ids = one_shot_ids if one_shot_ids is not None else ids
        extra = sorted(set(os_ids) - set(ids))
        if extra:
            raise ValueError(f"one-shot image {extra[0]} is not among the images to certify")
        targets.append(StoreTarget(os_store, os_setting, [1], _path(one_shot_out), savings, ids=list(os_ids)))
    purifier = Purifier(denoiser, classify, None if one_shot_job else plan, one_shot, setting.seed,
                        rows=execution.batch, device=device, shared_first_step=execution.shared_first_step)
    return run_certification(purifier, dataset, list(ids), targets, alpha, checkpoint_seconds=checkpoint_seconds,
                             progress=progress, device=str(device))


def _path(path: str | Path | None) -> Path | None:
    return None if path is None else Path(path)
