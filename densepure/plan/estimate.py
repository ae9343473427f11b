"""``densepure estimate``: the GPU-hours a workflow config costs, per artifact and in total, before running it.

Cost model. A votes store (:class:`densepure.plan.grid.PlannedStore`) certifies ``images`` images with ``N0 + N`` noisy
draws each; per draw it makes

* ``u`` UNet forward passes: 1 for a one-shot method (``onestep``, ``carlini`` or b = 1), else
  ``1 + (b - 1) K`` -- the K votes of a draw share the first reverse step (:func:`densepure.core.denoise.purify_votes`
  calls the network once on the draw, then once per vote for each of the b - 1 remaining steps). The reference
  code runs every vote from scratch, ``b K`` calls (a dataset's ``mode: reference``, or ``--no-shared-first-step``
  for every store);
* ``c`` classifier forward passes: K, or 1 for a one-shot method (its votes are copies of one image).

so that ``seconds = images (N0 + N) (u / unet_rate + c / classifier_rate)``, with the throughputs (images per
second) of :data:`RATES` for the UNet precision and classifier precision of the dataset's execution mode
(:func:`densepure.job.execution.resolve_execution`: the ``mode`` key, then ``precision`` if set). An artifact costs
the stores it reads (:func:`densepure.plan.grid.stores_for` of each of its aggregations); a store read by several
artifacts is computed once, so the total counts each store once and is less than the sum of the artifact rows.
Data loading, checkpoint loading and certification arithmetic are left out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from densepure.job.execution import resolve_execution
from densepure.plan import grid
from densepure.plan.rates import RATES, _classifier_rate, _unet_rate


def unet_calls_per_draw(b: int, K: int, one_shot: bool, shared_first_step: bool = True) -> int:
    """UNet forward passes per noisy draw: 1 one-shot; ``1 + (b - 1) K`` with the first step shared, else ``b K``."""
    if one_shot:
        return 1
    return 1 + (b - 1) * K if shared_first_step else b * K


def classifier_calls_per_draw(K: int, one_shot: bool) -> int:
    """Classifier forward passes per noisy draw: one per vote, 1 for a one-shot method."""
    return 1 if one_shot else K


@dataclass(frozen=True)
class StoreCost:
    """Cost of one votes store (one per (setting, K group), see :func:`densepure.plan.grid.settings`)."""

    name: str
    key: grid.SettingKey
    unet_model: str  # "<architecture> <precision>", the key of its UNet throughput
    images: int
    jobs: int
    shard_images: int  # images of its largest certification job
    draws: float  # draws computed per image: N0 + N, less with the savings
    unet_per_draw: float
    classifier_per_draw: float
    unet_rate: float
    classifier_rate: float

    @property
    def seconds_per_image(self) -> float:
        return self.draws * (self.unet_per_draw / self.unet_rate + self.classifier_per_draw / self.classifier_rate)

    @property
    def seconds(self) -> float:
        return self.images * self.seconds_per_image

    @property
    def longest_job_seconds(self) -> float:
        return self.shard_images * self.seconds_per_image

    @property
    def unet_calls(self) -> int:
        return round(self.images * self.draws * self.unet_per_draw)

    @property
    def classifier_calls(self) -> int:
        return round(self.images * self.draws * self.classifier_per_draw)


@dataclass(frozen=True)
class Row:
    """Cost of a set of stores: one artifact, or the total (every store once)."""

    name: str
    target: str
    stores: list[StoreCost]

    @property
    def jobs(self) -> int:
        return sum(s.jobs for s in self.stores)

    @property
    def images(self) -> int:
        return sum(s.images for s in self.stores)

    @property
    def unet_calls(self) -> int:
        return sum(s.unet_calls for s in self.stores)

    @property
    def classifier_calls(self) -> int:
        return sum(s.classifier_calls for s in self.stores)

    @property
    def hours(self) -> float:
        return sum(s.seconds for s in self.stores) / 3600

    @property
    def longest_job_hours(self) -> float:
        return max((s.longest_job_seconds for s in self.stores), default=0.0) / 3600


def dataset_execution(config: dict, dataset: str):
    """The execution (:class:`densepure.job.execution.Execution`) of a dataset's certification jobs on a GPU."""
    data = config["datasets"][dataset]
    return resolve_execution(data.get("mode") or "custom", dataset, "cuda", precision=data.get("precision"),
                             batch=data.get("batch"))


def store_costs(config: dict, rates: dict | None = None, shared_first_step: bool | None = None,
                shares: dict | None = None) -> dict[str, StoreCost]:
    """Cost of every votes store of a (validated) config, by store name. ``shared_first_step`` None: as each
    dataset's execution mode runs; True/False: for every store. ``shares`` (:func:`densepure.plan.shares.store_shares`):
    the share of draws and votes the savings compute per store; None: every draw and vote (no savings).

    A one-shot store's images that DensePure jobs provide (:func:`densepure.plan.grid.one_shot_providers`) cost one
    classifier call per draw, and a UNet call only for the draws the DensePure job did not run itself (its share of
    draws is smaller)."""
    from densepure.plan.shares import NONE

    rates = RATES if rates is None else rates
    shares = shares or {}
    providers = grid.one_shot_providers(config) if shares else {}
    out = {}
    for setting in grid.settings(config):
        key, data = setting.key, config["datasets"][setting.key.dataset]
        arch = config["diffusion_models"][data["diffusion"]]["arch"]
        if arch == grid.PLUGIN_ARCH:  # your own network: its rate goes by its name in the config
            arch = data["diffusion"]
        shards = grid.job_shards(config, setting)
        execution = dataset_execution(config, key.dataset)
        precision = execution.precision
        shared = execution.shared_first_step if shared_first_step is None else shared_first_step
        share = shares.get(setting.name, NONE)
        unet = unet_calls_per_draw(key.b, setting.K, key.one_shot, shared)
        if not key.one_shot:
            unet = 1 + (key.b - 1) * setting.K * share.vote_share if shared else key.b * setting.K * share.vote_share
        provided = providers.get(setting.name, {})
        if provided:  # those draws' first step is a DensePure job's, but for draws it stopped before
            dp_share = np.mean([shares.get(name, NONE).draw_share for name in provided.values()])
            extra = max(0.0, share.draw_share - dp_share) / share.draw_share
            unet = (len(setting.ids) - len(provided) + len(provided) * extra) / len(setting.ids)
        out[setting.name] = StoreCost(
            name=setting.name,
            key=key,
            unet_model=f"{arch} {precision}",
            images=len(setting.ids),
            jobs=len(shards),
            shard_images=max((len(s) for s in shards), default=0),
            draws=(data.get("N0", 100) + data["N"]) * share.draw_share,
            unet_per_draw=unet,
            classifier_per_draw=classifier_calls_per_draw(setting.K, key.one_shot) * share.vote_share,
            unet_rate=_unet_rate(rates, arch, precision),
            classifier_rate=_classifier_rate(rates, key.classifier, execution.classifier_precision),
        )
    return out


def estimate(config: dict, rates: dict | None = None, shared_first_step: bool | None = None,
             shares: dict | None = None) -> tuple[list[Row], Row]:
    """One row per selected artifact (the stores it reads) and the total row (every store once). Without
    ``shares``: the cost with every saving off (every draw and vote, one-shot stores certified by their own jobs)."""
    if shares is None:
        config = {**config, "savings": {name: False for name in grid.savings(config)}}
    costs = store_costs(config, rates, shared_first_step, shares)
    rows, used = [], set()
    for artifact in grid.selected_artifacts(config):
        names = sorted({s.name for agg in grid.aggregates(config, artifact) for s in grid.stores_for(config, agg)})
        used.update(names)
        rows.append(Row(artifact, grid.target_name(artifact), [costs[n] for n in names]))
    total = Row("total", "all", [costs[n] for n in sorted(used)])
    return rows, total
