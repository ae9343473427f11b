"""Validation of a workflow config before any job: the JSON schema, then what a schema cannot express.

Every mistake raises :class:`ConfigError`, one line naming the key (``artifacts.fig3.panels[0].max_radiuss``) and
what is allowed there. The workflow calls :func:`validate_workflow_config` (a dry run stops with that line alone),
``densepure estimate`` the two steps below.

:func:`check_schema` validates with jsonschema, filling in the schema's defaults as ``snakemake.utils.validate``
does, and reports jsonschema's most relevant error (``best_match``) in one line instead of dumping the schema.
:func:`check_config` does the cross-checks; they need the registries (classifiers, datasets, diffusion models), the
noise key's range and the reverse schedules, and import torch, so the schema step runs first and fails fast.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from densepure.files import resources
from densepure.files.paths import relative_path, safe_name
from densepure.files.yamlfile import read_yaml

SCHEMA = resources.resource(resources.SCHEMA)


class ConfigError(ValueError):
    """A workflow config mistake; the message is one line starting with the dotted key."""


def key_path(parts: Iterable[str | int]) -> str:
    """``["artifacts", "fig3", "panels", 0, "sigmas"]`` -> ``artifacts.fig3.panels[0].sigmas``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_sentence(text: str) -> str:
    return " ".join(text.split()).split(". ")[0].rstrip(".")


_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


def schema_message(error) -> str:
    """One line for a :class:`jsonschema.ValidationError`: the key, what is wrong, what is allowed."""
    where, value, kind, schema = key_path(error.absolute_path), error.instance, error.validator, error.schema
    at = f"{where}: " if where else ""
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        key = sorted(set(value) - set(allowed))[0]
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{key_path([*error.absolute_path, key])}: unknown key{hint} (allowed: {', '.join(allowed)})"
    if kind == "required":
        missing = [key for key in error.validator_value if key not in value]
        required = ", ".join(error.validator_value)
        return f"{key_path([*error.absolute_path, missing[0]])}: missing (required here: {required})"
    if kind in ("enum", "const"):
        allowed = error.validator_value if kind == "enum" else [error.validator_value]
        return f"{at}{_show(value)} is not allowed (allowed: {', '.join(_show(a) for a in allowed)})"
    if kind in _BOUNDS:
        return f"{at}{_show(value)} must be {_BOUNDS[kind]} {error.validator_value}"
    if kind == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"{at}{_show(value)} is not of type {' or '.join(types)}"
    if kind == "uniqueItems":
        duplicate = next(v for k, v in enumerate(value) if v in value[:k])
        return f"{at}{_show(duplicate)} is listed twice; the values must be distinct"
    if kind in ("minItems", "maxItems", "minProperties"):
        bound = "at least" if kind.startswith("min") else "at most"
        what = "entries" if kind == "minProperties" else "items"
        return f"{at}needs {bound} {error.validator_value} {what}, got {len(value)}"
    if kind == "pattern":
        described = f" ({_first_sentence(schema['description'])})" if schema.get("description") else ""
        return f"{at}{_show(value)} does not match {error.validator_value}{described}"
    if kind in ("oneOf", "anyOf"):
        described = _first_sentence(schema.get("description", "")) or "see the schema"
        return f"{at}{_show(value)} is not allowed ({described})"
    return f"{at}{' '.join(error.message.split())}"


def _default_filling_validator(schema: dict):
    """A Draft 2020-12 validator that fills each property's ``default`` into the instance before validating it, as
    ``snakemake.utils.validate`` does (https://python-jsonschema.readthedocs.io/en/latest/faq/)."""
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})(schema)


def load_schema(path: str | os.PathLike = SCHEMA) -> dict:
    from densepure.files.yamlfile import read_yaml

    return read_yaml(path, "schema")


def check_name(where: str, name: Any) -> None:
    """A name that becomes part of a file path is a plain name (:func:`densepure.files.paths.safe_name`: not empty,
    no folder, no ``..``, no leading dot); ConfigError naming ``where`` otherwise. Names of another type are left
    to the schema."""
    if not isinstance(name, str):
        return
    if not name.strip():
        raise ConfigError(f"{where}: {name!r} is empty; a name here becomes part of a file path")
    try:
        safe_name(name, f"{where}:")
    except ValueError as err:
        raise ConfigError(f"{err}; a name here becomes part of a file path") from None


def _mapping(node: Any, *keys: str) -> dict:
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def check_names(config: dict) -> None:
    """Every name of ``config`` that becomes part of a path stays in its folder: the run (``results/<run>/``,
    ``<work_dir>/<run>/``), the dataset, classifier and diffusion model names (votes stores
    ``<dataset>/<classifier>/...``, trained models ``<name>.pt``), image set and artifact names (result and artifact
    files), and each model's ``file``, a relative path under ``checkpoints_dir``. Run before the schema, so a name
    like ``../x`` gets this message rather than a pattern's."""
    check_name("run", config.get("run"))
    for section in ("datasets", "classifiers", "diffusion_models", "artifacts"):
        for name in _mapping(config, section):
            check_name(section, name)
    for dataset, spec in _mapping(config, "datasets").items():
        for name in _mapping(spec, "image_sets"):
            check_name(f"datasets.{dataset}.image_sets", name)
    for section in ("classifiers", "diffusion_models"):
        for name, entry in _mapping(config, section).items():
            file = entry.get("file") if isinstance(entry, dict) else None
            if isinstance(file, str):
                try:
                    relative_path(file, f"{section}.{name}.file:", "checkpoints_dir")
                except ValueError as err:
                    raise ConfigError(str(err)) from None


def check_schema(config: dict, schema: dict) -> None:
    """Validate ``config`` against ``schema``, filling in defaults; ConfigError with the most relevant error. The
    names that become paths are checked first (:func:`check_names`)."""
    from jsonschema.exceptions import best_match

    if not isinstance(config, dict):
        raise ConfigError(f"a workflow config is a mapping of keys, got {_show(config)}")
    check_names(config)
    error = best_match(_default_filling_validator(schema).iter_errors(config))
    if error is not None:
        raise ConfigError(schema_message(error))


# --- what the schema cannot express ----------------------------------------------------------------------------


def _non_finite(node: Any, path: tuple = ()) -> Iterable[tuple]:
    if isinstance(node, float) and not math.isfinite(node):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _non_finite(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _non_finite(value, (*path, i))


def check_finite(config: dict) -> None:
    """YAML's ``.inf`` and ``.nan`` are numbers to JSON schema: refuse them anywhere."""
    for path, value in _non_finite(config):
        raise ConfigError(f"{key_path(path)}: {value!r} is not a finite number")


def check_ids(where: str, spec: str, dataset: str) -> None:
    """An image set: readable, not empty, no id twice, every id in the dataset's certification split."""
    from densepure.models.datasets import SIZES, DataError, parse_ids

    size = SIZES.get(dataset)
    try:
        ids = parse_ids(spec, limit=size)
    except DataError as err:
        raise ConfigError(f"{where}: {err}") from None
    if len(set(ids)) < len(ids):
        duplicate = next(i for i, count in Counter(ids).items() if count > 1)
        raise ConfigError(f"{where}: id {duplicate} is listed twice")
    bad = [i for i in ids if i < 0 or (size is not None and i >= size)]
    if bad:
        allowed = f"0..{size - 1}" if size is not None else "ids >= 0"
        raise ConfigError(f"{where}: id {bad[0]} is out of range for {dataset} ({allowed})")


def diffusion_schedule(config: dict, dataset: str):
    """The reverse schedule of a dataset's diffusion model, or None for a bundle placed by hand (the job checks it
    when it loads the file)."""
    from densepure.core.schedule import cosine_schedule, make_schedule
    from densepure.models.diffusion import OFFICIAL
    from densepure.models.small_models import DIFFUSION_T

    entry = config["diffusion_models"][config["datasets"][dataset]["diffusion"]]
    if entry["arch"] in OFFICIAL:
        _, kind, T = OFFICIAL[entry["arch"]]
        return make_schedule(kind, T)
    if "schedule" in entry:  # your own network with its schedule
        try:
            return make_schedule(entry["schedule"]["kind"], entry["schedule"]["T"])
        except ValueError as err:
            raise ConfigError(f"diffusion_models.{config['datasets'][dataset]['diffusion']}.schedule: {err}") from None
    return cosine_schedule(DIFFUSION_T) if "train" in entry else None


def check_plans(where: str, schedule, sigmas: list[float], bs: list[int], methods: list[str]) -> None:
    """Every (sigma, b, method) of a panel has a reverse plan that is not silently wrong (densepure.core.schedule)."""
    from densepure.core.schedule import PlanError, make_plan

    for method in methods:
        for sigma in sigmas:
            for b in bs if method == "densepure" else [1]:
                try:
                    make_plan(sigma, b, schedule, method=method)
                except PlanError as err:
                    raise ConfigError(f"{where}.{'bs' if b > 1 else 'sigmas'}: {err}") from None


def check_kwargs(where: str, entry: dict, own: bool) -> None:
    """An entry's ``kwargs``: only for your own models and loaders (``own``), a mapping with string keys and JSON
    values (they travel to the job as JSON and are recorded with the votes)."""
    if "kwargs" not in entry:
        return
    kwargs = entry["kwargs"]
    if not own:
        raise ConfigError(f"{where}: keyword arguments are for your own models and loaders (timm:, module:function "
                          "or a registered name), not built-in ones")
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise ConfigError(f"{where}: a mapping with string keys, e.g. {{in_chans: 1}}; got {_show(kwargs)}")
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: values must be numbers, strings, booleans, null, lists or mappings ({err})"
                          ) from None


def _registered_classifier(name: str, entry: dict) -> bool:
    """Whether classifier ``name`` (without ``model``) is a network an installed package registers."""
    from densepure.models.classifiers import CLASSIFIERS, ClassifierError, get_classifier_spec

    if "model" in entry or name in CLASSIFIERS:
        return False
    try:
        return get_classifier_spec(name).plugin
    except ClassifierError:
        return False  # reported below with its name


def check_models(config: dict) -> None:
    """Registered datasets and classifiers (or your own, with a loader or model, or registered by an installed
    package), models with weights, training only what the workflow can train, kwargs only for your own."""
    from densepure.core.rng import check_count
    from densepure.models.classifiers import ClassifierError, get_classifier_spec
    from densepure.models.datasets import DATASETS, IMAGE_FOLDER, DataError, is_registered
    from densepure.plan.grid import PLUGIN_ARCH

    for name, spec in config["datasets"].items():
        loader = spec.get("loader")
        try:
            registered = loader is None and is_registered(name)
        except DataError as err:
            raise ConfigError(f"datasets.{name}: {err}") from None
        if loader is None and name not in DATASETS and not registered:
            raise ConfigError(f"datasets.{name}: unknown dataset (known: {', '.join(sorted(DATASETS))}); your own data "
                              f"needs `loader` ({IMAGE_FOLDER} or module:function)")
        check_kwargs(f"datasets.{name}.kwargs", spec, registered or loader not in (None, IMAGE_FOLDER))
        if loader == IMAGE_FOLDER and not spec.get("root"):
            raise ConfigError(f"datasets.{name}.root: the image folder of loader {IMAGE_FOLDER}")
        if loader is None and not registered and name != "digits" and not spec.get("root"):
            raise ConfigError(f"datasets.{name}.root: {name} needs its data folder (only the embedded digits has none)")
        if spec["diffusion"] not in config["diffusion_models"]:
            raise ConfigError(f"datasets.{name}.diffusion: unknown diffusion model {spec['diffusion']!r} "
                              f"(known: {', '.join(config['diffusion_models']) or 'none'})")
        try:
            check_count(spec["N0"] + spec["N"])
        except ValueError as err:
            raise ConfigError(f"datasets.{name}.N: {err}") from None
        for set_name, ids in spec["image_sets"].items():
            check_ids(f"datasets.{name}.image_sets.{set_name}", ids, name)
    owners: dict[str, str] = {}  # file -> the model it belongs to: one download (or hand-placed file) per model
    for section in ("diffusion_models", "classifiers"):
        for name, entry in config[section].items():
            own = "model" in entry or (section == "classifiers" and _registered_classifier(name, entry))
            if "train" in entry or (own and "file" not in entry):
                continue
            if "file" not in entry:
                raise ConfigError(f"{section}.{name}: needs `file` (downloaded or placed by hand), `train`, or your "
                                  "own `model`")
            if entry["file"] in owners:
                raise ConfigError(f"{section}.{name}.file: {entry['file']!r} is already the file of "
                                  f"{owners[entry['file']]}")
            owners[entry["file"]] = f"{section}.{name}"
    for name, entry in config["diffusion_models"].items():
        plugin = entry["arch"] == PLUGIN_ARCH
        if plugin != ("model" in entry) or plugin != ("schedule" in entry):
            raise ConfigError(f"diffusion_models.{name}: `model` (module:function) and `schedule` go together with "
                              f"arch: {PLUGIN_ARCH}")
        if "train" in entry and entry["arch"] != "bundle":
            raise ConfigError(f"diffusion_models.{name}.train: the workflow trains bundles (the digits UNet); "
                              f"arch {entry['arch']!r} is downloaded or placed by hand")
        check_kwargs(f"diffusion_models.{name}.kwargs", entry, plugin)
    for name, entry in config["classifiers"].items():
        check_kwargs(f"classifiers.{name}.kwargs", entry, "model" in entry or _registered_classifier(name, entry))
        if "model" in entry:  # your own classifier: a timm name, module:function or registered name
            continue
        try:
            get_classifier_spec(name)
        except ClassifierError as err:
            raise ConfigError(f"classifiers.{name}: {err}") from None
        if "train" in entry and name != "digits-cnn":
            raise ConfigError(f"classifiers.{name}.train: the workflow trains only digits-cnn")


def check_panel(config: dict, where: str, panel: dict) -> None:
    """A panel's names exist, its classifiers are of its dataset, its (sigma, b) have sound reverse plans."""
    from densepure.models.classifiers import get_classifier_spec

    dataset = panel["dataset"]
    if dataset not in config["datasets"]:
        raise ConfigError(f"{where}.dataset: {dataset!r} is not in `datasets` (known: {', '.join(config['datasets'])})")
    for classifier in panel["classifiers"]:
        if classifier not in config["classifiers"]:
            raise ConfigError(f"{where}.classifiers: {classifier!r} is not in `classifiers` "
                              f"(known: {', '.join(config['classifiers'])})")
        own = "model" in config["classifiers"][classifier]
        made_for = None if own else get_classifier_spec(classifier).dataset
        if made_for and made_for != dataset:
            raise ConfigError(f"{where}.classifiers: {classifier!r} is a classifier for {made_for}, not {dataset}")
    sets = config["datasets"][dataset]["image_sets"]
    if panel["images"] not in sets:
        raise ConfigError(f"{where}.images: {panel['images']!r} is not an image set of {dataset} "
                          f"(known: {', '.join(sets)})")
    if "mv_K" in panel:  # one K, or one K per b
        Ks = [*panel["Ks"], *panel.get("extra_Ks", [])]
        per_b = panel["mv_K"] if isinstance(panel["mv_K"], dict) else {b: panel["mv_K"] for b in panel["bs"]}
        for b, K in per_b.items():
            if int(b) not in panel["bs"]:
                raise ConfigError(f"{where}.mv_K: b = {b} is not one of the panel's bs {panel['bs']}")
            if K not in Ks:
                raise ConfigError(f"{where}.mv_K: {K} is not one of the panel's Ks or extra_Ks {Ks}")
    schedule = diffusion_schedule(config, dataset)
    if schedule is not None:
        check_plans(where, schedule, panel["sigmas"], panel["bs"], panel["methods"])


def check_figure_panel(where: str, panel: dict) -> None:
    """What densepure.report.panel_kind draws: curves (``radii: curve``) or a K ablation (radii listed, several Ks);
    listed radii with one K are a table."""
    if panel["radii"] != "curve" and len(panel["Ks"]) < 2:
        raise ConfigError(f"{where}.radii: a figure panel needs radii: curve, or listed radii with several Ks (a K "
                          "ablation); listed radii with one K are a table")


def check_artifacts(config: dict) -> None:
    from densepure.plan.grid import is_table

    for name, spec in config["artifacts"].items():
        for other in spec.get("derived_from", []):
            if other not in config["artifacts"]:
                raise ConfigError(f"artifacts.{name}.derived_from: {other!r} is not an artifact")
        for i, panel in enumerate(spec["panels"]):
            check_panel(config, f"artifacts.{name}.panels[{i}]", panel)
            if not is_table(name):
                check_figure_panel(f"artifacts.{name}.panels[{i}]", panel)


def check_mixture(where: str, components: list[dict], dim: int | None = None) -> list[int]:
    """A theory mixture (densepure.theory.exact.Mixture, whose other rules the schema states): one dimension for every
    mean (``dim`` if given), stds all > 0 (a mixture) or all 0 (a point set). Returns the labels."""
    dims = {len(c["mean"]) for c in components}
    if len(dims) > 1:
        raise ConfigError(f"{where}: the means have different dimensions ({', '.join(map(str, sorted(dims)))})")
    if dim is not None and dims != {dim}:
        raise ConfigError(f"{where}: the means have dimension {dims.pop()}, expected {dim}")
    if len({c["std"] > 0 for c in components}) > 1:
        raise ConfigError(f"{where}: stds must be all > 0 (a mixture) or all 0 (a point set), not both")
    return [c["label"] for c in components]


def check_theory(theory: dict) -> None:
    """The theory section: mixtures of one dimension (2-D for Figure 2), x_a and x0 that fit them, sound plans."""
    from densepure.core.schedule import make_schedule

    schedule = make_schedule(theory["schedule"]["kind"], theory["schedule"]["T"])
    s = theory["thm31"]
    check_mixture("theory.thm31.mixture", s["mixture"])
    dim = len(s["mixture"][0]["mean"])
    if len(s["x_a"]) != dim:
        raise ConfigError(f"theory.thm31.x_a: {_show(s['x_a'])} has {len(s['x_a'])} coordinates; the mixture's means "
                          f"have {dim}")
    check_plans("theory.thm31", schedule, s["sigmas"], s["bs"], ["densepure"])
    s = theory["fig2"]
    labels = check_mixture("theory.fig2.mixture", s["mixture"], 2)
    if s["x0"] >= len(labels):
        raise ConfigError(f"theory.fig2.x0: {s['x0']} is not a component index (0..{len(labels) - 1})")
    if set(labels) == {labels[s["x0"]]}:
        raise ConfigError("theory.fig2.mixture: needs a component with a label other than x0's")
    if not s["box"][0] < s["box"][1]:
        raise ConfigError(f"theory.fig2.box: {s['box']} must be [low, high] with low < high")
    check_plans("theory.fig2", schedule, [s["sigma"]], [2], ["densepure"])
    s = theory["radius"]
    check_mixture("theory.radius.mixture", s["mixture"])
    check_plans("theory.radius", schedule, s["sigmas"], [s["b"]], ["densepure", *s["one_shot"]])


def check_config(config: dict) -> None:
    """Everything a schema-valid config must also satisfy; ConfigError naming the first bad key."""
    check_finite(config)
    check_models(config)
    check_artifacts(config)
    if config.get("claims"):
        from densepure.plan import claims

        try:
            claims.load_claims(config)
        except claims.ConfigError as err:
            raise ConfigError(str(err)) from None
    if "theory" in config:
        check_theory(config["theory"])


def validate_config(config: dict, schema_path: str | os.PathLike = SCHEMA, cross_checks: bool = True) -> dict:
    """Validate a workflow config (defaults filled in, in place) and return it; ConfigError naming the first bad
    key. ``cross_checks=False`` runs the schema step only (it fills the defaults)."""
    check_schema(config, load_schema(schema_path))
    if cross_checks:
        check_config(config)
    return config


def validate_workflow_config(config: dict, schema_path: str | os.PathLike, cross_checks: bool = True,
                             config_files: Iterable[str | os.PathLike] = ()) -> dict:
    """:func:`validate_config` for the Snakefile: a mistake exits with ``densepure: config error: <one line>``
    (status 2) before Snakemake builds any job; ``DENSEPURE_DEBUG=1`` raises the ConfigError instead. The
    ``config_files`` Snakemake merged are read again to refuse a key given twice in one of them (Snakemake's
    loader keeps the last)."""
    try:
        for path in config_files:
            try:
                read_yaml(path, "config")
            except ValueError as err:
                raise ConfigError(str(err)) from None
        return validate_config(config, schema_path, cross_checks)
    except ConfigError as err:
        if os.environ.get("DENSEPURE_DEBUG"):
            raise
        print(f"densepure: config error: {err}", file=sys.stderr)
        sys.exit(2)


def load_config(path: str | Path) -> dict:
    """A workflow config (a file, or a packaged one by name: :func:`densepure.files.resources.config_file`), validated
    against the workflow's schema with its defaults filled in."""
    path = resources.config_file(path)
    config = read_yaml(path, "config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a workflow config must be a mapping")
    try:
        check_schema(config, load_schema(resources.resource(resources.SCHEMA)))
        check_config(config)
    except ConfigError as err:
        raise ValueError(f"{path}: {err}") from None
    return config


_IMAGE_COUNTS: dict[str, int] = {}


def check_job_data(config: dict, dataset: str, ids: Iterable[int]) -> None:
    """Before a certification job is planned: the data it reads is there. ImageNet (read from its folder, never
    downloaded): the folder, its 1,000 class folders and an image at every id (counted once per folder). DataError
    in one line naming what is missing; other datasets are checked by their download rule or their loader."""
    from densepure.models.datasets import DataError, check_imagenet_folder

    data = config["datasets"][dataset]
    if dataset != "imagenet" or data.get("loader"):
        return
    root = str(data["root"])
    if root not in _IMAGE_COUNTS:
        _IMAGE_COUNTS[root] = check_imagenet_folder(root)
    ids = list(ids)
    if ids and max(ids) >= _IMAGE_COUNTS[root]:
        raise DataError(f"ImageNet validation folder {root} holds {_IMAGE_COUNTS[root]} images; image id {max(ids)} "
                        f"does not exist (ids 0..{_IMAGE_COUNTS[root] - 1})")


def exit_on_data_error(config: dict, dataset: str, ids: Iterable[int]) -> None:
    """:func:`check_job_data` for the Snakefile: a missing dataset exits with ``densepure: data error: <one line>``
    (status 2) while Snakemake plans the jobs, before any runs (a dry run stops too)."""
    from densepure.models.datasets import DataError

    try:
        check_job_data(config, dataset, ids)
    except DataError as err:
        if os.environ.get("DENSEPURE_DEBUG"):
            raise
        print(f"densepure: data error: {err}", file=sys.stderr)
        sys.exit(2)
