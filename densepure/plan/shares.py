"""What share of a store's draws and votes certification computes with the savings (:mod:`densepure.core.lazy`), for
``densepure estimate``: measured on finished votes stores, or from stated assumptions.

Per store, ``draw_share`` is the mean fraction of the ``N0 + N`` draws of an image whose votes were computed (hopeless
images stop after the N0 selection draws, certain abstentions part-way) and ``vote_share`` the mean fraction of the
K votes computed per computed draw (lazy votes stop once the majority at every served K is settled). PyTorch-free.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densepure.core.methods import ONE_SHOT_METHODS
from densepure.plan import grid

logger = logging.getLogger(__name__)

# The vote model behind the assumed lazy share: a draw's K votes each agree with its majority class with this
# probability, the rest spread evenly over the other classes.
ASSUMED_VOTE_AGREEMENT = 0.9
ASSUMED_CLASSES = 10
PAPER_TABLES = {"cifar10": "tableA", "imagenet": "tableB"}


@dataclass(frozen=True)
class Shares:
    """The share of draws and of votes per draw a store computes, and where the numbers come from: ``source`` is
    ``measured`` (this store's images), ``alike`` (other measured stores of its dataset) or ``assumed``; for assumed
    shares ``hopeless`` is the assumed share of hopeless images."""

    draw_share: float = 1.0
    vote_share: float = 1.0
    source: str = "none"
    hopeless: float | None = None


NONE = Shares()


def lazy_vote_share(K: int, Ks: list[int], agreement: float = ASSUMED_VOTE_AGREEMENT,
                    classes: int = ASSUMED_CLASSES, draws: int = 4000, seed: int = 0) -> float:
    """Mean fraction of K votes that lazy votes compute per draw when each vote agrees with the draw's class with
    probability ``agreement`` (else uniform over the other classes): simulated with the real stopping rule."""
    from densepure.core.smoothing import NOT_COMPUTED, votes_to_settle

    rng = np.random.default_rng(seed)
    agree = rng.random((draws, K)) < agreement
    other = 1 + rng.integers(0, classes - 1, size=(draws, K))
    votes = np.where(agree, 0, other)
    labels = np.full((draws, K), NOT_COMPUTED)
    m = np.zeros(draws, dtype=np.int64)
    need = votes_to_settle(labels, Ks)
    while need.any():
        m = m + need
        labels = np.where(np.arange(K)[None, :] < m[:, None], votes, NOT_COMPUTED)
        need = votes_to_settle(labels, Ks)
    return float(m.mean() / K)


def paper_clean_accuracy(dataset: str, method: str, sigma: float) -> float | None:
    """The paper's clean (r = 0) certified accuracy of DensePure (b = 10, K = 40) or of the one-shot baseline at
    ``sigma`` (Table A for CIFAR-10, Table B for ImageNet), in [0, 1]; None where the paper has none."""
    import pandas as pd

    from densepure.files import resources

    table = PAPER_TABLES.get(dataset)
    if table is None:
        return None
    paper = pd.read_csv(resources.paper_numbers(table))
    key = "carlini" if method in ONE_SHOT_METHODS else "densepure"
    row = paper[(paper["method_key"] == key) & (paper["sigma"] == sigma) & (paper["radius"] == 0.0)]
    return float(row["certified_accuracy"].iloc[0]) / 100 if len(row) else None


def assumed_shares(config: dict, setting: grid.PlannedStore) -> Shares:
    """Shares from stated assumptions: lazy votes as :func:`lazy_vote_share` at the store's served Ks; images not
    certified in the paper at r = 0 (1 - clean accuracy, an upper bound on the hopeless ones: abstentions count too)
    skip their N estimation draws when ``skip_hopeless`` is on; no certain abstention."""
    saving = grid.savings(config)
    key, data = setting.key, config["datasets"][setting.key.dataset]
    N0, N = data.get("N0", 100), data["N"]
    vote_share = 1.0
    if saving["lazy_votes"] and not key.one_shot:
        vote_share = lazy_vote_share(setting.K, grid.served_Ks(config, setting))
    draw_share, hopeless = 1.0, None
    if saving["skip_hopeless"]:
        clean = paper_clean_accuracy(key.dataset, key.method, key.sigma)
        if clean is not None:
            draw_share, hopeless = (N0 + N * clean) / (N0 + N), 1 - clean
    return Shares(draw_share, vote_share, "assumed", hopeless)


def planned_setting(config: dict, store: grid.PlannedStore) -> dict:
    """The keys of ``setting.json`` that the config fixes for the workflow's votes store ``store``, as its certify
    jobs record them (:func:`densepure.plan.grid.certify_arguments`): dataset, diffusion, classifier, method, sigma,
    b, K, N0, N, seed, preprocessing. Precision and attention follow the execution mode and the device, the
    checkpoint digests the weights files: they are not compared."""
    key, data = store.key, config["datasets"][store.key.dataset]
    diffusion = config["diffusion_models"][data["diffusion"]]
    classifier = config["classifiers"][key.classifier]
    return {"dataset": key.dataset, "diffusion": diffusion.get("model") or diffusion["arch"],
            "classifier": key.classifier, "method": key.method, "sigma": key.sigma, "b": key.b, "K": store.K,
            "N0": data.get("N0", 100), "N": data["N"], "seed": config["seed"],
            "preprocessing": classifier.get("preprocessing", "reference")}


def setting_mismatch(found: dict, planned: dict) -> str | None:
    """The first key of ``planned`` (in its order) whose value ``found`` does not have, as ``key: <found> there,
    <planned> in the config``; None when every planned key agrees."""
    for key, value in planned.items():
        if key not in found:
            return f"{key}: missing there, {value!r} in the config"
        if found[key] != value:
            return f"{key}: {found[key]!r} there, {value!r} in the config"
    return None


def measured_shares(directory: Path, planned: dict | None = None) -> Shares | None:
    """Shares measured on the finished images of the votes store in ``directory``; None where there is none. With
    ``planned`` (:func:`planned_setting`), a store of another setting is skipped (None). A folder that is not a
    readable store, a store of another setting and unreadable votes files are each logged in one warning line."""
    from densepure.job.votes import SETTING_FILE, VotesError, VotesStore

    if not directory.is_dir():
        return None
    try:
        store = VotesStore.open(directory)
    except VotesError as err:
        if (directory / SETTING_FILE).exists() or any(directory.iterdir()):
            logger.warning(f"{directory}: not a readable votes store, its shares are not measured ({err})")
        return None
    mismatch = setting_mismatch(store.setting, planned) if planned is not None else None
    if mismatch:
        logger.warning(f"{directory}: holds votes of another setting than the config's store of that name "
                       f"({mismatch}); its shares are not measured")
        return None
    K = store.setting.get("K", 1)
    draws, votes, images, unreadable = [], [], 0, []
    for i in store.stored_ids():
        try:
            labels = store.read(i).labels
        except VotesError:
            unreadable.append(store.path(i))
            continue
        computed = labels >= 0
        rows = computed.any(axis=1)
        draws.append(rows.mean())
        if rows.any():
            votes.append(computed[rows].sum() / (rows.sum() * K))
        images += 1
    if unreadable:
        logger.warning(f"{directory}: {len(unreadable)} unreadable votes files left out of its shares (first: "
                       f"{unreadable[0].name})")
    if not images:
        return None
    return Shares(float(np.mean(draws)), float(np.mean(votes)) if votes else 1.0, "measured")


def store_shares(config: dict, votes_root: Path | None = None) -> dict[str, Shares]:
    """Shares per store name of the config: measured where ``votes_root`` holds the store (same layout as the
    workflow's ``<work_dir>/<run>/votes``) with the setting the config plans for it (:func:`planned_setting`), else
    the mean of the measured stores of the same dataset and kind (DensePure or one-shot), else assumed.

    ``votes_root`` that is not a folder is an error (ValueError naming it); one that holds no finished store of the
    config, a warning line, as is each store skipped (:func:`measured_shares`)."""
    stores = grid.settings(config)
    measured = {}
    if votes_root is not None:
        votes_root = Path(votes_root)
        if not votes_root.is_dir():
            raise ValueError(f"--from-votes {votes_root}: " + ("not a folder" if votes_root.exists() else
                                                               "no such folder"))
        for s in stores:
            found = measured_shares(votes_root / s.name, planned_setting(config, s))
            if found is not None:
                measured[s.name] = found
        if not measured:
            logger.warning(f"--from-votes {votes_root}: no finished votes store of this config there (such as "
                           f"{votes_root / stores[0].name}); the shares are assumed")
    out = {}
    for s in stores:
        if s.name in measured:
            out[s.name] = measured[s.name]
            continue
        alike = [measured[o.name] for o in stores if o.name in measured and o.key.dataset == s.key.dataset
                 and o.key.one_shot == s.key.one_shot]
        if alike:
            out[s.name] = Shares(float(np.mean([a.draw_share for a in alike])),
                                 float(np.mean([a.vote_share for a in alike])), "alike")
        else:
            out[s.name] = assumed_shares(config, s)
    return out


def _span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}-{format(hi, fmt)}"


def describe(shares: dict[str, Shares]) -> list[str]:
    """Where the shares come from, one line per source, with the ranges they span."""
    lines = []
    for source, text in (("measured", "measured on their own finished images"),
                         ("alike", "the mean of the measured stores of their dataset"), ("assumed", "assumed")):
        group = [s for s in shares.values() if s.source == source]
        if not group:
            continue
        line = (f"{len(group)} stores, {text}: draws computed {_span([s.draw_share for s in group], '.2f')} of N0 + N, "
                f"votes {_span([s.vote_share for s in group], '.2f')} of K per draw")
        if source == "assumed":
            hopeless = [s.hopeless for s in group if s.hopeless is not None]
            line += (f" (lazy votes: each vote agrees with its draw's class with p = {ASSUMED_VOTE_AGREEMENT}, "
                     f"simulated with the stopping rule at each store's served Ks; one-shot stores compute all)")
            if hopeless:
                line += (f"; hopeless images {_span(hopeless, '.0%')} = 1 - the paper's clean accuracy at the store's "
                         "sigma (an upper bound: abstentions count too); no certain abstentions")
        lines.append(line)
    return lines
