"""Sequential claims: what the full artifact would say, decided from a seeded random part of its images.

A claim is about a number the full artifact prints: one cell's certified accuracy at (dataset, classifier, sigma,
radius), or the paired difference ``first - second`` of two settings' certified accuracies on the same images. The
config's ``claims`` section names them::

    claims:
      alpha: 0.05      # family error, split equally (Bonferroni): each claim's sequence runs at alpha / m
      wave: 10         # images per wave
      seed: 0          # the order: numpy.random.default_rng(seed).permutation(ids of the image set)
      list:
        <name>: {artifact, classifier, sigma, radius, first: {method, b, K}, second, claim, delta, value,
                 budget: {images, gpu_hours}}

This module turns the section into :class:`Claim` objects checked against the artifacts (a mistake is a
:class:`ConfigError` naming ``claims.list.<name>.<key>``), the pre-registered image
order of a claim (:func:`order`: the same image set and seed give the same order to every claim, so claims share
their images) and the votes stores it reads (:func:`keys`, :func:`stores`, by the grid's rules: one-shot methods
are b = 1, K = 1). Deciding is :mod:`densepure.report.claims`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from densepure.core.methods import is_one_shot
from densepure.files.paths import safe_name
from densepure.plan.grid import PlannedStore, SettingKey, image_ids, one_shot_providers, settings

KINDS = ("greater", "at_least", "within")


class ConfigError(ValueError):
    """A mistake in the claims section; the message is one line starting with the dotted key (the config check,
    :func:`densepure.plan.validation.check_config`, reports it as its own ConfigError)."""


@dataclass(frozen=True)
class Side:
    """One setting of a claim: method, reverse steps b and votes K (b = K = 1 for a one-shot method)."""

    method: str
    b: int
    K: int


@dataclass(frozen=True)
class Claim:
    """One claim about the full artifact's number ``q``: ``greater`` (q > delta), ``at_least`` (q >= delta) or
    ``within`` (|q - value| <= delta); q is ``first``'s certified accuracy at ``radius`` (a fraction), minus
    ``second``'s when there is one. ``alpha`` is the claim's share of the family error."""

    name: str
    artifact: str
    dataset: str
    classifier: str
    sigma: float
    radius: float
    images: str
    first: Side
    second: Side | None
    kind: str
    delta: float
    value: float | None
    budget_images: int | None
    alpha: float
    budget_gpu_hours: float | None = None

    @property
    def sides(self) -> list[Side]:
        return [self.first] if self.second is None else [self.first, self.second]

    @property
    def paired(self) -> bool:
        return self.second is not None


@dataclass
class ClaimsPlan:
    """The claims section: family error ``alpha``, images per ``wave``, the order's ``seed`` and the claims."""

    alpha: float
    wave: int
    seed: int
    claims: list[Claim]


def _error(name: str, key: str | None, message: str) -> ConfigError:
    return ConfigError(f"claims.list.{name}{'.' + key if key else ''}: {message}")


def _matching_panels(config: dict, name: str, spec: dict) -> list[dict]:
    """The artifact's panels holding the claim's classifier and sigma; ConfigError naming the key that misses."""
    artifact = spec["artifact"]
    if artifact not in config["artifacts"]:
        raise _error(name, "artifact", f"{artifact!r} is not an artifact (known: {', '.join(config['artifacts'])})")
    panels = config["artifacts"][artifact]["panels"]
    classifiers = sorted({c for p in panels for c in p["classifiers"]})
    classifier = spec.get("classifier")
    if classifier is None and len(classifiers) > 1:
        raise _error(name, "classifier", f"{artifact} has several classifiers; name one ({', '.join(classifiers)})")
    classifier = classifier or classifiers[0]
    panels = [p for p in panels if classifier in p["classifiers"]]
    if not panels:
        raise _error(name, "classifier", f"{classifier!r} is not a classifier of {artifact} "
                                         f"(known: {', '.join(classifiers)})")
    sigmas = sorted({float(s) for p in panels for s in p["sigmas"]})
    panels = [p for p in panels if float(spec["sigma"]) in map(float, p["sigmas"])]
    if not panels:
        raise _error(name, "sigma", f"{spec['sigma']:g} is not a sigma of {artifact} for {classifier} "
                                    f"(known: {', '.join(f'{s:g}' for s in sigmas)})")
    radii = [p for p in panels if p["radii"] == "curve" or float(spec["radius"]) in map(float, p["radii"])]
    if not radii:
        listed = sorted({float(r) for p in panels for r in p["radii"]})
        raise _error(name, "radius", f"{spec['radius']:g} is not a radius of {artifact} "
                                     f"(known: {', '.join(f'{r:g}' for r in listed)})")
    return [{**p, "_classifier": classifier} for p in radii]


def _side(name: str, key: str, spec: dict, panel: dict) -> Side:
    """A side's setting in a panel: its method there, and b and K among the panel's (one-shot: 1 and 1)."""
    method = spec["method"]
    if method not in panel["methods"]:
        raise _error(name, f"{key}.method", f"{method!r} is not a method of the panel "
                                            f"(known: {', '.join(panel['methods'])})")
    bs = [int(b) for b in panel["bs"]]
    b = int(spec.get("b", bs[0] if len(bs) == 1 else 0))
    if method != "densepure":
        return Side(method, 1, 1)
    if b not in bs:
        what = "is not one of" if "b" in spec else "must be given: the panel has several bs"
        raise _error(name, f"{key}.b", f"{spec.get('b', '')} {what} {bs}".strip())
    Ks = sorted({int(k) for k in [*panel["Ks"], *panel.get("extra_Ks", [])]})
    K = int(spec.get("K", Ks[0] if len(Ks) == 1 else 0))
    if K not in Ks:
        what = "is not one of" if "K" in spec else "must be given: the panel has several Ks"
        raise _error(name, f"{key}.K", f"{spec.get('K', '')} {what} {Ks}".strip())
    return Side(method, b, 1 if is_one_shot(method, b) else K)


def load_claim(config: dict, name: str, spec: dict, alpha: float) -> Claim:
    """One claim of ``claims.list``, checked against its artifact; ConfigError naming the bad key."""
    try:
        safe_name(name, "the claim name")
    except ValueError as err:
        raise _error(name, None, f"{err} (it names the claim's files)") from None
    panels = _matching_panels(config, name, spec)
    errors = []
    for panel in panels:  # the first panel that holds both sides
        try:
            first = _side(name, "first", spec["first"], panel)
            second = _side(name, "second", spec["second"], panel) if spec.get("second") else None
            break
        except ConfigError as err:
            errors.append(err)
    else:
        raise errors[0]
    if first == second:
        raise _error(name, "second", "is the same setting as first; a paired claim compares two settings")
    kind, value = spec.get("claim", "greater"), spec.get("value")
    if kind not in KINDS:
        raise _error(name, "claim", f"{kind!r} is not a claim (allowed: {', '.join(KINDS)})")
    if kind == "within" and value is None:
        raise _error(name, "value", "a `within` claim needs the value it is compared with (a fraction)")
    if kind != "within" and value is not None:
        raise _error(name, "value", f"only a `within` claim takes a value, not {kind!r}")
    panel = panels[0]
    size = len(image_ids(config, panel["dataset"], panel["images"]))
    budget = (spec.get("budget") or {}).get("images")
    if budget is not None and not 1 <= int(budget):
        raise _error(name, "budget.images", f"{budget} must be >= 1")
    hours = (spec.get("budget") or {}).get("gpu_hours")
    if hours is not None and not float(hours) > 0:
        raise _error(name, "budget.gpu_hours", f"{hours} must be > 0")
    return Claim(name=name, artifact=spec["artifact"], dataset=panel["dataset"], classifier=panel["_classifier"],
                 sigma=float(spec["sigma"]), radius=float(spec["radius"]), images=panel["images"], first=first,
                 second=second, kind=kind, delta=float(spec.get("delta", 0.0)),
                 value=None if value is None else float(value),
                 budget_images=None if budget is None else min(int(budget), size), alpha=alpha,
                 budget_gpu_hours=None if hours is None else float(hours))


def load_claims(config: dict) -> ClaimsPlan:
    """The config's ``claims`` section (empty when there is none): each claim at ``alpha / m`` for m claims
    (Bonferroni: every decided claim is right with probability at least 1 - alpha together)."""
    section = config.get("claims") or {}
    # null drops a claim of the config a --configfile extends (Snakemake merges mappings key by key)
    specs = {name: spec for name, spec in (section.get("list") or {}).items() if spec is not None}
    alpha = float(section.get("alpha", 0.05))
    if not 0 < alpha < 1:
        raise ConfigError(f"claims.alpha: {alpha} must be in (0, 1)")
    wave = load_wave_size(config)
    if wave < 1:
        raise ConfigError(f"claims.wave: {wave} must be >= 1")
    share = alpha / max(1, len(specs))
    claims = [load_claim(config, str(name), spec, share) for name, spec in specs.items()]
    return ClaimsPlan(alpha=alpha, wave=wave, seed=load_seed(config), claims=claims)


def load_wave_size(config: dict) -> int:
    """``claims.wave``: images per wave (default 10)."""
    return int((config.get("claims") or {}).get("wave", 10))


def load_seed(config: dict) -> int:
    """``claims.seed``: the seed of the image order (default 0)."""
    return int((config.get("claims") or {}).get("seed", 0))


def order(config: dict, claim: Claim) -> list[int]:
    """The pre-registered order of the claim's image set: ``numpy.random.default_rng(seed).permutation(ids)``
    with the section's seed; the same image set and seed give every claim the same order."""
    ids = image_ids(config, claim.dataset, claim.images)
    return [int(i) for i in np.random.default_rng(load_seed(config)).permutation(ids)]


def size(config: dict, claim: Claim) -> int:
    """N: the number of images of the claim's image set (the full artifact's)."""
    return len(image_ids(config, claim.dataset, claim.images))


def limit(config: dict, claim: Claim) -> int:
    """The most images the claim certifies: its budget, else the whole set."""
    return claim.budget_images or size(config, claim)


def wave_ids(config: dict, claim: Claim, wave: int) -> list[int]:
    """Ids certified in wave ``wave`` (0, 1, ...): the next ``claims.wave`` images of the order, within the
    budget."""
    step = load_wave_size(config)
    return order(config, claim)[wave * step:min((wave + 1) * step, limit(config, claim))]


def waves(config: dict, claim: Claim) -> int:
    """How many waves the claim may take before its budget (or the set) runs out."""
    step = load_wave_size(config)
    return -(-limit(config, claim) // step)


def keys(config: dict, claim: Claim) -> list[tuple[SettingKey, int]]:
    """The (setting, K) each side reads, by the grid's rules (one-shot methods: b = 1, K = 1)."""
    return [(SettingKey(claim.dataset, claim.classifier, side.method, claim.sigma, side.b), side.K)
            for side in claim.sides]


def stores(config: dict, claim: Claim, ids: list[int]) -> list[PlannedStore]:
    """The grid's votes stores of the claim's settings that hold any of ``ids`` (the same stores the full tables
    fill)."""
    wanted, out = set(ids), []
    for key, _K in keys(config, claim):
        out += [s for s in settings(config) if s.key == key and wanted & set(s.ids)]
    return out


def wave_store_ids(config: dict, wave: int, claims: list[Claim] | None = None) -> dict[str, list[int]]:
    """``{votes store: ids}`` that wave ``wave`` of ``claims`` (default: all of them) stores: each claim's wave
    images in the stores of its settings."""
    claims = load_claims(config).claims if claims is None else claims
    out: dict[str, set[int]] = {}
    for claim in claims:
        ids = wave_ids(config, claim, wave)
        for store in stores(config, claim, ids):
            out.setdefault(store.name, set()).update(set(ids) & set(store.ids))
    return {name: sorted(ids) for name, ids in sorted(out.items())}


def wave_jobs(config: dict, wave: int, claims: list[Claim] | None = None) -> dict[str, list[int]]:
    """``{votes store: ids}`` of the certification jobs of wave ``wave`` (one job per store and wave), by the
    grid's rule that a DensePure job writes the one-shot votes it provides
    (:func:`~densepure.plan.grid.one_shot_providers`): a one-shot store's provided ids move to its provider's job.
    The ids of a job depend on the wave alone (every claim's), so a job's command never changes with decisions."""
    providers = one_shot_providers(config)
    jobs: dict[str, set[int]] = {}
    for name, ids in wave_store_ids(config, wave).items():
        provided = providers.get(name, {})
        for i in ids:
            jobs.setdefault(provided.get(i, name), set()).add(i)
    wanted = wave_store_ids(config, wave, claims)
    needed = {provider for name, ids in wanted.items() for i in ids
              for provider in [providers.get(name, {}).get(i, name)]}
    return {name: sorted(ids) for name, ids in sorted(jobs.items()) if name in needed}


def wave_shards(config: dict, wave: int, claims: list[Claim] | None = None) -> list[tuple[str, int, list[int]]]:
    """(store, part, ids) of each certification job of wave ``wave``: :func:`wave_jobs` cut into the grid's job
    size (the dataset's ``shard_size``, else the top-level one), so that a wave job runs as long as a full-grid
    job at most (one ImageNet image per job in config/paper.yaml)."""
    out = []
    for name, ids in wave_jobs(config, wave, claims).items():
        dataset = name.split("/")[0]
        size = config["datasets"][dataset].get("shard_size") or config["shard_size"]
        out += [(name, part, ids[i:i + size]) for part, i in enumerate(range(0, len(ids), size))]
    return out


def wave_shard_ids(config: dict, wave: int, store: str, part: int) -> list[int]:
    """The ids of job ``part`` of ``store`` in wave ``wave`` (:func:`wave_shards`)."""
    for name, index, ids in wave_shards(config, wave):
        if (name, index) == (store, part):
            return ids
    raise ValueError(f"wave {wave} has no job {part} of votes store {store!r}")


def open_claims(config: dict, wave: int, decisions) -> list[Claim]:
    """The claims that certify wave ``wave``: all of them first, then those the previous wave's decisions left
    open. ``decisions(w)`` is the path of wave w's JSON (``densepure claims decide``; in the workflow, the
    checkpoint's output)."""
    import json

    every = load_claims(config).claims
    if wave == 0:
        return every
    with open(decisions(wave - 1)) as f:
        names = set(json.load(f)["open"])
    return [claim for claim in every if claim.name in names]


def last_wave(decisions) -> str:
    """The decisions of the last wave: waves follow one another while a claim is open (``decisions`` as in
    :func:`open_claims`)."""
    import json

    wave = 0
    while True:
        path = decisions(wave)
        with open(path) as f:
            if not json.load(f)["open"]:
                return str(path)
        wave += 1
