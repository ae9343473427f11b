"""The package as users install it: a wheel built from the repository, installed into a fresh venv outside it, runs
`densepure estimate`, builds Table 1 with the paper's numbers and rejects a bad config with one line; and the
dependency declarations (ranges in pyproject.toml, exact pins in constraints.txt) agree.

No network: the wheel is built with the running interpreter's setuptools and installed without dependencies; the
venv reaches the running interpreter's site-packages for them through a .pth file (which adds the folder to
sys.path but runs none of its own .pth files, so the editable install of the checkout stays out).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# What the wheel is built from (the rest of the repository is not part of the package).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "densepure", "config", "workflow/schemas", "results/paper")
# Installed without extras: the workflow and DVC are absent (a finder in the venv refuses them, since the venv borrows
# the running interpreter's site-packages for the library's own dependencies).
EXTRAS_ONLY = ("snakemake", "snakemake_executor_plugin_slurm", "dvc", "mkdocs", "mkdocstrings")
BLOCK_EXTRAS = f"""import sys
from importlib.abc import MetaPathFinder


class _WithoutExtras(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed: an extra)", name=name)
        return None


sys.meta_path.insert(0, _WithoutExtras())
"""


def run(args: list, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout[-2000:]}\n"
                    f"{result.stderr[-2000:]}")
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict:
    """A fresh venv outside the repository with the wheel installed: its bin folder, environment and a work folder."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"ignore": shutil.ignore_patterns("__pycache__")} if (REPO / name).is_dir() else {}
        copy(REPO / name, src / name, **kwargs)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", root / "dist", src], cwd=root)
    (wheel,) = (root / "dist").glob("densepure-*.whl")
    run([sys.executable, "-m", "venv", "--without-pip", root / "venv"], cwd=root)
    python = root / "venv" / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], cwd=root)
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "shared_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    (site / "sitecustomize.py").write_text(BLOCK_EXTRAS)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    work = root / "work"
    work.mkdir()
    return {"bin": python.parent, "env": env, "work": work, "site": site}


def densepure(venv: dict, *args, check: bool = True) -> subprocess.CompletedProcess:
    return run([venv["bin"] / "densepure", *args], cwd=venv["work"], env=venv["env"], check=check)


def test_the_wheel_is_imported_not_the_checkout(venv):
    out = run([venv["bin"] / "python", "-c", "import densepure, densepure.files.resources as r; print(densepure.__file__); "
               "print(r.resource(r.SCHEMA))"], cwd=venv["work"], env=venv["env"]).stdout.split()
    assert Path(out[0]).is_relative_to(venv["site"]), out
    assert Path(out[1]) == venv["site"] / "densepure/_resources/workflow/schemas/config.schema.yaml"


def test_estimate_runs_on_the_packaged_configs(venv):
    default = densepure(venv, "estimate").stdout
    assert "_resources/config/config.yaml" in default and "run 'default'" in default
    paper = densepure(venv, "estimate", "--configfile", "config/paper.yaml", "--format", "csv").stdout
    total = next(row for row in csv.DictReader(paper.splitlines()) if row["artifact"] == "total")
    assert int(total["stores"]) == 37 and int(total["jobs"]) == 3600  # one-shot images come from DensePure jobs


def _table1_results(folder: Path) -> list[Path]:
    """One certification TSV per Table 1 setting of config/paper.yaml; every image certified at radius 0.6."""
    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    header = "idx label predict radius correct time dataset classifier method sigma b K N0 N alpha precision"
    paths = []
    for panel in config["artifacts"]["table1"]["panels"]:
        start, stop, step = map(int, config["datasets"][panel["dataset"]]["image_sets"][panel["images"]].split(":"))
        for method in panel["methods"]:
            b, K = (1, 1) if method == "onestep" else (panel["bs"][0], panel["Ks"][0])
            for sigma in panel["sigmas"]:
                path = folder / f"{panel['dataset']}-{method}-{sigma}.tsv"
                rows = [f"{i}\t1\t1\t0.6\t1\t0:00:01\t{panel['dataset']}\t{panel['classifiers'][0]}\t{method}\t"
                        f"{sigma}\t{b}\t{K}\t100\t100000\t0.001\tfp32" for i in range(start, stop, step)]
                path.write_text("\n".join([header.replace(" ", "\t"), *rows]) + "\n")
                paths.append(path)
    return paths


def test_table_1_quotes_the_papers_numbers(venv):
    results = _table1_results(venv["work"])
    densepure(venv, "table", "--artifact", "table1", "--spec", "config/paper.yaml", "--results", *results,
              "--outdir", "tables")
    cells = list(csv.DictReader((venv["work"] / "tables/table1_cells.csv").open()))
    quoted = {(c["dataset_label"], c["method_key"], float(c["radius"])): float(c["certified_accuracy"])
              for c in cells if c["reproduced"] == "False"}
    paper = {(r["dataset"], r["method_key"], float(r["radius"])): float(r["certified_accuracy"])
             for r in csv.DictReader((REPO / "results/paper/table1.csv").open())
             if r["method_key"] not in ("densepure", "carlini", "onestep")}
    assert quoted == paper and len(paper) > 10
    ours = [c for c in cells if c["reproduced"] == "True"]
    assert ours and all(float(c["certified_accuracy"]) == (100.0 if float(c["radius"]) <= 0.6 else 0.0) for c in ours)
    compared = densepure(venv, "compare", "--artifact", "tableA", "--spec", "config/paper.yaml", "--results",
                         *results, "--out", "compare.csv").stdout
    assert "compare.csv:" in compared and "0 not reproduced" in compared  # the packaged results/paper/tableA.csv


def test_a_bad_config_is_one_line_naming_the_key(venv):
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["shard_size"] = 0
    (venv["work"] / "bad.yaml").write_text(yaml.safe_dump(config))
    result = densepure(venv, "estimate", "--configfile", "bad.yaml", check=False)
    assert result.returncode == 2 and not result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("densepure: error: bad.yaml") and "shard_size" in lines[0]


# --- dependency declarations ------------------------------------------------------------------------------------


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned, f"constraints.txt: {line!r} is not an exact pin"
            pins[name.lower().replace("_", "-")] = pinned
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras if Requirement(r).name != "densepure"]


def test_the_library_needs_no_extra():
    """The dependencies are what the library imports; the workflow, DVC and the docs are extras, and `dev` (what
    `make` installs) holds them all."""
    import ast

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {Requirement(r).name.lower() for r in project["dependencies"]}
    assert not core & {"snakemake", "snakemake-executor-plugin-slurm", "dvc", "mkdocs", "mkdocstrings"}
    assert Requirement(project["optional-dependencies"]["dev"][0]).extras == {"workflow", "dvc", "docs"}
    imported = set()
    for path in (REPO / "densepure").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    assert not imported & set(EXTRAS_ONLY), imported & set(EXTRAS_ONLY)


def test_the_commands_run_without_the_extras(venv, tmp_path):
    """aggregate, table, figure, import, compare and estimate from an empty folder, in the venv without the
    extras, on the embedded default's stored votes."""
    assert run([venv["bin"] / "python", "-c", "import snakemake"], cwd=venv["work"], env=venv["env"],
               check=False).returncode == 1
    work = tmp_path / "empty"
    work.mkdir()
    for store in sorted((REPO / "tests/expected/default/votes").rglob("setting.json")):
        K = store.parent.name.rpartition("-K")[2]
        run([venv["bin"] / "densepure", "aggregate", "--votes-dir", store.parent, "--K", K, "--out",
             f"results/{store.parent.name}/K{{K}}.tsv"], cwd=work, env=venv["env"])
    log = work / "log.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.5\t1\t0:00:01\n")
    shards = "results"
    for args in (["table", "--artifact", "tableA", "--spec", "default", "--results", shards, "--outdir", "t"],
                 ["figure", "--artifact", "fig3", "--spec", "default", "--results", shards, "--outdir", "f"],
                 ["import", "cohen", "log.tsv", "--dataset", "cifar10", "--classifier", "c", "--method", "cohen",
                  "--sigma", "0.25", "--out", "imported"],
                 ["compare", "--artifact", "tableA", "--spec", "default", "--results", shards, "--out", "c.csv"],
                 ["estimate"]):
        run([venv["bin"] / "densepure", *args], cwd=work, env=venv["env"])
    assert (work / "t" / "tableA.csv").is_file() and (work / "f" / "fig3.png").is_file()


def test_the_pins_lie_in_the_declared_ranges():
    pins = _constraints()
    for requirement in _declared():
        name = requirement.name.lower()
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"
    torch = next(r for r in _declared() if r.name == "torch")
    assert torch.specifier.contains("2.4.0") and not torch.specifier.contains("3.0.0")  # a cluster's 2.x build


def test_the_running_stack_is_the_pinned_one():
    """The venv `make` builds holds exactly constraints.txt (what the embedded default's stored numbers need)."""
    wrong = []
    for name, pinned in _constraints().items():
        try:
            installed = version(name)
        except PackageNotFoundError:  # platform-specific wheels (e.g. CUDA libraries) are absent elsewhere
            continue
        if installed != pinned:
            wrong.append(f"{name} {installed} (pinned {pinned})")
    assert not wrong, "installed versions differ from constraints.txt: " + ", ".join(wrong)
