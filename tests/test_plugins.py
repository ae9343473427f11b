"""Your own models and data from a workflow config, without editing the package: a classifier by timm name or by
an importable module:function, an eps-predicting diffusion network by module:function with its schedule, a
dataset as an image folder or an importable loader. Each goes through the workflow's dry run and one real CPU
certification job, with tiny networks and data this file makes (N0 = 4, N = 8, two images)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from densepure.cli.main import main
from densepure.models.plugins import PluginError, import_object, registered

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIGMA, B, K, N0, N = 0.5, 2, 2, 4, 8

PLUGIN_MODULE = '''
"""Tiny networks and data of the plug-in tests."""
import torch
from torch import nn


class TinyEps(nn.Module):
    """A 2-layer eps-predicting network, net(x, t) -> eps."""

    def __init__(self, channels):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(channels, 8, 3, padding=1), nn.Conv2d(8, channels, 3, padding=1)

    def forward(self, x, t):
        return self.conv2(torch.relu(self.conv1(x) + (t / 1000).view(-1, 1, 1, 1)))


class TinyClassifier(nn.Module):
    """A 2-layer classifier of purified images in [-1, 1]."""

    def __init__(self, channels, num_classes, width=8):
        super().__init__()
        self.conv, self.head = nn.Conv2d(channels, width, 3, padding=1), nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def eps_gray():
    return TinyEps(1)


def eps_rgb():
    return TinyEps(3)


def classifier_gray(num_classes):
    return TinyClassifier(1, num_classes)


def classifier_rgb_seeded(num_classes, width=8):
    """Builds its own weights (no file)."""
    torch.manual_seed(1)
    return TinyClassifier(3, num_classes, width)


class Constant(nn.Module):
    """Always says class ``label``, whatever the image."""

    def __init__(self, num_classes, label):
        super().__init__()
        self.register_buffer("logits", 10.0 * nn.functional.one_hot(torch.tensor(label), num_classes).float())

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def constant(num_classes, label=0):
    return Constant(num_classes, label)


class Squares:
    """Four 8 x 8 RGB images, a bright square at the top (class 0) or bottom (class 1)."""

    num_classes = 2

    def __init__(self, root):
        self.root = root

    def __len__(self):
        return 4

    def __getitem__(self, i):
        image = torch.zeros(3, 8, 8)
        rows = slice(0, 4) if i % 2 == 0 else slice(4, 8)
        image[:, rows, 2:6] = 1.0
        return image, i % 2


def squares(root):
    return Squares(root)
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch) -> Path:
    """The folder of the importable module ``tinyplug`` (on sys.path here, on PYTHONPATH for the workflow)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "tinyplug.py").write_text(PLUGIN_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("tinyplug", None)
    return folder


def workflow(dest: Path) -> Path:
    """The workflow (Snakefile(s), rules, schema, configs) copied into ``dest``."""
    for name in ("Snakefile", "workflow", "config"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (REPO / name).exists():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, dest / name)
    return dest


def snakemake(cwd: Path, plugins: Path, *args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(plugins), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=path)
    env.pop("SNAKEMAKE_PROFILE", None)
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, timeout=600,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def config_for(run: str, dataset: str, data: dict, diffusion: dict, classifier: str, entry: dict) -> dict:
    """A complete workflow config: one dataset, one diffusion model, one classifier, one table of one setting."""
    data = {"N0": N0, "N": N, "batch": 50, "precision": "fp32", "diffusion": "tiny-eps",
            "image_sets": {"two": "0,1"}, **data}
    return {"run": run, "work_dir": "work", "checkpoints_dir": "checkpoints", "shard_size": 2, "alpha": 0.01,
            "seed": 0, "device": "cpu", "threads": 1, "datasets": {dataset: data},
            "diffusion_models": {"tiny-eps": diffusion}, "classifiers": {classifier: entry},
            "artifacts": {"tableplug": {"panels": [{
                "dataset": dataset, "classifiers": [classifier], "sigmas": [SIGMA], "bs": [B], "Ks": [K],
                "methods": ["densepure"], "images": "two", "radii": [0.0, 0.25]}]}}}


def certify_through_the_workflow(work: Path, plugins: Path, config: dict) -> tuple[dict, list[str]]:
    """Dry run of the table's target, then the one certification job for real; its votes setting and TSV rows."""
    (work / "plug.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    dry = snakemake(work, plugins, "-n", "table_plug", "--cores", "1", "--configfile", "plug.yaml")
    assert dry.returncode == 0 and "Traceback" not in dry.stdout, dry.stdout[-3000:]
    certify_lines = [line for line in dry.stdout.splitlines() if line.strip().startswith("rule certify")]
    assert len(certify_lines) == 1, dry.stdout[-3000:]
    (dataset,), (classifier,) = config["datasets"], config["classifiers"]
    store = f"{dataset}/{classifier}/densepure-sigma{SIGMA:g}-b{B}-K{K}"
    shard = f"work/{config['run']}/shards/{store}/shard0.tsv"
    real = snakemake(work, plugins, shard, "--cores", "1", "--configfile", "plug.yaml")
    log = work / f"logs/{config['run']}/certify/{store}/shard0.log"
    assert real.returncode == 0, real.stdout[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
    setting = json.loads((work / f"work/{config['run']}/votes/{store}/setting.json").read_text())
    rows = (work / shard).read_text().splitlines()[1:]
    assert len(rows) == 2 and [r.split("\t")[6:8] for r in rows] == [[dataset, classifier]] * 2
    return setting, rows


def save_state(path: Path, module: torch.nn.Module) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), path)


@pytest.mark.slow
def test_own_diffusion_network_and_classifier_on_the_digits(tmp_path, plugins):
    """arch: plugin with its schedule and a state-dict file; a module:function classifier with its weights file."""
    import tinyplug

    work = workflow(tmp_path / "wf")
    torch.manual_seed(0)
    save_state(work / "checkpoints/eps.pt", tinyplug.eps_gray())
    save_state(work / "checkpoints/cnn.pt", tinyplug.classifier_gray(10))
    config = config_for("own-nets", "digits", {}, {"arch": "plugin", "model": "tinyplug:eps_gray",
                                                   "schedule": {"kind": "linear", "T": 1000}, "file": "eps.pt"},
                        "tiny-cnn", {"model": "tinyplug:classifier_gray", "file": "cnn.pt"})
    setting, _ = certify_through_the_workflow(work, plugins, config)
    assert setting["diffusion"] == "tinyplug:eps_gray" and setting["classifier"] == "tiny-cnn"
    assert setting["extra"] == {"classifier_model": "tinyplug:classifier_gray", "diffusion_schedule": "linear:1000"}
    assert all(setting["checkpoints"].values())  # both weights files are part of the setting


@pytest.mark.slow
def test_timm_classifier_on_an_image_folder(tmp_path, plugins):
    """A timm model by name (its pretrained config's preprocessing; weights from a file) on class folders of PNGs."""
    import timm

    work = workflow(tmp_path / "wf")
    rng = np.random.default_rng(0)
    for label, name in enumerate(("cat", "dog")):
        (work / "data/pets" / name).mkdir(parents=True)
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(work / "data/pets" / name / f"{label}.png")
    save_state(work / "checkpoints/effnet.pt", timm.create_model("test_efficientnet.r160_in1k", num_classes=2))
    config = config_for("timm-folder", "pets", {"loader": "image_folder", "root": "data/pets"},
                        {"arch": "plugin", "model": "tinyplug:eps_rgb", "schedule": {"kind": "cosine", "T": 4000}},
                        "effnet", {"model": "timm:test_efficientnet.r160_in1k", "file": "effnet.pt"})
    setting, rows = certify_through_the_workflow(work, plugins, config)
    assert setting["extra"] == {"classifier_model": "timm:test_efficientnet.r160_in1k", "dataset_loader":
                                "image_folder", "diffusion_schedule": "cosine:4000", "num_classes": 2}
    assert [r.split("\t")[1] for r in rows] == ["0", "1"]  # labels: the sorted class folders
    assert setting["checkpoints"]["diffusion"] is None  # the network needs no file


@pytest.mark.slow
def test_an_importable_dataset_loader(tmp_path, plugins):
    """A module:function dataset; the classifier's function builds its own weights (no file, no input)."""
    work = workflow(tmp_path / "wf")
    config = config_for("loader", "squares", {"loader": "tinyplug:squares"},
                        {"arch": "plugin", "model": "tinyplug:eps_rgb", "schedule": {"kind": "linear", "T": 1000}},
                        "tiny-rgb", {"model": "tinyplug:classifier_rgb_seeded"})
    setting, rows = certify_through_the_workflow(work, plugins, config)
    assert setting["extra"]["dataset_loader"] == "tinyplug:squares" and setting["extra"]["num_classes"] == 2
    assert setting["checkpoints"] == {"diffusion": None, "classifier": None}
    assert [r.split("\t")[1] for r in rows] == ["0", "1"]


# --- what goes wrong, in one line ---------------------------------------------------------------------------------


def test_an_unimportable_target_is_one_line(plugins):
    """pkgutil.resolve_name finds the object; each way it can fail is one line naming the reference."""
    (plugins / "broken.py").write_text("import nosuchdependency\n")
    (plugins / "raising.py").write_text("raise RuntimeError('no GPU here')\n")
    for spec, message in (
            ("nosuchmodule:f", "'nosuchmodule:f': cannot import nosuchmodule \\(no module named 'nosuchmodule'\\)"),
            ("tinyplug.sub:f", "cannot import tinyplug.sub"),
            ("broken:f", "'broken:f': cannot import broken \\(ModuleNotFoundError: No module named 'nosuchdependency'"),
            ("raising:f", "'raising:f': cannot import raising \\(RuntimeError: no GPU here\\)"),
            ("tinyplug:nothing", "'tinyplug:nothing': tinyplug has no attribute 'nothing'"),
            ("tinyplug:Squares.nothing", "tinyplug has no attribute 'Squares.nothing'"),
            ("tinyplug:Squares.num_classes", "not callable"),
            ("tinyplug.squares", "expected an importable 'package.module:function'"),  # a name, never imported
            ("no colon", "expected an importable")):
        with pytest.raises(PluginError, match=message) as info:
            import_object(spec, "classifier")
        assert "\n" not in str(info.value)
    assert import_object("tinyplug:squares", "dataset loader")(None).num_classes == 2
    assert import_object("tinyplug:Squares.__len__", "x") is sys.modules["tinyplug"].Squares.__len__


def test_certify_names_a_broken_plugin(plugins, tmp_path, capsys):
    args = ["certify", "--dataset", "squares", "--dataset-loader", "tinyplug:squares", "--ids", "0",
            "--diffusion", "tinyplug:eps_rgb", "--classifier", "tinyplug:missing", "--sigma", "0.5",
            "--device", "cpu", "--votes-dir", str(tmp_path / "v"), "--out", str(tmp_path / "o.tsv"), "--quiet"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == ("densepure: error: diffusion model tinyplug:eps_rgb: give its noise "
                                               "schedule (kind:T, e.g. linear:1000)")
    assert main(args + ["--diffusion-schedule", "linear:1000"]) == 2
    assert "classifier 'tinyplug:missing': tinyplug has no attribute 'missing'" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (lambda c: c["datasets"].update(mine=c["datasets"].pop("digits")), "datasets.mine: unknown dataset"),
    (lambda c: c["datasets"]["digits"].update(loader="image_folder"), "datasets.digits.root"),
    (lambda c: c["diffusion_models"]["tiny-eps"].pop("schedule"), "diffusion_models.tiny-eps: `model`"),
    (lambda c: c["classifiers"]["tiny-cnn"].pop("model"), "classifiers.tiny-cnn: needs `file`"),
    (lambda c: c["classifiers"]["tiny-cnn"].update(kwargs={1: 2}), "classifiers.tiny-cnn.kwargs: a mapping with string"),
    (lambda c: c["classifiers"]["tiny-cnn"].update(kwargs={"at": {1, 2}}), "classifiers.tiny-cnn.kwargs: values must"),
    (lambda c: c["classifiers"].update({"digits-cnn": {"train": {}, "kwargs": {"width": 2}}}),
     "classifiers.digits-cnn.kwargs: keyword arguments are for your own"),
    (lambda c: c["datasets"]["digits"].update(kwargs={"split": "test"}), "datasets.digits.kwargs: keyword arguments"),
    (lambda c: c["diffusion_models"]["tiny-eps"].update(kwargs=[1]), "diffusion_models.tiny-eps.kwargs"),
    (lambda c: c["diffusion_models"]["tiny-eps"]["schedule"].update(T=20),
     r"diffusion_models.tiny-eps.schedule: a linear schedule needs T > 20 \(its largest beta, 20 / T"),
])
def test_config_cross_checks(change, message):
    config = config_for("x", "digits", {}, {"arch": "plugin", "model": "m:f", "schedule": {"kind": "linear", "T": 100}},
                        "tiny-cnn", {"model": "m:g"})
    from densepure.plan.validation import check_config

    check_config(config)
    change(config)
    for panel in config["artifacts"]["tableplug"]["panels"]:
        panel["dataset"] = next(iter(config["datasets"]))
    with pytest.raises(ValueError, match=message):
        check_config(config)


def test_estimate_asks_for_the_rate_of_your_own_network(tmp_path):
    from densepure.plan import estimate as est
    from densepure.plan import rates as plan_rates

    config = config_for("x", "digits", {}, {"arch": "plugin", "model": "m:f", "schedule": {"kind": "linear", "T": 100}},
                        "tiny-cnn", {"model": "m:g"})
    with pytest.raises(plan_rates.RatesError, match="'tiny-eps' in fp32"):
        est.estimate(config)
    rates = plan_rates.load_rates(None)
    rates["diffusion"]["tiny-eps"] = {"fp32": 1000.0}
    rates["classifiers"]["tiny-cnn"] = 5000.0
    _, total = est.estimate(config, rates)
    draws = 2 * (N0 + N)  # two images
    assert total.unet_calls == draws * (1 + (B - 1) * K) and total.classifier_calls == draws * K


# --- names installed packages register (entry points) -------------------------------------------------------------

PYPROJECT = '''
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "densepure-tinypkg"
version = "0.1"

[tool.setuptools]
py-modules = ["tinypkg"]

[project.entry-points."densepure.classifiers"]
always = "tinypkg:constant"
wrn-28-10 = "tinypkg:classifier_rgb_seeded"

[project.entry-points."densepure.diffusion_models"]
tiny-eps = "tinypkg:eps_rgb"

[project.entry-points."densepure.datasets"]
tinysquares = "tinypkg:squares"
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A throwaway package registering a classifier (and, to be refused, the built-in name wrn-28-10), a diffusion
    network and a dataset, installed offline into a folder of its own (on PYTHONPATH for the commands)."""
    root = tmp_path_factory.mktemp("tinypkg")
    (root / "src").mkdir()
    (root / "src/pyproject.toml").write_text(PYPROJECT)
    (root / "src/tinypkg.py").write_text(PLUGIN_MODULE)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(root / "site"), str(root / "src")], check=True, timeout=300)
    return root / "site"


def densepure(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    return subprocess.run([str(BIN / "densepure"), *args], cwd=cwd, env=env, timeout=600, capture_output=True,
                          text=True)


def test_certify_with_the_names_a_package_registers(site, tmp_path):
    """`densepure certify` names the package's dataset, diffusion network and classifier like built-in ones; the
    classifier's kwargs reach its function (label=1: every image is called 1) and are part of the setting."""
    args = ["certify", "--dataset", "tinysquares", "--ids", "0,1", "--diffusion", "tiny-eps", "--diffusion-schedule",
            "linear:1000", "--classifier", "always", "--classifier-kwargs", '{"label": 1}', "--sigma", "0.5",
            "--b", "2", "--K", "2", "--N0", "4", "--N", "8", "--alpha", "0.1", "--device", "cpu", "--votes-dir", "votes",
            "--out", "out.tsv", "--quiet"]
    result = densepure(site, tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in (tmp_path / "out.tsv").read_text().splitlines()[1:]]
    assert [row[1:3] for row in rows] == [["0", "1"], ["1", "1"]]  # labels 0, 1; predicted 1 both (8 of 8 votes)
    setting = json.loads((tmp_path / "votes/setting.json").read_text())
    assert (setting["dataset"], setting["diffusion"], setting["classifier"]) == ("tinysquares", "tiny-eps", "always")
    assert setting["extra"] == {"classifier_kwargs": {"label": 1}, "diffusion_schedule": "linear:1000",
                                "num_classes": 2}
    other = [{'{"label": 1}': '{"label": 0}'}.get(arg, arg) for arg in args]
    refused = densepure(site, tmp_path, *other)  # other kwargs, other votes: the store refuses them
    assert refused.returncode != 0 and "classifier_kwargs" in refused.stderr, refused.stderr[-3000:]


def test_a_registered_builtin_name_is_refused(site, tmp_path):
    result = densepure(site, tmp_path, "certify", "--dataset", "cifar10", "--data-root", ".", "--ids", "0",
                       "--diffusion", "improved-cifar10", "--classifier", "wrn-28-10", "--sigma", "0.5",
                       "--votes-dir", "v", "--out", "o.tsv")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "densepure: error: classifier 'wrn-28-10' is built in, and an installed package registers it too "
        "(tinypkg:classifier_rgb_seeded, entry-point group densepure.classifiers); rename that entry point"]


def test_registered_names_are_found_in_the_library(site, monkeypatch):
    from densepure.models.classifiers import ClassifierError, get_classifier_spec, list_classifiers
    from densepure.models.datasets import load_dataset

    assert "always" not in registered("classifier")
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop("tinypkg", None)
    assert registered("classifier") == {"always": "tinypkg:constant", "wrn-28-10": "tinypkg:classifier_rgb_seeded"}
    assert registered("dataset") == {"tinysquares": "tinypkg:squares"}
    assert get_classifier_spec("always").plugin and "always" in list_classifiers()
    assert load_dataset("tinysquares").num_classes == 2
    with pytest.raises(ClassifierError, match="'wrn-28-10' is built in"):
        get_classifier_spec("wrn-28-10")


@pytest.mark.slow
def test_registered_names_in_a_workflow_config(tmp_path, site):
    """The package's dataset and classifier by their names as the config's keys, its diffusion network as `model`;
    the classifier's kwargs travel to the job and into its setting."""
    work = workflow(tmp_path / "wf")
    config = config_for("registered", "tinysquares", {}, {"arch": "plugin", "model": "tiny-eps",
                                                         "schedule": {"kind": "linear", "T": 1000}},
                        "always", {"kwargs": {"label": 1}})
    setting, rows = certify_through_the_workflow(work, site, config)
    assert setting["extra"] == {"classifier_kwargs": {"label": 1}, "diffusion_schedule": "linear:1000",
                                "num_classes": 2}
    assert setting["checkpoints"] == {"diffusion": None, "classifier": None}
    # both select class 1: image 1 is certified as 1, image 0 (label 0) is skipped as hopeless (no predict)
    assert [r.split("\t")[1:3] for r in rows] == [["0", ""], ["1", "1"]]


@pytest.mark.slow
def test_timm_classifier_with_kwargs_on_the_digits(tmp_path, plugins):
    """`kwargs: {in_chans: 1}` builds a one-channel timm model for the grey digits; its weights file fits it."""
    import timm

    work = workflow(tmp_path / "wf")
    save_state(work / "checkpoints/effnet1.pt", timm.create_model("test_efficientnet.r160_in1k", num_classes=10,
                                                                  in_chans=1))
    config = config_for("timm-kwargs", "digits", {}, {"arch": "plugin", "model": "tinyplug:eps_gray",
                                                     "schedule": {"kind": "linear", "T": 1000}},
                        "effnet1", {"model": "timm:test_efficientnet.r160_in1k", "kwargs": {"in_chans": 1},
                                    "file": "effnet1.pt"})
    setting, _ = certify_through_the_workflow(work, plugins, config)
    assert setting["extra"] == {"classifier_model": "timm:test_efficientnet.r160_in1k",
                                "classifier_kwargs": {"in_chans": 1}, "diffusion_schedule": "linear:1000"}
