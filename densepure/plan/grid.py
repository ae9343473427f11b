"""The experiment grid: from a workflow config to certification jobs, aggregations and artifacts.

An *artifact* (a table or figure) has panels; a panel names a dataset, classifiers, sigmas, bs, Ks, methods and
an image set. A *setting* is what one votes store holds: (dataset, classifier, method, sigma, b) with
``K = max`` of the Ks any panel asks of it, over the union of the image ids those panels certify. Every K' <= K
is an aggregation of that store, never a GPU job; one-shot methods (``onestep``, ``carlini``, or b = 1) are
deterministic given the draw, so they store K = 1.

The Snakefile calls only this module for the grid, so the tests reach every rule's wildcards.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Iterable

from densepure.core.methods import ONE_SHOT_METHODS, is_one_shot
from densepure.models.datasets import parse_ids


@dataclass(frozen=True, order=True)
class SettingKey:
    """One votes store: everything that determines the votes but K and the image ids."""

    dataset: str
    classifier: str
    method: str
    sigma: float
    b: int

    @property
    def one_shot(self) -> bool:
        return is_one_shot(self.method, self.b)

    @property
    def name(self) -> str:
        """Path fragment ``dataset/classifier/method-sigma0.25-b10`` (also the Snakemake wildcard ``setting``)."""
        return f"{self.dataset}/{self.classifier}/{self.method}-sigma{self.sigma:g}-b{self.b}"

    @classmethod
    def parse(cls, name: str) -> SettingKey:
        dataset, classifier, rest = name.split("/")
        method, sigma, b = rest.split("-sigma")[0], rest.split("-sigma")[1].split("-b")[0], rest.split("-b")[-1]
        return cls(dataset, classifier, method, float(sigma), int(b))


@dataclass
class PlannedStore:
    """One votes store: a setting key, its number of votes K and the ids it certifies."""

    key: SettingKey
    K: int
    ids: list[int]

    @property
    def name(self) -> str:
        """``<key name>-K<K>``: the Snakemake wildcard ``store``."""
        return f"{self.key.name}-K{self.K}"


@dataclass(frozen=True)
class Aggregate:
    """Certified results of one setting at K votes on one image set: one TSV."""

    key: SettingKey
    K: int
    images: str


def panel_settings(panel: dict) -> Iterable[tuple[SettingKey, int]]:
    """(setting, K) pairs a panel needs. The one-shot baseline is b = 1, K = 1 whatever the panel's bs and Ks."""
    Ks = sorted(set(panel["Ks"]) | set(panel.get("extra_Ks", [])))
    for classifier in panel["classifiers"]:
        for sigma in panel["sigmas"]:
            for method in panel["methods"]:
                if method in ONE_SHOT_METHODS:
                    yield SettingKey(panel["dataset"], classifier, method, float(sigma), 1), 1
                    continue
                for b in panel["bs"]:
                    for K in Ks:
                        yield SettingKey(panel["dataset"], classifier, method, float(sigma), int(b)), (
                            1 if b == 1 else int(K))


def image_ids(config: dict, dataset: str, images: str) -> list[int]:
    """The ids of image set ``images`` of ``dataset`` in the config."""
    sets = config["datasets"][dataset]["image_sets"]
    if images not in sets:
        raise ValueError(f"image set {images!r} is not defined for dataset {dataset!r} (known: {', '.join(sets)})")
    return parse_ids(str(sets[images]))


def selected_artifacts(config: dict) -> dict[str, dict]:
    return {name: spec for name, spec in config["artifacts"].items() if spec.get("enabled", True)}


def aggregates(config: dict, artifact: str | None = None) -> list[Aggregate]:
    """Every (setting, K, image set) TSV the artifacts need (one artifact, or all)."""
    specs = selected_artifacts(config)
    names = [artifact] if artifact else list(specs)
    out = set()
    for name in names:
        for panel in specs[name]["panels"]:
            for key, K in panel_settings(panel):
                out.add(Aggregate(key, K, panel["images"]))
    return sorted(out, key=lambda a: (a.key, a.K, a.images))


_SETTINGS_CACHE: dict[str, list[PlannedStore]] = {}


def settings(config: dict) -> list[PlannedStore]:
    """Votes stores to compute. Each image of a setting key gets the largest K any artifact asks of it, and the
    images are grouped by that K: so an ablation asking K = 50 of 100 images does not cost K = 50 on the 500 of
    the main table. Votes are nested in K (vote k of a draw is addressed by k alone), so a K = 50 store also
    serves K' <= 50.

    Memoised on the config's artifacts and datasets (the only keys it reads): the Snakefile's input functions call
    it once per job, and recomputing it each time made a dry run of the paper's grid take 17 s instead of 3 s.
    Returns fresh copies, so callers may modify them."""
    cache_key = json.dumps([config["artifacts"], config["datasets"]], sort_keys=True, default=str)
    if cache_key not in _SETTINGS_CACHE:
        if len(_SETTINGS_CACHE) >= 16:
            _SETTINGS_CACHE.clear()
        _SETTINGS_CACHE[cache_key] = _settings(config)
    return [PlannedStore(s.key, s.K, list(s.ids)) for s in _SETTINGS_CACHE[cache_key]]


def _settings(config: dict) -> list[PlannedStore]:
    need: dict[SettingKey, dict[int, int]] = {}
    for agg in aggregates(config):
        per_id = need.setdefault(agg.key, {})
        for i in image_ids(config, agg.key.dataset, agg.images):
            per_id[i] = max(per_id.get(i, 0), agg.K)
    out = []
    for key, per_id in sorted(need.items()):
        for K in sorted(set(per_id.values())):
            out.append(PlannedStore(key, K, sorted(i for i, k in per_id.items() if k == K)))
    return out


def stores_for(config: dict, agg: Aggregate) -> list[PlannedStore]:
    """The votes stores an aggregation reads: those of its setting key holding any of its image ids."""
    wanted = set(image_ids(config, agg.key.dataset, agg.images))
    return [s for s in settings(config) if s.key == agg.key and wanted & set(s.ids)]


def served_Ks(config: dict, setting: PlannedStore) -> list[int]:
    """The vote counts whose results a store must give exactly: the K of every aggregation of its setting key that
    reads any of its images (a table needs its K, Figure 4 left 1, 3, ..., 50). Lazy votes settle each draw at these
    Ks only; aggregating at another K is refused."""
    ids = set(setting.ids)
    return sorted({agg.K for agg in aggregates(config) if agg.key == setting.key and agg.K <= setting.K
                   and ids & set(image_ids(config, agg.key.dataset, agg.images))})


def savings(config: dict) -> dict:
    """The config's ``savings`` with defaults (the schema's, for configs validated elsewhere)."""
    return {"lazy_votes": True, "skip_hopeless": False, "stop_abstain": True, "one_shot_from_densepure": True,
            **config.get("savings", {})}


_PROVIDERS_CACHE: dict[str, dict[str, dict[int, str]]] = {}


def one_shot_providers(config: dict) -> dict[str, dict[int, str]]:
    """Memoised :func:`_one_shot_providers` (the Snakefile asks once per job)."""
    cache_key = json.dumps([config["artifacts"], config["datasets"], savings(config)], sort_keys=True, default=str)
    if cache_key not in _PROVIDERS_CACHE:
        if len(_PROVIDERS_CACHE) >= 16:
            _PROVIDERS_CACHE.clear()
        _PROVIDERS_CACHE[cache_key] = _one_shot_providers(config)
    return _PROVIDERS_CACHE[cache_key]


def _one_shot_providers(config: dict) -> dict[str, dict[int, str]]:
    """``{one-shot store: {image id: DensePure store}}``: the images of the one-shot baseline (``onestep``) whose
    votes a DensePure job of the same dataset, classifier and sigma computes on the way (its first reverse step is
    the one-shot's network call), so they need no job of their own. Each id goes to the DensePure store that
    certifies it with the most reverse steps and votes (the main setting, which a table computes anyway, before an
    ablation's). Empty when ``savings.one_shot_from_densepure`` is off."""
    if not savings(config)["one_shot_from_densepure"]:
        return {}
    stores = settings(config)
    out: dict[str, dict[int, str]] = {}
    for one_shot in stores:
        if one_shot.key.method != "onestep":
            continue
        provided: dict[int, str] = {}
        for dp in sorted(stores, key=lambda t: (-t.key.b, -t.K, t.name)):
            key = dp.key
            if (key.dataset, key.classifier, key.sigma) != (one_shot.key.dataset, one_shot.key.classifier,
                                                             one_shot.key.sigma) or key.one_shot:
                continue
            for i in set(dp.ids) & set(one_shot.ids):
                provided.setdefault(i, dp.name)
        if provided:
            out[one_shot.name] = provided
    return out


def provided_one_shot(config: dict, setting: PlannedStore) -> tuple[PlannedStore, list[int]] | None:
    """The one-shot store a DensePure store's jobs also fill, and the ids they provide (None if none)."""
    for name, provided in one_shot_providers(config).items():
        ids = sorted(i for i, provider in provided.items() if provider == setting.name)
        if ids:
            return setting_by_name(config, name), ids
    return None


def job_shards(config: dict, setting: PlannedStore) -> list[list[int]]:
    """Image ids of each certification job of a setting: the dataset's ``shard_size`` if it sets one, else the
    top-level one. A one-shot store has jobs only for the ids no DensePure job provides."""
    size = config["datasets"][setting.key.dataset].get("shard_size") or config["shard_size"]
    provided = one_shot_providers(config).get(setting.name, {})
    if provided:
        setting = PlannedStore(setting.key, setting.K, [i for i in setting.ids if i not in provided])
    return shards(setting, size)


def shards_for(config: dict, setting: PlannedStore, ids: Iterable[int] | None = None) -> list[tuple[str, int]]:
    """(store, shard) of every certification job that writes votes of ``setting``'s store (of its images among
    ``ids``, all if None): its own jobs, and for a one-shot store the jobs of the DensePure stores that provide
    them."""
    wanted = set(setting.ids if ids is None else ids)
    own = [(setting.name, i) for i, shard in enumerate(job_shards(config, setting)) if wanted & set(shard)]
    provided = one_shot_providers(config).get(setting.name, {})
    providers = []
    for name in sorted(set(provided.values())):
        dp = setting_by_name(config, name)
        for i, shard in enumerate(job_shards(config, dp)):
            if any(provided.get(j) == name and j in wanted for j in shard):
                providers.append((name, i))
    return own + providers


def shards(setting: PlannedStore, shard_size: int) -> list[list[int]]:
    """Image ids of each certification job of a setting, ``shard_size`` images per job."""
    return [setting.ids[i:i + shard_size] for i in range(0, len(setting.ids), shard_size)]


def setting_by_name(config: dict, name: str) -> PlannedStore:
    """The votes store called ``name`` (``PlannedStore.name``)."""
    for setting in settings(config):
        if setting.name == name:
            return setting
    raise ValueError(f"votes store {name!r} is not part of the configured grid")


# --- what the workflow needs besides the grid -----------------------------------------------------------------

# tables and the K-ablation figures (the reference code's plot data, results/paper/figure_k_ablation_refcode.csv)
PAPER_NUMBERS = {"table1", "table2", "tableA", "tableB", "fig4_left", "figA", "figB", "figG"}


def is_table(artifact: str) -> bool:
    """Artifacts named ``table*`` are tables; the others are figures."""
    return artifact.startswith("table")


def has_paper_numbers(artifact: str) -> bool:
    return artifact in PAPER_NUMBERS


def target_name(artifact: str) -> str:
    """Snakemake target of an artifact: ``tableB`` -> ``table_B``, ``fig4_left`` -> ``fig_4_left``."""
    for prefix in ("table", "fig"):
        if artifact.startswith(prefix) and not artifact.startswith(prefix + "_"):
            return f"{prefix}_{artifact[len(prefix):]}"
    return artifact


def model_path(config: dict, section: str, name: str) -> str | None:
    """Where the weights of model ``name`` of ``diffusion_models`` / ``classifiers`` live: trained ones under the
    run's work folder, downloaded ones under ``checkpoints_dir``; None for your own network without a file."""
    entry = config[section][name]
    if "train" in entry:
        return f"{config['work_dir']}/{config['run']}/models/{name}.pt"
    if "file" in entry:
        return f"{config['checkpoints_dir']}/{entry['file']}"
    return None


PLUGIN_ARCH = "plugin"


def write_effective_config(config: dict, path: str) -> str:
    """Write the validated config (defaults filled in) where report rules read artifact specs; only rewritten when
    it changed, so Snakemake's timestamps stay quiet."""
    from pathlib import Path

    import yaml

    text = yaml.safe_dump(config, sort_keys=False)
    target = Path(path)
    if not target.exists() or target.read_text() != text:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return path


def download_files(config: dict, section: str) -> list[str]:
    """File names of the models of ``section`` that the workflow downloads (they have a url)."""
    return [entry["file"] for entry in config[section].values() if entry.get("url") and "train" not in entry]


def download_url(config: dict, section: str, file: str) -> str:
    for name, entry in config[section].items():
        if entry.get("file") == file:
            if not entry.get("url"):
                raise ValueError(f"{section}.{name}: no url; place {file} in {config['checkpoints_dir']} by hand")
            return entry["url"]
    raise ValueError(f"no {section} entry has file {file!r}")


def trained(config: dict, section: str) -> list[str]:
    """Names of the models of ``section`` that the workflow trains."""
    return [name for name, entry in config[section].items() if "train" in entry]


def train_options(config: dict, section: str, name: str) -> str:
    """``--key value`` options for ``densepure train`` from the model's ``train`` mapping."""
    options = config[section][name]["train"] or {}
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in options.items())


def certify_arguments(config: dict, store: str, shard: int, ids: list[int] | None = None) -> str:
    """The ``densepure certify`` options of one job (all but the checkpoint and output paths): of shard ``shard``
    of the store, or of the explicit ``ids`` (a wave of sequential claims, :mod:`densepure.plan.claims`). A
    DensePure job also writes the one-shot votes it provides among its ids, as the full grid's jobs do."""
    setting = setting_by_name(config, store)
    key, data = setting.key, config["datasets"][setting.key.dataset]
    ids = job_shards(config, setting)[shard] if ids is None else list(ids)
    diffusion = config["diffusion_models"][data["diffusion"]]
    classifier = config["classifiers"][key.classifier]
    options = {
        "--dataset": key.dataset, "--ids": ",".join(map(str, ids)), "--diffusion": diffusion.get("model") or
        diffusion["arch"], "--classifier": key.classifier, "--preprocessing": classifier.get("preprocessing",
                                                                                             "reference"),
        "--sigma": key.sigma, "--b": key.b, "--K": setting.K, "--N0": data.get("N0", 100), "--N": data["N"],
        "--alpha": config["alpha"], "--seed": config["seed"], "--method": "densepure" if key.method == "densepure"
        else key.method, "--device": config["device"],
    }
    mode = data.get("mode") or "custom"
    if mode == "custom":  # the options as before modes existed, so existing jobs keep their command lines
        options.update({"--precision": data.get("precision") or "fp32", "--batch": data.get("batch") or 100})
    else:  # the preset, with precision and batch where the config sets them
        options["--mode"] = mode
        options.update({flag: data[key] for flag, key in (("--precision", "precision"), ("--batch", "batch"))
                        if data.get(key)})
        if mode == "fast":
            options["--compile-cache"] = f"{config['work_dir']}/torch-compile"
    if data.get("root"):
        options["--data-root"] = data["root"]
    saving = savings(config)
    if not key.one_shot:
        options["--Ks"] = " ".join(map(str, served_Ks(config, setting)))
    options["--checkpoint-seconds"] = config.get("checkpoint_seconds", 300)
    flags = [f"--{'' if saving[name] else 'no-'}{name.replace('_', '-')}"
             for name in ("lazy_votes", "stop_abstain", "skip_hopeless")]
    provided = provided_one_shot(config, setting)
    if provided:
        one_shot, one_shot_ids = provided
        wanted = [i for i in ids if i in set(one_shot_ids)]
        if wanted:
            options["--one-shot-votes-dir"] = f"{config['work_dir']}/{config['run']}/votes/{one_shot.name}"
            if wanted != ids:
                options["--one-shot-ids"] = ",".join(map(str, wanted))
    options.update(_plugin_options(data, diffusion, classifier))
    return " ".join([*(f"{flag} {value}" for flag, value in options.items()), *flags])


def _plugin_options(data: dict, diffusion: dict, classifier: dict) -> dict:
    """The certify options of your own data loader, diffusion schedule and classifier model, and their kwargs (as
    JSON); none if unused."""
    options = {}
    if data.get("loader"):
        options["--dataset-loader"] = data["loader"]
    if "schedule" in diffusion:
        options["--diffusion-schedule"] = f"{diffusion['schedule']['kind']}:{diffusion['schedule']['T']}"
    if classifier.get("model"):
        options["--classifier-model"] = shlex.quote(classifier["model"])
    for flag, entry in (("--dataset-kwargs", data), ("--diffusion-kwargs", diffusion),
                        ("--classifier-kwargs", classifier)):
        if entry.get("kwargs"):
            options[flag] = shlex.quote(json.dumps(entry["kwargs"], sort_keys=True))
    return options


def checkpoint_arguments(inputs: dict) -> str:
    """``--diffusion-ckpt`` / ``--classifier-ckpt`` for the weights files among a certify job's named inputs (your
    own networks may have none)."""
    return " ".join(f"--{name}-ckpt {shlex.quote(str(inputs[name]))}" for name in ("diffusion", "classifier")
                    if name in inputs)


def by_hand_files(config: dict) -> list[str]:
    """Checkpoint files with neither a url nor a train section: the user places them."""
    return [entry["file"] for section in ("diffusion_models", "classifiers") for entry in config[section].values()
            if not entry.get("url") and "train" not in entry and "file" in entry]
