"""Data before GPUs: a run that would send certification jobs without their data stops while Snakemake plans it (a
dry run too), with one line naming what is missing; CIFAR-10 comes from its download rule, which the certification
jobs depend on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from densepure.models.datasets import DataError, check_imagenet_folder

REPO = Path(__file__).resolve().parents[1]


def fake_imagenet(root: Path, classes: int = 1000, per_class: int = 1) -> Path:
    for c in range(classes):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            (folder / f"ILSVRC2012_val_{c:04d}{i}.JPEG").write_bytes(b"")
    return root


def dry_run(*args, cwd=REPO) -> subprocess.CompletedProcess:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run(["snakemake", "-n", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_the_folder_check(tmp_path):
    with pytest.raises(DataError, match="ImageNet validation folder not found"):
        check_imagenet_folder(tmp_path / "val")
    fake_imagenet(tmp_path / "few", classes=999)
    with pytest.raises(DataError, match="has 999 class folders, expected 1000"):
        check_imagenet_folder(tmp_path / "few")
    root = fake_imagenet(tmp_path / "val", per_class=2)
    assert check_imagenet_folder(root, ids=[0, 1999]) == 2000
    with pytest.raises(DataError, match="image id 2000 of the configured panels does not exist"):
        check_imagenet_folder(root, ids=[2000])


@pytest.mark.slow
def test_a_dry_run_of_table_b_without_imagenet_stops_before_any_job(tmp_path):
    missing = dry_run("--profile", "slurm", "table_B", "--configfile", "config/paper.yaml")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith(
        "densepure: data error: ImageNet validation folder not found: data/imagenet/val")
    # a folder with every class but too few images: the panels' ids (up to 49900) do not exist
    root = fake_imagenet(tmp_path / "val", per_class=2)
    extra = tmp_path / "data.yaml"
    extra.write_text(f"datasets:\n  imagenet:\n    root: {root}\n")
    short = dry_run("table_B", "--configfile", "config/paper.yaml", str(extra))
    assert short.returncode == 2
    assert "image id 49900 does not exist (ids 0..1999)" in short.stderr.strip().splitlines()[-1]
    # the claims' wave jobs are certification jobs: a dry run of the paper's claims stops the same way
    claims = dry_run("claims", "--configfile", "config/paper.yaml")
    assert claims.returncode == 2
    assert claims.stderr.strip().splitlines()[-1].startswith(
        "densepure: data error: ImageNet validation folder not found: data/imagenet/val")


@pytest.mark.slow
def test_cifar10_is_downloaded_by_a_rule_the_certification_jobs_wait_for(tmp_path):
    plan = dry_run("table_A", "--configfile", "config/paper.yaml")
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "download_cifar10" in plan.stdout and "certify" in plan.stdout
