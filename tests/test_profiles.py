"""The Snakemake profiles as Snakemake 9 reads them: profiles/slurm (also `--profile slurm` from the repository root),
profiles/local, and the workflow profile profiles/default that Snakemake reads without a flag. Dry runs show what
each job asks for: a certification job of config/paper.yaml one GPU and the workflow profile's time limit and
memory per CPU; the embedded default (`device: cpu`) no GPU. tests/test_slurm.py submits for real.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from test_workflow import dry_run, snakemake, workflow_copy

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PROFILE = REPO / "profiles" / "default" / "profile.yaml"
CERTIFY = yaml.safe_load(WORKFLOW_PROFILE.read_text())["set-resources"]["certify"]


def test_profiles_live_in_one_folder_and_slurm_links_there():
    assert sorted(p.name for p in (REPO / "profiles").iterdir()) == ["default", "local", "slurm"]
    for name in ("default", "local", "slurm"):
        assert [p.name for p in (REPO / "profiles" / name).iterdir()] == ["profile.yaml"], name
    # a relative link, so that a clone anywhere resolves it
    assert (REPO / "slurm").is_symlink() and os.readlink(REPO / "slurm") == "profiles/slurm"


def test_snakemake_reads_profile_yaml():
    """Snakemake 9.27's own lookup: a bare name relative to the working directory, then the file name."""
    from snakemake.cli import get_profile_dir

    cwd = Path.cwd()
    try:
        os.chdir(REPO)
        folder, file = get_profile_dir("slurm")
        assert (folder / file.name).resolve() == (REPO / "profiles" / "slurm" / "profile.yaml").resolve()
        assert get_profile_dir("profiles/local")[1].name == "profile.yaml"
    finally:
        os.chdir(cwd)


def test_slurm_profile():
    slurm = yaml.safe_load((REPO / "profiles" / "slurm" / "profile.yaml").read_text())
    assert slurm["executor"] == "slurm"
    assert slurm["jobs"] >= 1 and slurm["retries"] >= 1 and slurm["rerun-incomplete"] is True
    assert slurm["latency-wait"] >= 5
    assert {"runtime", "mem_mb"} <= set(slurm["default-resources"])
    # the GPU comes from the certify rule; a `gres` as well would request the GPU twice
    assert "gres" not in slurm["default-resources"]
    # a set-resources here would be replaced by the workflow profile's: it stays a comment
    assert "set-resources" not in slurm
    text = (REPO / "profiles" / "slurm" / "profile.yaml").read_text()
    for option in ("slurm_partition", "slurm_account", "slurm-status-command: squeue", "slurm-requeue: true"):
        assert f"# {option}" in text, option  # documented, for the user to turn on


def test_the_requeue_option_exists_in_the_plugin():
    """The profile's commented `slurm-requeue` is the plugin's option, and it becomes `sbatch --requeue`."""
    plugin = pytest.importorskip("snakemake_executor_plugin_slurm")
    from dataclasses import fields

    names = {f.name for f in fields(plugin.ExecutorSettings)}
    assert {"requeue", "no_requeue"} <= names


def test_workflow_profile_holds_the_certification_limits():
    assert set(CERTIFY) == {"runtime", "mem_mb_per_cpu"}
    assert CERTIFY["runtime"] == 1440 and CERTIFY["mem_mb_per_cpu"] == 8000
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert "resources" not in paper and paper["threads"] == 8 and paper["device"] != "cpu"


def test_slurm_plugin_submits_what_a_paper_job_asks():
    """What snakemake-executor-plugin-slurm makes of a certification job of config/paper.yaml: one GPU, 8 CPUs,
    8 GB each, 24 h; of the embedded default's: no GPU, 1 CPU."""
    submit = pytest.importorskip("snakemake_executor_plugin_slurm.submit_string")
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.get

    class FakeJob:
        resources = Resources(gpu=1, mem_mb=8000, **CERTIFY)
        threads = 8

    assert set_gres_string(FakeJob()).split() == ["--gpus=1"]
    assert submit.get_cpu_setting(FakeJob(), True) == "--cpus-per-task=8"
    FakeJob.resources = Resources(mem_mb=8000, **CERTIFY)
    FakeJob.threads = 1
    assert set_gres_string(FakeJob()).strip() == ""
    assert submit.get_cpu_setting(FakeJob(), False) == "--cpus-per-task=1"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return workflow_copy(tmp_path_factory.mktemp("profiles"))


def certify_resources(jobs) -> list[dict[str, str]]:
    found = [job.resources for job in jobs if job.rule == "certify"]
    assert found
    return found


@pytest.mark.slow
def test_paper_dry_run_under_the_slurm_profile(workdir):
    """`snakemake --profile slurm table_B --configfile config/paper.yaml`, as typed: both profiles are read, every
    certification job asks for one GPU and the workflow profile's limits, the CPU rules for no GPU."""
    result = snakemake(workdir, "-n", "--profile", "slurm", "table_B", "--configfile", "config/paper.yaml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Using profiles slurm and workflow specific profile profiles/default" in result.stdout
    from test_workflow import parse_jobs

    jobs = parse_jobs(result.stdout)
    for resources in certify_resources(jobs):
        assert resources["gpu"] == "1", resources
        assert resources["runtime"] == str(CERTIFY["runtime"])
        assert resources["mem_mb_per_cpu"] == str(CERTIFY["mem_mb_per_cpu"])
    assert all("gpu" not in job.resources for job in jobs if job.rule != "certify")


def test_default_dry_run_asks_for_no_gpu(workdir):
    """`snakemake --cores 1 all` on the embedded default: the workflow profile is read, and no job asks for a GPU."""
    jobs, stats, out = dry_run(workdir, "all")
    assert "workflow specific profile profiles/default" in out
    for resources in certify_resources(jobs):
        assert "gpu" not in resources and resources["runtime"] == str(CERTIFY["runtime"]), resources
    assert not any("gpu" in job.resources for job in jobs)


def test_default_dry_run_with_the_local_profile(workdir):
    jobs, stats, out = dry_run(workdir, "--profile", "profiles/local", "all")
    assert "Using profiles profiles/local and workflow specific profile profiles/default" in out
    assert stats["certify"] >= 1
    assert not any("gpu" in job.resources for job in jobs)


def test_workflow_profile_can_be_turned_off(workdir):
    jobs, _, out = dry_run(workdir, "--workflow-profile", "none", "all")
    assert "workflow specific profile" not in out
    assert all("runtime" not in r for r in certify_resources(jobs))


def test_a_resources_key_in_the_config_says_where_it_moved(workdir, tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("resources: {certify: {gpu: 1, runtime: 1440}}\n")
    result = snakemake(workdir, "-n", "--cores", "1", "all", "--configfile", str(old))
    assert result.returncode != 0 and "Traceback" not in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("densepure"))
    assert "resources" in line and "profiles/default/profile.yaml" in line, result.stdout[-2000:]


def test_claim_waves_ask_what_certification_jobs_ask():
    """The `claims` target's wave jobs run `densepure certify` like the grid's: the same time limit and memory."""
    profile = yaml.safe_load(WORKFLOW_PROFILE.read_text())["set-resources"]
    assert profile["claims_certify"] == CERTIFY
