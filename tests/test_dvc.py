"""DVC for real: what `dvc repro` computed can be pushed, deleted, pulled back, and Snakemake then has nothing to redo.

Runs on a copy of the `default_run` clone (tests/conftest.py), whose `dvc repro` computed the embedded default.
The remote is a local folder; DVC runs offline (DVC_NO_ANALYTICS=1). Commands name their dvc.yaml: without a target,
DVC would also visit pipelines/reproduction/dvc.yaml, which has no dvc.lock in a clone that never ran the paper.
"""

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run

TRACKED = ("work/default/models", "work/default/votes", "work/default/shards", "results/default",
           "paper_figures/default")
# dvc.yaml file -> {output: persist?}: models, checkpoints, votes and shards must survive a rerun
PIPELINES = {
    "dvc.yaml": {"work/default/models": True, "work/default/votes": True, "work/default/shards": True,
                 "results/default": False, "paper_figures/default": False},
    "pipelines/reproduction/dvc.yaml": {
        "checkpoints": True, "data/cifar10": True, "work/reproduction/votes": True,
        "work/reproduction/shards": True, "results/reproduction": False, "paper_figures/reproduction": False},
}


def digests(repo: Path) -> dict[str, str]:
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
            for top in TRACKED for p in sorted((repo / top).rglob("*")) if p.is_file() and p.name != ".gitignore"}


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_expensive_outputs_persist(pipeline):
    """No stage may delete models, checkpoints, votes or shard TSVs before rerunning (Snakemake resumes from them)."""
    stages = yaml.safe_load((ROOT / pipeline).read_text())["stages"]
    outs = {}
    for stage in stages.values():
        for out in stage["outs"]:
            path, options = next(iter(out.items())) if isinstance(out, dict) else (out, {})
            outs[path] = options.get("persist", False)
    assert outs == PIPELINES[pipeline]


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_dvc_accepts_the_pipeline(pipeline):
    """DVC parses the stages and chains them (models/downloads -> votes -> report)."""
    dag = run(["dvc", "dag", "--md", pipeline], ROOT).stdout
    assert dag.count("-->") == 2, dag


@pytest.fixture
def clone(default_run, tmp_path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(default_run, repo, symlinks=True)
    return repo


def fresh_clone_state(repo: Path) -> None:
    """A colleague's fresh clone: no outputs, no DVC cache, no Snakemake metadata."""
    for path in [*TRACKED, ".dvc/cache", ".snakemake"]:
        shutil.rmtree(repo / path, ignore_errors=True)


@pytest.mark.slow
def test_push_delete_pull_then_snakemake_has_nothing_to_do(clone, tmp_path):
    run(["dvc", "status", "-q", "dvc.yaml"], clone)  # exits 1 if anything is out of date with dvc.lock
    before = digests(clone)
    assert any(name.endswith("_cells.csv") for name in before) and any(name.endswith(".npz") for name in before)

    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote")], clone)
    run(["dvc", "push", "dvc.yaml"], clone)
    fresh_clone_state(clone)
    assert not (clone / "results/default/tables/tableA_cells.csv").exists()

    run(["dvc", "pull", "dvc.yaml"], clone)
    assert digests(clone) == before
    run(["make", "restore"], clone)
    result = run(["snakemake", "-n", "all"], clone)
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-2000:]
    assert digests(clone) == before

    # Only the votes (no models), then every table and figure rebuilt on the CPU.
    fresh_clone_state(clone)
    run(["dvc", "pull", "votes"], clone)
    assert not (clone / "work/default/models").exists()
    run(["make", "report-from-votes"], clone)
    numbers = {name: digest for name, digest in before.items() if name.endswith(("_cells.csv", "_data.csv"))}
    assert len(numbers) >= 5
    assert {name: digests(clone).get(name) for name in numbers} == numbers


@pytest.mark.slow
def test_forced_rerun_keeps_the_votes(clone):
    """`dvc repro -f` of the votes stage: DVC keeps the stores and Snakemake recomputes nothing."""
    votes = sorted((clone / "work/default/votes").rglob("*.npz"))
    stamps = {p: os.stat(p).st_mtime_ns for p in votes}
    result = run(["dvc", "repro", "-f", "-s", "votes"], clone)
    assert "Nothing to be done" in result.stdout + result.stderr
    assert {p: os.stat(p).st_mtime_ns for p in votes} == stamps
