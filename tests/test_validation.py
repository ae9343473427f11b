"""Config validation before any job (densepure.plan.validation): every mistake is one line naming the key and what is
allowed there. One table of (mistake, expected text); the validation function checks every row, the real
`snakemake -n` a few representative ones (schema, cross-check, reverse plan, device), in a copy of the workflow."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from densepure.core import rng
from densepure.job import execution
from densepure.models import datasets
from densepure.plan.validation import SCHEMA, ConfigError, load_schema, validate_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


def changed(config: dict, *edits: tuple[str, object]) -> dict:
    """A deep copy of ``config`` with each ``(dotted.path, value)`` set (list indices as numbers); value DELETE
    removes the key."""
    config = copy.deepcopy(config)
    for path, value in edits:
        *parents, last = path.split(".")
        node = config
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key = int(last) if isinstance(node, list) else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return config


def added(config: dict, parent: str, name: str, value) -> dict:
    """A deep copy of ``config`` with ``name`` (which may hold dots) set to ``value`` in the mapping at ``parent``."""
    config = copy.deepcopy(config)
    node = config
    for part in parent.split("."):
        node = node[part]
    node[name] = value
    return config


DELETE = object()
PANEL = "artifacts.fig3.panels.0"
DIGITS = "datasets.digits"
BEIT = ("classifiers.beit-large-512", {"file": "beit.pth"})

# (id, config, text the one-line error must contain)
MISTAKES = [
    # image sets: out of the dataset's range, empty, negative, unreadable, twice the same id
    ("ids-out-of-range", changed(DEFAULT, (f"{DIGITS}.image_sets.test30", "0:1000:20")),
     "datasets.digits.image_sets.test30: id 600 is out of range for digits (0..596)"),
    ("ids-empty", changed(DEFAULT, (f"{DIGITS}.image_sets.test30", "5:1")),
     "datasets.digits.image_sets.test30: '5:1' holds no image ids"),
    ("ids-negative", changed(DEFAULT, (f"{DIGITS}.image_sets.test30", "-1,3")),
     "datasets.digits.image_sets.test30: id -1 is out of range for digits (0..596)"),
    ("ids-unreadable", changed(DEFAULT, (f"{DIGITS}.image_sets.test30", "a:b")),
     "datasets.digits.image_sets.test30: cannot read image ids from 'a:b'"),
    ("ids-twice", changed(DEFAULT, (f"{DIGITS}.image_sets.test30", "0,20,0")),
     "datasets.digits.image_sets.test30: id 0 is listed twice"),
    ("ids-cifar10-range", changed(PAPER, ("datasets.cifar10.image_sets.cifar10_main", "0:10001:20")),
     "datasets.cifar10.image_sets.cifar10_main: id 10000 is out of range for cifar10 (0..9999)"),
    # names that become part of a path: plain names only (densepure.files.paths.safe_name), checked before the schema
    ("image-set-name", changed(DEFAULT, (f"{DIGITS}.image_sets.a/b", "0:5")),
     "datasets.digits.image_sets: 'a/b' is not a plain name (no folders, no leading dot)"),
    ("image-set-name-hidden", added(DEFAULT, f"{DIGITS}.image_sets", ".x", "0:5"),
     "datasets.digits.image_sets: '.x' is not a plain name"),
    ("run-up", changed(DEFAULT, ("run", "../x")), "run: '../x' is not a plain name (no folders, no leading dot)"),
    ("run-dotdot", changed(DEFAULT, ("run", "..")), "run: '..' is not a plain name"),
    ("run-absolute", changed(DEFAULT, ("run", "/tmp/x")), "run: '/tmp/x' is not a plain name"),
    ("run-empty", changed(DEFAULT, ("run", "")), "run: '' is empty; a name here becomes part of a file path"),
    ("dataset-name-up", added(DEFAULT, "datasets", "../evil", {**DEFAULT["datasets"]["digits"], "loader": "m:f"}),
     "datasets: '../evil' is not a plain name"),
    ("classifier-name-separator", changed(DEFAULT, ("classifiers.a\\b", {"model": "timm:resnet18"})),
     "classifiers: 'a\\\\b' is not a plain name"),
    ("diffusion-name-dotdot", added(DEFAULT, "diffusion_models", "..", {"arch": "bundle", "train": {}}),
     "diffusion_models: '..' is not a plain name"),
    ("artifact-name-up", added(DEFAULT, "artifacts", "../fig9", DEFAULT["artifacts"]["fig3"]),
     "artifacts: '../fig9' is not a plain name"),
    ("model-file-up", changed(PAPER, ("classifiers.wrn-28-10.file", "../../x.t7")),
     "classifiers.wrn-28-10.file: '../../x.t7' must be a relative path inside checkpoints_dir"),
    ("model-file-absolute", changed(PAPER, ("diffusion_models.improved-cifar10.file", "/x.pt")),
     "diffusion_models.improved-cifar10.file: '/x.pt' must be a relative path inside checkpoints_dir"),
    # names that are not registered or not defined
    ("classifier-unregistered", changed(DEFAULT, ("classifiers.resnet-9000", {"file": "r.pt"})),
     "classifiers.resnet-9000: unknown classifier 'resnet-9000'; known:"),
    ("dataset-unregistered", changed(DEFAULT, ("datasets.mnist", DEFAULT["datasets"]["digits"])),
     "datasets.mnist: unknown dataset (known: cifar10, digits, imagenet)"),
    ("panel-classifier-undefined", changed(DEFAULT, (f"{PANEL}.classifiers", ["digits-cnn", "resnet-9000"])),
     "artifacts.fig3.panels[0].classifiers: 'resnet-9000' is not in `classifiers` (known: digits-cnn)"),
    ("panel-dataset-undefined", changed(DEFAULT, (f"{PANEL}.dataset", "cifar10")),
     "artifacts.fig3.panels[0].dataset: 'cifar10' is not in `datasets` (known: digits)"),
    ("panel-images-undefined", changed(DEFAULT, (f"{PANEL}.images", "test31")),
     "artifacts.fig3.panels[0].images: 'test31' is not an image set of digits (known: test30)"),
    ("diffusion-undefined", changed(DEFAULT, (f"{DIGITS}.diffusion", "digits-unet2")),
     "datasets.digits.diffusion: unknown diffusion model 'digits-unet2' (known: digits-unet)"),
    ("classifier-of-another-dataset", changed(DEFAULT, BEIT, (f"{PANEL}.classifiers", ["beit-large-512"])),
     "artifacts.fig3.panels[0].classifiers: 'beit-large-512' is a classifier for imagenet, not digits"),
    ("derived-from-undefined", changed(DEFAULT, ("artifacts.fig3.derived_from", ["tableZ"])),
     "artifacts.fig3.derived_from: 'tableZ' is not an artifact"),
    # typos in keys: panels, artifacts, train options, top level
    ("panel-key-typo", changed(DEFAULT, (f"{PANEL}.max_radiuss", 1.0)),
     "artifacts.fig3.panels[0].max_radiuss: unknown key; did you mean 'max_radius'? (allowed: Ks, bs,"),
    ("artifact-key-typo", changed(DEFAULT, ("artifacts.fig3.sorce", "x")),
     "artifacts.fig3.sorce: unknown key; did you mean 'source'? (allowed: derived_from, enabled, envelopes, "
     "method_labels, note, pairs, panels, paper_methods,"),
    ("train-option-typo", changed(DEFAULT, ("classifiers.digits-cnn.train.epoch", 3)),
     "classifiers.digits-cnn.train.epoch: unknown key; did you mean 'epochs'? (allowed: epochs, seed)"),
    ("diffusion-train-typo", changed(DEFAULT, ("diffusion_models.digits-unet.train.step", 3)),
     "diffusion_models.digits-unet.train.step: unknown key; did you mean 'steps'? (allowed: batch, log_every,"),
    ("top-level-typo", changed(DEFAULT, ("seeds", 0)), "seeds: unknown key; did you mean 'seed'? (allowed: alpha,"),
    ("dataset-key-typo", changed(DEFAULT, (f"{DIGITS}.N_0", 3)), "datasets.digits.N_0: unknown key; did you mean"),
    ("artifact-name", changed(DEFAULT, ("artifacts.summary", DEFAULT["artifacts"]["fig3"])),
     "artifacts: \"summary\" does not match ^(table|fig)[A-Za-z0-9_]*$ (Tables are table followed by"),
    ("figure-with-table-radii", changed(DEFAULT, (f"{PANEL}.radii", [0.0, 0.5])),
     "artifacts.fig3.panels[0].radii: a figure panel needs radii: curve, or listed radii with several Ks"),
    ("dataset-root-missing", changed(PAPER, ("datasets.cifar10.root", None)),
     "datasets.cifar10.root: cifar10 needs its data folder"),
    ("file-twice", changed(PAPER, ("classifiers.wrn-50-2.file", "resnet152_a1h-dc400468.pth")),
     "classifiers.resnet-152.file: 'resnet152_a1h-dc400468.pth' is already the file of classifiers.wrn-50-2"),
    ("work_dir-empty", changed(DEFAULT, ("work_dir", "")), "work_dir: '' should be non-empty"),
    # values: enums, types, ranges, duplicates, missing keys
    ("device-gpu", changed(DEFAULT, ("device", "gpu")),
     "device: \"gpu\" does not match ^(auto|cpu|cuda(:[0-9]+)?)$ (Device for certification jobs: auto, cpu, cuda or"),
    ("method-unknown", changed(DEFAULT, (f"{PANEL}.methods.1", "dp")),
     "artifacts.fig3.panels[0].methods[1]: \"dp\" is not allowed (allowed: \"densepure\", \"onestep\", \"carlini\")"),
    ("radii-unknown", changed(DEFAULT, (f"{PANEL}.radii", "curvy")),
     "artifacts.fig3.panels[0].radii: \"curvy\" is not allowed (Table columns"),
    ("sigmas-twice", changed(DEFAULT, (f"{PANEL}.sigmas", [0.25, 0.5, 0.25])),
     "artifacts.fig3.panels[0].sigmas: 0.25 is listed twice; the values must be distinct"),
    ("Ks-twice", changed(DEFAULT, ("artifacts.fig4_left.panels.0.Ks", [1, 3, 3])),
     "artifacts.fig4_left.panels[0].Ks: 3 is listed twice"),
    ("sigma-zero", changed(DEFAULT, ("artifacts.table2.panels.0.sigmas", [0.25, 0.0])),
     "artifacts.table2.panels[0].sigmas[1]: 0.0 must be > 0"),
    ("sigma-negative", changed(DEFAULT, (f"{PANEL}.sigmas", [-0.5])),
     "artifacts.fig3.panels[0].sigmas[0]: -0.5 must be > 0"),
    ("sigma-inf", changed(DEFAULT, (f"{PANEL}.sigmas", [float("inf")])),
     "artifacts.fig3.panels[0].sigmas[0]: inf is not a finite number"),
    ("N-string", changed(DEFAULT, (f"{DIGITS}.N", "100")), "datasets.digits.N: \"100\" is not of type integer"),
    ("N-missing", changed(DEFAULT, (f"{DIGITS}.N", DELETE)),
     "datasets.digits.N: missing (required here: N, diffusion, image_sets)"),
    ("N-absurd", changed(DEFAULT, (f"{DIGITS}.N", 2**32)),
     "datasets.digits.N: N0 + N = 4294967316 exceeds 4294967296, the indices one 32-bit word"),
    ("alpha-one", changed(DEFAULT, ("alpha", 1)), "alpha: 1 must be < 1"),
    ("mv_K-not-a-K", changed(DEFAULT, ("artifacts.fig4_right.panels.0.mv_K", 7)),
     "artifacts.fig4_right.panels[0].mv_K: 7 is not one of the panel's Ks or extra_Ks"),
    # seeds beyond the noise key's 32-bit word
    ("seed-2^32", changed(DEFAULT, ("seed", 2**32)), "seed: 4294967296 must be <= 4294967295"),
    ("seed-negative", changed(DEFAULT, ("seed", -1)), "seed: -1 must be >= 0"),
    ("theory-seed", changed(DEFAULT, ("theory.seed", 2**32)), "theory.seed: 4294967296 must be <= 4294967295"),
    # what the workflow cannot train
    ("train-official-diffusion", changed(PAPER, ("diffusion_models.improved-cifar10.train", {})),
     "diffusion_models.improved-cifar10.train: the workflow trains bundles"),
    ("train-other-classifier", changed(PAPER, ("classifiers.wrn-28-10.train", {})),
     "classifiers.wrn-28-10.train: the workflow trains only digits-cnn"),
    # (sigma, b) whose reverse chain would repeat timesteps, or start beyond the schedule (densepure.core.schedule)
    ("b-beyond-t*", changed(DEFAULT, ("artifacts.fig4_right.panels.0.sigmas", [0.01]),
                            ("artifacts.fig4_right.panels.0.bs", [2, 50])),
     "artifacts.fig4_right.panels[0].bs: sigma 0.01, b 50: t* = 28.4868 on the cosine schedule with T = 4000: the "
     "visited timesteps repeat"),
    ("b-beyond-t*-imagenet", changed(PAPER, ("artifacts.fig4_right.panels.0.bs", [2, 5, 200])),
     "artifacts.fig4_right.panels[0].bs: sigma 0.25, b 200: t* = 144 on the linear schedule with T = 1000"),
    ("sigma-beyond-schedule", changed(DEFAULT, (f"{PANEL}.sigmas", [0.25, 1e9])),
     "artifacts.fig3.panels[0].bs: sigma 1e+09, b 5: t* = 4000 on the cosine schedule with T = 4000 is beyond"),
    ("sigma-tiny-imagenet", changed(PAPER, ("artifacts.tableB.panels.0.sigmas", [0.001])),
     "artifacts.tableB.panels[0].bs: sigma 0.001, b 10: t* = 999 on the linear schedule"),
    # inconsistent theory settings
    ("theory-b-beyond-t*", changed(DEFAULT, ("theory.schedule.T", 100)),
     "theory.thm31.bs: sigma 0.25, b 25: t* = 14 on the linear schedule with T = 100: the visited timesteps repeat"),
    ("theory-x_a-dimension", changed(DEFAULT, ("theory.thm31.x_a", [0.0, 0.0, 0.0])),
     "theory.thm31.x_a: [0.0, 0.0, 0.0] has 3 coordinates; the mixture's means have 2"),
    ("theory-means-dimensions", changed(DEFAULT, ("theory.radius.mixture.0.mean", [0.5])),
     "theory.radius.mixture: the means have different dimensions (1, 2)"),
    ("theory-fig2-x0", changed(DEFAULT, ("theory.fig2.x0", 4)), "theory.fig2.x0: 4 is not a component index (0..3)"),
    ("theory-fig2-one-label", changed(DEFAULT, ("theory.fig2.mixture.3.label", 0)),
     "theory.fig2.mixture: needs a component with a label other than x0's"),
    ("theory-fig2-box", changed(DEFAULT, ("theory.fig2.box", [1.2, -1.2])),
     "theory.fig2.box: [1.2, -1.2] must be [low, high] with low < high"),
    ("theory-mixed-stds", changed(DEFAULT, ("theory.thm31.mixture.0.std", 0.0)),
     "theory.thm31.mixture: stds must be all > 0 (a mixture) or all 0 (a point set), not both"),
    ("theory-key-typo", changed(DEFAULT, ("theory.radius.Kss", [1])),
     "theory.radius.Kss: unknown key; did you mean 'Ks'?"),
]


@pytest.mark.parametrize("config, message", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_each_config_mistake_is_one_line_naming_the_key(config, message):
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    text = str(err.value)
    assert message in text, text
    assert "\n" not in text and len(text) < 400, text


@pytest.mark.parametrize("name, config", [("default", DEFAULT), ("paper", PAPER)])
def test_the_shipped_configs_are_valid(name, config):
    validate_config(copy.deepcopy(config))


def test_defaults_are_filled_in_as_snakemake_fills_them():
    """The effective config (work/<run>/config.effective.yaml) stays what snakemake.utils.validate made of it."""
    from snakemake.utils import validate

    for config in (DEFAULT, PAPER):
        ours, theirs = copy.deepcopy(config), copy.deepcopy(config)
        validate_config(ours)
        validate(theirs, str(SCHEMA))
        assert ours == theirs


def test_schema_limits_are_the_packages():
    """The numbers the schema states are the ones the code enforces."""
    schema = load_schema()
    top = schema["properties"]
    assert top["seed"]["maximum"] == top["theory"]["properties"]["seed"]["maximum"] == rng.MAX_SEED
    assert top["device"]["pattern"] == f"^({execution.DEVICE_PATTERN})$"
    assert datasets.SIZES["digits"] == len(datasets.digits_arrays("test")[1])


def test_artifact_rules_are_the_reports():
    """Every table name the schema allows is one the report writes (the paper's layouts, or that of Tables A/B for
    any other name), and nothing else is a table; a figure panel the validation accepts is one the report can draw,
    and the other way round."""
    from densepure import report
    from densepure.plan.validation import check_figure_panel

    pattern = load_schema()["properties"]["artifacts"]["propertyNames"]["pattern"]
    assert set(report.TABLES) <= {"table1", "table2", "tableA", "tableB"}
    assert all(re.match(pattern, name) for name in ("table1", "tableB", "table3", "tabletiny", "fig3", "figG"))
    assert not any(re.match(pattern, name) for name in ("summary", "Table1", "fig-3", ""))
    panels = [p for c in (DEFAULT, PAPER) for name, a in c["artifacts"].items() if name.startswith("fig")
              for p in a["panels"]]
    for panel in [*panels, {**panels[0], "radii": [0.0, 0.5], "Ks": [10]}]:
        try:
            report.panel_kind(panel)
            drawable = True
        except ValueError:
            drawable = False
        try:
            check_figure_panel("panel", panel)
            accepted = True
        except ConfigError:
            accepted = False
        assert drawable == accepted, panel


# --- the real dry run stops with the one line, before any job ----------------------------------------------------

DRY_RUN_MISTAKES = ["panel-key-typo", "ids-out-of-range", "b-beyond-t*", "device-gpu", "run-up"]


@pytest.fixture(scope="module")
def workflow_dir(tmp_path_factory) -> Path:
    from test_workflow import workflow_copy

    return workflow_copy(tmp_path_factory.mktemp("workflow"))


@pytest.mark.slow
@pytest.mark.parametrize("mistake", DRY_RUN_MISTAKES)
def test_snakemake_dry_run_stops_with_the_line(workflow_dir, tmp_path, mistake):
    from test_workflow import snakemake

    _, config, message = next(m for m in MISTAKES if m[0] == mistake)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(workflow_dir, "-n", "--cores", "1", "all", "--configfile", str(path))
    # besides Snakemake's own notes that --configfile extends config/config.yaml and that it reads the profile
    lines = [line for line in result.stdout.strip().splitlines()
             if not line.startswith(("Config file ", "Using workflow specific profile "))]
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("densepure: config error: ") and message in lines[0], result.stdout[-2000:]
