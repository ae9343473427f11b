"""Shared test helpers: the reference fixtures copied from the reference code's runs (see fixtures/README.md)."""

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def load_json(name: str):
    return json.loads((FIXTURES / name).read_text())


def load_npz(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


# --- the embedded default, run for real (tests/test_default.py, test_dvc.py, test_slurm.py) ----------------------

ROOT = Path(__file__).resolve().parents[1]
# What a clone needs to run the workflow and its DVC stages (the package itself is installed from ROOT, editable;
# dvc.yaml's deps read the copy of densepure/).
PROJECT_FILES = ("Snakefile", "workflow", "config", "densepure", "results/paper", "profiles", "slurm", "dvc.yaml", "pipelines",
                 ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore", "Makefile", "pyproject.toml",
                 "constraints.txt")


def tool_env() -> dict[str, str]:
    """The environment of the workflow commands: this interpreter's bin first on PATH, DVC offline."""
    import os
    import sys
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    env.pop("SNAKEMAKE_PROFILE", None)  # the local run must not pick up a user's cluster profile
    return env


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True):
    """Run a command; on failure, fail the test with the end of its output."""
    import subprocess
    result = subprocess.run(args, cwd=cwd, env=env or tool_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"`{' '.join(args)}` exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def project_clone(dest: Path) -> Path:
    """A git repository with the project's workflow files at ``dest``, like a user's clone."""
    import os
    import shutil
    for name in PROJECT_FILES:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():  # the root `slurm` -> profiles/slurm stays a link
            (dest / name).symlink_to(os.readlink(ROOT / name))
        elif (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, dest / name)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "add", "-A"], dest)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-qm", "clone"], dest)
    return dest


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """The embedded default computed from scratch by `dvc repro` (its stages run Snakemake locally, 2 cores)."""
    clone = project_clone(tmp_path_factory.mktemp("default") / "repo")
    run(["dvc", "repro"], clone)
    return clone
